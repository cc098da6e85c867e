"""Captum 0.9 as an oracle for the core methods and their compat shells.

Every test computes the same attribution with fnattr and with Captum and
demands the same numbers. Tolerances (float32): ``atol=1e-6, rtol=1e-5``
(``assert_same``'s defaults) unless a test states otherwise; the two
libraries sum path points in different orders, so bit equality is not
expected.

Covered: neuron_gradient / NeuronGradient, internal_influence /
InternalInfluence, convergence_delta / compute_convergence_delta,
interpolate / LayerAttribution.interpolate, and a few cases each of
integrated_gradients, neuron_integrated_gradients and layer_conductance.
Models: an MLP, a conv net, a two-input model with additional forward args
(a per-example tensor and a bool), an MLP with nn.ReLU(inplace=True), a model
that reuses one nn.ReLU, a model whose layer returns a tuple, 1-output and
3-D-output models, and a model that calls a layer a variable number of times.
"""

from __future__ import annotations

import pytest
import torch

import captum.attr as C
import fnattr
from fnattr import compat

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._reference import (Looped, Nested, OneOut, Out3D, TupleNet, TwoInputLayerNet,
                             assert_same, quiet)
    from .conftest import MLP, ConvNet, MultiInput, ReusedReLU
except ImportError:
    from _reference import (Looped, Nested, OneOut, Out3D, TupleNet, TwoInputLayerNet,
                            assert_same, quiet)
    from conftest import MLP, ConvNet, MultiInput, ReusedReLU


# ----------------------------------------------------------------- setups
# Each returns (model, inputs (a Tensor or a tuple), additional_forward_args).


def mlp():
    return MLP().eval(), torch.randn(3, 6), None


def inplace_mlp():
    return MLP(inplace=True).eval(), torch.randn(3, 6), None


def conv():
    return ConvNet().eval(), torch.randn(2, 3, 8, 8), None


def multi(square=True):
    scale = torch.rand(3, 6) + 0.5  # per-example tensor arg (batch dim)
    return MultiInput().eval(), (torch.randn(3, 4), torch.randn(3, 3)), (scale, square)


def multi_single_arg():
    scale = torch.rand(3, 6) + 0.5  # a single non-tuple additional arg
    return MultiInput().eval(), (torch.randn(3, 4), torch.randn(3, 3)), scale


def reused():
    return ReusedReLU().eval(), torch.randn(3, 5), None


def tuplenet():
    return TupleNet().eval(), torch.randn(3, 6), None


def oneout(keepdim=False):
    return OneOut(keepdim).eval(), torch.randn(3, 6), None


def out3d():
    return Out3D().eval(), torch.randn(3, 6), None


SETUPS = {
    "mlp": mlp, "inplace": inplace_mlp, "conv": conv, "multi": multi,
    "multi1": multi_single_arg, "reused": reused, "tuple": tuplenet,
    "oneout": oneout, "oneout_keepdim": lambda: oneout(True), "out3d": out3d,
}


def _layer(model, name):
    return model.get_submodule(name)


# ----------------------------------------------------------------- oracles


def captum_neuron_gradient(model, layer, x, selector, args=None, to_input=False):
    with quiet():
        return C.NeuronGradient(model, layer).attribute(
            x, selector, additional_forward_args=args, attribute_to_neuron_input=to_input)


def captum_internal_influence(model, layer, x, **kw):
    with quiet():
        return C.InternalInfluence(model, layer).attribute(x, **kw)


# ================================================================= neuron_gradient

