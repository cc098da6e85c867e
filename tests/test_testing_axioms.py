"""fnattr.testing.axioms: the checkers catch deliberately broken methods and pass the right one.

Each broken method below breaks one thing; the table says which assert
catches it (✗ = raises AssertionError) and which it slips past (✓):

| method                         | completeness | sensitivity | dummy | linearity | symmetry |
|--------------------------------|--------------|-------------|-------|-----------|----------|
| integrated gradients           | ✓            | ✓           | ✓     | ✓         | ✓        |
| attributions times 1.1         | ✗            |             |       |           |          |
| IG with the multiply dropped   | ✗            |             |       |           |          |
| permuted features              | ✓            | ✗           | ✗     |           |          |
| change spread evenly           | ✓            |             | ✗     |           |          |
| one feature after the other    | ✓            |             |       |           | ✗        |
| signed square of IG            |              |             |       | ✗         |          |
"""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import (
    GradientShap,
    GuidedBackprop,
    IntegratedGradients,
    LayerConductance,
    NeuronIntegratedGradients,
)
from hypothesis import find
from torch import nn

import fnattr
from fnattr.testing import axioms as ax
from fnattr.testing import property_settings
from fnattr.testing import strategies as fst

TOL = {"atol": 1e-6, "rtol": 1e-6}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the models are tiny: intra-op threads cost more than they save
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def case():
    return fst.build_model("mlp", "tanh", torch.float64, (4,), (5, 3), 2, 1)


@pytest.fixture
def x():
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture
def b():
    return torch.full((1, 4), 0.25, dtype=torch.float64)


# ---------------------------------------------------------------- right and broken methods


def ig(f, x, b, target, **kw):
    return fnattr.integrated_gradients(f, x, b, target, n_steps=64, **kw)


def scaled(f, x, b, target):
    return 1.1 * ig(f, x, b, target)


def no_multiply(f, x, b, target):
    return ig(f, x, b, target, multiply_by_inputs=False)


def permuted(f, x, b, target):
    return ig(f, x, b, target).roll(1, dims=1)


def spread(f, x, b, target):
    change = ax.output_at(f, x, target) - ax.output_at(f, b.expand_as(x), target)
    return (change[:, None] / x.shape[1]).expand_as(x)


def one_after_another(f, x, b, target):
    """The path that moves feature 0, then 1, ...: exact, but not symmetric."""
    point, out, attrs = b.expand_as(x).clone(), ax.output_at(f, b.expand_as(x), target), []
    for k in range(x.shape[1]):
        point[:, k] = x[:, k]
        new = ax.output_at(f, point, target)
        attrs.append(new - out)
        out = new
    return torch.stack(attrs, 1)


def signed_square(f, x, b, target):
    a = ig(f, x, b, target)
    return a * a.abs()


def test_integrated_gradients_passes_every_check(case, x, b):
    f = case.model
    ax.assert_completeness(ig, f, x, b, 1, **TOL)
    ax.assert_sensitivity(ig, f, x, b, 1, feature=2, atol=1e-9)
    ax.assert_dummy(ig, f, x, b, 1, feature=2, atol=0.0, rtol=0.0)
    ax.assert_linearity(ig, f, fst.build_model("mlp", "relu", torch.float64, (4,), (2,), 2, 3)
                        .model, x, b, 1, **TOL)
    ax.assert_symmetry(ig, f, x, b, 1, features=(0, 3), **TOL)


