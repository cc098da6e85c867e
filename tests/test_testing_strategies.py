"""fnattr.testing.strategies: drawn models run, drawn values fit them, failures shrink small."""

from __future__ import annotations

import pytest
import torch
from hypothesis import find, given
from hypothesis import strategies as st
from hypothesis.vendor.pretty import pretty

import fnattr
from fnattr.testing import axioms as ax
from fnattr.testing import property_settings
from fnattr.testing import strategies as fst

SETTINGS = property_settings(max_examples=25)
FIND = property_settings(max_examples=300, database=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the drawn models are tiny: intra-op threads cost more than they save
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layer_values(case, x):
    values = {}
    hooks = [m.register_forward_hook(lambda _m, _a, out, n=n: values.__setitem__(n, out))
             for n, m in case.layers.items()]
    try:
        out = case.model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, values


@SETTINGS
@given(st.data())
def test_drawn_models_run_on_drawn_inputs(data):
    case = data.draw(fst.models())
    x = data.draw(fst.inputs(case, batch=st.integers(1, 4)))
    assert x.dtype == case.dtype and x.shape[1:] == case.input_shape
    out, values = _layer_values(case, x)
    assert out.shape == (x.shape[0], case.n_outputs) and out.dtype == case.dtype
    assert torch.isfinite(out).all()
    assert {n: tuple(v.shape[1:]) for n, v in values.items()} == case.layer_shapes
    assert len(case.widths) <= 3 and max(case.widths) <= 8


@SETTINGS
@given(st.data())
def test_selectors_pick_one_neuron_of_their_layer(data):
    case = data.draw(fst.models())
    layer = data.draw(fst.layers(case))
    selector = data.draw(fst.neuron_selectors(case, layer))
    x = data.draw(fst.inputs(case, batch=2))
    _, values = _layer_values(case, x)
    assert values[layer][(slice(None), *selector)].shape == (2,)
    # and fnattr accepts it: the neuron gradient has the input's shape
    assert fnattr.neuron_gradient(case.model, layer, x, selector).shape == x.shape


@SETTINGS
@given(st.data())
def test_baselines_targets_and_features_fit_the_model(data):
    case = data.draw(fst.models())
    b = data.draw(fst.baselines(case))
    assert b.shape == (1, *case.input_shape) and b.dtype == case.dtype
    assert data.draw(fst.targets(case)) in range(case.n_outputs)
    per_example = data.draw(fst.targets(case, batch=3))
    assert per_example in range(case.n_outputs) or (
        len(per_example) == 3 and all(t in range(case.n_outputs) for t in per_example))
    feature = data.draw(fst.features(case))
    assert torch.zeros(case.input_shape)[feature].dim() == 0
    assert "out" not in case.layers or data.draw(fst.layers(case, include_output=False)) != "out"


@SETTINGS
@given(fst.attribution_problems())
def test_attribution_problems_are_consistent(p):
    assert p.model is p.case.model
    assert p.inputs.shape[1:] == p.baselines.shape[1:] == p.case.input_shape
    assert p.layer in p.case.layers and p.target in range(p.case.n_outputs)
    assert len(p.neuron_selector) == len(p.case.layer_shapes[p.layer])


@SETTINGS
@given(st.data())
def test_equivalent_models_compute_the_same_function(data):
    case = data.draw(fst.models())
    twin = data.draw(fst.equivalent_models(case))
    x = data.draw(fst.inputs(case))
    tol = 1e-5 if case.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(twin.model(x), case.model(x), atol=tol, rtol=tol)
    assert twin.layer_shapes == case.layer_shapes
    assert len(twin.equivalence) == len(case.widths)


def test_equivalent_models_change_the_parameters():
    case = find(fst.models(kind=("mlp",), activations=("relu",)),
                lambda c: c.widths[0] >= 3, settings=FIND)
    twin = find(fst.equivalent_models(case),
                lambda t: t.equivalence[0][0] != tuple(range(case.widths[0])), settings=FIND)
    assert not torch.equal(twin.model.fc0.weight, case.model.fc0.weight)


@SETTINGS
@given(fst.models(), fst.models())
def test_weights_come_from_the_drawn_seed_not_the_global_rng(a, b):
    state = torch.get_rng_state()
    rebuilt = fst.build_model(a.kind, a.activation, a.dtype, a.input_shape, a.widths,
                              a.n_outputs, a.seed)
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(a.model.parameters(), rebuilt.model.parameters()):
        assert torch.equal(p, q)


def test_both_dtypes_get_the_same_weights():
    args = ("mlp", "tanh", (3,), (4, 2), 2, 7)
    f32 = fst.build_model(args[0], args[1], torch.float32, *args[2:])
    f64 = fst.build_model(args[0], args[1], torch.float64, *args[2:])
    for p, q in zip(f32.model.parameters(), f64.model.parameters()):
        assert torch.equal(p, q.float())


def test_shrinks_to_the_smallest_model():
    assert repr(find(fst.models(), lambda c: True, settings=FIND)) == (
        "ModelCase(kind='mlp', activation='tanh', dtype=torch.float32, input_shape=(1,), "
        "widths=(1,), n_outputs=1, seed=0, equivalence=())")
    conv = find(fst.models(), lambda c: c.kind == "conv" and c.activation == "relu",
                settings=FIND)
    assert (conv.input_shape, conv.widths, conv.dtype) == ((1, 1, 1), (1,), torch.float32)


def test_a_failing_property_shrinks_to_a_one_unit_model():
    # "plain gradient is complete" is false; the minimal counterexample needs
    # one hidden unit and one layer, whatever model first falsified it
    grad = ax.from_fnattr(fnattr.gradient)
    p = find(fst.attribution_problems(),
             lambda p: bool(ax.completeness(grad, p.model, p.inputs, p.baselines,
                                            p.target).abs().max() > 1e-2),
             settings=FIND)
    assert p.case.widths == (1,) and p.case.kind == "mlp" and p.case.input_shape == (1,)
    assert p.inputs.shape[0] == 1 and p.case.n_outputs == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        find(fst.models(kind=("rnn",)), lambda c: True, settings=FIND)
    with pytest.raises(ValueError, match="activations"):
        find(fst.models(activations=("gelu",)), lambda c: True, settings=FIND)
    with pytest.raises(ValueError, match="input_shape"):
        find(fst.models(kind=("conv",), input_shape=(3,)), lambda c: True, settings=FIND)
    case = fst.build_model("mlp", "tanh", torch.float32, (1,), (1,), 1, 0)
    with pytest.raises(ValueError, match="layer"):
        fst.neuron_selectors(case, "nope")
    with pytest.raises(ValueError, match="kinds"):
        find(fst.baselines(case, kinds=("ones",)), lambda b: True, settings=FIND)


def test_model_case_prints_short_in_falsifying_examples():
    case = fst.build_model("conv", "relu", torch.float64, (2, 3, 3), (4, 4), 2, 5)
    assert pretty(case) == repr(case) and "Sequential" not in repr(case)
