"""The engine (fnattr/_engine.py): ``functional`` and ``transforms_active``.

``functional(model)`` must compute exactly what the model computes, record no
graph for the parameters unless ``detach=False``, leave the model as it was
(also when the forward raises), and work under ``torch.func`` transforms.
Threads sharing one model get single-thread results. The early stop at a layer
is in ``test_engine_early_stop.py``; plain vs. functional mode for every
method in ``test_methods_variants.py``.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

import fnattr

from ._reference import assert_same
from .conftest import MLP


def _mlp():
    torch.manual_seed(0)
    return MLP().eval(), torch.randn(5, 6)


def test_functional_computes_what_the_model_computes(mlp):
    x = torch.randn(4, 6)
    assert_same(fnattr.functional(mlp)(x), mlp(x), atol=0, rtol=0)
    assert_same(fnattr.functional(mlp, detach=False)(x), mlp(x), atol=0, rtol=0)


def test_functional_records_no_parameter_graph_by_default(mlp):
    x = torch.randn(4, 6)
    assert not fnattr.functional(mlp)(x).requires_grad
    xr = x.clone().requires_grad_()
    out = fnattr.functional(mlp)(xr)
    assert out.requires_grad  # the inputs' graph is kept
    (g,) = torch.autograd.grad(out[:, 0].sum(), xr)
    xr2 = x.clone().requires_grad_()
    assert_same(g, torch.autograd.grad(mlp(xr2)[:, 0].sum(), xr2)[0])
    with pytest.raises(RuntimeError):
        torch.autograd.grad(fnattr.functional(mlp)(xr)[:, 0].sum(), mlp.fc1.weight)


def test_functional_with_live_parameters_gives_their_gradients(mlp):
    x = torch.randn(4, 6)
    (got,) = torch.autograd.grad(fnattr.functional(mlp, detach=False)(x).sum(), mlp.fc2.weight)
    (want,) = torch.autograd.grad(mlp(x).sum(), mlp.fc2.weight)
    assert_same(got, want, atol=0, rtol=0)


def test_functional_leaves_the_parameters_in_place_also_when_the_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            self.fc(x)
            raise RuntimeError("boom")

    model = Boom()
    before = {n: p for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        fnattr.functional(model)(torch.randn(2, 3))
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is before[n] for n in before)
    assert all(isinstance(p, nn.Parameter) for p in after.values())


def test_functional_of_a_plain_callable_calls_it_unchanged():
    calls = []

    def f(x, scale):
        calls.append(1)
        return torch.sin(x) * scale

    x = torch.randn(3, 2)
    assert torch.equal(fnattr.functional(f)(x, 2.0), torch.sin(x) * 2.0)
    assert calls == [1]


def test_functional_unwraps_data_parallel(mlp):
    x = torch.randn(3, 6)
    assert_same(fnattr.functional(nn.DataParallel(mlp))(x), mlp(x), atol=0, rtol=0)


def test_functional_under_vmap_and_grad_equals_the_model(mlp):
    x = torch.randn(4, 6)
    f = fnattr.functional(mlp)
    assert_same(vmap(lambda xi: f(xi[None])[0])(x), mlp(x))
    got = vmap(grad(lambda xi: f(xi[None])[0, 2]))(x)
    xr = x.clone().requires_grad_()
    assert_same(got, torch.autograd.grad(mlp(xr)[:, 2].sum(), xr)[0])


def test_transforms_active_only_inside_transforms():
    assert not fnattr.transforms_active()
    seen = []

    def probe(x):
        seen.append(fnattr.transforms_active())
        return x.sum()

    vmap(probe)(torch.randn(2, 3))
    grad(probe)(torch.randn(3))
    assert seen == [True, True]
    assert not fnattr.transforms_active()


def test_functional_is_what_methods_differentiate():
    # the engine's composition: input_gradients of a functional model equal
    # gradient(model) (the public method), exactly
    model = MLP().eval()
    x = torch.randn(3, 6)
    (got,) = fnattr.input_gradients(fnattr.functional(model), (x,), fnattr.target_objective(1))
    assert_same(got, fnattr.gradient(model, x, target=1), atol=0, rtol=0)


def test_threads_sharing_a_model_get_single_thread_results():
    model, x = _mlp()
    calls = {
        "internal_influence": lambda: fnattr.internal_influence(model, model.fc1, x, target=1,
                                                                n_steps=8),
        "neuron_gradient": lambda: fnattr.neuron_gradient(model, model.fc2, x, [2, 3]),
    }
    reference = {k: f() for k, f in calls.items()}
    failures: list = []
    start = threading.Barrier(4)

    def work(i: int) -> None:
        start.wait()
        for j in range(25):
            name = list(calls)[(i + j) % 2]
            try:
                ok = torch.equal(calls[name](), reference[name])
            except Exception as e:  # a false "layer was not called", say
                ok = repr(e)
            if ok is not True:
                failures.append((i, j, name, ok))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert all(p.requires_grad for p in model.parameters())  # the live parameters are back
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_tap_lets_another_threads_forward_through():
    # A hook of a call in flight in one thread leaves another thread's plain
    # forward through the same module untouched.
    model, x = _mlp()
    expected = model(x)
    seen = []

    def selector(value):
        t = threading.Thread(target=lambda: seen.append(model(x)))
        t.start()
        t.join()
        return value[:, 0]

    fnattr.neuron_gradient(model, model.fc1, x, selector)
    assert_same(seen[0], expected, atol=0, rtol=0)