NG_CASES = [
    # (setup, layer, selector, attribute_to_neuron_input)
    ("mlp", "fc1", 3, False),                                  # int on a Linear
    ("mlp", "fc1", (5,), False),                               # tuple of ints
    ("mlp", "relu2", (-1,), False),                            # negative index
    ("mlp", "fc2", (slice(1, 6),), False),                     # slice: summed
    ("mlp", "fc2", (slice(None),), False),
    ("mlp", "fc2", 2, True),
    ("mlp", "relu1", lambda v: v[:, 2] * v[:, 4], False),      # callable -> (N,)
    ("mlp", "fc3", lambda v: v.sum(), False),                  # callable -> aggregate
    ("conv", "conv2", (1, 2, 3), False),
    ("conv", "conv2", (slice(0, 3), 1, slice(None)), False),
    ("conv", "conv1", (2, slice(1, 4), 3), False),
    ("conv", "conv1", (slice(1, 3),), False),                  # trailing dims via slice
    ("conv", "pool", (0, 1, 1), False),
    ("conv", "relu2", (4, 0, 0), True),
    ("conv", "fc1", 5, False),
    ("conv", "fc1", 17, True),                                 # fc1's input is (N, 24)
    ("conv", "conv2", lambda v: v[:, 1].amax((1, 2)), False),
    ("multi", "relu", 2, False),
    ("multi", "relu", (slice(0, 3),), False),
    ("multi", "relu", (1,), True),
    ("multi1", "head", 0, False),
    ("multi1", "relu", lambda v: v[:, 0] - v[:, 5], True),
    ("reused", "relu", 2, False),                              # last call
    ("reused", "relu", 4, True),
    ("reused", "relu", (slice(None),), False),
    ("tuple", "split", lambda v: v[0][:, 1] + v[1][:, 2], False),  # tuple-valued layer
    ("tuple", "split", lambda v: (v[1] ** 2).sum(1), False),
    ("tuple", "relu", 3, True),
] + [
    ("inplace", layer, sel, to_input)
    for layer in ("relu1", "fc1", "relu2", "fc2")
    for to_input in (False, True)
    for sel in (3, lambda v: v[:, 1] * v[:, 3])
]
COMPAT_NG_CASES = [c for c in NG_CASES if c[0] in ("mlp", "multi", "multi1")]


def _ng_id(case):
    setup, layer, sel, to_input = case
    s = "callable" if callable(sel) else repr(sel).replace(" ", "")
    return f"{setup}-{layer}-{s}-{'in' if to_input else 'out'}"


@pytest.mark.parametrize("case", NG_CASES, ids=[_ng_id(c) for c in NG_CASES])
def test_neuron_gradient_matches_captum(case):
    setup, layer_name, selector, to_input = case
    model, x, args = SETUPS[setup]()
    layer = _layer(model, layer_name)
    expected = captum_neuron_gradient(model, layer, x, selector, args, to_input)
    actual = fnattr.neuron_gradient(model, layer, x, selector, args, to_input)
    assert_same(actual, expected)
    # and once more: the second call may stop the forward at the layer
    assert_same(fnattr.neuron_gradient(model, layer, x, selector, args, to_input), expected)


@pytest.mark.parametrize("case", COMPAT_NG_CASES, ids=[_ng_id(c) for c in COMPAT_NG_CASES])
def test_compat_neuron_gradient_matches_captum(case):
    setup, layer_name, selector, to_input = case
    model, x, args = SETUPS[setup]()
    layer = _layer(model, layer_name)
    expected = captum_neuron_gradient(model, layer, x, selector, args, to_input)
    ng = compat.NeuronGradient(model, layer)
    assert_same(ng.attribute(x, selector, args, to_input), expected)
    assert_same(ng.attribute(x, neuron_selector=selector, additional_forward_args=args,
                             attribute_to_neuron_input=to_input), expected)


def test_neuron_gradient_of_a_layer_seeing_one_input_is_zero_for_the_other():
    # Captum raises here (autograd.grad without allow_unused); the obvious
    # answer: d x1[:, 1] / d x1 is one-hot, d x1[:, 1] / d x2 is zero.
    model, (x1, x2), args = multi()
    g1, g2 = fnattr.neuron_gradient(model, model.a, (x1, x2), (1,), args, True)
    expected = torch.zeros_like(x1)
    expected[:, 1] = 1
    assert_same(g1, expected, atol=0, rtol=0)
    assert_same(g2, torch.zeros_like(x2), atol=0, rtol=0)


