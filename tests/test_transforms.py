"""The public transforms (fnattr/_transforms.py) against naive references.

``layer_gradients`` and ``input_gradients`` against autograd on the model
split by hand at the layer; the objectives against indexing the output or the
layer's value; ``quadrature`` against the integrals its rules are exact for;
``path_average`` against closed-form path integrals; ``sample_paths`` against
what its draws must be. Tolerances (float32): ``atol=1e-6, rtol=1e-5``
(``assert_same``'s defaults), float64 ``atol=1e-12, rtol=1e-10``.
"""

from __future__ import annotations

import pytest
import torch

import fnattr

from ._reference import assert_same
from .conftest import MLP

F64 = {"atol": 1e-12, "rtol": 1e-10}


def _tail(mlp: MLP, h1):
    """The MLP after fc1, on fc1's value ``h1``."""
    return mlp.fc3(mlp.relu2(mlp.fc2(mlp.relu1(h1))))


def _grad(scalar, wrt):
    return torch.autograd.grad(scalar, wrt)[0]


# ------------------------------------------------------------ layer_gradients


@pytest.mark.parametrize("target", [0, 3, [0, 1, 3, 2, 2]])
def test_layer_gradients_equal_autograd_at_the_split_model(mlp, target):
    x = torch.randn(5, 6)
    (got,) = fnattr.layer_gradients(mlp, mlp.fc1, (x,), fnattr.target_objective(target))
    h1 = mlp.fc1(x).detach().requires_grad_()
    out = _tail(mlp, h1)
    rows = torch.arange(5)
    picked = out[:, target] if isinstance(target, int) else out[rows, torch.tensor(target)]
    assert_same(got, _grad(picked.sum(), h1))


def test_layer_gradients_at_the_layer_input(mlp):
    x = torch.randn(4, 6)
    (got,) = fnattr.layer_gradients(mlp, mlp.fc2, (x,), fnattr.target_objective(1),
                                    attribute_to_layer_input=True)
    a1 = mlp.relu1(mlp.fc1(x)).detach().requires_grad_()
    want = _grad(mlp.fc3(mlp.relu2(mlp.fc2(a1)))[:, 1].sum(), a1)
    assert_same(got, want)


def test_layer_gradients_of_k_targets_are_the_single_target_rows(mlp):
    x = torch.randn(4, 6)
    (many,) = fnattr.layer_gradients(mlp, mlp.fc2, (x,), fnattr.targets_objective([2, 0, 3]))
    assert many.shape == (3, 4, 8)
    for k, t in enumerate([2, 0, 3]):
        (one,) = fnattr.layer_gradients(mlp, mlp.fc2, (x,), fnattr.target_objective(t))
        assert_same(many[k], one)


def test_layer_gradients_return_the_layer_value(mlp):
    x = torch.randn(3, 6)
    (grads,), value = fnattr.layer_gradients(mlp, mlp.fc1, (x,), fnattr.target_objective(0),
                                             return_value=True)
    (value,) = value if isinstance(value, tuple) else (value,)
    assert_same(value, mlp.fc1(x).detach(), atol=0, rtol=0)
    assert grads.shape == value.shape


def test_layer_gradients_at_a_substituted_value(mlp):
    x = torch.randn(3, 6)
    v = torch.randn(3, 8)
    (got,) = fnattr.layer_gradients(mlp, mlp.fc1, (x,), fnattr.target_objective(2),
                                    substitute=(v,))
    h1 = v.clone().requires_grad_()
    assert_same(got, _grad(_tail(mlp, h1)[:, 2].sum(), h1))


def test_layer_gradients_with_create_graph_are_differentiable_in_float64():
    mlp = MLP().double()
    x = torch.randn(3, 6, dtype=torch.float64)
    (got,) = fnattr.layer_gradients(mlp, mlp.fc1, (x,), fnattr.target_objective(1),
                                    create_graph=True)
    assert got.requires_grad
    # d/dW3 of sum(layer gradient): autograd through the attribution vs. by hand
    h1 = mlp.fc1(x).detach().requires_grad_()
    (g,) = torch.autograd.grad(_tail(mlp, h1)[:, 1].sum(), h1, create_graph=True)
    (want,) = torch.autograd.grad(g.sum(), mlp.fc3.weight)
    (have,) = torch.autograd.grad(got.sum(), mlp.fc3.weight)
    assert_same(have, want, **F64)


# ------------------------------------------------------------ input_gradients


def test_input_gradients_of_a_target_equal_autograd(mlp):
    x = torch.randn(4, 6)
    (got,) = fnattr.input_gradients(mlp, (x,), fnattr.target_objective(3))
    xr = x.clone().requires_grad_()
    assert_same(got, _grad(mlp(xr)[:, 3].sum(), xr))


def test_input_gradients_of_a_linear_neuron_are_its_weight_row(mlp):
    x = torch.randn(4, 6)
    (got,) = fnattr.input_gradients(mlp, (x,), fnattr.neuron_objective((5,)), layer=mlp.fc1)
    assert_same(got, mlp.fc1.weight[5].detach().expand(4, 6), atol=0, rtol=0)


def test_input_gradients_of_every_neuron_are_the_jacobian(mlp):
    x = torch.randn(2, 6)
    (got,) = fnattr.input_gradients(mlp, (x,), fnattr.neuron_objective("all"), layer=mlp.fc1)
    assert got.shape == (8, 2, 6)
    assert_same(got, mlp.fc1.weight.detach()[:, None, :].expand(8, 2, 6), atol=0, rtol=0)


