"""fnattr against naive reference implementations (tests/_reference.py).

The references loop over examples, steps and neurons, take one scalar
gradient at a time and read layers with cloning hooks. Tolerances: float32
``atol=1e-5, rtol=1e-4`` (the references sum in a different order, one example
at a time); float64 ``atol=1e-10, rtol=1e-9`` with Gauss-Legendre (exact
nodes); the Riemann rules take float32 ``linspace`` nodes (as Captum does),
so their float64 comparison against exact nodes uses ``atol=1e-6``.

Also here: results under ``torch.func.vmap`` over examples equal the plain
call, and ``create_graph=True`` attributions are differentiable with respect
to the parameters, checked against central finite differences in float64
(both with ``torch.autograd.grad`` and with ``torch.func.grad``).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

import fnattr

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from . import _reference as R
    from ._reference import Looped, Out3D, TupleNet, assert_same
    from .conftest import MLP, ConvNet, MultiInput, ReusedReLU
except ImportError:
    import _reference as R
    from _reference import Looped, Out3D, TupleNet, assert_same
    from conftest import MLP, ConvNet, MultiInput, ReusedReLU

F32 = dict(atol=1e-5, rtol=1e-4)
F64 = dict(atol=1e-10, rtol=1e-9)
METHODS = ["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
           "gausslegendre"]


def _setup(name, dtype=torch.float32):
    """(model, inputs tuple, additional args tuple, layer names)."""
    if name == "mlp":
        model, xs, args = MLP(), (torch.randn(3, 6),), ()
    elif name == "inplace":
        model, xs, args = MLP(inplace=True), (torch.randn(3, 6),), ()
    elif name == "conv":
        model, xs, args = ConvNet(), (torch.randn(2, 3, 8, 8),), ()
    elif name == "multi":
        model, xs = MultiInput(), (torch.randn(3, 4), torch.randn(3, 3))
        args = (torch.rand(3, 6) + 0.5, True)
    elif name == "reused":
        model, xs, args = ReusedReLU(), (torch.randn(3, 5),), ()
    elif name == "tuple":
        model, xs, args = TupleNet(), (torch.randn(3, 6),), ()
    elif name == "out3d":
        model, xs, args = Out3D(), (torch.randn(3, 6),), ()
    else:
        raise KeyError(name)
    model = model.to(dtype).eval()
    xs = tuple(x.to(dtype) for x in xs)
    args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args)
    return model, xs, args


def _unpack(xs, result):
    return result if len(xs) > 1 else (result,)


# ----------------------------------------------------------------- quadrature


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 3, 7])
def test_quadrature_matches_naive_rule(method, n):
    alphas, weights = fnattr.quadrature(method, n)
    ref_a, ref_w = R.naive_quadrature(method, n)
    assert len(alphas) == len(weights) == n
    torch.testing.assert_close(torch.tensor(alphas, dtype=torch.float64),
                               torch.tensor(ref_a, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(torch.tensor(weights, dtype=torch.float64),
                               torch.tensor(ref_w, dtype=torch.float64), atol=1e-12, rtol=0)
    # Captum's trapezoid weights are 1/n with halved ends: they sum to 1 - 1/n
    assert abs(sum(weights) - sum(ref_w)) < 1e-12


# ----------------------------------------------------------------- neuron_gradient

NG = [
    ("mlp", "fc1", 3, False),
    ("mlp", "fc2", (slice(2, 7),), False),
    ("mlp", "relu2", 5, True),
    ("mlp", "relu1", lambda v: v[:, 0] * v[:, 1] + v[:, 2], False),
    ("conv", "conv2", (2, 1, 3), False),
    ("conv", "conv1", (slice(None), 2, slice(0, 3)), False),
    ("conv", "pool", (5, 1, 0), True),
    ("multi", "relu", 4, False),
    ("multi", "head", (slice(None),), True),
    ("inplace", "fc1", 6, False),
    ("inplace", "relu1", 6, True),
    ("inplace", "relu2", (slice(0, 4),), False),
    ("inplace", "fc2", lambda v: v[:, 1] * v[:, 3], False),
    ("reused", "relu", 2, False),
    ("reused", "relu", 2, True),
    ("tuple", "split", lambda v: v[0][:, 0] * v[1][:, 1], False),
]


def _id(case):
    setup, layer, sel, to_input = case
    s = "callable" if callable(sel) else repr(sel).replace(" ", "")
    return f"{setup}-{layer}-{s}-{'in' if to_input else 'out'}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", NG, ids=[_id(c) for c in NG])
def test_neuron_gradient_matches_naive(case, dtype):
    setup, layer_name, sel, to_input = case
    model, xs, args = _setup(setup, dtype)
    layer = model.get_submodule(layer_name)
    expected = R.naive_neuron_gradient(model, layer, xs, sel, args, to_input)
    x = xs if len(xs) > 1 else xs[0]
    for _ in range(2):  # the second call may stop the forward at the layer
        actual = _unpack(xs, fnattr.neuron_gradient(model, layer, x, sel, args or None,
                                                    to_input))
        assert all(a.dtype == dtype for a in actual)
        assert_same(actual, expected, **(F64 if dtype == torch.float64 else F32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_neuron_gradient_list_matches_naive_loop_over_neurons(dtype):
    model, xs, _ = _setup("conv", dtype)
    neurons = [(c, i, j) for c in (0, 5) for i in range(4) for j in (0, 3)]
    expected = torch.stack([g[0] for g in R.naive_jacobian_rows(model, model.conv2, xs,
                                                                neurons)])
    for chunk_size in (None, 1, 3, 100):
        actual = fnattr.neuron_gradient(model, model.conv2, xs[0], neurons,
                                        chunk_size=chunk_size)
        assert actual.shape == (len(neurons), *xs[0].shape)
        assert_same(actual, expected, **(F64 if dtype == torch.float64 else F32))


def test_neuron_gradient_reused_layer_is_read_at_last_call_not_first():
    # The naive reference reads the last call; check that the first call's
    # answer is really different here, so the comparison above means something.
    model, xs, _ = _setup("reused")
    last = R.naive_neuron_gradient(model, model.relu, xs, 2)[0]

    class First:
        value = None

        def __call__(self, m, a, out):
            if self.value is None:
                self.value = out.clone()

    first_rec = First()
    x = xs[0].clone().requires_grad_()
    h = model.relu.register_forward_hook(first_rec)
    try:
        model(x)
    finally:
        h.remove()
    first = torch.autograd.grad(first_rec.value[:, 2].sum(), x)[0]
    assert not torch.allclose(first, last, atol=1e-3)
    assert_same(fnattr.neuron_gradient(model, model.relu, xs[0], 2), last, **F32)


def test_neuron_gradient_looped_layer_matches_naive_for_each_call_count():
    model = Looped().eval()
    x = torch.randn(3, 5)
    for times in (1, 3):
        expected = R.naive_neuron_gradient(model, model.lin, (x,), 1, (times,))[0]
        assert_same(fnattr.neuron_gradient(model, model.lin, x, 1, (times,)), expected, **F32)


# ----------------------------------------------------------------- internal_influence

II = [
    ("mlp", "fc2", dict(target=1)),
    ("mlp", "relu1", dict(target=[0, 3, 2], baselines=0.5)),
    ("mlp", "fc1", dict(target=2, to_input=True)),
    ("conv", "conv2", dict(target=3, baselines="batch1")),
    ("conv", "pool", dict(target=[1, 4], to_input=True)),
    ("multi", "relu", dict(target=2, baselines=(0.1, "full"))),
    ("inplace", "fc1", dict(target=1)),
    ("inplace", "relu1", dict(target=1, to_input=True)),
    ("inplace", "relu1", dict(target=1)),
    ("reused", "relu", dict(target=0)),
    ("reused", "relu", dict(target=2, to_input=True)),
    ("tuple", "split", dict(target=1)),
    ("out3d", "relu", dict(target=[(0, 2), (1, 1), (1, 0)])),
]


def _baselines(spec, xs):
    def one(s, x):
        if s == "batch1":
            return torch.randn(1, *x.shape[1:], dtype=x.dtype)
        if s == "full":
            return torch.randn_like(x)
        return s
    if isinstance(spec, tuple):
        return tuple(one(s, x) for s, x in zip(spec, xs))
    return one(spec, xs[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("setup,layer,kw", II, ids=[f"{s}-{l}-{i}" for i, (s, l, _) in
                                                    enumerate(II)])
def test_internal_influence_matches_naive(setup, layer, kw, dtype):
    kw = dict(kw)
    model, xs, args = _setup(setup, dtype)
    layer = model.get_submodule(layer)
    to_input = kw.pop("to_input", False)
    baselines = _baselines(kw.pop("baselines", None), xs)
    target = kw.pop("target")
    expected = R.naive_internal_influence(model, layer, xs, baselines, target, args, 4,
                                          "gausslegendre", to_input)
    x = xs if len(xs) > 1 else xs[0]
    actual = fnattr.internal_influence(model, layer, x, baselines, target, args or None,
                                       n_steps=4, attribute_to_layer_input=to_input)
    tol = F64 if dtype == torch.float64 else F32
    assert_same(actual, expected, **tol)
    actual = fnattr.internal_influence(model, layer, x, baselines, target, args or None,
                                       n_steps=4, attribute_to_layer_input=to_input,
                                       internal_batch_size=2)
    assert_same(actual, expected, **tol)


@pytest.mark.parametrize("method", METHODS)
def test_internal_influence_every_method_matches_naive_float64(method):
    model, xs, _ = _setup("mlp", torch.float64)
    expected = R.naive_internal_influence(model, model.fc2, xs, 0.25, 3, (), 5, method)
    actual = fnattr.internal_influence(model, model.fc2, xs[0], 0.25, 3, n_steps=5,
                                       method=method)
    tol = F64 if method == "gausslegendre" else dict(atol=1e-6, rtol=1e-6)
    assert_same(actual, expected, **tol)


# ----------------------------------------------------------------- path methods


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("setup,target,baselines", [
    ("mlp", 1, None), ("conv", [2, 0], "batch1"), ("multi", 0, (0.3, "full")),
    ("out3d", (1, 0), 0.1),
])
def test_integrated_gradients_matches_naive(setup, target, baselines, dtype):
    model, xs, args = _setup(setup, dtype)
    baselines = _baselines(baselines, xs)
    expected = R.naive_integrated_gradients(model, xs, baselines, target, args, 4)
    x = xs if len(xs) > 1 else xs[0]
    actual = fnattr.integrated_gradients(model, x, baselines, target, args or None, n_steps=4)
    assert_same(_unpack(xs, actual), expected, **(F64 if dtype == torch.float64 else F32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("setup,layer,sel,to_input", [
    ("mlp", "fc2", 4, False), ("conv", "conv2", (1, slice(0, 2), 2), False),
    ("multi", "relu", 1, True), ("reused", "relu", 3, False),
])
def test_neuron_integrated_gradients_matches_naive(setup, layer, sel, to_input, dtype):
    model, xs, args = _setup(setup, dtype)
    layer = model.get_submodule(layer)
    baselines = tuple(0.2 for _ in xs) if len(xs) > 1 else 0.2
    expected = R.naive_neuron_integrated_gradients(model, layer, xs, sel, baselines, args, 4,
                                                   to_input=to_input)
    x = xs if len(xs) > 1 else xs[0]
    actual = fnattr.neuron_integrated_gradients(model, layer, x, sel, baselines,
                                                args or None, n_steps=4,
                                                attribute_to_neuron_input=to_input)
    assert_same(_unpack(xs, actual), expected, **(F64 if dtype == torch.float64 else F32))


# ----------------------------------------------------------------- vmap


@pytest.mark.parametrize("setup,layer,sel", [
    ("mlp", "fc2", 3), ("mlp", "fc1", [0, (slice(2, 5),), 7]),
    ("conv", "conv2", (1, 2, 2)), ("reused", "relu", 4), ("inplace", "fc1", 2),
])
def test_neuron_gradient_under_vmap_equals_plain(setup, layer, sel):
    model, (x,), _ = _setup(setup)
    layer = model.get_submodule(layer)
    plain = fnattr.neuron_gradient(model, layer, x, sel)
    if isinstance(sel, list):  # (K, N, ...): vmap gives (N, K, ...)
        mapped = vmap(lambda xi: fnattr.neuron_gradient(model, layer, xi[None], sel)[:, 0])(x)
        assert_same(mapped.transpose(0, 1), plain)
    else:
        mapped = vmap(lambda xi: fnattr.neuron_gradient(model, layer, xi[None], sel)[0])(x)
        assert_same(mapped, plain)


@pytest.mark.parametrize("setup,layer,kw", [
    ("mlp", "fc2", dict(target=1)),
    ("mlp", "relu1", dict(target=2, baselines=0.5, method="riemann_trapezoid")),
    ("conv", "conv2", dict(target=3)),
    ("reused", "relu", dict(target=0, attribute_to_layer_input=True)),
    ("tuple", "split", dict(target=2)),
    ("inplace", "relu1", dict(target=1, attribute_to_layer_input=True)),
])
def test_internal_influence_under_vmap_equals_plain(setup, layer, kw):
    model, (x,), _ = _setup(setup)
    layer = model.get_submodule(layer)
    plain = fnattr.internal_influence(model, layer, x, n_steps=3, **kw)
    if isinstance(plain, tuple):
        mapped = vmap(lambda xi: tuple(a[0] for a in fnattr.internal_influence(
            model, layer, xi[None], n_steps=3, **kw)))(x)
    else:
        mapped = vmap(lambda xi: fnattr.internal_influence(
            model, layer, xi[None], n_steps=3, **kw)[0])(x)
    assert_same(mapped, plain)


def test_per_example_targets_under_vmap_equal_plain():
    model, (x,), _ = _setup("mlp")
    targets = torch.tensor([2, 0, 3])
    plain = fnattr.internal_influence(model, model.fc2, x, target=targets, n_steps=3)
    mapped = vmap(lambda xi, ti: fnattr.internal_influence(
        model, model.fc2, xi[None], target=ti[None], n_steps=3)[0])(x, targets)
    assert_same(mapped, plain)


# ----------------------------------------------------------------- create_graph


def _central_difference(fn, param: torch.Tensor, index: tuple, eps: float = 1e-6) -> float:
    with torch.no_grad():
        old = param[index].item()
        param[index] = old + eps
        up = fn().item()
        param[index] = old - eps
        down = fn().item()
        param[index] = old
    return (up - down) / (2 * eps)


def _fd_check(model, scalar_fn, n_entries=6):
    """autograd d scalar / d params (create_graph result) vs central differences."""
    params = [p for p in model.parameters()]
    value = scalar_fn(create_graph=True)
    assert value.requires_grad
    grads = torch.autograd.grad(value, params, allow_unused=True)
    g = torch.Generator().manual_seed(1)
    checked_nonzero = 0
    for p, gp in zip(params, grads):
        gp = torch.zeros_like(p) if gp is None else gp
        flat = torch.randperm(p.numel(), generator=g)[:n_entries]
        for k in flat.tolist():
            index = tuple(torch.unravel_index(torch.tensor(k), p.shape))
            index = tuple(int(i) for i in index)
            fd = _central_difference(lambda: scalar_fn(create_graph=False), p, index)
            assert abs(gp[index].item() - fd) <= 1e-6 + 1e-5 * abs(fd), (p.shape, index,
                                                                       gp[index].item(), fd)
            checked_nonzero += abs(fd) > 1e-8
    assert checked_nonzero > 0


@pytest.mark.parametrize("layer,sel", [("fc2", 3), ("relu2", (slice(0, 5),)),
                                       ("fc1", [1, 4])])
def test_neuron_gradient_create_graph_matches_finite_differences(layer, sel):
    model, (x,), _ = _setup("mlp", torch.float64)
    layer = model.get_submodule(layer)
    w = torch.randn(3, 6, dtype=torch.float64)

    def scalar(create_graph):
        attr = fnattr.neuron_gradient(model, layer, x, sel, create_graph=create_graph)
        return (attr * w).sum() + (attr ** 2).sum()

    _fd_check(model, scalar)
    assert not fnattr.neuron_gradient(model, layer, x, sel).requires_grad


@pytest.mark.parametrize("layer,kw", [("fc1", dict(target=2)),
                                      ("relu2", dict(target=[0, 1, 3], baselines=0.3,
                                                     method="riemann_trapezoid")),
                                      ("fc2", dict(target=1, internal_batch_size=4))])
def test_internal_influence_create_graph_matches_finite_differences(layer, kw):
    model, (x,), _ = _setup("mlp", torch.float64)
    layer = model.get_submodule(layer)
    w = torch.randn(3, 8, dtype=torch.float64)

    def scalar(create_graph):
        attr = fnattr.internal_influence(model, layer, x, n_steps=3,
                                         create_graph=create_graph, **kw)
        return (attr * w).sum() + (attr ** 2).sum()

    _fd_check(model, scalar)
    assert not fnattr.internal_influence(model, layer, x, n_steps=3, **kw).requires_grad


def test_create_graph_results_differentiable_wrt_inputs():
    model, (x,), _ = _setup("mlp", torch.float64)
    x = x.clone().requires_grad_()
    attr = fnattr.neuron_gradient(model, model.fc2, x, 2, create_graph=True)
    (gx,) = torch.autograd.grad((attr ** 2).sum(), x)
    # finite difference on one input entry
    xd = x.detach().clone()

    def f():
        return (fnattr.neuron_gradient(model, model.fc2, xd, 2) ** 2).sum()

    fd = _central_difference(f, xd, (1, 3))
    assert abs(gx[1, 3].item() - fd) <= 1e-6 + 1e-5 * abs(fd)


@pytest.mark.parametrize("method", ["neuron_gradient", "internal_influence"])
def test_torch_func_grad_through_attribution_matches_finite_differences(method):
    model, (x,), _ = _setup("mlp", torch.float64)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    w = torch.randn(3, 6 if method == "neuron_gradient" else 8, dtype=torch.float64)

    def loss(p):
        def f(inp):
            return functional_call(model, p, (inp,))
        if method == "neuron_gradient":
            attr = fnattr.neuron_gradient(f, model.fc2, x, 5, create_graph=True)
        else:
            attr = fnattr.internal_influence(f, model.fc1, x, target=1, n_steps=3,
                                             create_graph=True)
        return (attr * w).sum() + (attr ** 2).sum()

    grads = torch.func.grad(loss)(params)
    assert set(grads) == set(params)
    nonzero = 0
    for name in ("fc1.weight", "fc2.weight", "fc3.weight", "fc1.bias"):
        p = params[name]
        for k in (0, 5, p.numel() - 1):
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(k), p.shape))
            fd = _central_difference(lambda: loss(params), p, index)
            got = grads[name][index].item()
            assert abs(got - fd) <= 1e-6 + 1e-5 * abs(fd), (name, index, got, fd)
            nonzero += abs(fd) > 1e-8
    assert nonzero > 0