def test_neuron_gradient_by_dotted_name_equals_module():
    model, x, _ = mlp()
    assert_same(fnattr.neuron_gradient(model, "fc1", x, 3),
                fnattr.neuron_gradient(model, model.fc1, x, 3), atol=0, rtol=0)
    nested = Nested().eval()
    expected = captum_neuron_gradient(nested, nested.body[2], x, 4)
    assert_same(fnattr.neuron_gradient(nested, "body.2", x, 4), expected)
    assert_same(fnattr.internal_influence(nested, "body.2", x, target=1, n_steps=3),
                captum_internal_influence(nested, nested.body[2], x, target=1, n_steps=3))


@pytest.mark.parametrize("setup,layer,selectors", [
    ("mlp", "fc1", [0, 3, 7]),
    ("mlp", "fc2", [(1,), (slice(0, 4),), 5]),
    ("conv", "conv2", [(0, 1, 1), (5, 3, 0), (slice(None), 2, 2)]),
    ("multi", "relu", [0, (slice(2, 5),)]),
    ("inplace", "fc1", [2, 6]),
    ("reused", "relu", [1, 2, (slice(None),)]),
])
def test_neuron_gradient_list_of_selectors_equals_stacked_single_calls(setup, layer, selectors):
    model, x, args = SETUPS[setup]()
    layer = _layer(model, layer)
    many = fnattr.neuron_gradient(model, layer, x, selectors, args)
    singles = [fnattr.neuron_gradient(model, layer, x, s, args) for s in selectors]
    captums = [captum_neuron_gradient(model, layer, x, s, args) for s in selectors]
    if isinstance(x, tuple):
        assert isinstance(many, tuple) and len(many) == len(x)
        for k in range(len(x)):
            assert many[k].shape == (len(selectors), *x[k].shape)
            assert_same(many[k], torch.stack([s[k] for s in singles]))
            assert_same(many[k], torch.stack([c[k] for c in captums]))
    else:
        assert many.shape == (len(selectors), *x.shape)
        assert_same(many, torch.stack(singles))
        assert_same(many, torch.stack(captums))


def test_neuron_gradient_list_with_chunk_size_matches_captum():
    model, x, _ = conv()
    selectors = [(c, i, j) for c in range(2) for i in range(2) for j in range(3)]
    many = fnattr.neuron_gradient(model, model.conv2, x, selectors, chunk_size=5)
    expected = torch.stack([captum_neuron_gradient(model, model.conv2, x, s) for s in selectors])
    assert_same(many, expected)


def test_neuron_gradient_callable_list_on_tuple_layer():
    model, x, _ = tuplenet()
    sels = [lambda v: v[0][:, 1], lambda v: v[1][:, 3]]
    many = fnattr.neuron_gradient(model, model.split, x, sels)
    expected = torch.stack([captum_neuron_gradient(model, model.split, x, s) for s in sels])
    assert_same(many, expected)


def test_neuron_gradient_layer_call_count_changes_between_calls():
    # The layer is called once, then three times: Captum reads the LAST call
    # each time. (A cached call count must not stop the forward at the first.)
    model = Looped().eval()
    x = torch.randn(3, 5)
    for times in (1, 3, 2, 1):
        expected = captum_neuron_gradient(model, model.lin, x, 2, (times,))
        actual = fnattr.neuron_gradient(model, model.lin, x, 2, (times,))
        assert_same(actual, expected)


def test_internal_influence_layer_call_count_changes_between_calls():
    model = Looped().eval()
    x = torch.randn(3, 5)
    for times in (1, 3, 1):
        expected = captum_internal_influence(model, model.lin, x, target=0,
                                             additional_forward_args=(times,), n_steps=3)
        actual = fnattr.internal_influence(model, model.lin, x, target=0,
                                           additional_forward_args=(times,), n_steps=3)
        assert_same(actual, expected)


# ================================================================= internal_influence

METHODS = ["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
           "gausslegendre"]


