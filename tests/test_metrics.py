"""fnattr.metrics: Captum's numbers for infidelity / sensitivity_max, slow obvious
references for pixel flipping and the randomization test, state and argument checks."""

from __future__ import annotations

import copy
import functools
import math

import captum.attr as CA
import captum.metrics as CM
import pytest
import torch
from torch import nn

import fnattr
from fnattr import compat, metrics
from fnattr.data import load_digits_examples, load_digits_model

from .conftest import captum_quiet


class TwoInputs(nn.Module):
    """f(a, b, scale) with a per-example tensor extra argument."""

    def __init__(self):
        super().__init__()
        self.fa = nn.Linear(5, 4)
        self.fb = nn.Linear(3, 4)

    def forward(self, a, b, scale=None):
        out = torch.tanh(self.fa(a)) + torch.relu(self.fb(b)) ** 2
        return out if scale is None else out * scale


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def row_noise(x, scale=0.05):
    """A deterministic perturbation that differs per row (so Captum and fnattr see the same)."""
    rows = torch.arange(x.shape[0], dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))
    cols = torch.arange(x[0].numel(), dtype=x.dtype).reshape(x.shape[1:])
    return scale * torch.sin(1.7 * rows + 0.9 * cols + 0.3)


def perturb_pair(inputs, baselines=None):
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    noise = tuple(row_noise(x) if baselines is None else row_noise(x) * (1 + 0 * x) for x in xs)
    out = tuple(x - n for x, n in zip(xs, noise))
    return (noise, out) if isinstance(inputs, tuple) else (noise[0], out[0])


def close(a, b, tol=1e-6):
    torch.testing.assert_close(a.to(torch.float64), b.to(torch.float64).reshape(a.shape),
                               rtol=tol, atol=tol)


# --------------------------------------------------------------------------- infidelity
X = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("max_examples", [None, 8, 13])
def test_infidelity_is_captums(normalize, max_examples):
    model = mlp()
    attr = fnattr.gradient(model, X, target=1)
    ours = metrics.infidelity(model, perturb_pair, X, attr, target=1, n_perturb_samples=7,
                              max_examples_per_batch=max_examples, normalize=normalize)
    ref = CM.infidelity(model, perturb_pair, X, attr, target=1, n_perturb_samples=7,
                        max_examples_per_batch=max_examples, normalize=normalize)
    close(ours, ref)


@pytest.mark.parametrize("baselines", [0.5, torch.full((1, 5), 0.2), torch.rand(4, 5)])
def test_infidelity_with_baselines_and_captums_decorator(baselines):
    model = mlp()

    @CM.infidelity_perturb_func_decorator(True)
    def perturb(inputs, baselines):
        return inputs - row_noise(inputs) * (inputs - baselines)

    attr = fnattr.integrated_gradients(model, X, baselines, target=[0, 1, 2, 0])
    ours = metrics.infidelity(model, perturb, X, attr, baselines, target=[0, 1, 2, 0],
                              n_perturb_samples=5, max_examples_per_batch=8)
    ref = CM.infidelity(model, perturb, X, attr, baselines, target=[0, 1, 2, 0],
                        n_perturb_samples=5, max_examples_per_batch=8)
    close(ours, ref)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_multi_input_with_additional_args(normalize):
    model = TwoInputs()
    g = torch.Generator().manual_seed(2)
    a, b, scale = torch.randn(3, 5, generator=g), torch.randn(3, 3, generator=g), torch.rand(3, 1)
    attrs = fnattr.gradient(model, (a, b), target=2, additional_forward_args=scale)
    ours = metrics.infidelity(model, perturb_pair, (a, b), attrs, additional_forward_args=scale,
                              target=2, n_perturb_samples=5, max_examples_per_batch=6,
                              normalize=normalize)
    ref = CM.infidelity(model, perturb_pair, (a, b), attrs, additional_forward_args=scale,
                        target=2, n_perturb_samples=5, max_examples_per_batch=6,
                        normalize=normalize)
    close(ours, ref)


