"""fnattr.noise_tunnel (fnattr/_noise.py) and its shell compat.NoiseTunnel, against Captum 0.9.

Captum is the oracle (``assert_same``: atol 1e-6, rtol 1e-5). Noise tunnel
draws are replayed: Captum's ``torch.normal`` (noise) and
``np.random.choice`` (baseline rows) outputs are recorded and handed to
fnattr in its layout (``(N, S, ...)`` noise, ``(N, S)`` baseline rows) by
replacing ``fnattr._noise.draw_noise``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import captum.attr as C
import fnattr
from fnattr import _noise, compat

try:
    from ._reference import assert_same, bfloat16_conv, quiet
    from .conftest import compat_ctor, compat_setup
except ImportError:
    from _reference import assert_same, bfloat16_conv, quiet
    from conftest import compat_ctor, compat_setup


class Recorder:
    """Records what Captum's ``torch.normal`` and ``np.random.choice`` return."""

    def __init__(self, monkeypatch):
        self.normal, self.choice = [], []
        normal, choice = torch.normal, np.random.choice

        def rec_normal(*a, **k):
            out = normal(*a, **k)
            self.normal.append(out)
            return out

        def rec_choice(*a, **k):
            out = choice(*a, **k)
            self.choice.append(torch.as_tensor(out))
            return out

        monkeypatch.setattr(torch, "normal", rec_normal)
        monkeypatch.setattr(np.random, "choice", rec_choice)

    def draws(self, n, samples, batch, n_inputs, baseline_tensors):
        """The recorded draws in fnattr's layout (Captum: per chunk, per input, example-major)."""
        sizes = [min(batch, samples - s) for s in range(0, samples, batch)]
        noise = tuple(torch.cat([self.normal[c * n_inputs + i].reshape(n, b, *rest)
                                 for c, b in enumerate(sizes)], 1)
                      for i, rest in enumerate(self._rest))
        if not self.choice:
            return noise, None
        # one draw per tensor baseline for all full chunks, then one for the remainder
        k = baseline_tensors
        full, last = self.choice[:k], self.choice[k:2 * k]
        rows = tuple(torch.cat([(last[j] if b < batch else full[j]).reshape(n, b)
                                for b in sizes], 1) for j in range(k))
        return noise, rows


def _replay(monkeypatch, rec, x, samples, batch, baseline_tensors=0):
    xs = x if isinstance(x, tuple) else (x,)
    rec._rest = [t.shape[1:] for t in xs]
    draws = rec.draws(xs[0].shape[0], samples, batch or samples, len(xs), baseline_tensors)
    monkeypatch.setattr(_noise, "draw_noise", lambda *a, **k: draws)


NT_CASES = [
    ("Saliency", "mlp", "smoothgrad", 5, None, 0.3, dict(target=2)),
    ("Saliency", "multi", "smoothgrad_sq", 5, 2, (0.2, 0.5), dict(target=[0, 2, 1])),
    ("IntegratedGradients", "mlp", "vargrad", 4, 3, 0.5,
     dict(target=1, n_steps=5, return_convergence_delta=True)),
    ("IntegratedGradients", "multi", "smoothgrad", 3, None, (0.1, 0.4),
     dict(target=[1, 0, 2], n_steps=4, baselines=(torch.zeros(3, 4), 0.5),
          return_convergence_delta=True)),
    ("LayerConductance", "mlp", "vargrad", 5, 2, 0.2,
     dict(target=0, n_steps=4, return_convergence_delta=True)),
    ("NeuronIntegratedGradients", "multi", "smoothgrad_sq", 4, 3, 0.3,
     dict(neuron_selector=2, n_steps=3)),
]


@pytest.mark.parametrize("name, kind, nt_type, samples, batch, stdevs, kwargs", NT_CASES)
def test_noise_tunnel_matches_captum_with_replayed_noise(monkeypatch, name, kind, nt_type,
                                                         samples, batch, stdevs, kwargs):
    model, x, args = compat_setup(kind)
    if args is not None:
        kwargs = dict(kwargs, additional_forward_args=args)
    ctor = compat_ctor(name, model)
    nt = dict(nt_type=nt_type, nt_samples=samples, nt_samples_batch_size=batch, stdevs=stdevs)
    with monkeypatch.context() as m, quiet():
        rec = Recorder(m)
        expected = C.NoiseTunnel(getattr(C, name)(*ctor)).attribute(x, **nt, **kwargs)
    _replay(monkeypatch, rec, x, samples, batch)
    got = compat.NoiseTunnel(getattr(compat, name)(*ctor)).attribute(x, **nt, **kwargs)
    assert_same(got, expected, atol=1e-5)