def _check_ii(setup, layer_name, **kw):
    model, x, args = SETUPS[setup]()
    if args is not None:
        kw.setdefault("additional_forward_args", args)
    layer = _layer(model, layer_name)
    expected = captum_internal_influence(model, layer, x, **kw)
    actual = fnattr.internal_influence(model, layer, x, **kw)
    assert_same(actual, expected)
    return actual, expected


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("setup,layer,target,n_steps", [
    ("mlp", "fc2", 1, 4),
    ("conv", "conv2", 2, 3),
    ("multi", "relu", 0, 2),
])
def test_internal_influence_methods(method, setup, layer, target, n_steps):
    _check_ii(setup, layer, target=target, n_steps=n_steps, method=method)


def test_internal_influence_gausslegendre_one_step():
    _check_ii("mlp", "fc1", target=0, n_steps=1, method="gausslegendre")


@pytest.mark.parametrize("baselines", [
    None, 0.5, -1, torch.full((1, 6), 0.3), "batch1", "full",
], ids=["none", "float", "int", "const-batch1", "batch1", "full"])
def test_internal_influence_baselines(baselines):
    model, x, _ = mlp()
    if baselines == "batch1":
        baselines = torch.randn(1, 6)
    elif baselines == "full":
        baselines = torch.randn(3, 6)
    expected = captum_internal_influence(model, model.fc1, x, baselines=baselines, target=2,
                                         n_steps=4)
    assert_same(fnattr.internal_influence(model, model.fc1, x, baselines, 2, n_steps=4),
                expected)


@pytest.mark.parametrize("kind", ["tensors", "mixed", "numbers", "batch1"])
def test_internal_influence_tuple_baselines(kind):
    model, x, args = multi()
    baselines = {
        "tensors": (torch.randn(3, 4), torch.randn(3, 3)),
        "mixed": (torch.randn(1, 4), 0.25),
        "numbers": (0, -0.5),
        "batch1": (torch.randn(1, 4), torch.randn(1, 3)),
    }[kind]
    for layer in (model.relu, model.head):
        expected = captum_internal_influence(model, layer, x, baselines=baselines, target=1,
                                             additional_forward_args=args, n_steps=3)
        actual = fnattr.internal_influence(model, layer, x, baselines, 1, args, n_steps=3)
        assert_same(actual, expected)


@pytest.mark.parametrize("setup,target", [
    ("mlp", 2),
    ("mlp", (3,)),
    ("mlp", -1),
    ("mlp", torch.tensor(1)),                         # 0-d tensor
    ("mlp", torch.tensor([0, 3, 2])),                 # 1-D tensor, one per example
    ("mlp", [3, 1, 0]),                               # list of ints
    ("out3d", (1, 2)),                                # tuple for a 3-D output
    ("out3d", [(0, 1), (1, 2), (1, 0)]),              # list of tuples
    ("oneout", None),                                 # (N,) output, no target
    ("oneout_keepdim", None),                         # (N, 1) output, no target
    ("oneout_keepdim", 0),
], ids=lambda v: repr(v).replace(" ", "") if not isinstance(v, str) else v)
def test_internal_influence_targets(setup, target):
    _check_ii(setup, "fc1", target=target, n_steps=3)
    layer = "relu1" if setup == "mlp" else "relu"
    _check_ii(setup, layer, target=target, n_steps=2, method="riemann_trapezoid",
              internal_batch_size=4)


@pytest.mark.parametrize("internal_batch_size", [1, 2, 3, 5, 7, 12, 100])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
def test_internal_influence_internal_batch_size(internal_batch_size, method):
    # N = 3 examples, S = 4 steps: sizes below N, between N and S*N, above.
    model, x, _ = mlp()
    kw = dict(baselines=torch.randn(3, 6), target=[0, 3, 1], n_steps=4, method=method)
    expected = captum_internal_influence(model, model.fc2, x,
                                         internal_batch_size=internal_batch_size, **kw)
    actual = fnattr.internal_influence(model, model.fc2, x,
                                       internal_batch_size=internal_batch_size, **kw)
    assert_same(actual, expected)
    assert_same(actual, fnattr.internal_influence(model, model.fc2, x, **kw))


