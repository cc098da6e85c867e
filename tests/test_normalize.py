"""Argument meanings (fnattr/_normalize.py), through the public functions.

Each of Captum's argument forms must mean what the naive reading says: a
``target`` form picks the same numbers as indexing the output by hand; the
baseline forms equal the explicit full baseline; a tensor and a 1-tuple of it
give the same numbers in the form they came in; a non-tuple
``additional_forward_args`` is one argument; tensor targets and neuron
indices mean what ints mean (issues 12, 13). Bad arguments are in
``test_normalize_errors.py``.
"""

from __future__ import annotations

import pytest
import torch

import fnattr

from ._reference import OneOut, Out3D, assert_same, quiet
from .conftest import MLP, ConvNet, MultiInput

N = 4


def _mlp():
    torch.manual_seed(0)
    return MLP().eval(), torch.randn(5, 6)


def _rows(t):
    return torch.arange(N), torch.as_tensor(t)


TARGETS = {
    # target -> how to pick it from a (N, 4) output by hand
    "int": (2, lambda out: out[:, 2]),
    "0-d-tensor": (torch.tensor(3), lambda out: out[:, 3]),
    "1-d-tensor": (torch.tensor([0, 3, 1, 1]), lambda out: out[_rows([0, 3, 1, 1])]),
    "list-of-ints": ([1, 1, 0, 2], lambda out: out[_rows([1, 1, 0, 2])]),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_forms_pick_what_indexing_picks(name):
    target, pick = TARGETS[name]
    out = torch.randn(N, 4)
    assert_same(fnattr.target_objective(target)(out, None), pick(out), atol=0, rtol=0)


def test_tuple_targets_index_multi_dimensional_outputs():
    out = torch.randn(N, 2, 3)
    assert_same(fnattr.target_objective((1, 2))(out, None), out[:, 1, 2], atol=0, rtol=0)
    per_example = [(0, 0), (1, 2), (0, 1), (1, 1)]
    want = torch.stack([out[i][t] for i, t in enumerate(per_example)])
    assert_same(fnattr.target_objective(per_example)(out, None), want, atol=0, rtol=0)


def test_no_target_needs_one_output_per_example():
    model = OneOut().eval()
    x = torch.randn(N, 6)
    xr = x.clone().requires_grad_()
    assert_same(fnattr.gradient(model, x), torch.autograd.grad(model(xr).sum(), xr)[0])
    keep = OneOut(keepdim=True).eval()
    keep.load_state_dict(model.state_dict())
    assert_same(fnattr.gradient(keep, x), fnattr.gradient(model, x), atol=0, rtol=0)


def test_each_stacks_every_target_form():
    model = Out3D().eval()
    x = torch.randn(N, 6)
    targets = [(0, 1), [(1, 2), (0, 0), (0, 2), (1, 0)]]
    many = fnattr.gradient(model, x, target=fnattr.each(targets))
    assert many.shape == (2, N, 6)
    for k, t in enumerate(targets):
        assert_same(many[k], fnattr.gradient(model, x, target=t))


@pytest.mark.parametrize("form", ["none", "number", "one-row", "per-example", "tuple"])
def test_baseline_forms_equal_the_explicit_full_baseline(mlp, form):
    x = torch.randn(N, 6)
    full = {"none": torch.zeros(N, 6), "number": torch.full((N, 6), 0.5),
            "one-row": torch.linspace(-1, 1, 6).expand(N, 6),
            "per-example": torch.randn(N, 6), "tuple": torch.full((N, 6), 0.25)}[form]
    given = {"none": None, "number": 0.5, "one-row": full[:1], "per-example": full,
             "tuple": (0.25,)}[form]
    got = fnattr.integrated_gradients(mlp, x, given, target=1, n_steps=8)
    assert_same(got, fnattr.integrated_gradients(mlp, x, full.clone(), target=1, n_steps=8))


def test_a_tensor_and_its_one_tuple_give_the_same_numbers_in_their_form(mlp):
    x = torch.randn(N, 6)
    plain = fnattr.gradient(mlp, x, target=0)
    as_tuple = fnattr.gradient(mlp, (x,), target=0)
    assert isinstance(plain, torch.Tensor)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert_same(as_tuple[0], plain, atol=0, rtol=0)


def test_a_non_tuple_additional_forward_arg_is_one_argument():
    model = MultiInput().eval()
    x1, x2 = torch.randn(N, 4), torch.randn(N, 3)
    scale = torch.rand(N, 6) + 0.5
    a = fnattr.gradient(lambda x, s: model(x, x2, s), x1, target=1, additional_forward_args=scale)
    b = fnattr.gradient(lambda x, s: model(x, x2, s), x1, target=1,
                        additional_forward_args=(scale,))
    xr = x1.clone().requires_grad_()
    want = torch.autograd.grad(model(xr, x2, scale)[:, 1].sum(), xr)[0]
    assert_same(a, want)
    assert_same(b, want)


def test_neuron_selector_forms():
    model = MLP().eval()
    x = torch.randn(N, 6)
    one = fnattr.neuron_gradient(model, model.fc2, x, 3)
    assert_same(one, fnattr.neuron_gradient(model, model.fc2, x, (3,)), atol=0, rtol=0)
    many = fnattr.neuron_gradient(model, model.fc2, x, [3, (5,), lambda v: v[:, 1]])
    assert many.shape == (3, N, 6)
    assert_same(many[0], one)
    assert_same(many[1], fnattr.neuron_gradient(model, model.fc2, x, 5))
    assert_same(many[2], fnattr.neuron_gradient(model, model.fc2, x, 1))


def test_tensor_targets_mean_what_ints_mean():
    model, x = _mlp()
    ii = lambda t: fnattr.internal_influence(model, model.fc2, x, target=t, n_steps=3)
    assert_same(ii(torch.tensor(-1)), ii(3), atol=0, rtol=0)
    assert_same(ii(torch.tensor(2, dtype=torch.int32)), ii(2), atol=0, rtol=0)
    # 12.2: a one-element tensor is that class for every example, as in Captum
    assert_same(ii(torch.tensor([2])), ii(2), atol=0, rtol=0)
    assert_same(fnattr.gradient(model, x, torch.tensor([2])), fnattr.gradient(model, x, 2))
    # negative per-example targets index from the end, as a negative int does
    assert_same(ii([-1, 0, -4, 1, -2]), ii([3, 0, 0, 1, 2]), atol=0, rtol=0)
    assert_same(ii(torch.tensor([-1, 0, -4, 1, -2])), ii([3, 0, 0, 1, 2]), atol=0, rtol=0)


def test_one_element_tensor_target_matches_captum():
    from captum.attr import IntegratedGradients

    model, x = _mlp()
    with quiet():
        expected = IntegratedGradients(model).attribute(x, target=torch.tensor([2]), n_steps=5)
    ours = fnattr.integrated_gradients(model, x, target=torch.tensor([2]), n_steps=5)
    assert_same(ours, expected)
    g = torch.Generator().manual_seed(0)
    shap = fnattr.gradient_shap(model, x, torch.zeros(2, 6), target=torch.tensor([2]),
                                return_convergence_delta=True, generator=g)
    g = torch.Generator().manual_seed(0)
    assert_same(shap[0], fnattr.gradient_shap(model, x, torch.zeros(2, 6), target=2,
                                              generator=g))


def test_tensor_neuron_indices_mean_what_ints_mean():
    torch.manual_seed(0)
    model, img = ConvNet().eval(), torch.randn(2, 3, 8, 8)
    ng = lambda s: fnattr.neuron_gradient(model, model.conv2, img, s)
    t = torch.tensor
    assert_same(ng((t(1), t(-1), t(0))), ng((1, 3, 0)), atol=0, rtol=0)
    assert_same(ng([(t(1), t(2), t(0)), (0, 1, 1)]), ng([(1, 2, 0), (0, 1, 1)]), atol=0,
                rtol=0)


def test_callable_selector_returning_n_by_1_matches_captum():
    from captum.attr import NeuronGradient

    model, x = _mlp()
    selector = lambda v: v[:, 2:3] * v[:, 3:4]  # shape (N, 1)
    with quiet():
        expected = NeuronGradient(model, model.fc1).attribute(x, selector)
    assert_same(fnattr.neuron_gradient(model, model.fc1, x, selector), expected)
    assert_same(fnattr.neuron_gradient(model, model.fc1, x, [selector, 1])[0], expected)