def test_noise_tunnel_baselines_from_distribution_replayed(monkeypatch):
    model, x, _ = compat_setup("mlp")
    refs = torch.randn(7, 6)
    kw = dict(nt_type="smoothgrad", nt_samples=5, nt_samples_batch_size=2, stdevs=0.2,
              draw_baseline_from_distrib=True, baselines=refs, target=3, n_steps=4,
              return_convergence_delta=True)
    with monkeypatch.context() as m, quiet():
        rec = Recorder(m)
        expected = C.NoiseTunnel(C.IntegratedGradients(model)).attribute(x, **kw)
    _replay(monkeypatch, rec, x, 5, 2, baseline_tensors=1)
    assert_same(compat.NoiseTunnel(compat.IntegratedGradients(model)).attribute(x, **kw),
                expected, atol=1e-5)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_functional_noise_tunnel_without_noise_equals_captum(nt_type):
    model, x, args = compat_setup("multi")
    kw = dict(target=[2, 0, 1], additional_forward_args=args, n_steps=6,
              return_convergence_delta=True)
    with quiet():
        expected = C.NoiseTunnel(C.IntegratedGradients(model)).attribute(
            x, nt_type=nt_type, nt_samples=4, stdevs=0.0, **kw)
    got = fnattr.noise_tunnel(functools.partial(fnattr.integrated_gradients, model), x,
                              nt_type=nt_type, nt_samples=4, stdevs=0.0, **kw)
    assert_same(got, expected)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "LayerConductance"])
def test_captum_noise_tunnel_accepts_compat_classes(name):
    model, x, _ = compat_setup("mlp")
    ctor = compat_ctor(name, model)
    kw = dict(nt_type="vargrad", nt_samples=4, nt_samples_batch_size=3, stdevs=0.3, target=1)
    if name != "Saliency":
        kw.update(n_steps=5, return_convergence_delta=True)
    results = []
    for cls in (getattr(C, name), getattr(compat, name)):
        torch.manual_seed(7)  # the same torch.normal draws for both
        with quiet():
            results.append(C.NoiseTunnel(cls(*ctor)).attribute(x, **kw))
    assert_same(results[1], results[0], atol=1e-5)


def test_one_expanded_batch_per_chunk():
    model, x, _ = compat_setup("mlp")
    calls = []

    def fn(inputs, **kw):
        calls.append((inputs.shape[0], kw["target"]))
        return fnattr.gradient(model, inputs, **kw)

    g = torch.Generator().manual_seed(0)
    fnattr.noise_tunnel(fn, x, nt_samples=5, nt_samples_batch_size=2,
                        target=torch.tensor([0, 1, 2]), generator=g)
    assert [c[0] for c in calls] == [6, 6, 3]
    assert calls[2][1].tolist() == [0, 1, 2]
    assert calls[0][1].tolist() == [0, 0, 1, 1, 2, 2]


def test_generator_determinism_chunking_and_transform_form():
    model, x, _ = compat_setup("mlp")
    fn = functools.partial(fnattr.gradient, model)
    state = torch.get_rng_state()
    run = lambda **kw: fnattr.noise_tunnel(fn, x, nt_type="smoothgrad_sq", nt_samples=6,
                                           stdevs=0.5, target=1,
                                           generator=torch.Generator().manual_seed(3), **kw)
    a = run()
    assert torch.equal(a, run())
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert_same(run(nt_samples_batch_size=4), a)  # same draws whatever the chunking
    smoothed = fnattr.noise_tunnel(fn, nt_type="smoothgrad_sq", nt_samples=6, stdevs=0.5)
    assert torch.equal(smoothed(x, target=1, generator=torch.Generator().manual_seed(3)), a)
    # the draws: x + 0.5 * randn((N, S, ...)) from the generator
    noise = torch.randn((3, 6, 6), generator=torch.Generator().manual_seed(3)) * 0.5
    noisy = (x.unsqueeze(1) + noise).reshape(18, 6)
    naive = fnattr.gradient(model, noisy, 1).reshape(3, 6, 6).pow(2).mean(1)
    assert_same(a, naive)