@pytest.mark.parametrize("internal_batch_size", [2, 5, 9])
def test_internal_influence_internal_batch_size_with_forward_args(internal_batch_size):
    model, x, args = multi()
    _check_ii("multi", "relu", target=torch.tensor([2, 0, 1]), n_steps=3,
              internal_batch_size=internal_batch_size,
              baselines=(torch.randn(3, 4), 0.1))


@pytest.mark.parametrize("setup,layer", [
    ("mlp", "fc2"), ("mlp", "relu1"), ("conv", "relu2"), ("conv", "pool"), ("conv", "fc1"),
    ("multi", "head"), ("multi1", "relu"),
])
def test_internal_influence_attribute_to_layer_input(setup, layer):
    target = 1
    _check_ii(setup, layer, target=target, n_steps=3, attribute_to_layer_input=True)
    _check_ii(setup, layer, target=target, n_steps=3, attribute_to_layer_input=False)


@pytest.mark.parametrize("layer", ["relu1", "fc1", "relu2", "fc2"])
@pytest.mark.parametrize("to_input", [False, True])
def test_internal_influence_inplace_relu(layer, to_input):
    _check_ii("inplace", layer, target=2, n_steps=3, attribute_to_layer_input=to_input)
    _check_ii("inplace", layer, target=[0, 1, 3], n_steps=3, internal_batch_size=4,
              attribute_to_layer_input=to_input, method="riemann_middle")


@pytest.mark.parametrize("to_input", [False, True])
def test_internal_influence_reused_module_uses_last_call(to_input):
    model, x, _ = reused()
    expected = captum_internal_influence(model, model.relu, x, target=1, n_steps=3,
                                         attribute_to_layer_input=to_input)
    actual = fnattr.internal_influence(model, model.relu, x, target=1, n_steps=3,
                                       attribute_to_layer_input=to_input)
    assert actual.shape == (3, 7)
    assert_same(actual, expected)
    assert actual.abs().sum() > 0


def test_internal_influence_tuple_valued_layer_returns_tuple():
    actual, expected = _check_ii("tuple", "split", target=2, n_steps=3)
    assert isinstance(actual, tuple) and len(actual) == 2
    assert actual[0].shape == (3, 5) and actual[1].shape == (3, 4)
    _check_ii("tuple", "split", target=[0, 2, 1], n_steps=4, method="riemann_right",
              internal_batch_size=6, baselines=0.3)


@pytest.mark.parametrize("to_input", [True, False])
def test_layer_with_two_inputs(to_input):
    # attribute_to_layer_input on a layer called with two tensors: a tuple of
    # two attributions; a callable selector receives the tuple.
    model, x = TwoInputLayerNet().eval(), torch.randn(3, 6)
    kw = dict(target=1, n_steps=3, attribute_to_layer_input=to_input)
    expected = captum_internal_influence(model, model.combine, x, **kw)
    actual = fnattr.internal_influence(model, model.combine, x, **kw)
    assert_same(actual, expected)
    if to_input:
        assert isinstance(actual, tuple) and len(actual) == 2
        sel = lambda v: v[0][:, 1] * v[1][:, 2]  # noqa: E731
    else:
        sel = lambda v: v[:, 1] * v[:, 2]  # noqa: E731
    assert_same(fnattr.neuron_gradient(model, model.combine, x, sel, None, to_input),
                captum_neuron_gradient(model, model.combine, x, sel, None, to_input))


@pytest.mark.parametrize("baselines", [0.5, "batch1", None])
@pytest.mark.parametrize("internal_batch_size", [1, 2, 4, 7])
def test_internal_influence_internal_batch_size_with_baseline_forms(baselines,
                                                                    internal_batch_size):
    model, x, _ = mlp()
    if baselines == "batch1":
        baselines = torch.randn(1, 6)
    kw = dict(baselines=baselines, target=torch.tensor([1, 0, 3]), n_steps=3,
              method="riemann_middle", internal_batch_size=internal_batch_size)
    assert_same(fnattr.internal_influence(model, model.relu1, x, **kw),
                captum_internal_influence(model, model.relu1, x, **kw))


