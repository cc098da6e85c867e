"""Gradient SHAP (issue 3): fnattr.gradient_shap / neuron_gradient_shap.

Gradient SHAP is random, so exact comparisons with Captum are made three ways:

1. cases whose answer does not depend on the draws (affine models, gradients
   constant along the path);
2. replaying Captum's own draws (same numpy/torch seeds, see
   ``_shap_reference.captum_draws``) through ``fnattr.path_average``: equality
   to float tolerance validates the math independently of the RNG;
3. fnattr's own draws (``fnattr.sample_paths`` with the same generator seed)
   through a naive per-point Python loop.

Statistical tests use fixed seeds and 5-sigma bounds stated next to each.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fnattr
from fnattr.compat import GradientShap as FGradientShap
from fnattr.compat import NeuronGradientShap as FNeuronGradientShap

from ._shap_reference import captum_draws, captum_gradient_shap, naive_per_sample, seeded
from .conftest import ConvNet, MultiInput

DT = torch.float64


@contextlib.contextmanager
def quiet():
    """Silences Captum's own warnings (the oracle, not the code under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tanh_net(d_in=5, d_hidden=8, d_out=3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh(), nn.Linear(d_hidden, d_out)).to(DT)


def softplus_net(d_in=5, d_hidden=8, d_out=3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.Softplus(), nn.Linear(d_hidden, d_out)).to(DT)


