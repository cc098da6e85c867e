"""Reference implementations for the gradient SHAP tests.

* :func:`captum_draws` replays, with the same numpy/torch seeds, the random
  numbers Captum 0.9's ``GradientShap`` draws (``nt_samples_batch_size=None``)
  and lays them out step-major ``(S, N, ...)`` for ``fnattr.path_average``.
* :func:`captum_gradient_shap` runs Captum under those seeds.
* :func:`naive_per_sample` computes per-(sample, example) attributions and
  convergence deltas with a plain Python loop and ``torch.autograd.grad``, one
  path point at a time (no batching, no path_average): the independent
  reference for fnattr's own draws (taken from ``fnattr.sample_paths``).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import Tensor


@contextlib.contextmanager
def seeded(np_seed: int, torch_seed: int):
    """Seeds numpy's and torch's global RNGs; restores both afterwards."""
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    np.random.seed(np_seed)
    torch.manual_seed(torch_seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def captum_draws(inputs, baselines, n_samples, stdevs, np_seed, torch_seed):
    """Captum's draws for ``GradientShap.attribute`` in fnattr's layout.

    Order (Captum 0.9, ``nt_samples_batch_size=None``): for each tensor
    baseline ``np.random.choice(B, n_samples * N)`` (example-major: row
    ``n * S + s``); for each input ``torch.normal(0, stdev)`` of shape
    ``(N * S, ...)`` added to ``input.repeat_interleave(S)``; then
    ``np.random.uniform(0, 1, N * S)`` alphas cast to the input dtype.

    Returns ``(ends, starts, alphas)``: tuples of ``(S, N, ...)`` tensors and
    an ``(S, N)`` tensor.
    """
    n = inputs[0].shape[0]
    s = n_samples
    sds = stdevs if isinstance(stdevs, tuple) else (stdevs,) * len(inputs)
    with seeded(np_seed, torch_seed):
        rows = []
        for b in baselines:
            idx = np.random.choice(b.shape[0], n_samples * n).tolist()
            rows.append(b[idx])
        noisy = []
        for x, sd in zip(inputs, sds):
            std = torch.tensor(sd, device=x.device).repeat((n * s,) + tuple(x.shape[1:]))
            noisy.append(x.repeat_interleave(s, dim=0) + torch.normal(0, std))
        alphas = torch.tensor(np.random.uniform(0.0, 1.0, n * s), dtype=inputs[0].dtype)

    def step_major(t: Tensor) -> Tensor:  # rows n*S+s -> [s, n]
        return t.reshape(n, s, *t.shape[1:]).transpose(0, 1)

    return (tuple(step_major(t) for t in noisy), tuple(step_major(t) for t in rows),
            step_major(alphas))


def captum_gradient_shap(cls_args, attribute_kwargs, np_seed, torch_seed, neuron=False):
    """Captum's (Neuron)GradientShap under the given seeds (warnings silenced)."""
    from captum.attr import GradientShap, NeuronGradientShap

    cls = NeuronGradientShap if neuron else GradientShap
    with seeded(np_seed, torch_seed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*cls_args).attribute(**attribute_kwargs)


def _row_arg(a, n, n_examples):
    if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n_examples:
        return a[n:n + 1]
    return a


def _pick(out: Tensor, target, n):
    if target is None:
        return out[0].sum()
    if isinstance(target, list) or (isinstance(target, Tensor) and target.dim() == 1):
        t = target[n]
        t = t if isinstance(t, tuple) else (int(t),)
        return out[(0, *t)]
    t = target if isinstance(target, tuple) else (target,)
    return out[(0, *t)]


def naive_per_sample(forward_func, ends, starts, alphas, target=None, args=(),
                     multiply_by_inputs=True):
    """Per-point attributions ``(S, N, ...)`` and deltas ``[S, N]`` by a plain loop.

    ``delta[s, n] = sum(attr[s, n]) - (f(end[s, n]) - f(start[s, n]))`` at the
    selected target.
    """
    s_count, n_count = alphas.shape
    attrs = [torch.zeros_like(e) for e in ends]
    deltas = torch.zeros(s_count, n_count, dtype=ends[0].dtype)
    for s in range(s_count):
        for n in range(n_count):
            a = alphas[s, n]
            pts = tuple((b[s, n] + a * (e[s, n] - b[s, n])).unsqueeze(0).detach().requires_grad_()
                        for e, b in zip(ends, starts))
            row_args = tuple(_row_arg(x, n, n_count) for x in args)
            y = _pick(forward_func(*pts, *row_args), target, n)
            grads = torch.autograd.grad(y, pts)
            total = 0.0
            for i, g in enumerate(grads):
                v = g[0] * (ends[i][s, n] - starts[i][s, n]) if multiply_by_inputs else g[0]
                attrs[i][s, n] = v.detach()
                total = total + v.detach().sum()
            with torch.no_grad():
                f_end = _pick(forward_func(*(e[s, n].unsqueeze(0) for e in ends), *row_args),
                              target, n)
                f_start = _pick(forward_func(*(b[s, n].unsqueeze(0) for b in starts), *row_args),
                                target, n)
            deltas[s, n] = total - (f_end - f_start)
    return tuple(attrs), deltas