def test_input_gradients_of_a_summed_slice_and_a_callable_selector(mlp):
    x = torch.randn(3, 6)
    (sl,) = fnattr.input_gradients(mlp, (x,), fnattr.neuron_objective((slice(2, 5),)),
                                   layer=mlp.fc2)
    (fn,) = fnattr.input_gradients(mlp, (x,), fnattr.neuron_objective(lambda v: v[:, 2:5].sum(1)),
                                   layer=mlp.fc2)
    xr = x.clone().requires_grad_()
    want = _grad(mlp.fc2(mlp.relu1(mlp.fc1(xr)))[:, 2:5].sum(), xr)
    assert_same(sl, want)
    assert_same(fn, want)


def test_input_gradients_pass_additional_forward_args():
    def f(x, scale, shift):
        return (x * scale + shift) ** 2

    x, scale = torch.randn(3, 4), torch.randn(3, 4)
    (got,) = fnattr.input_gradients(f, (x,), fnattr.target_objective(1),
                                    additional_forward_args=(scale, 0.5))
    want = torch.zeros(3, 4)
    want[:, 1] = 2 * (x[:, 1] * scale[:, 1] + 0.5) * scale[:, 1]
    assert_same(got, want)


# ------------------------------------------------------------------ quadrature


@pytest.mark.parametrize("n", [1, 3, 8])
def test_gauss_legendre_integrates_polynomials_of_degree_2n_minus_1_exactly(n):
    alphas, weights = fnattr.quadrature("gausslegendre", n)
    a = torch.tensor(alphas, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    for degree in range(2 * n):
        assert float((w * a ** degree).sum()) == pytest.approx(1 / (degree + 1), rel=1e-12)


@pytest.mark.parametrize("method,node", [("riemann_left", lambda i, n: i / n),
                                         ("riemann_right", lambda i, n: (i + 1) / n),
                                         ("riemann_middle", lambda i, n: (i + 0.5) / n)])
def test_riemann_rules_are_equal_width_boxes(method, node):
    alphas, weights = fnattr.quadrature(method, 5)
    assert alphas == pytest.approx([node(i, 5) for i in range(5)], abs=1e-6)
    assert weights == pytest.approx([0.2] * 5, abs=1e-7)


def test_trapezoid_rule_is_captums_scaled_trapezoid():
    # Captum's weights are 1/n (halved at the ends) on n nodes spaced 1/(n-1):
    # the trapezoid rule scaled by 1 - 1/n, so linear functions integrate to
    # (1 - 1/n) times their integral (documented in quadrature's docstring)
    alphas, weights = fnattr.quadrature("riemann_trapezoid", 6)
    assert alphas[0] == 0 and alphas[-1] == pytest.approx(1.0)
    got = sum(w * (3 * a + 1) for a, w in zip(alphas, weights))
    assert got == pytest.approx((1 - 1 / 6) * 2.5, rel=1e-6)


# ---------------------------------------------------------------- path_average


def _square_grad(points, _target_rows, _args_rows):
    """The gradient of f(z) = sum(z**2): 2z."""
    return tuple(2 * p for p in points)


def test_path_average_times_delta_is_the_integral_of_the_gradient():
    # f(x) - f(b) = integral_0^1 f'(b + a (x - b)) da * (x - b), exact for
    # a quadratic f with two Gauss-Legendre nodes
    x = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, 4, dtype=torch.float64)
    alphas, weights = fnattr.quadrature("gausslegendre", 2)
    (got,) = fnattr.path_average(_square_grad, (x,), (b,), alphas, weights,
                                 multiply_by_delta=True)
    assert_same(got, x ** 2 - b ** 2, **F64)


def test_path_average_does_not_depend_on_internal_batch_size():
    x = torch.randn(5, 4, dtype=torch.float64)
    alphas, weights = fnattr.quadrature("riemann_trapezoid", 7)
    (whole,) = fnattr.path_average(_square_grad, (x,), (0.0,), alphas, weights)
    for ibs in (1, 3, 5, 12):
        (part,) = fnattr.path_average(_square_grad, (x,), (0.0,), alphas, weights,
                                      internal_batch_size=ibs)
        assert_same(part, whole, **F64)
    # without the delta: the average gradient, 2 * x * sum(w * alpha)
    assert_same(whole, 2 * x * sum(a * w for a, w in zip(alphas, weights)), **F64)


# ---------------------------------------------------------------- sample_paths


def test_sample_paths_are_reproducible_and_drawn_from_the_baselines():
    x = torch.randn(4, 3)
    base = torch.randn(5, 3)
    draw = lambda: fnattr.sample_paths((x,), (base,), 6, (0.0,),  # noqa: E731
                                       generator=torch.Generator().manual_seed(2))
    (ends,), (starts,), alphas = draw()
    (ends2,), (starts2,), alphas2 = draw()
    assert torch.equal(ends, ends2) and torch.equal(starts, starts2)
    assert torch.equal(alphas, alphas2)
    # stdev 0: every end is its input; every start one of the baseline rows
    assert_same(ends.reshape(-1, 4, 3), x.expand(ends.numel() // 12, 4, 3), atol=0, rtol=0)
    for row in starts.reshape(-1, 3):
        assert (base == row).all(1).any()
    assert ((alphas >= 0) & (alphas <= 1)).all()
    assert alphas.numel() == 6 * 4