@pytest.mark.parametrize("broken", [scaled, no_multiply])
def test_completeness_catches_wrong_totals(case, x, b, broken):
    with pytest.raises(AssertionError, match=f"completeness violated by {broken.__name__}"):
        ax.assert_completeness(broken, case.model, x, b, 1, atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize("broken", [permuted, spread, one_after_another])
def test_misplaced_attributions_keep_completeness(case, x, b, broken):
    ax.assert_completeness(broken, case.model, x, b, 1, **TOL)


@pytest.mark.parametrize("broken", [permuted, spread])
def test_dummy_catches_attribution_on_an_ignored_feature(case, x, b, broken):
    with pytest.raises(AssertionError, match="dummy violated"):
        ax.assert_dummy(broken, case.model, x, b, 1, feature=0, atol=1e-3, rtol=1e-3)


def test_sensitivity_catches_a_feature_left_without_attribution(case, x, b):
    # only feature 1 differs; the permutation moves its attribution to feature 2
    with pytest.raises(AssertionError, match="sensitivity violated by permuted"):
        ax.assert_sensitivity(permuted, case.model, x, b, 1, feature=1, atol=1e-3)
    assert (ax.sensitivity(permuted, case.model, x, b, 1, feature=1) > 0).all()


def test_symmetry_catches_an_asymmetric_path(case, x, b):
    with pytest.raises(AssertionError, match="symmetry violated by one_after_another"):
        ax.assert_symmetry(one_after_another, case.model, x, b, 1, features=(0, 1),
                           atol=1e-3, rtol=1e-2)


def test_linearity_catches_a_nonlinear_method(case, x, b):
    other = fst.build_model("mlp", "softplus", torch.float64, (4,), (3,), 2, 2).model
    with pytest.raises(AssertionError, match="linearity violated by signed_square"):
        ax.assert_linearity(signed_square, case.model, other, x, b, 1, atol=1e-3, rtol=1e-2)


def test_implementation_invariance_catches_guided_backprop():
    fc = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        fc.weight.fill_(1.0)

    class TwoSided(nn.Module):  # relu(z) - relu(-z) == z; nn.ReLU modules, which Captum needs
        def __init__(self):
            super().__init__()
            self.fc, self.pos, self.neg = fc, nn.ReLU(), nn.ReLU()

        def forward(self, x):
            z = self.fc(x)
            return self.pos(z) - self.neg(-z)

    x = -torch.ones(2, 1, dtype=torch.float64)
    for gbp in (ax.from_fnattr(fnattr.guided_backprop), ax.from_captum(GuidedBackprop)):
        with pytest.raises(AssertionError, match="implementation invariance violated"):
            ax.assert_implementation_invariance(gbp, fc, TwoSided(), x, None, 0, **TOL)
    ax.assert_implementation_invariance(ig, fc, TwoSided(), x, None, 0, **TOL)


def test_implementation_invariance_passes_integrated_gradients_on_an_equivalent_model():
    case = fst.build_model("conv", "relu", torch.float64, (2, 3, 3), (3,), 2, 4)
    twin = find(fst.equivalent_models(case), lambda t: t.equivalence[0][0] != (0, 1, 2),
                settings=property_settings(database=None))
    x = torch.rand(2, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ax.assert_implementation_invariance(ig, case.model, twin.model, x, None, 1, **TOL)


# ---------------------------------------------------------------- adapters


def test_captum_classes_plug_in(case, x, b):
    f = case.model
    ax.assert_completeness(ax.from_captum(IntegratedGradients, n_steps=64), f, x, b, 1, **TOL)
    cond = ax.from_captum(LayerConductance, layer="fc1", n_steps=256)
    ax.assert_layer_completeness(cond, f, x, b, 1, atol=1e-3, rtol=1e-2)
    nig = ax.from_captum(NeuronIntegratedGradients, layer="act0", neuron_selector=(2,),
                         n_steps=64)
    ax.assert_completeness(nig, f, x, b, **TOL)
    ax.assert_dummy(nig, f, x, b, feature=3, atol=0.0, rtol=0.0)  # the layer resolves by name


def test_captum_sampling_is_seeded_and_the_global_rngs_are_restored(case, x, b):
    gs = ax.from_captum(GradientShap, n_samples=3, stdevs=0.1, seed=0)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    first, second = gs(case.model, x, b, 1), gs(case.model, x, b, 1)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == np_state).all()


def test_fnattr_adapter_binds_and_filters_arguments(case, x, b):
    f = case.model
    nig = ax.from_fnattr(fnattr.neuron_integrated_gradients, layer=case.layers["fc1"],
                         neuron_selector=(0,), n_steps=64)
    ax.assert_completeness(nig, f, x, b, **TOL)  # the neuron's value, not an output
    assert "neuron_integrated_gradients(" in nig.name and "n_steps=64" in nig.name
    gs = ax.from_fnattr(fnattr.gradient_shap, n_samples=2, seed=3)
    torch.testing.assert_close(gs(f, x, b, 0), gs(f, x, b, 0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="seed"):
        ax.from_fnattr(fnattr.integrated_gradients, seed=0)
    with pytest.raises(ValueError, match="layer"):
        ax.from_fnattr(fnattr.neuron_gradient, neuron_selector=(0,))


def test_additional_forward_args_and_tuple_inputs_reach_the_model():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4).double(), nn.Linear(2, 4).double()

        def forward(self, x1, x2, scale):
            return torch.tanh(self.a(x1) + self.b(x2)) * scale

    g = torch.Generator().manual_seed(0)
    f = TwoInputs()
    xs = (torch.randn(2, 3, generator=g, dtype=torch.float64),
          torch.randn(2, 2, generator=g, dtype=torch.float64))
    scale = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    for method in (ig, ax.from_captum(IntegratedGradients, n_steps=64)):
        ax.assert_completeness(method, f, xs, None, 2, additional_forward_args=(scale,), **TOL)

    def drops_args(f, x, b, target, additional_forward_args):
        return ig(f, x, b, target, additional_forward_args=(torch.ones_like(scale),))

    with pytest.raises(AssertionError, match="example 1"):  # the example with scale 3
        ax.assert_completeness(drops_args, f, xs, None, 2, additional_forward_args=(scale,),
                               **TOL)


def test_user_neuron_method_declares_what_it_explains(case, x, b):
    def my_neuron_ig(f, x, b, target):
        return fnattr.neuron_integrated_gradients(f, "act1", x, (1,), b, n_steps=64)

    wrapped = ax.Attribution(my_neuron_ig, explains=ax.neuron_value("act1", (1,)))
    ax.assert_completeness(wrapped, case.model, x, b, **TOL)
    with pytest.raises(AssertionError):  # as a bare callable it is read as explaining the output
        ax.assert_completeness(my_neuron_ig, case.model, x, b, 0, **TOL)


# ---------------------------------------------------------------- measurements


def test_output_at_reads_captum_targets():
    out = torch.arange(24.0).reshape(2, 3, 4)
    f = lambda x: out + 0 * x  # noqa: E731
    x = torch.zeros(2, 1, 1)
    torch.testing.assert_close(ax.output_at(f, x), out.sum((1, 2)))
    torch.testing.assert_close(ax.output_at(f, x, 1), out[:, 1].sum(1))
    torch.testing.assert_close(ax.output_at(f, x, np.int64(1)), out[:, 1].sum(1))
    torch.testing.assert_close(ax.output_at(f, x, (2, 3)), out[:, 2, 3])
    torch.testing.assert_close(ax.output_at(f, x, [(0, 1), (2, 2)]),
                               torch.stack([out[0, 0, 1], out[1, 2, 2]]))
    torch.testing.assert_close(ax.output_at(f, x, torch.tensor([2, 0])),
                               torch.stack([out[0, 2].sum(), out[1, 0].sum()]))


def test_neuron_value_selectors(case, x):
    value = case.model.fc1(case.model.act0(case.model.fc0(x)))
    read = lambda sel, **kw: ax.neuron_value("fc1", sel, **kw)(case.model, x)  # noqa: E731
    torch.testing.assert_close(read(2), value[:, 2])
    torch.testing.assert_close(read((slice(0, 2),)), value[:, :2].sum(1))
    torch.testing.assert_close(read(lambda v: v.max(1).values), value.max(1).values)
    torch.testing.assert_close(read((1,), attribute_to_neuron_input=True),
                               case.model.act0(case.model.fc0(x))[:, 1])


def test_assert_messages_name_method_axiom_and_example(case, x, b):
    def late_bug(f, x, b, target):
        a = ig(f, x, b, target)
        return torch.cat([a[:2], 3 * a[2:]])  # only the last example is wrong

    with pytest.raises(AssertionError, match=r"completeness violated by late_bug: violation "
                       r"\S+ at example 2 .*\(1 of 3 examples fail\)"):
        ax.assert_completeness(late_bug, case.model, x, b, 1, **TOL)


def test_nan_attributions_fail(case, x, b):
    def nan(f, x, b, target):
        return torch.full_like(x, float("nan"))

    assert ax.completeness(nan, case.model, x, b, 1).isnan().all()
    with pytest.raises(AssertionError):
        ax.assert_completeness(nan, case.model, x, b, 1, atol=1.0, rtol=1.0)
    with pytest.raises(AssertionError):
        ax.assert_dummy(nan, case.model, x, b, 1, feature=0, atol=1.0, rtol=1.0)


def test_bad_feature_arguments_raise(case, x, b):
    with pytest.raises(ValueError, match="feature"):
        ax.dummy(ig, case.model, x, b, 1, feature=4)
    with pytest.raises(ValueError, match="feature"):
        ax.sensitivity(ig, case.model, x, b, 1, feature=(0, 0))
    with pytest.raises(ValueError, match="features"):
        ax.symmetry(ig, case.model, x, b, 1, features=(0,))
    with pytest.raises(TypeError, match="inputs"):
        ax.dummy(ig, case.model, (x,), b, 1, feature=0)


def test_the_example_script_passes():
    example = Path(__file__).parents[1] / "examples" / "property_test_your_method.py"
    runpy.run_path(str(example))["test_my_integrated_gradients"]()