def test_generator_reaches_a_sampled_inner_method():
    model, x, _ = compat_setup("mlp")
    gs, refs = compat.GradientShap(model), torch.randn(4, 6)
    run = lambda seed: compat.NoiseTunnel(gs).attribute(
        x, nt_samples=3, stdevs=0.1, baselines=refs, target=0,
        generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(0)
    first = run(1)
    torch.manual_seed(99)  # the global RNG plays no part
    assert torch.equal(first, run(1))
    assert not torch.equal(first, run(2))


@pytest.mark.parametrize("call, error, name", [
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x, nt_type="sg"),
     ValueError, "nt_type"),
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x, nt_samples=0),
     ValueError, "nt_samples"),
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x,
                                      stdevs=(0.1, 0.2)), ValueError, "stdevs"),
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x,
                                      nt_samples_batch_size=0), ValueError,
     "nt_samples_batch_size"),
    (lambda m, x: fnattr.noise_tunnel(fnattr.gradient, x), TypeError, "attribution_fn"),
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x.long()),
     TypeError, "inputs"),
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x,
                                      draw_baseline_from_distrib=True), ValueError, "baselines"),
    (lambda m, x: fnattr.noise_tunnel(functools.partial(fnattr.gradient, m), x,
                                      target=fnattr.each([0, 1])), ValueError, "target"),
    (lambda m, x: compat.NoiseTunnel(m), TypeError, "attribution_method"),
    (lambda m, x: compat.GuidedBackprop("m"), TypeError, "model"),
    (lambda m, x: compat.NeuronDeconvolution(None, m.fc1), TypeError, "model"),
    (lambda m, x: compat.LayerConductance(None, m.fc1), TypeError, "forward_func"),
])
def test_noise_tunnel_errors_name_the_argument(call, error, name):
    model, x, _ = compat_setup("mlp")
    with pytest.raises(error, match=f"`{name}`"):
        call(model, x)


@pytest.mark.parametrize("batch", [None, 2])
def test_functional_noise_tunnel_matches_captum_with_replayed_noise(monkeypatch, batch):
    model, x, args = compat_setup("multi")
    kw = dict(target=[2, 0, 1], additional_forward_args=args, n_steps=5,
              return_convergence_delta=True)
    nt = dict(nt_type="smoothgrad_sq", nt_samples=5, nt_samples_batch_size=batch,
              stdevs=(0.3, 0.1))
    with monkeypatch.context() as m, quiet():
        rec = Recorder(m)
        expected, captum_delta = C.NoiseTunnel(C.IntegratedGradients(model)).attribute(
            x, **nt, **kw)
    _replay(monkeypatch, rec, x, 5, batch)
    got, delta = fnattr.noise_tunnel(functools.partial(fnattr.integrated_gradients, model), x,
                                     **nt, **kw)
    assert_same(got, expected, atol=1e-5)
    # fnattr's deltas are example-major whatever the chunking; Captum's are per chunk
    chunks = [(0, 2), (2, 4), (4, 5)] if batch else [(0, 5)]
    per_example = delta.reshape(3, 5)
    assert_same(torch.cat([per_example[:, a:b].reshape(-1) for a, b in chunks]), captum_delta,
                atol=1e-5)


def test_bfloat16_copies_are_summed_in_float32():
    # vargrad is a difference of two means: summed in bfloat16 it lost 1e-1 of
    # its value against the float64 model on the same noise; in float32, what
    # is left is the bfloat16 gradients' own error. The result is float32, as
    # the path methods' on such a model.
    import copy
    import functools

    from fnattr._noise import smooth

    model, x = bfloat16_conv()
    wide = copy.deepcopy(model).double()
    noise = (torch.randn(4, 64, 3, 8, 8, dtype=torch.bfloat16) * 0.5,)
    for nt_type, tol in (("smoothgrad", 2e-2), ("vargrad", 6e-2)):
        low = smooth(functools.partial(fnattr.gradient, model), (x,), False, noise, None,
                     nt_type, None, dict(target=1))
        ref = smooth(functools.partial(fnattr.gradient, wide), (x.double(),), False,
                     (noise[0].double(),), None, nt_type, None, dict(target=1))
        assert low.dtype == torch.float32
        assert (low.double() - ref).abs().max() <= tol * ref.abs().max()