def test_infidelity_perturb_func_gets_the_generator():
    model, seen = mlp(), []

    def perturb(x, generator=None):
        seen.append(generator)
        noise = 0.1 * torch.randn(x.shape, generator=generator)
        return noise, x - noise

    attr = fnattr.gradient(model, X, target=0)
    runs = [metrics.infidelity(model, perturb, X, attr, target=0,
                               generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and all(isinstance(s, torch.Generator) for s in seen)
    other = metrics.infidelity(model, perturb, X, attr, target=0,
                               generator=torch.Generator().manual_seed(4))
    assert not torch.equal(runs[0], other)


def test_infidelity_of_a_linear_model_and_its_gradient_is_zero():
    model = nn.Linear(5, 2)
    attr = fnattr.gradient(model, X, target=1)
    out = metrics.infidelity(model, perturb_pair, X, attr, target=1)
    assert out.abs().max() < 1e-10 + 1e-6 * out.new_ones(()).abs()


# --------------------------------------------------------------------------- sensitivity
def perturb_inputs(inputs, radius):
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    out = tuple(x + radius * row_noise(x, 1.0) for x in xs)
    return out if isinstance(inputs, tuple) else out[0]


@pytest.mark.parametrize("max_examples", [None, 4, 9])
def test_sensitivity_max_is_captums(max_examples):
    model = mlp()
    ours = metrics.sensitivity_max(functools.partial(fnattr.gradient, model), X, perturb_inputs,
                                   n_perturb_samples=6, max_examples_per_batch=max_examples,
                                   target=[0, 2, 1, 1])
    with captum_quiet():
        ref = CM.sensitivity_max(CA.Saliency(model).attribute, X, perturb_inputs,
                                 n_perturb_samples=6, max_examples_per_batch=max_examples,
                                 target=[0, 2, 1, 1], abs=False)
    close(ours, ref)


@pytest.mark.parametrize("norm_ord", ["fro", 1, math.inf])
def test_sensitivity_max_with_baselines_multi_input_and_args(norm_ord):
    model = TwoInputs()
    g = torch.Generator().manual_seed(5)
    a, b, scale = torch.randn(3, 5, generator=g), torch.randn(3, 3, generator=g), torch.rand(3, 1)
    bases = (torch.rand(3, 5, generator=g), 0.1)
    kw = dict(baselines=bases, target=1, additional_forward_args=scale, n_steps=8)
    ours = metrics.sensitivity_max(functools.partial(fnattr.integrated_gradients, model), (a, b),
                                   perturb_inputs, 0.1, 4, norm_ord, 6, **kw)
    ref = CM.sensitivity_max(CA.IntegratedGradients(model).attribute, (a, b), perturb_inputs,
                             0.1, 4, norm_ord, 6, method="gausslegendre", **kw)
    close(ours, ref, 1e-5)


def test_default_perturbation_draws_what_captums_draws_from_the_global_rng():
    model = mlp()
    torch.manual_seed(11)
    ours = metrics.sensitivity_max(compat.Saliency(model).attribute
                                   if hasattr(compat, "Saliency") else
                                   functools.partial(fnattr.gradient, model), X, target=0)
    torch.manual_seed(11)
    with captum_quiet():
        ref = CM.sensitivity_max(CA.Saliency(model).attribute, X, target=0, abs=False)
    close(ours, ref)


def test_sensitivity_max_is_seeded_by_its_generator():
    explain = functools.partial(fnattr.gradient, mlp())
    runs = [metrics.sensitivity_max(explain, X, perturb_radius=1.0, target=0, n_perturb_samples=5,
                                    generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and runs[0].min() > 0
    state = torch.get_rng_state()
    metrics.sensitivity_max(explain, X, target=0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(state, torch.get_rng_state())


def test_sensitivity_of_a_linear_models_gradient_is_zero():
    explain = functools.partial(fnattr.gradient, nn.Linear(5, 3))
    assert torch.equal(metrics.sensitivity_max(explain, X, target=2), torch.zeros(4))


# --------------------------------------------------------------------------- similarity
def naive_ranks(row):
    values = row.tolist()
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return torch.tensor(ranks, dtype=torch.float64)


def naive_pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / math.sqrt(float((a * a).sum() * (b * b).sum()))


def test_spearman_matches_a_naive_one_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 12), generator=g).double()
    b = torch.randn(3, 12, generator=g, dtype=torch.float64)
    for i in range(3):
        assert torch.equal(metrics.average_ranks(a)[i], naive_ranks(a[i]))
    ref = torch.stack([naive_pearson(naive_ranks(a[i]), naive_ranks(b[i])) for i in range(3)])
    close(metrics.similarity(a, b), ref, 1e-12)
    close(metrics.similarity(a, b, "pearson"),
          torch.stack([naive_pearson(a[i], b[i]) for i in range(3)]), 1e-12)
    close(metrics.similarity(-a, b, "spearman_abs"), metrics.similarity(a, b), 1e-12)


def naive_ssim(a, b, k):
    a, b = [(t - t.min()) / (t.max() - t.min()) for t in (a, b)]
    vals = []
    for i in range(a.shape[0] - k + 1):
        for j in range(a.shape[1] - k + 1):
            p, q = a[i:i + k, j:j + k].flatten(), b[i:i + k, j:j + k].flatten()
            mp, mq = p.mean(), q.mean()
            vp, vq = (p * p).mean() - mp**2, (q * q).mean() - mq**2
            c = (p * q).mean() - mp * mq
            vals.append((2 * mp * mq + 1e-4) * (2 * c + 9e-4)
                        / ((mp**2 + mq**2 + 1e-4) * (vp + vq + 9e-4)))
    return torch.stack(vals).mean()


def test_ssim_matches_a_naive_windowed_one():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, 9, 10, generator=g, dtype=torch.float64), torch.rand(2, 1, 9, 10,
                                                                               generator=g).double()
    ref = torch.stack([naive_ssim(a[i, 0], b[i, 0], 7) for i in range(2)])
    close(metrics.similarity(a, b, "ssim"), ref, 1e-10)
    close(metrics.similarity(a, a, "ssim"), torch.ones(2), 1e-10)
