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

from ._reference import SelfAttention
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
    assert out.abs().max() < 1e-10


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
    ours = metrics.sensitivity_max(functools.partial(fnattr.gradient, model), X, target=0,
                                   perturb_radius=1.0)
    torch.manual_seed(11)
    with captum_quiet():
        ref = CM.sensitivity_max(CA.Saliency(model).attribute, X, target=0, abs=False,
                                 perturb_radius=1.0)
    assert ours.min() > 0
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
    close(metrics.similarity(-a, b.abs(), "spearman_abs"), metrics.similarity(a, b.abs()), 1e-12)


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


# --------------------------------------------------------------------------- pixel flipping
def naive_flipping(model, xs, attrs, target, steps, baselines, most_relevant_first):
    """One example and one step at a time, features ranked with Python's sorted()."""
    n = xs[0].shape[0]
    curves = []
    for i in range(n):
        values = torch.cat([a[i].flatten() for a in attrs]).tolist()
        order = sorted(range(len(values)), key=lambda j: -values[j])
        offsets = [0]
        for a in attrs:
            offsets.append(offsets[-1] + a[i].numel())
        row = []
        for s in range(steps + 1):
            top = set(order[:s * len(values) // steps])
            parts = []
            for t, (x, a, b) in enumerate(zip(xs, attrs, baselines)):
                feature = torch.arange(a[i].numel()).reshape(a[i].shape).expand(x[i].shape)
                base = b[i] if torch.is_tensor(b) and b.shape[0] == n else (
                    b[0] if torch.is_tensor(b) else torch.full_like(x[i], b))
                out = x[i].clone()
                for pos in range(x[i].numel()):
                    switched = offsets[t] + int(feature.flatten()[pos]) in top
                    if switched == most_relevant_first:
                        out.view(-1)[pos] = base.expand(x[i].shape).flatten()[pos]
                parts.append(out[None])
            out = model(*parts)
            row.append(out[0, target[i] if isinstance(target, list) else target])
        curves.append(torch.stack(row))
    return torch.stack(curves)


@pytest.mark.parametrize("most_relevant_first", [True, False])
@pytest.mark.parametrize("baseline", [0.0, "tensor"])
def test_pixel_flipping_matches_a_naive_loop(most_relevant_first, baseline):
    model = TwoInputs()
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 3, generator=g)
    attrs = fnattr.gradient(model, (a, b), target=[0, 3, 1])
    attrs = (attrs[0].round(decimals=1), attrs[1])  # ties, ranked by position
    bases = (0.0, 0.0) if baseline == 0.0 else (torch.rand(3, 5, generator=g), torch.ones(1, 3))
    fractions, scores = metrics.pixel_flipping(model, (a, b), attrs, [0, 3, 1], steps=5,
                                               baseline=bases,
                                               most_relevant_first=most_relevant_first)
    ref = naive_flipping(model, (a, b), attrs, [0, 3, 1], 5, bases, most_relevant_first)
    close(scores, ref.detach())
    close(fractions, torch.tensor([0, 1, 3, 4, 6, 8]) / 8)
    chunked = metrics.pixel_flipping(model, (a, b), attrs, [0, 3, 1], steps=5, baseline=bases,
                                     most_relevant_first=most_relevant_first,
                                     max_examples_per_batch=7)
    assert torch.equal(chunked[1], scores)


@pytest.mark.parametrize("most_relevant_first", [True, False])
def test_token_deletion_with_a_pad_id_matches_a_naive_loop(most_relevant_first):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(30, 3)).eval()
    ids = torch.randint(1, 20, (4, 5))
    scores_per_token = fnattr.layer_integrated_gradients(model, model[0], ids, baselines=0,
                                                         target=1, n_steps=8).sum(-1)
    _, scores = metrics.pixel_flipping(model, ids, scores_per_token, target=1, steps=5,
                                       baseline=0, most_relevant_first=most_relevant_first)
    ref = naive_flipping(model, (ids,), (scores_per_token,), 1, 5, (0,), most_relevant_first)
    close(scores, ref.detach())


def test_pixel_flipping_moves_whole_pixels_for_channel_summed_maps():
    model = load_digits_model()
    x, y = load_digits_examples()
    x = x[:3].expand(-1, 2, -1, -1).contiguous()
    model = nn.Sequential(nn.Conv2d(2, 1, 1), model)
    attr = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    _, scores = metrics.pixel_flipping(model, x, attr, y[:3].tolist(), steps=4)
    ref = naive_flipping(model, (x,), (attr,), y[:3].tolist(), 4, (0.0,), True)
    close(scores, ref.detach(), 1e-5)