def test_internal_influence_conv_layers():
    for layer in ("conv1", "relu1", "conv2", "pool", "fc2"):
        _check_ii("conv", layer, target=[4, 0], n_steps=3, baselines=torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("case", [
    dict(setup="mlp", layer="fc2", target=3, n_steps=4),
    dict(setup="multi", layer="relu", target=[1, 0, 2], n_steps=3, baselines=(0.1, 0.2),
         internal_batch_size=4, method="riemann_left"),
    dict(setup="conv", layer="conv2", target=1, n_steps=2, attribute_to_layer_input=True),
    dict(setup="tuple", layer="split", target=0, n_steps=2),
])
def test_compat_internal_influence_matches_captum(case):
    case = dict(case)
    model, x, args = SETUPS[case.pop("setup")]()
    layer = _layer(model, case.pop("layer"))
    if args is not None:
        case["additional_forward_args"] = args
    expected = captum_internal_influence(model, layer, x, **case)
    assert_same(compat.InternalInfluence(model, layer).attribute(x, **case), expected)


def test_compat_meta_matches_captum():
    model = MLP().eval()
    pairs = [(compat.NeuronGradient, C.NeuronGradient),
             (compat.InternalInfluence, C.InternalInfluence)]
    with quiet():
        for ours, theirs in pairs:
            a, b = ours(model, model.fc1), theirs(model, model.fc1)
            assert ours.get_name() == theirs.get_name()
            assert a.has_convergence_delta() == b.has_convergence_delta()
            assert a.multiplies_by_inputs == b.multiplies_by_inputs
    assert compat.NeuronGradient.get_name() == "Neuron Gradient"
    assert compat.InternalInfluence.get_name() == "Internal Influence"


# ================================================================= convergence_delta


@pytest.mark.parametrize("case", [
    dict(setup="mlp", start=None, target=1),
    dict(setup="mlp", start=0.5, target=[0, 3, 2]),
    dict(setup="mlp", start="batch1", target=torch.tensor(2)),
    dict(setup="mlp", start="full", target=torch.tensor([1, 1, 0])),
    dict(setup="multi", start=(0.0, "full"), target=2),
    dict(setup="multi1", start=None, target=0),
    dict(setup="out3d", start=None, target=(1, 1)),
    dict(setup="out3d", start=0.1, target=[(0, 0), (1, 2), (0, 2)]),
    dict(setup="oneout", start=None, target=None),
    dict(setup="conv", start="batch1", target=3),
], ids=lambda c: f"{c['setup']}-{type(c['start']).__name__}")
def test_convergence_delta_matches_captum(case):
    model, x, args = SETUPS[case["setup"]]()
    xs = x if isinstance(x, tuple) else (x,)

    def make(s, like):
        if s == "batch1":
            return torch.randn(1, *like.shape[1:])
        if s == "full":
            return torch.randn_like(like)
        return s

    start = case["start"]
    start = (tuple(make(s, t) for s, t in zip(start, xs)) if isinstance(start, tuple)
             else make(start, xs[0]))
    attrs = tuple(torch.randn_like(t) for t in xs)
    attrs = attrs if isinstance(x, tuple) else attrs[0]
    with quiet():
        expected = C.IntegratedGradients(model).compute_convergence_delta(
            attrs, start, x, target=case["target"], additional_forward_args=args)
    actual = fnattr.convergence_delta(model, attrs, start, x, case["target"], args)
    assert actual.shape == (xs[0].shape[0],)
    assert_same(actual, expected)
    shell = compat.InternalInfluence(model, model.fc1 if hasattr(model, "fc1") else model.head)
    assert_same(shell.compute_convergence_delta(attrs, start, x, case["target"], args), expected)


@pytest.mark.parametrize("setup,layer", [("mlp", "fc2"), ("multi", "relu"), ("tuple", "split")])
def test_compute_convergence_delta_with_layer_attributions_matches_captum(setup, layer):
    # Captum's layer methods check completeness of LAYER attributions against
    # the inputs' outputs: attributions need not have the inputs' count or
    # shape, only their batch size (InternalInfluence.compute_convergence_delta,
    # LayerConductance's delta).
    model, x, args = SETUPS[setup]()
    layer = _layer(model, layer)
    attrs = captum_internal_influence(model, layer, x, target=1, n_steps=3,
                                      additional_forward_args=args)
    start = tuple(0.1 for _ in x) if isinstance(x, tuple) else 0.1
    with quiet():
        expected = C.InternalInfluence(model, layer).compute_convergence_delta(
            attrs, start, x, target=1, additional_forward_args=args)
    actual = compat.InternalInfluence(model, layer).compute_convergence_delta(
        attrs, start, x, target=1, additional_forward_args=args)
    assert_same(actual, expected)
    assert_same(fnattr.convergence_delta(model, attrs, start, x, 1, args,
                                         layer_attributions=True), expected)
    assert_same(compat.NoiseTunnel(compat.InternalInfluence(model, layer))
                .compute_convergence_delta(attrs, start, x, 1, args), expected)
    assert_same(compat.NoiseTunnel(C.InternalInfluence(model, layer))
                .compute_convergence_delta(attrs, start, x, 1, args), expected)


def test_convergence_delta_of_integrated_gradients_is_small_and_matches_captum():
    model, x, _ = mlp()
    with quiet():
        ig = C.IntegratedGradients(model)
        attrs, delta = ig.attribute(x, target=1, n_steps=20, return_convergence_delta=True)
    assert_same(fnattr.convergence_delta(model, attrs, None, x, 1), delta)


# ================================================================= interpolate


@pytest.mark.parametrize("shape,dims,mode", [
    ((2, 3, 4, 4), (8, 8), "nearest"),
    ((2, 3, 4, 4), (7, 9), "bilinear"),
    ((2, 3, 4, 4), 6, "nearest"),
    ((2, 3, 5, 5), (3, 3), "area"),
    ((2, 3, 4, 4), (6, 10), "bicubic"),
    ((2, 3, 5), 11, "linear"),
    ((2, 3, 5), (9,), "nearest"),
    ((1, 2, 3, 4, 4), (6, 8, 8), "trilinear"),
])
def test_interpolate_matches_captum(shape, dims, mode):
    attr = torch.randn(*shape)
    with quiet():
        expected = C.LayerAttribution.interpolate(attr, dims, mode)
    assert_same(fnattr.interpolate(attr, dims, mode), expected, atol=0, rtol=0)
    assert_same(compat.LayerAttribution.interpolate(attr, dims, mode), expected, atol=0, rtol=0)
    if mode == "nearest":
        assert_same(compat.LayerAttribution.interpolate(attr, dims), expected, atol=0, rtol=0)


def test_interpolate_internal_influence_of_conv_layer_to_input_size():
    model, x, _ = conv()
    attr = fnattr.internal_influence(model, model.conv2, x, target=1, n_steps=3)
    with quiet():
        expected = C.LayerAttribution.interpolate(
            captum_internal_influence(model, model.conv2, x, target=1, n_steps=3), (8, 8),
            "bilinear")
    up = fnattr.interpolate(attr, (8, 8), "bilinear")
    assert up.shape == (2, 6, 8, 8)
    assert_same(up, expected)


# ================================================================= path methods vs Captum


@pytest.mark.parametrize("case", [
    dict(setup="mlp", target=1, n_steps=5, method="gausslegendre"),
    dict(setup="mlp", target=[0, 2, 1], n_steps=4, method="riemann_trapezoid",
         baselines=torch.randn(1, 6), internal_batch_size=5),
    dict(setup="mlp", target=torch.tensor(3), n_steps=3, method="riemann_left",
         baselines=0.2, return_convergence_delta=True),
    dict(setup="multi", target=2, n_steps=3, baselines=(torch.randn(3, 4), 0.5),
         internal_batch_size=2, return_convergence_delta=True),
    dict(setup="out3d", target=[(0, 1), (1, 1), (1, 2)], n_steps=3, method="riemann_middle"),
    dict(setup="conv", target=4, n_steps=3, method="riemann_right"),
    dict(setup="mlp", target=0, n_steps=3, multiply_by_inputs=False, baselines=0.5),
])
def test_integrated_gradients_matches_captum(case):
    case = dict(case)
    model, x, args = SETUPS[case.pop("setup")]()
    mbi = case.pop("multiply_by_inputs", True)
    if args is not None:
        case["additional_forward_args"] = args
    with quiet():
        expected = C.IntegratedGradients(model, multiply_by_inputs=mbi).attribute(x, **case)
    actual = fnattr.integrated_gradients(model, x, multiply_by_inputs=mbi, **case)
    assert_same(actual, expected)


@pytest.mark.parametrize("case", [
    dict(setup="mlp", layer="fc1", sel=3, n_steps=4),
    dict(setup="mlp", layer="fc2", sel=(slice(0, 4),), n_steps=3, method="riemann_trapezoid",
         baselines=torch.randn(1, 6), internal_batch_size=4),
    dict(setup="conv", layer="conv2", sel=(0, 1, 1), n_steps=3, method="riemann_left"),
    dict(setup="multi", layer="relu", sel=2, n_steps=3, baselines=(0.1, torch.randn(3, 3))),
    dict(setup="inplace", layer="fc1", sel=5, n_steps=3, to_input=False),
    dict(setup="inplace", layer="relu1", sel=5, n_steps=3, to_input=True),
    dict(setup="reused", layer="relu", sel=4, n_steps=3),
    dict(setup="mlp", layer="relu1", sel=lambda v: v[:, 1] + v[:, 2], n_steps=3,
         multiply_by_inputs=False),
])
def test_neuron_integrated_gradients_matches_captum(case):
    case = dict(case)
    model, x, args = SETUPS[case.pop("setup")]()
    layer = _layer(model, case.pop("layer"))
    sel = case.pop("sel")
    to_input = case.pop("to_input", False)
    mbi = case.pop("multiply_by_inputs", True)
    if args is not None:
        case["additional_forward_args"] = args
    with quiet():
        expected = C.NeuronIntegratedGradients(model, layer, multiply_by_inputs=mbi).attribute(
            x, sel, attribute_to_neuron_input=to_input, **case)
    actual = fnattr.neuron_integrated_gradients(model, layer, x, sel,
                                                attribute_to_neuron_input=to_input,
                                                multiply_by_inputs=mbi, **case)
    assert_same(actual, expected)


def test_neuron_integrated_gradients_list_equals_stacked():
    model, x, _ = mlp()
    sels = [1, (slice(2, 5),), 7]
    many = fnattr.neuron_integrated_gradients(model, model.fc1, x, sels, n_steps=3)
    singles = torch.stack([fnattr.neuron_integrated_gradients(model, model.fc1, x, s, n_steps=3)
                           for s in sels])
    assert many.shape == (3, *x.shape)
    assert_same(many, singles)


@pytest.mark.parametrize("case", [
    dict(setup="mlp", layer="fc2", target=1, n_steps=4),
    dict(setup="mlp", layer="relu1", target=[0, 3, 1], n_steps=3, method="riemann_trapezoid",
         baselines=torch.randn(1, 6), internal_batch_size=7),
    dict(setup="conv", layer="conv2", target=2, n_steps=3, method="riemann_right",
         return_convergence_delta=True),
    dict(setup="multi", layer="relu", target=1, n_steps=3, baselines=(0.2, 0.0),
         return_convergence_delta=True),
    dict(setup="mlp", layer="fc2", target=2, n_steps=3, attribute_to_layer_input=True),
    dict(setup="inplace", layer="relu1", target=2, n_steps=3, attribute_to_layer_input=True),
    dict(setup="inplace", layer="fc1", target=2, n_steps=3),
    dict(setup="tuple", layer="split", target=0, n_steps=3),
])
def test_layer_conductance_matches_captum(case):
    case = dict(case)
    model, x, args = SETUPS[case.pop("setup")]()
    layer = _layer(model, case.pop("layer"))
    if args is not None:
        case["additional_forward_args"] = args
    with quiet():
        expected = C.LayerConductance(model, layer).attribute(x, **case)
    actual = fnattr.layer_conductance(model, layer, x, **case)
    assert_same(actual, expected)
