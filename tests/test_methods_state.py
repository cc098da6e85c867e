"""No method leaves anything behind.

After every call -- and after a call whose forward (or selector) raises --
the model has exactly the hooks it had before (module and global hooks),
its parameters are bit-identical (values, version counters, ``.grad``), the
``requires_grad`` flags of parameters and inputs and the ``training`` flags
are unchanged, the inputs are unmodified (values, version counter,
``requires_grad``, ``.grad``), ``torch.is_grad_enabled()`` is unchanged and
the global RNG is neither read-advanced nor reseeded.

Also: a DataParallel-wrapped model through the compat classes (with
``device_ids``) gives the unwrapped model's numbers, and layers given by
dotted name equal the module.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.modules.module as module_globals
from torch import nn
from torch.func import vmap

import fnattr
from fnattr import compat

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._catalog_args import ENTRIES, Setting, caller
    from ._reference import SelfAttention, TupleNet, assert_same, quiet
    from .conftest import MLP, ConvNet, ReusedReLU
except ImportError:
    from _catalog_args import ENTRIES, Setting, caller
    from _reference import SelfAttention, TupleNet, assert_same, quiet
    from conftest import MLP, ConvNet, ReusedReLU

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
              "_backward_pre_hooks", "_forward_hooks_with_kwargs",
              "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                "_global_backward_hooks", "_global_backward_pre_hooks",
                "_global_forward_hooks_with_kwargs", "_global_forward_hooks_always_called")


class Snapshot:
    """Everything a method could leave behind, taken before the call."""

    def __init__(self, model: nn.Module, inputs: tuple):
        self.model, self.inputs = model, inputs
        self.hooks = {name: {h: dict(getattr(m, h)) for h in HOOK_DICTS}
                      for name, m in model.named_modules()}
        self.global_hooks = {h: dict(getattr(module_globals, h)) for h in GLOBAL_HOOKS}
        self.training = {name: m.training for name, m in model.named_modules()}
        self.params = {name: (p.detach().clone(), p.requires_grad, p._version,
                              None if p.grad is None else p.grad.clone())
                       for name, p in model.named_parameters()}
        self.param_objects = dict(model.named_parameters())
        self.buffers = {name: b.clone() for name, b in model.named_buffers()}
        self.xs = [(x.detach().clone(), x.requires_grad, x._version,
                    None if x.grad is None else x.grad.clone()) for x in inputs]
        self.grad_enabled = torch.is_grad_enabled()
        self.rng = torch.get_rng_state()

    def check(self):
        model = self.model
        for name, m in model.named_modules():
            for h in HOOK_DICTS:
                assert dict(getattr(m, h)) == self.hooks[name][h], (name, h)
        for h in GLOBAL_HOOKS:
            assert dict(getattr(module_globals, h)) == self.global_hooks[h], h
        assert {n: m.training for n, m in model.named_modules()} == self.training
        assert dict(model.named_parameters()).keys() == self.param_objects.keys()
        for name, p in model.named_parameters():
            assert p is self.param_objects[name], name  # the same Parameter objects
            value, rg, version, grad = self.params[name]
            assert torch.equal(p.detach(), value), name
            assert p.requires_grad == rg, name
            assert p._version == version, name
            assert (p.grad is None) == (grad is None), name
            if grad is not None:
                assert torch.equal(p.grad, grad), name
        for name, b in model.named_buffers():
            assert torch.equal(b, self.buffers[name]), name
        for x, (value, rg, version, grad) in zip(self.inputs, self.xs):
            assert torch.equal(x.detach(), value)
            assert x.requires_grad == rg
            assert x._version == version
            assert (x.grad is None) == (grad is None)
        assert torch.is_grad_enabled() == self.grad_enabled
        assert torch.equal(torch.get_rng_state(), self.rng)


def _mlp_with_state():
    """An MLP with a frozen parameter and mixed training flags."""
    model = MLP()
    model.fc1.bias.requires_grad_(False)
    model.train()
    model.fc2.eval()
    return model


# Every catalog method with plain arguments (tests/_catalog_args.py), then
# methods with options. Each: f(model, x) for an MLP (6 -> 8 -> 8 -> 4).
SETTING = Setting(layer="fc2", target=1, neuron=1, n_steps=3, baselines=torch.zeros(2, 6),
                  n_samples=3, stdevs=0.1, seed=0)
METHOD_CALLS = {
    **{e.name: caller(e, SETTING) for e in ENTRIES},
    "neuron_gradient-options": lambda m, x: fnattr.neuron_gradient(m, m.fc1, x, 3),
    "neuron_gradient-twice": lambda m, x: [fnattr.neuron_gradient(m, m.fc2, x, 1)
                                           for _ in range(2)][-1],
    "neuron_gradient-input": lambda m, x: fnattr.neuron_gradient(m, "relu1", x, (slice(0, 3),),
                                                                 attribute_to_neuron_input=True),
    "neuron_gradient-list": lambda m, x: fnattr.neuron_gradient(m, "fc2", x, [0, 5, 7],
                                                                chunk_size=2),
    "neuron_gradient-callable": lambda m, x: fnattr.neuron_gradient(
        m, m.relu2, x, lambda v: v[:, 0] * v[:, 1]),
    "neuron_gradient-create_graph": lambda m, x: fnattr.neuron_gradient(m, m.fc2, x, 2,
                                                                        create_graph=True),
    "internal_influence-options": lambda m, x: fnattr.internal_influence(m, m.fc2, x, target=1,
                                                                 n_steps=3),
    "internal_influence-batched": lambda m, x: fnattr.internal_influence(
        m, m.relu1, x, baselines=0.5, target=[0, 1, 2], n_steps=3, internal_batch_size=4,
        method="riemann_trapezoid"),
    "internal_influence-input": lambda m, x: fnattr.internal_influence(
        m, m.fc3, x, target=2, n_steps=2, attribute_to_layer_input=True),
    "internal_influence-create_graph": lambda m, x: fnattr.internal_influence(
        m, m.fc1, x, target=0, n_steps=2, create_graph=True),
    "integrated_gradients-options": lambda m, x: fnattr.integrated_gradients(
        m, x, target=1, n_steps=3, internal_batch_size=2, return_convergence_delta=True),
    "neuron_integrated_gradients-options": lambda m, x: fnattr.neuron_integrated_gradients(
        m, m.fc2, x, [1, 2], n_steps=3),
    "layer_conductance-options": lambda m, x: fnattr.layer_conductance(
        m, m.relu2, x, target=3, n_steps=3, return_convergence_delta=True),
    "convergence_delta": lambda m, x: fnattr.convergence_delta(
        m, torch.ones(3, 6), 0.1, x, target=[0, 1, 2]),
    "compat-NeuronGradient": lambda m, x: compat.NeuronGradient(m, m.fc1).attribute(x, 4),
    "compat-InternalInfluence": lambda m, x: compat.InternalInfluence(m, m.fc2).attribute(
        x, target=1, n_steps=3),
    "compat-compute_convergence_delta": lambda m, x: compat.NeuronGradient(m, m.fc1)
    .compute_convergence_delta(torch.ones(3, 6), None, x, 0),
    "vmap-neuron_gradient": lambda m, x: vmap(
        lambda xi: fnattr.neuron_gradient(m, m.fc2, xi[None], 3)[0])(x.detach()),
    "vmap-internal_influence": lambda m, x: vmap(
        lambda xi: fnattr.internal_influence(m, m.fc2, xi[None], target=0, n_steps=2)[0])(
        x.detach()),
}


@pytest.mark.parametrize("grad_mode", ["enabled", "no_grad"])
@pytest.mark.parametrize("x_requires_grad", [False, True], ids=["x", "x-requires-grad"])
@pytest.mark.parametrize("name", list(METHOD_CALLS))
def test_method_leaves_no_state_behind(name, x_requires_grad, grad_mode):
    model = _mlp_with_state()
    user_hook_calls = []
    model.fc2.register_forward_hook(lambda m, i, o: user_hook_calls.append(1))
    x = torch.randn(3, 6).requires_grad_(x_requires_grad)
    outer = Snapshot(model, (x,))
    ctx = torch.no_grad() if grad_mode == "no_grad" else contextlib.nullcontext()
    with ctx:
        inner = Snapshot(model, (x,))
        result = METHOD_CALLS[name](model, x)
        inner.check()
    outer.check()
    flat = result if isinstance(result, (tuple, list)) else (result,)
    assert all(torch.isfinite(r).all() for r in flat)
    # the user's own hook survived and still runs
    before = len(user_hook_calls)
    model(x)
    assert len(user_hook_calls) == before + 1


@pytest.mark.parametrize("name", ["neuron_gradient", "internal_influence",
                                  "neuron_gradient-list"])
def test_results_do_not_depend_on_grad_mode(name):
    model = _mlp_with_state()
    x = torch.randn(3, 6)
    plain = METHOD_CALLS[name](model, x)
    with torch.no_grad():
        under_no_grad = METHOD_CALLS[name](model, x)
    assert_same(under_no_grad, plain, atol=0, rtol=0)


def test_inplace_and_reused_models_leave_no_state_behind():
    for model, x, calls in [
        (MLP(inplace=True), torch.randn(3, 6), [
            lambda m, x: fnattr.neuron_gradient(m, m.relu1, x, 2, attribute_to_neuron_input=True),
            lambda m, x: fnattr.internal_influence(m, m.fc1, x, target=0, n_steps=2)]),
        (ReusedReLU(), torch.randn(3, 5), [
            lambda m, x: fnattr.neuron_gradient(m, m.relu, x, 2),
            lambda m, x: fnattr.internal_influence(m, "relu", x, target=0, n_steps=2)]),
        (TupleNet(), torch.randn(3, 6), [
            lambda m, x: fnattr.internal_influence(m, m.split, x, target=0, n_steps=2)]),
    ]:
        for call in calls:
            snap = Snapshot(model, (x,))
            call(model, x)
            snap.check()


# ----------------------------------------------------------------- raising forwards


class RaiseOnCall(nn.Module):
    """An MLP whose ``raise_at``-th forward raises (before or after the layers run)."""

    def __init__(self, raise_at=2, where="after"):
        super().__init__()
        self.net = MLP()
        self.calls = 0
        self.raise_at = raise_at
        self.where = where

    def forward(self, x):
        self.calls += 1
        if self.calls == self.raise_at and self.where == "before":
            raise RuntimeError("boom: forward failed")
        out = self.net(x)
        if self.calls == self.raise_at and self.where == "after":
            raise RuntimeError("boom: forward failed")
        return out


RAISING_CALLS = {
    # each makes at least two forwards of the model
    **{f"{e.name}-twice": (lambda f: lambda m, x: [f(m, x) for _ in range(2)])(
        caller(e, SETTING.but(layer="net.fc2"))) for e in ENTRIES},
    "neuron_gradient-twice": lambda m, x: [fnattr.neuron_gradient(m, m.net.fc2, x, 1)
                                           for _ in range(2)],
    "neuron_gradient-list-twice": lambda m, x: [fnattr.neuron_gradient(m, "net.fc1", x, [1, 2])
                                                for _ in range(2)],
    "internal_influence-batched": lambda m, x: fnattr.internal_influence(
        m, m.net.fc2, x, target=1, n_steps=3, internal_batch_size=3),
    "internal_influence-twice": lambda m, x: [fnattr.internal_influence(
        m, m.net.relu1, x, target=1, n_steps=2, attribute_to_layer_input=True)
        for _ in range(2)],
    "integrated_gradients-batched": lambda m, x: fnattr.integrated_gradients(
        m, x, target=0, n_steps=2, internal_batch_size=3),
    "layer_conductance-batched": lambda m, x: fnattr.layer_conductance(
        m, m.net.fc1, x, target=0, n_steps=3, internal_batch_size=3),
    "neuron_integrated_gradients-batched": lambda m, x: fnattr.neuron_integrated_gradients(
        m, m.net.fc1, x, 2, n_steps=2, internal_batch_size=3),
    "compat-NeuronGradient-twice": lambda m, x: [compat.NeuronGradient(m, m.net.fc1)
                                                 .attribute(x, 0) for _ in range(2)],
    "create_graph-twice": lambda m, x: [fnattr.neuron_gradient(m, m.net.fc2, x, 1,
                                                               create_graph=True)
                                        for _ in range(2)],
}


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("name", list(RAISING_CALLS))
def test_forward_that_raises_leaves_no_state_behind(name, where):
    model = RaiseOnCall(2, where)
    model.net.fc3.weight.requires_grad_(False)
    model.train()
    x = torch.randn(3, 6)
    snap = Snapshot(model, (x,))
    with pytest.raises(RuntimeError, match="boom"):
        RAISING_CALLS[name](model, x)
    assert model.calls == 2
    snap.check()
    # and the model still works, with fnattr too
    model.raise_at = -1
    assert_same(fnattr.neuron_gradient(model, model.net.fc1, x, 3),
                model.net.fc1.weight[3].detach().expand(3, 6), atol=0, rtol=0)
    snap.check()


def test_forward_that_raises_under_vmap_leaves_no_state_behind():
    model = RaiseOnCall(1, "after")
    x = torch.randn(3, 6)
    snap = Snapshot(model, (x,))
    with pytest.raises(RuntimeError, match="boom"):
        vmap(lambda xi: fnattr.neuron_gradient(model, model.net.fc2, xi[None], 1)[0])(x)
    snap.check()
    model.calls, model.raise_at = 5, 6
    with pytest.raises(RuntimeError, match="boom"):
        vmap(lambda xi: fnattr.internal_influence(model, model.net.fc2, xi[None], target=0,
                                                  n_steps=2)[0])(x)
    snap.check()


FOREIGN = nn.Linear(8, 8)  # not part of any model


class SelectorError(Exception):
    pass


def _raising_selector(v):
    raise SelectorError("selector failed")


@pytest.mark.parametrize("call", [
    lambda m, x: fnattr.neuron_gradient(m, m.fc2, x, _raising_selector),
    lambda m, x: fnattr.neuron_gradient(m, m.fc2, x, [0, _raising_selector]),
    lambda m, x: fnattr.neuron_gradient(m, m.relu1, x, _raising_selector,
                                        attribute_to_neuron_input=True),
    lambda m, x: fnattr.neuron_integrated_gradients(m, m.fc1, x, _raising_selector, n_steps=2),
    lambda m, x: vmap(lambda xi: fnattr.neuron_gradient(m, m.fc2, xi[None],
                                                        _raising_selector))(x),
], ids=["neuron_gradient", "list", "input-side", "nig", "vmap"])
def test_raising_selector_leaves_no_state_behind(call):
    model = _mlp_with_state()
    x = torch.randn(3, 6)
    for _ in range(2):  # the first call runs the whole forward, the second may stop early
        snap = Snapshot(model, (x,))
        with pytest.raises(SelectorError):
            call(model, x)
        snap.check()
        fnattr.neuron_gradient(model, model.fc2, x, 0)  # learn the call count


@pytest.mark.parametrize("call", [
    lambda m, x: fnattr.internal_influence(m, m.fc2, x, target=9, n_steps=2),
    lambda m, x: fnattr.internal_influence(m, m.fc2, x, target=None, n_steps=2),
    lambda m, x: fnattr.neuron_gradient(m, m.fc2, x, 11),
    lambda m, x: fnattr.neuron_gradient(m, m.fc2, x, lambda v: v),
    lambda m, x: fnattr.neuron_gradient(m, FOREIGN, x, 1),
], ids=["target-range", "target-none", "selector-range", "selector-shape", "foreign-layer"])
def test_argument_errors_found_during_the_forward_leave_no_state_behind(call):
    model = _mlp_with_state()
    x = torch.randn(3, 6, requires_grad=True)
    foreign_hooks = (dict(FOREIGN._forward_hooks), dict(FOREIGN._forward_pre_hooks))
    snap = Snapshot(model, (x,))
    with pytest.raises((ValueError, TypeError, IndexError)):
        call(model, x)
    snap.check()
    assert (dict(FOREIGN._forward_hooks), dict(FOREIGN._forward_pre_hooks)) == foreign_hooks


def test_model_catching_exceptions_does_not_swallow_the_early_stop():
    # A forward with ``except Exception`` around its layers: once fnattr
    # stops the forward at the layer, the model must not catch that and go on.
    class Catching(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLP()
            self.fallbacks = 0

        def forward(self, x):
            try:
                return self.net(x)
            except Exception:
                self.fallbacks += 1
                return torch.zeros(x.shape[0], 4)

    model = Catching().eval()
    x = torch.randn(3, 6)
    snap = Snapshot(model, (x,))
    for _ in range(3):
        g = fnattr.neuron_gradient(model, model.net.fc1, x, 2)
        assert_same(g, model.net.fc1.weight[2].detach().expand(3, 6), atol=0, rtol=0)
    assert model.fallbacks == 0
    snap.check()


# ----------------------------------------------------------------- DataParallel


def test_dataparallel_through_compat_with_device_ids():
    inner = MLP().eval()
    try:
        dp = nn.DataParallel(inner, device_ids=None if not torch.cuda.is_available() else [0])
    except Exception as exc:  # pragma: no cover - depends on the build
        pytest.skip(f"nn.DataParallel cannot be constructed on this machine: {exc!r}")
    x = torch.randn(3, 6)
    snap = Snapshot(dp, (x,))
    ng = compat.NeuronGradient(dp, inner.fc2, device_ids=[0])
    assert_same(ng.attribute(x, 4), fnattr.neuron_gradient(inner, inner.fc2, x, 4))
    ii = compat.InternalInfluence(dp, inner.fc1, device_ids=[0])
    expected = fnattr.internal_influence(inner, inner.fc1, x, target=2, n_steps=3)
    assert_same(ii.attribute(x, target=2, n_steps=3), expected)
    # the layer by dotted name through the wrapper: the inner model's names
    assert_same(fnattr.internal_influence(dp, "fc1", x, target=2, n_steps=3), expected)
    with quiet():
        import captum.attr as C
        captum_ng = C.NeuronGradient(dp, inner.fc2, device_ids=None).attribute(x, 4)
    assert_same(ng.attribute(x, 4), captum_ng)
    snap.check()


# ----------------------------------------------------------------- dotted names


@pytest.mark.parametrize("name", ["conv1", "relu2", "pool", "fc1"])
def test_layer_by_dotted_name_equals_module(name):
    model = ConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    layer = model.get_submodule(name)
    sel = (1, 0, 1) if name != "fc1" else 1
    assert_same(fnattr.neuron_gradient(model, name, x, sel),
                fnattr.neuron_gradient(model, layer, x, sel), atol=0, rtol=0)
    assert_same(fnattr.internal_influence(model, name, x, target=1, n_steps=2),
                fnattr.internal_influence(model, layer, x, target=1, n_steps=2), atol=0, rtol=0)
    assert_same(compat.NeuronGradient(model, layer).attribute(x, sel),
                fnattr.neuron_gradient(model, name, x, sel), atol=0, rtol=0)


def test_tied_and_shared_parameters_are_restored():
    torch.manual_seed(0)
    emb = nn.Linear(4, 4)
    model = nn.Sequential(emb, nn.Tanh(), nn.Linear(4, 4), nn.Tanh())
    model[2].weight = emb.weight          # tied: one Parameter in two modules
    model.append(emb)                     # and one module used twice
    x = torch.randn(3, 4)
    snap = Snapshot(model, (x,))
    got = fnattr.gradient(model, x, target=1)
    xx = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xx)[:, 1].sum(), xx)
    torch.testing.assert_close(got, ref)
    fnattr.guided_backprop(model, x, target=0)
    fnattr.neuron_gradient(model, model[1], x, 2)
    snap.check()
    assert model[2].weight is emb.weight


class _Seen(nn.Linear):
    """Records, at each forward, whether its weight is its own Parameter and
    whether it requires grad."""

    def forward(self, x):
        self.seen.append((self.weight is self.own, self.weight.requires_grad))
        return super().forward(x)


def test_the_forward_sees_its_own_parameters_not_requiring_grad():
    torch.manual_seed(0)
    lin = _Seen(4, 3)
    lin.seen, lin.own = [], lin.weight
    model = nn.Sequential(lin, nn.Tanh())
    x = torch.randn(2, 4)
    snap = Snapshot(model, (x,))
    fnattr.gradient(model, x, target=1)
    fnattr.guided_backprop(model, x, target=1)
    fnattr.gradient(model, x, target=1, create_graph=True)  # the live parameters
    assert lin.seen == [(True, False), (True, False), (True, True)]
    snap.check()


def test_a_non_leaf_in_a_parameter_slot_is_swapped_for_an_alias():
    # torch.func.functional_call puts plain (possibly non-leaf) tensors into the
    # slots: a non-leaf cannot have its flag switched off, so it gets a detached alias
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    base = torch.randn(3, 4, requires_grad=True)
    weight = base * 1.0                     # a non-leaf that requires grad
    model[0]._parameters["weight"] = weight
    x = torch.randn(2, 4)
    got = fnattr.gradient(model, x, target=1)
    xx = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xx)[:, 1].sum(), xx)
    torch.testing.assert_close(got, ref)
    assert model[0]._parameters["weight"] is weight and weight.requires_grad
    assert base.grad is None


@pytest.mark.parametrize("name", ["gradient", "guided_backprop", "integrated_gradients",
                                  "internal_influence", "neuron_gradient"])
def test_a_lazy_model_is_initialized_by_its_first_call(name):
    # An uninitialized lazy parameter cannot be detached or have its flag
    # switched; it is left to the forward that initializes it.
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))

    x = torch.randn(3, 5)
    call = {
        "gradient": lambda m: fnattr.gradient(m, x, target=1),
        "guided_backprop": lambda m: fnattr.guided_backprop(m, x, target=1),
        "integrated_gradients": lambda m: fnattr.integrated_gradients(m, x, target=1, n_steps=4),
        "internal_influence": lambda m: fnattr.internal_influence(m, m[2], x, target=1,
                                                                  n_steps=4),
        "neuron_gradient": lambda m: fnattr.neuron_gradient(m, m[2], x, 0),
    }[name]
    lazy, ready = build(), build()
    torch.manual_seed(1)
    ready(x)
    torch.manual_seed(1)  # the lazy layer's first forward draws the same weights
    got = call(lazy)
    torch.testing.assert_close(got, call(ready), rtol=0, atol=0)
    assert all(type(p) is nn.Parameter and p.requires_grad for p in lazy.parameters())


def test_a_lazy_train_mode_norm_is_initialized_then_left_untouched():
    # Its first forward initializes (and so updates) the real buffers, as any
    # first forward would; from then on the buffers are swapped for copies.
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(4), nn.LazyBatchNorm1d(), nn.Tanh(),
                          nn.Linear(4, 2)).train()
    x = torch.randn(6, 5)
    fnattr.gradient(model, x, target=1)
    snap = Snapshot(model, (x,))
    fnattr.integrated_gradients(model, x, target=1, n_steps=3)
    snap.check()


class _AtenCount(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_batch_first_attention_projects_with_one_mm():
    # MultiheadAttention(batch_first=True) projects a transposed 3-D input, which
    # at::matmul folds into one mm only while the weight requires grad: a
    # detached in-projection weight would run an expanded bmm, forward and
    # backward (2.8% slower on the ViT benchmark model). The call keeps it
    # attached and still leaves the model as it was.
    torch.manual_seed(0)
    model = SelfAttention().eval()
    x = torch.randn(4, 5, 8)
    snap = Snapshot(model, (x,))
    with _AtenCount() as seen:
        got = fnattr.gradient(model, x, target=1)
    snap.check()
    assert "bmm" not in seen.ops
    assert seen.ops.count("mm") >= 2  # the projection, forward and backward
    xx = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(model(xx)[:, 1].sum(), xx)
    torch.testing.assert_close(got, ref)


# ------------------------------------------------- train mode: buffers (issue 13.5)


def _bn_mlp():
    """The MLP with BatchNorm after each hidden layer, in train mode: every forward
    would update running_mean, running_var and num_batches_tracked."""
    model = MLP()
    model.relu1 = nn.Sequential(nn.BatchNorm1d(8), nn.ReLU())
    model.relu2 = nn.Sequential(nn.BatchNorm1d(8), nn.ReLU())
    return model.train()


TRAIN_CALLS = {
    # vmap cannot update running statistics in place; a one-row slice of
    # examples (internal_batch_size=2 of 3) is too small for train-mode BatchNorm
    **{n: f for n, f in METHOD_CALLS.items() if not n.startswith("vmap")
       and n != "integrated_gradients-options"},
    "integrated_gradients-options": lambda m, x: fnattr.integrated_gradients(
        m, x, target=1, n_steps=3, internal_batch_size=6, return_convergence_delta=True),
    "gradient_shap-delta": lambda m, x: fnattr.gradient_shap(
        m, x, torch.zeros(2, 6), target=1, stdevs=0.1, return_convergence_delta=True,
        generator=torch.Generator().manual_seed(0)),
    "guided_backprop-target": lambda m, x: fnattr.guided_backprop(m, x, 2),
}


@pytest.mark.parametrize("name", list(TRAIN_CALLS))
def test_train_mode_buffers_are_bit_identical_after_every_method(name):
    model = _bn_mlp()
    x = torch.randn(3, 6)
    snap = Snapshot(model, (x,))
    versions = {k: b._version for k, b in model.named_buffers()}
    TRAIN_CALLS[name](model, x)
    snap.check()  # buffer values
    assert {k: b._version for k, b in model.named_buffers()} == versions


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("name", list(RAISING_CALLS))
def test_train_mode_buffers_restored_when_the_forward_raises(name, where):
    model = RaiseOnCall(2, where)
    model.net.relu1 = nn.Sequential(nn.BatchNorm1d(8), nn.ReLU())
    model.train()
    x = torch.randn(3, 6)
    snap = Snapshot(model, (x,))
    with pytest.raises(RuntimeError, match="boom"):
        RAISING_CALLS[name](model, x)
    snap.check()


def test_train_mode_uses_batch_statistics_of_the_expanded_batch():
    # What train mode means for the result: BatchNorm normalizes with the
    # statistics of the batch the model sees (the expanded path batch), exactly
    # as a plain train-mode forward of that batch would.
    model = _bn_mlp()
    x = torch.randn(4, 6)
    ours = fnattr.gradient(model, x, target=1)
    ref_model = _bn_mlp()
    ref_model.load_state_dict(model.state_dict())
    xr = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(ref_model(xr)[:, 1].sum(), xr)
    assert_same(ours, ref, atol=0, rtol=0)