class PathConstant(nn.Module):
    """``W x + c^T sin(x[:, :2])``: nonlinear, but its gradient only depends on
    the first two features, which the tests keep equal in inputs and baseline,
    so the gradient is constant along every path from the baseline."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)
        self.c = nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        return self.lin(x) + torch.sin(x[:, :2]) @ self.c


# --------------------------------------------------------------------------
# 1. Exact cases independent of the draws
# --------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0, 2, [1, 0, 2, 2], torch.tensor([2, 1, 0, 1])])
@pytest.mark.parametrize("stdevs", [0.0, 0.7])
def test_affine_local_attribution_is_weight_row(target, stdevs):
    model = nn.Linear(5, 3).to(DT)
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(9, 5, dtype=DT)
    attr = fnattr.gradient_shap(model, x, b, n_samples=7, stdevs=stdevs, target=target,
                                multiply_by_inputs=False, generator=gen(1))
    rows = torch.as_tensor(target).expand(4) if not isinstance(target, int) else torch.full((4,), target)
    expected = model.weight.detach()[rows]
    torch.testing.assert_close(attr, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", [1, [2, 0, 1, 1]])
def test_affine_global_single_baseline_no_noise(target):
    model = nn.Linear(5, 3).to(DT)
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(1, 5, dtype=DT)
    attr = fnattr.gradient_shap(model, x, b, n_samples=6, stdevs=0.0, target=target,
                                generator=gen(2))
    rows = torch.as_tensor(target).expand(4) if isinstance(target, list) else torch.full((4,), target)
    torch.testing.assert_close(attr, model.weight.detach()[rows] * (x - b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("multiply_by_inputs,stdevs,n_base", [(False, 0.5, 8), (True, 0.0, 1)])
def test_affine_matches_captum(multiply_by_inputs, stdevs, n_base):
    model = nn.Linear(5, 3).to(DT)
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(n_base, 5, dtype=DT)
    ref = captum_gradient_shap(
        (model, multiply_by_inputs),
        dict(inputs=x, baselines=b, n_samples=5, stdevs=stdevs, target=2), 0, 0)
    ours = fnattr.gradient_shap(model, x, b, n_samples=5, stdevs=stdevs, target=2,
                                multiply_by_inputs=multiply_by_inputs, generator=gen(0))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("multiply_by_inputs", [False, True])
def test_path_constant_gradient_matches_captum(seed, multiply_by_inputs):
    model = PathConstant().to(DT)
    x = torch.randn(4, 5, dtype=DT)
    b = torch.randn(1, 5, dtype=DT)
    x[:, :2] = b[:, :2]  # gradient constant along the path b -> x
    ref = captum_gradient_shap(
        (model, multiply_by_inputs),
        dict(inputs=x, baselines=b, n_samples=4, stdevs=0.0, target=1), seed, seed)
    ours = fnattr.gradient_shap(model, x, b, n_samples=4, target=1,
                                multiply_by_inputs=multiply_by_inputs, generator=gen(seed + 10))
    grad = fnattr.gradient(model, x, target=1)
    expected = grad * (x - b) if multiply_by_inputs else grad
    torch.testing.assert_close(ref, expected, rtol=1e-12, atol=1e-12)  # the case is exact
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# 2. Exact parity with Captum by replaying its draws through path_average
# --------------------------------------------------------------------------


def replay(model, inputs, draws, *, target=None, args=(), multiply_by_inputs=True,
           layer=None, selector=None, internal_batch_size=None):
    ends, starts, alphas = draws
    s = alphas.shape[0]
    if layer is None:
        def grad_fn(points, target_rows, args_rows):
            return fnattr.input_gradients(model, points, fnattr.target_objective(target_rows),
                                          additional_forward_args=args_rows)
    else:
        def grad_fn(points, _t, args_rows):
            return fnattr.input_gradients(model, points, fnattr.neuron_objective(selector),
                                          additional_forward_args=args_rows, layer=layer)
    return fnattr.path_average(grad_fn, ends, starts, alphas, [1.0 / s] * s, target=target,
                               additional_forward_args=args,
                               multiply_by_delta=multiply_by_inputs,
                               internal_batch_size=internal_batch_size)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("seed", [0, 5])
def test_replayed_draws_match_captum_tanh(multiply_by_inputs, seed):
    model = tanh_net()
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(6, 5, dtype=DT)
    target = torch.tensor([0, 2, 1, 2])
    ref, ref_delta = captum_gradient_shap(
        (model, multiply_by_inputs),
        dict(inputs=x, baselines=b, n_samples=7, stdevs=0.3, target=target,
             return_convergence_delta=True), seed, seed + 1)
    draws = captum_draws((x,), (b,), 7, 0.3, seed, seed + 1)
    (ours,) = replay(model, (x,), draws, target=target, multiply_by_inputs=multiply_by_inputs)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    if multiply_by_inputs:
        # Captum's delta: one per (example, sample), example-major rows n*S+s.
        _, deltas = naive_per_sample(model, *draws, target=target)
        torch.testing.assert_close(ref_delta, deltas.T.reshape(-1), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("internal_batch_size", [None, 5])
def test_replayed_draws_match_captum_relu_convnet(internal_batch_size):
    model = ConvNet().eval()
    x, b = torch.randn(3, 3, 8, 8), torch.randn(5, 3, 8, 8)
    ref = captum_gradient_shap(
        (model,), dict(inputs=x, baselines=b, n_samples=6, stdevs=0.2, target=3), 3, 4)
    draws = captum_draws((x,), (b,), 6, 0.2, 3, 4)
    (ours,) = replay(model, (x,), draws, target=3, internal_batch_size=internal_batch_size)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


NEURON_SELECTORS = {
    "tuple": (1, 2, 3),
    "slices": (1, slice(0, 2), slice(2, 4)),
    "callable": lambda value: value[:, 2, 1:3, 0:2].sum((1, 2)),
}


@pytest.mark.parametrize("selector_kind", list(NEURON_SELECTORS))
@pytest.mark.parametrize("attribute_to_neuron_input", [False, True])
def test_replayed_draws_match_captum_neuron_convnet(attribute_to_neuron_input, selector_kind):
    model = ConvNet().eval()
    x, b = torch.randn(3, 3, 8, 8), torch.randn(5, 3, 8, 8)
    selector = NEURON_SELECTORS[selector_kind]
    ref = captum_gradient_shap(
        (model, model.conv2),
        dict(inputs=x, neuron_selector=selector, baselines=b, n_samples=6, stdevs=0.1,
             attribute_to_neuron_input=attribute_to_neuron_input), 7, 8, neuron=True)
    draws = captum_draws((x,), (b,), 6, 0.1, 7, 8)
    ends, starts, alphas = draws
    s = alphas.shape[0]

    def grad_fn(points, _t, args_rows):
        return fnattr.input_gradients(model, points, fnattr.neuron_objective(selector),
                                      additional_forward_args=args_rows, layer=model.conv2,
                                      attribute_to_layer_input=attribute_to_neuron_input)

    (ours,) = fnattr.path_average(grad_fn, ends, starts, alphas, [1.0 / s] * s,
                                  multiply_by_delta=True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_replayed_draws_match_captum_multi_input_with_args():
    model = MultiInput().to(DT)
    x1, x2 = torch.randn(4, 4, dtype=DT), torch.randn(4, 3, dtype=DT)
    b1, b2 = torch.randn(5, 4, dtype=DT), torch.randn(3, 3, dtype=DT)
    scale = torch.rand(4, 6, dtype=DT) + 0.5  # per-example: repeated with the samples
    target = [0, 2, 1, 0]
    ref = captum_gradient_shap(
        (model,), dict(inputs=(x1, x2), baselines=(b1, b2), n_samples=5, stdevs=(0.1, 0.4),
                       target=target, additional_forward_args=(scale, True)), 11, 12)
    draws = captum_draws((x1, x2), (b1, b2), 5, (0.1, 0.4), 11, 12)
    ours = replay(model, (x1, x2), draws, target=target, args=(scale, True))
    assert isinstance(ref, tuple) and len(ours) == 2
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# 3. fnattr's own draws against a naive per-point loop (args, targets, delta order)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("target", [torch.tensor([2, 0, 1]), torch.tensor(1), [0, 2, 2], 2],
                         ids=["tensor1d", "tensor0d", "list", "int"])
def test_own_draws_match_naive_loop_single_input(target):
    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    attr, delta = fnattr.gradient_shap(model, x, b, n_samples=6, stdevs=0.25, target=target,
                                       return_convergence_delta=True, generator=gen(21))
    draws = fnattr.sample_paths((x,), (b,), 6, (0.25,), gen(21))
    (per_point,), deltas = naive_per_sample(model, *draws, target=target)
    torch.testing.assert_close(attr, per_point.mean(0), rtol=1e-10, atol=1e-12)
    # Captum's layout: N * n_samples deltas, example-major (row n * S + s).
    assert delta.shape == (3 * 6,)
    torch.testing.assert_close(delta, deltas.T.reshape(-1), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("internal_batch_size", [None, 2, 7])
def test_own_draws_match_naive_loop_multi_input_with_args(internal_batch_size):
    model = MultiInput().to(DT)
    x1, x2 = torch.randn(3, 4, dtype=DT), torch.randn(3, 3, dtype=DT)
    b1, b2 = torch.randn(5, 4, dtype=DT), torch.randn(2, 3, dtype=DT)
    scale = torch.rand(3, 6, dtype=DT) + 0.5
    target = [1, 2, 0]
    attr, delta = fnattr.gradient_shap(model, (x1, x2), (b1, b2), n_samples=5,
                                       stdevs=(0.2, 0.05), target=target,
                                       additional_forward_args=(scale, True),
                                       return_convergence_delta=True, generator=gen(4),
                                       internal_batch_size=internal_batch_size)
    draws = fnattr.sample_paths((x1, x2), (b1, b2), 5, (0.2, 0.05), gen(4))
    per_point, deltas = naive_per_sample(model, *draws, target=target, args=(scale, True))
    assert isinstance(attr, tuple) and len(attr) == 2
    for a, p in zip(attr, per_point):
        torch.testing.assert_close(a, p.mean(0), rtol=1e-10, atol=1e-12)
    assert delta.shape == (15,)
    torch.testing.assert_close(delta, deltas.T.reshape(-1), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_neuron_own_draws_match_naive_loop(multiply_by_inputs):
    # neuron 3 of the Tanh layer = output 3 of ``tanh(model[0](x))``; as the input
    # of model[2] too (attribute_to_neuron_input).
    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    draws = fnattr.sample_paths((x,), (b,), 6, (0.25,), gen(31))
    (per_point,), _ = naive_per_sample(lambda p: torch.tanh(model[0](p)), *draws, target=3,
                                       multiply_by_inputs=multiply_by_inputs)
    expected = per_point.mean(0)
    out = fnattr.neuron_gradient_shap(model, model[1], x, (3,), b, n_samples=6, stdevs=0.25,
                                      multiply_by_inputs=multiply_by_inputs, generator=gen(31))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    out = fnattr.neuron_gradient_shap(model, model[2], x, 3, b, n_samples=6, stdevs=0.25,
                                      attribute_to_neuron_input=True,
                                      multiply_by_inputs=multiply_by_inputs, generator=gen(31))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("internal_batch_size", [None, 4])
def test_neuron_multi_input_with_args_matches_naive_loop(internal_batch_size):
    # The input of ``head`` is relu(a(x1) + b(x2)) * scale, squared: it depends on the
    # per-example additional arg, which must be repeated with the samples.
    model = MultiInput().to(DT)
    x1, x2 = torch.randn(3, 4, dtype=DT), torch.randn(3, 3, dtype=DT)
    b1, b2 = torch.randn(5, 4, dtype=DT), torch.randn(2, 3, dtype=DT)
    scale = torch.rand(3, 6, dtype=DT) + 0.5

    def head_input(p1, p2, sc, square):
        h = torch.relu(model.a(p1) + model.b(p2)) * sc
        return h * h if square else h

    draws = fnattr.sample_paths((x1, x2), (b1, b2), 4, (0.1, 0.2), gen(12))
    per_point, _ = naive_per_sample(head_input, *draws, target=4, args=(scale, True))
    out = fnattr.neuron_gradient_shap(model, model.head, (x1, x2), (4,), (b1, b2), n_samples=4,
                                      stdevs=(0.1, 0.2), additional_forward_args=(scale, True),
                                      attribute_to_neuron_input=True, generator=gen(12),
                                      internal_batch_size=internal_batch_size)
    assert isinstance(out, tuple) and len(out) == 2
    for o, p in zip(out, per_point):
        torch.testing.assert_close(o, p.mean(0), rtol=1e-10, atol=1e-12)


def test_neuron_affine_layer_local_attribution_is_weight_row():
    model = tanh_net()
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(9, 5, dtype=DT)
    out = fnattr.neuron_gradient_shap(model, model[0], x, [(2,), (6,)], b, n_samples=7,
                                      stdevs=0.4, multiply_by_inputs=False, generator=gen(1))
    w = model[0].weight.detach()
    torch.testing.assert_close(out, w[[2, 6]].unsqueeze(1).expand(2, 4, 5), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# 4. Convergence to integrated gradients
# --------------------------------------------------------------------------


def _path_values(grad_of, x, b, n_grid=2000):
    """h(alpha) = grad(b + alpha (x - b)) * (x - b) on a midpoint grid: (n_grid, N, D)."""
    alphas = (torch.arange(n_grid, dtype=DT) + 0.5) / n_grid
    pts = (b + alphas.view(-1, 1, 1) * (x - b)).reshape(-1, x.shape[1]).requires_grad_()
    (g,) = torch.autograd.grad(grad_of(pts).sum(), pts)
    return g.reshape(n_grid, *x.shape) * (x - b)


def test_gradient_shap_converges_to_integrated_gradients():
    from captum.attr import IntegratedGradients

    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT) * 2, torch.randn(1, 5, dtype=DT)
    n = 4000
    attr = fnattr.gradient_shap(model, x, b, n_samples=n, target=1, generator=gen(0))
    with quiet():
        ig = IntegratedGradients(model).attribute(x, b, target=1, n_steps=200)
    # Monte-Carlo bound: attr is the mean of n iid h(alpha), alpha ~ U(0, 1), whose
    # per-feature std sigma we compute on a fine grid; |attr - IG| <= 5 sigma / sqrt(n).
    h = _path_values(lambda p: model(p)[:, 1], x, b)
    sigma = h.std(0)
    bound = 5 * sigma / math.sqrt(n) + 1e-8
    assert ((attr - ig).abs() <= bound).all(), ((attr - ig).abs() / bound).max()
    # Not vacuous: the gradient at the input alone is outside the bound.
    wrong = h[-1]
    assert ((wrong - ig).abs() > bound).any()


def test_neuron_gradient_shap_converges_to_neuron_integrated_gradients():
    from captum.attr import NeuronIntegratedGradients

    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT) * 2, torch.randn(1, 5, dtype=DT)
    n = 4000
    attr = fnattr.neuron_gradient_shap(model, model[1], x, (4,), b, n_samples=n,
                                       generator=gen(1))
    with quiet():
        ig = NeuronIntegratedGradients(model, model[1]).attribute(x, (4,), b, n_steps=200)
    h = _path_values(lambda p: torch.tanh(model[0](p))[:, 4], x, b)
    bound = 5 * h.std(0) / math.sqrt(n) + 1e-8
    assert ((attr - ig).abs() <= bound).all(), ((attr - ig).abs() / bound).max()
    assert ((h[-1] - ig).abs() > bound).any()


# --------------------------------------------------------------------------
# 5. Completeness in expectation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tanh_net, softplus_net])
def test_convergence_delta_vanishes_in_expectation(make):
    model = make()
    x, b = torch.randn(3, 5, dtype=DT) * 1.5, torch.randn(10, 5, dtype=DT)
    for n_samples, seed in [(200, 0), (5000, 1)]:
        _, delta = fnattr.gradient_shap(model, x, b, n_samples=n_samples, stdevs=0.2, target=0,
                                        return_convergence_delta=True, generator=gen(seed))
        assert delta.shape == (3 * n_samples,)
        per_example = delta.reshape(3, n_samples)  # example-major
        sigma = per_example.std(1)
        # Each sample's delta is g(alpha).(x'-b) - (f(x') - f(b)), whose expectation over
        # alpha ~ U(0,1) is 0 (fundamental theorem of calculus) for every drawn x', b:
        # |mean| <= 5 sigma / sqrt(S), sigma estimated from the deltas themselves.
        assert (sigma > 1e-3).all()  # a single sample is not complete: not vacuous
        assert (per_example.mean(1).abs() <= 5 * sigma / math.sqrt(n_samples)).all()


# --------------------------------------------------------------------------
# 6. Sampling distributions (fnattr.sample_paths)
# --------------------------------------------------------------------------


def test_sample_paths_baseline_rows_uniform_and_independent_per_input():
    n, s, B = 4, 2500, 5
    x1, x2 = torch.zeros(n, 3), torch.zeros(n, 2)
    b1 = torch.arange(B, dtype=torch.float32).view(B, 1).expand(B, 3).clone()
    b2 = 10 + torch.arange(B, dtype=torch.float32).view(B, 1).expand(B, 2).clone()
    ends, starts, alphas = fnattr.sample_paths((x1, x2), (b1, b2), s, (0.0, 0.0), gen(0))
    assert starts[0].shape == (s, n, 3) and starts[1].shape == (s, n, 2)
    assert alphas.shape == (s, n)
    assert torch.equal(ends[0], x1.expand(s, n, 3)) and torch.equal(ends[1], x2.expand(s, n, 2))
    i1 = starts[0][..., 0].long()
    i2 = (starts[1][..., 0] - 10).long()
    # whole rows are drawn
    assert torch.equal(starts[0], b1[i1]) and torch.equal(starts[1], b2[i2])
    m = n * s
    for idx in (i1, i2):
        counts = torch.bincount(idx.reshape(-1), minlength=B).double()
        chi2 = ((counts - m / B) ** 2 / (m / B)).sum().item()
        assert chi2 < 30.0, chi2  # chi-square, 4 dof: P(chi2 > 30) ~ 5e-6
        # every example gets all rows (not one row per example)
        for k in range(n):
            assert torch.bincount(idx[:, k], minlength=B).min() > 0
    # independent per input tensor: P(same row) = 1/B, 5-sigma binomial bound
    same = (i1 == i2).double().mean().item()
    assert abs(same - 1 / B) < 5 * math.sqrt(1 / B * (1 - 1 / B) / m), same


def test_sample_paths_alphas_uniform():
    n, s = 5, 2000
    x, b = torch.zeros(n, 2, dtype=DT), torch.zeros(1, 2, dtype=DT)
    _, _, alphas = fnattr.sample_paths((x,), (b,), s, (0.0,), gen(3))
    assert alphas.shape == (s, n) and alphas.dtype == DT
    a = alphas.reshape(-1)
    m = a.numel()
    assert a.min() >= 0 and a.max() <= 1
    assert abs(a.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / m)
    # Var of the sample variance of U(0,1): (1/80 - 1/144) / m
    assert abs(a.var().item() - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / m)
    # Kolmogorov-Smirnov: sup |F_m - F| < 2.2 / sqrt(m)  (p ~ 1e-4)
    srt = a.sort().values
    k = torch.arange(1, m + 1, dtype=DT)
    ks = torch.maximum(k / m - srt, srt - (k - 1) / m).max().item()
    assert ks < 2.2 / math.sqrt(m), ks
    # independent across examples: correlation within 5 / sqrt(S)
    corr = torch.corrcoef(alphas[:, :2].T)[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(s)


def test_sample_paths_noise_gaussian_per_input_stdevs():
    n, s = 3, 400
    x1 = torch.randn(n, 4, 4, dtype=DT)
    x2 = torch.randn(n, 5, dtype=DT)
    x3 = torch.randn(n, 2, dtype=DT)
    bs = (torch.zeros(1, 4, 4, dtype=DT), torch.zeros(2, 5, dtype=DT), 0.0)
    ends, starts, _ = fnattr.sample_paths((x1, x2, x3), bs, s, (0.5, 2.0, 0.0), gen(5))
    for x, e, sd in zip((x1, x2), ends, (0.5, 2.0)):
        assert e.shape == (s, *x.shape)
        noise = (e - x).reshape(-1)
        m = noise.numel()
        assert abs(noise.mean().item()) < 5 * sd / math.sqrt(m)
        assert abs(noise.std().item() - sd) < 5 * sd / math.sqrt(2 * m)
        # fresh noise per sample and per example
        assert not torch.equal(e[0], e[1])
    assert torch.equal(ends[2], x3.expand(s, *x3.shape))  # stdev 0: no noise
    assert torch.equal(starts[2], torch.zeros(s, n, 2, dtype=DT))  # scalar baseline


# --------------------------------------------------------------------------
# 7. Determinism and RNG isolation
# --------------------------------------------------------------------------


def _shap_call(generator, model=None, x=None, b=None):
    return fnattr.gradient_shap(model, x, b, n_samples=6, stdevs=0.3, target=1,
                                return_convergence_delta=True, generator=generator)


def test_same_generator_seed_is_bit_identical():
    model = tanh_net()
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    a1, d1 = _shap_call(gen(42), model, x, b)
    a2, d2 = _shap_call(gen(42), model, x, b)
    assert torch.equal(a1, a2) and torch.equal(d1, d2)
    a3, _ = _shap_call(gen(43), model, x, b)
    assert not torch.equal(a1, a3)
    n1 = fnattr.neuron_gradient_shap(model, model[0], x, (2,), b, 6, 0.3, generator=gen(9))
    n2 = fnattr.neuron_gradient_shap(model, model[0], x, (2,), b, 6, 0.3, generator=gen(9))
    assert torch.equal(n1, n2)


def test_generator_leaves_global_rng_alone():
    model = tanh_net()
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    torch.manual_seed(1)
    np.random.seed(1)
    t_state, np_state = torch.get_rng_state(), np.random.get_state()
    a1, _ = _shap_call(gen(3), model, x, b)
    fnattr.neuron_gradient_shap(model, model[0], x, [(1,), (2,)], b, 4, 0.2, generator=gen(3))
    assert torch.equal(torch.get_rng_state(), t_state)  # not advanced
    np_after = np.random.get_state()
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1])
    assert np_after[2:] == np_state[2:]
    torch.manual_seed(12345)  # not read either
    a2, _ = _shap_call(gen(3), model, x, b)
    assert torch.equal(a1, a2)


def test_no_generator_uses_global_torch_rng():
    model = tanh_net()
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    np_state = np.random.get_state()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a1, _ = _shap_call(None, model, x, b)
    assert not torch.equal(torch.get_rng_state(), before)  # it drew from the global RNG
    torch.manual_seed(7)
    a2, _ = _shap_call(None, model, x, b)
    assert torch.equal(a1, a2)
    np_after = np.random.get_state()  # numpy's RNG is never used
    assert np.array_equal(np_after[1], np_state[1]) and np_after[2] == np_state[2]


def test_no_generator_equals_seeded_generator():
    # "the global torch RNG when None", same draws in the same order: on CPU,
    # torch.manual_seed(k) and Generator().manual_seed(k) give the same stream.
    model = tanh_net()
    x, b = torch.randn(4, 5, dtype=DT), torch.randn(7, 5, dtype=DT)
    torch.manual_seed(5)
    a1, d1 = _shap_call(None, model, x, b)
    a2, d2 = _shap_call(gen(5), model, x, b)
    assert torch.equal(a1, a2) and torch.equal(d1, d2)


def test_neuron_selector_list_shares_draws():
    model = ConvNet().to(DT).eval()
    x, b = torch.randn(3, 3, 8, 8, dtype=DT), torch.randn(4, 3, 8, 8, dtype=DT)
    selectors = [(0, 1, 1), (5, 3, 0), (2, slice(0, 2), 1)]
    many = fnattr.neuron_gradient_shap(model, model.conv2, x, selectors, b, n_samples=5,
                                       stdevs=0.1, generator=gen(8))
    assert many.shape == (3, *x.shape)
    for k, sel in enumerate(selectors):
        one = fnattr.neuron_gradient_shap(model, model.conv2, x, sel, b, n_samples=5,
                                          stdevs=0.1, generator=gen(8))
        torch.testing.assert_close(many[k], one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("target", [torch.tensor([0, 1, 2, 0, 1]), [2, 2, 0, 1, 0], 1],
                         ids=["tensor", "list", "int"])
@pytest.mark.parametrize("internal_batch_size", [1, 2, 7, 12, 30, 100])
def test_internal_batch_size_does_not_change_result(internal_batch_size, target):
    # N = 5 examples, S = 6 samples: 30 rows; sizes below N, between, multiple, above.
    model = tanh_net()
    x, b = torch.randn(5, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    kw = dict(n_samples=6, stdevs=0.2, target=target, return_convergence_delta=True)
    ref, ref_d = fnattr.gradient_shap(model, x, b, generator=gen(6), **kw)
    out, d = fnattr.gradient_shap(model, x, b, generator=gen(6),
                                  internal_batch_size=internal_batch_size, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(d, ref_d, rtol=1e-6, atol=1e-9)
    nref = fnattr.neuron_gradient_shap(model, model[1], x, [(0,), (3,)], b, 6, 0.2,
                                       generator=gen(6))
    nout = fnattr.neuron_gradient_shap(model, model[1], x, [(0,), (3,)], b, 6, 0.2,
                                       generator=gen(6), internal_batch_size=internal_batch_size)
    torch.testing.assert_close(nout, nref, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------
# 8. Bad inputs
# --------------------------------------------------------------------------

_X = torch.randn(4, 5)
_B = torch.randn(6, 5)

BAD = [
    ("baselines", ValueError, dict(baselines=torch.randn(6, 4))),
    ("baselines", ValueError, dict(baselines=torch.randn(6, 5, 1))),
    ("baselines", ValueError, dict(baselines=(_B, _B))),
    ("baselines", ValueError, dict(baselines=torch.randn(0, 5))),
    ("baselines", ValueError, dict(baselines=lambda inp: torch.randn(6, 4))),
    ("baselines", ValueError, dict(baselines=lambda: torch.randn(3, 2))),
    ("baselines", ValueError, dict(baselines=None)),
    ("stdevs", ValueError, dict(baselines=_B, stdevs=(0.1, 0.2))),
    ("stdevs", ValueError, dict(baselines=_B, stdevs=-0.1)),
    ("stdevs", ValueError, dict(baselines=_B, stdevs=(-1.0,))),
    ("n_samples", ValueError, dict(baselines=_B, n_samples=0)),
    ("n_samples", ValueError, dict(baselines=_B, n_samples=-1)),
    ("n_samples", TypeError, dict(baselines=_B, n_samples=2.5)),
    ("generator", TypeError, dict(baselines=_B, generator=0)),
    ("generator", TypeError, dict(baselines=_B, generator=np.random.default_rng(0))),
]


@pytest.mark.parametrize("name,exc,kwargs", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_arguments_raise_naming_the_argument(name, exc, kwargs):
    model = nn.Linear(5, 3)
    with pytest.raises(exc, match=name):
        fnattr.gradient_shap(model, _X, target=0, **kwargs)
    with pytest.raises(exc, match=name):
        fnattr.neuron_gradient_shap(model, model, _X, (0,), **kwargs)


def test_bad_arguments_multi_input():
    model = MultiInput()
    x1, x2 = torch.randn(2, 4), torch.randn(2, 3)
    with pytest.raises(ValueError, match="baselines"):
        fnattr.gradient_shap(model, (x1, x2), (torch.randn(3, 4),), target=0)
    with pytest.raises(ValueError, match="baselines"):
        fnattr.gradient_shap(model, (x1, x2), (torch.randn(3, 4), torch.randn(3, 4)), target=0)
    with pytest.raises(ValueError, match="stdevs"):
        fnattr.gradient_shap(model, (x1, x2), (torch.randn(3, 4), torch.randn(3, 3)),
                             stdevs=(0.1, 0.1, 0.1), target=0)


def test_callable_baselines_accepted():
    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    ref = fnattr.gradient_shap(model, x, b, target=0, generator=gen(2))
    seen = []
    out1 = fnattr.gradient_shap(model, x, lambda inp: seen.append(inp) or b, target=0,
                                generator=gen(2))
    out2 = fnattr.gradient_shap(model, x, lambda: b, target=0, generator=gen(2))
    assert torch.equal(out1, ref) and torch.equal(out2, ref)
    assert seen and seen[0] is x  # called with the inputs, as Captum does


# --------------------------------------------------------------------------
# 9. compat classes
# --------------------------------------------------------------------------


def test_compat_gradient_shap_class():
    from captum.attr import GradientShap as CGradientShap

    assert FGradientShap.get_name() == "Gradient Shap" == CGradientShap.get_name()
    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    for mbi in (True, False):
        gs = FGradientShap(model, mbi)
        assert gs.has_convergence_delta() is True
        assert gs.multiplies_by_inputs is mbi
        out, delta = gs.attribute(x, b, 6, 0.1, 2, None, True, generator=gen(3))
        ref, ref_delta = fnattr.gradient_shap(model, x, b, 6, 0.1, 2, None, True, mbi,
                                              generator=gen(3))
        assert torch.equal(out, ref) and torch.equal(delta, ref_delta)
    assert FGradientShap(model).multiplies_by_inputs is True
    names = list(inspect.signature(FGradientShap.attribute).parameters)
    cnames = list(inspect.signature(CGradientShap.attribute).parameters)
    assert names[:len(cnames)] == cnames


def test_compat_neuron_gradient_shap_class():
    from captum.attr import NeuronGradientShap as CNeuronGradientShap

    assert FNeuronGradientShap.get_name() == "Neuron Gradient Shap" == CNeuronGradientShap.get_name()
    model = tanh_net()
    x, b = torch.randn(3, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    for mbi in (True, False):
        ngs = FNeuronGradientShap(model, model[0], None, mbi)
        assert ngs.has_convergence_delta() is False
        assert ngs.multiplies_by_inputs is mbi
        out = ngs.attribute(x, (3,), b, 6, 0.1, None, True, generator=gen(4))
        ref = fnattr.neuron_gradient_shap(model, model[0], x, (3,), b, 6, 0.1, None, True, mbi,
                                          generator=gen(4))
        assert torch.equal(out, ref)
    names = list(inspect.signature(FNeuronGradientShap.attribute).parameters)
    cnames = list(inspect.signature(CNeuronGradientShap.attribute).parameters)
    assert names[:len(cnames)] == cnames
    init = list(inspect.signature(FNeuronGradientShap.__init__).parameters)
    assert init == list(inspect.signature(CNeuronGradientShap.__init__).parameters)


# --------------------------------------------------------------------------
# 10. create_graph=True
# --------------------------------------------------------------------------


def _fd_check(loss_of, params, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Autograd gradient of ``loss_of()`` w.r.t. ``params`` vs central differences."""
    loss = loss_of()
    grads = torch.autograd.grad(loss, params)
    assert any(g.abs().max() > 1e-6 for g in grads)  # not vacuous
    for p, g in zip(params, grads):
        fd = torch.zeros_like(p)
        with torch.no_grad():
            flat, fd_flat = p.view(-1), fd.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = loss_of().item()
                flat[i] = old - eps
                down = loss_of().item()
                flat[i] = old
                fd_flat[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(g, fd, rtol=rtol, atol=atol)


def test_create_graph_gradient_shap_finite_differences():
    model = tanh_net()
    x = torch.randn(3, 5, dtype=DT).requires_grad_()
    b = torch.randn(4, 5, dtype=DT)
    v = torch.randn(3, 5, dtype=DT)

    def loss_of():  # re-seeded every evaluation: the same draws each time
        attr = fnattr.gradient_shap(model, x, b, n_samples=4, stdevs=0.1, target=1,
                                    generator=gen(17), create_graph=True)
        return (attr * v).sum() + (attr ** 2).sum()

    _fd_check(loss_of, [model[0].weight, model[2].weight, x])
    assert x.requires_grad  # untouched


def test_without_create_graph_result_is_detached():
    # create_graph=False (the default) returns plain tensors, as Captum's GradientShap
    # does (it runs under no_grad), even for inputs that require grad: no graph kept
    # alive, and ``attr.numpy()`` works.
    model = tanh_net()
    x = torch.randn(3, 5, dtype=DT).requires_grad_()
    b = torch.randn(4, 5, dtype=DT)
    attr, delta = fnattr.gradient_shap(model, x, b, n_samples=4, stdevs=0.1, target=1,
                                       return_convergence_delta=True, generator=gen(17))
    assert not attr.requires_grad and not delta.requires_grad
    nattr = fnattr.neuron_gradient_shap(model, model[1], x, (2,), b, n_samples=4,
                                        generator=gen(17))
    assert not nattr.requires_grad
    assert x.requires_grad and x.grad is None


def test_create_graph_neuron_gradient_shap_finite_differences():
    model = tanh_net()
    x = torch.randn(3, 5, dtype=DT)
    b = torch.randn(4, 5, dtype=DT)

    def loss_of():
        attr = fnattr.neuron_gradient_shap(model, model[1], x, (2,), b, n_samples=4, stdevs=0.1,
                                           generator=gen(18), create_graph=True)
        return (attr ** 2).sum()

    _fd_check(loss_of, [model[0].weight, model[0].bias])