def test_insertion_ends_where_deletion_starts_and_auc_is_the_trapezoid():
    model = mlp()
    attr = fnattr.gradient(model, X, target=2) * X
    f, deletion = metrics.pixel_flipping(model, X, attr, 2, steps=5)
    _, insertion = metrics.pixel_flipping(model, X, attr, 2, steps=5, most_relevant_first=False)
    close(deletion[:, 0], insertion[:, -1])
    close(deletion[:, -1], insertion[:, 0])
    close(deletion[:, 0], model(X)[:, 2].detach())
    trapezoid = ((deletion[:, 1:] + deletion[:, :-1]) / 2 * f.diff()).sum(1)
    close(metrics.auc(f, deletion), trapezoid)


def test_pixel_flipping_breaks_ties_with_the_generator():
    model, attr = mlp(), torch.zeros(4, 5)
    runs = [metrics.pixel_flipping(model, X, attr, 0, steps=5,
                                   generator=torch.Generator().manual_seed(s))[1] for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    by_position = metrics.pixel_flipping(model, X, attr, 0, steps=5)[1]
    close(by_position, naive_flipping(model, (X,), (attr,), 0, 5, (0.0,), True).detach())


# --------------------------------------------------------------------------- randomization
def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
            {k: v.requires_grad for k, v in model.named_parameters()},
            [m.training for m in model.modules()])


def assert_untouched(model, before):
    after = snapshot(model)
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in model.modules())


def naive_randomization(method, model, x, y, names, order, generator):
    """Deep copies with the drawn values written in, one layer at a time."""
    reference = method(model, x, target=y)
    copy_model, out = copy.deepcopy(model), {}
    for name in names:
        work = copy_model if order == "cascading" else copy.deepcopy(model)
        module = work.get_submodule(name)
        own = list(module.named_parameters(recurse=False))
        bound = 1 / math.sqrt(next(p for _, p in own if p.dim() >= 2)[0].numel())
        with torch.no_grad():
            for _, p in own:
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))
        out[name] = metrics.similarity(reference, method(work, x, target=y))
    return out


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_model_randomization_matches_deep_copies(order):
    model, (x, y) = load_digits_model(), load_digits_examples()
    x, y = x[:6], y[:6]
    before = snapshot(model)
    ours = metrics.model_randomization(fnattr.gradient, model, x, order=order, target=y,
                                       generator=torch.Generator().manual_seed(0))
    names = ["classifier.3", "classifier.1", "features.2", "features.0"]
    ref = naive_randomization(fnattr.gradient, model, x, y, names, order,
                              torch.Generator().manual_seed(0))
    assert list(ours) == names
    for name in names:
        close(ours[name], ref[name], 1e-5)
    assert_untouched(model, before)
    stacked = metrics.model_randomization(fnattr.gradient, model, x, order=order, target=y,
                                          generator=torch.Generator().manual_seed(0),
                                          vectorize=True)
    for name in names:
        close(stacked[name], ours[name], 1e-5)
    assert_untouched(model, before)


def test_vectorized_randomization_of_an_attention_model_is_quiet():
    # CPU attention has no vmap batching rule: torch runs it one model at a time
    # and warns for each call; vectorize=True gives the same numbers, silently
    # (the suite runs with warnings as errors).
    torch.manual_seed(0)
    model, x = SelfAttention().eval(), torch.randn(4, 5, 8)
    kw = dict(target=1, layers=["head", "attn"])
    one = metrics.model_randomization(fnattr.gradient, model, x, **kw,
                                      generator=torch.Generator().manual_seed(0))
    all_ = metrics.model_randomization(fnattr.gradient, model, x, **kw, vectorize=True,
                                       generator=torch.Generator().manual_seed(0))
    for name in one:
        close(all_[name], one[name], 1e-5)


@pytest.mark.parametrize("explain", [
    pytest.param(CA.GuidedBackprop, id="captum-class"),
    pytest.param(compat.GuidedBackprop, id="compat-class"),
    pytest.param("bound", id="captum-bound-attribute"),
    pytest.param("compat-bound", id="compat-bound-attribute"),
    pytest.param(lambda m, x, target: fnattr.guided_backprop(m, x, target), id="callable"),
])
def test_model_randomization_takes_any_attribution_method(explain):
    model, (x, y) = load_digits_model(), load_digits_examples()
    x, y = x[:5], y[:5]
    explain = {"bound": CA.GuidedBackprop(model).attribute,
               "compat-bound": compat.GuidedBackprop(model).attribute}.get(explain, explain)
    kw = dict(target=y, layers=["classifier.3", "features.0"], similarity="pearson")
    with captum_quiet():
        ours = metrics.model_randomization(explain, model, x,
                                           generator=torch.Generator().manual_seed(1), **kw)
    ref = metrics.model_randomization(fnattr.guided_backprop, model, x,
                                      generator=torch.Generator().manual_seed(1), **kw)
    for name in ref:
        close(ours[name], ref[name], 1e-5)


def test_an_explanation_names_its_layer_from_the_model_it_is_given():
    # A layer method's explanation may take its layer from the view
    # (``m.features[2]``, ``m[0]``) as from the model itself; the view gives
    # modules only (the model's own parameters are not the randomized ones).
    model, (x, y) = load_digits_model(), load_digits_examples()
    x, y = x[:5], y[:5]
    kw = dict(target=y, layers=["classifier.3", "features.2", "features.0"],
              similarity="pearson")

    def run(explain):
        return metrics.model_randomization(explain, model, x, n_steps=4,
                                           generator=torch.Generator().manual_seed(1), **kw)

    ref = run(lambda m, x, **k: fnattr.internal_influence(m, model.features[2], x, **k))
    by_view = run(lambda m, x, **k: fnattr.internal_influence(m, m.features[2], x, **k))
    for name in ref:
        close(by_view[name], ref[name], 0)
    assert ref["features.0"].abs().max() < 0.999  # the randomized layer changed the map

    with pytest.raises(AttributeError):
        run(lambda m, x, **k: m.not_there)
    with pytest.raises(TypeError, match="cannot be indexed"):
        run(lambda m, x, **k: m[0])  # the digits model is no Sequential


def test_model_is_untouched_when_the_explanation_raises():
    model = load_digits_model()
    before = snapshot(model)

    def explode(view, x, target):
        view(x)
        if view.replaced:
            raise RuntimeError("boom")
        return fnattr.gradient(view, x, target)

    with pytest.raises(RuntimeError, match="boom"):
        metrics.model_randomization(explode, model, load_digits_examples()[0][:2], target=0)
    assert_untouched(model, before)


def test_sanity_check_ordering_on_the_digits_model():
    """Adebayo et al.'s headline: gradient and IG decorrelate, guided backprop does not."""
    model, (x, y) = load_digits_model(), load_digits_examples()
    mean = {}
    for name, method in [("gradient", fnattr.gradient),
                         ("ig", functools.partial(fnattr.integrated_gradients, n_steps=16)),
                         ("guided", fnattr.guided_backprop)]:
        sims = metrics.model_randomization(method, model, x, target=y,
                                           generator=torch.Generator().manual_seed(0))
        mean[name] = torch.stack([s.mean() for s in sims.values()])
    assert mean["gradient"].abs().max() < 0.3 and mean["ig"].abs().max() < 0.3
    assert mean["guided"].min() > 0.4
    assert (mean["guided"] > mean["gradient"] + 0.3).all()
    assert (mean["guided"] > mean["ig"] + 0.3).all()


def test_metrics_leave_the_model_as_they_found_it():
    model = mlp().train()
    model[1].register_forward_hook(lambda *a: None)  # the user's own hook stays, alone
    model[0].weight.requires_grad_(False)
    before = snapshot(model)
    hooks = [dict(m._forward_hooks) for m in model.modules()]
    attr = fnattr.gradient(model, X, target=0)
    metrics.infidelity(model, perturb_pair, X, attr, target=0, normalize=True)
    metrics.sensitivity_max(functools.partial(fnattr.guided_backprop, model), X, target=0,
                            generator=torch.Generator().manual_seed(0))
    metrics.pixel_flipping(model, X, attr, 0, steps=3)
    metrics.model_randomization(compat.GuidedBackprop, model, X, target=0)
    after = snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert [dict(m._forward_hooks) for m in model.modules()] == hooks


# --------------------------------------------------------------------------- viz
def test_viz_sanity_check_and_deletion_curves():
    from matplotlib.figure import Figure

    from fnattr import viz

    sims = {"a": {"l2": torch.tensor([0.5, 0.7]), "l1": torch.tensor([0.1, 0.3])},
            "b": {"l2": torch.tensor([0.9, 0.9]), "l1": torch.tensor([0.8, 0.8])}}
    fig = viz.sanity_check(sims, title="t")
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and len(ax.lines) == 2 + 1  # two methods + the zero line
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([1.0, 0.6, 0.2])
    f = torch.linspace(0, 1, 3)
    fig = viz.deletion_curves({"a": (f, torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 0.0]]))})
    ax = fig.axes[0]
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert "AUC 0.375" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="results"):
        viz.sanity_check({"a": sims["a"], "b": {"l1": torch.ones(2)}})
    with pytest.raises(TypeError, match="curves"):
        viz.deletion_curves({})


def test_sensitivity_of_token_ids_under_an_id_perturbation_matches_captum():
    # Token ids take no uniform noise (a TypeError naming `inputs`, not torch's
    # "check_uniform_bounds not implemented for 'Long'"); an id perturbation works.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(30, 3)).eval()
    ids = torch.randint(1, 20, (4, 5))

    def perturb(x):
        every_third = torch.arange(x.numel()).view_as(x) % 3 == 0
        return torch.where(every_third, (x + 1) % 20, x)

    def ours(x, **kw):
        return fnattr.layer_integrated_gradients(model, model[0], x, **kw)

    kw = dict(n_perturb_samples=3, baselines=0, target=1, n_steps=5)
    lig = CA.LayerIntegratedGradients(model, model[0])
    with captum_quiet():  # (Captum iterates the unperturbed explanation: a tuple for it)
        expected = CM.sensitivity_max(lambda x, **k: (lig.attribute(x, **k),), ids, perturb,
                                      **kw)
    torch.testing.assert_close(metrics.sensitivity_max(ours, ids, perturb, **kw), expected,
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="`inputs` must be floating point"):
        metrics.sensitivity_max(ours, ids, baselines=0, target=1)
    with pytest.raises(TypeError, match="`inputs` must be floating point"):
        metrics.uniform_perturbation(ids)


# --------------------------------------------------------------------------- bad arguments
def _explain(x, **kw):
    return fnattr.gradient(mlp(), x, **kw)


BAD = [
    ("infidelity", dict(n_perturb_samples=0), ValueError, "n_perturb_samples"),
    ("infidelity", dict(normalize=1), TypeError, "normalize"),
    ("infidelity", dict(max_examples_per_batch=0), ValueError, "max_examples_per_batch"),
    ("infidelity", dict(generator=0), TypeError, "generator"),
    ("infidelity", dict(attributions=torch.zeros(4, 2)), ValueError, "attributions"),
    ("infidelity", dict(perturb_func=3), TypeError, "perturb_func"),
    ("infidelity", dict(baselines=torch.zeros(2, 5)), ValueError, "baselines"),
    ("infidelity", dict(perturb_func=lambda x: x), ValueError, "perturb_func"),
    ("sensitivity_max", dict(norm_ord="max"), ValueError, "norm_ord"),
    ("sensitivity_max", dict(perturb_radius=-1.0), ValueError, "perturb_radius"),
    ("sensitivity_max", dict(n_perturb_samples=1.5), TypeError, "n_perturb_samples"),
    ("sensitivity_max", dict(explanation_func=None), TypeError, "explanation_func"),
    ("sensitivity_max", dict(generator="seed"), TypeError, "generator"),
    ("sensitivity_max", dict(inputs=X.long()), TypeError, "inputs"),  # no uniform noise for ids
    ("pixel_flipping", dict(steps=0), ValueError, "steps"),
    ("pixel_flipping", dict(attributions=torch.zeros(4, 3)), ValueError, "attributions"),
    ("pixel_flipping", dict(baseline="zero"), TypeError, "baseline"),
    ("pixel_flipping", dict(most_relevant_first="yes"), TypeError, "most_relevant_first"),
    ("pixel_flipping", dict(inputs=X.long(), baseline=0.5), ValueError, "baseline"),
    ("pixel_flipping", dict(inputs=X.long(), baseline=torch.full((1, 5), 0.5)), ValueError,
     "baseline"),
    ("pixel_flipping", dict(target=[0, 1]), ValueError, "target"),
    ("pixel_flipping", dict(generator=1), TypeError, "generator"),
    ("pixel_flipping", dict(target=fnattr.each([0, 1])), TypeError, "target"),
    ("infidelity", dict(target=fnattr.each([0, 1])), TypeError, "target"),
    ("model_randomization", dict(order="random"), ValueError, "order"),
    ("model_randomization", dict(similarity="cosine"), ValueError, "similarity"),
    ("model_randomization", dict(layers=["nope"]), ValueError, "layers"),
    ("model_randomization", dict(layers="0"), TypeError, "layers"),
    ("model_randomization", dict(layers=["1"]), ValueError, "layers"),
    ("model_randomization", dict(model=lambda x: x), TypeError, "model"),
    ("model_randomization", dict(generator=0), TypeError, "generator"),
    ("model_randomization", dict(vectorize=None), TypeError, "vectorize"),
]


@pytest.mark.parametrize("metric,bad,error,name", BAD, ids=[f"{b[0]}-{b[3]}-{i}"
                                                           for i, b in enumerate(BAD)])
def test_bad_arguments_are_named(metric, bad, error, name):
    model = mlp()
    base = {
        "infidelity": dict(forward_func=model, perturb_func=perturb_pair, inputs=X,
                           attributions=torch.zeros(4, 5), target=0),
        "sensitivity_max": dict(explanation_func=_explain, inputs=X, target=0),
        "pixel_flipping": dict(forward_func=model, inputs=X, attributions=torch.zeros(4, 5),
                               target=0),
        "model_randomization": dict(explanation_func=fnattr.gradient, model=model, inputs=X,
                                    target=0),
    }[metric]
    with pytest.raises(error, match=f"`{name}"):
        getattr(metrics, metric)(**{**base, **bad})
