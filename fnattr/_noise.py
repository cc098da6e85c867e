"""Noise tunnel (SmoothGrad, SmoothGrad², VarGrad): a transform over attribution functions.

``noise_tunnel(attribution_fn, inputs, ...)`` runs ``attribution_fn`` on
``nt_samples`` noisy copies of every example, as one expanded batch of
``N * nt_samples`` rows (chunked by ``nt_samples_batch_size``), and reduces
the copies per example. It is not a catalog entry: a catalog ``Method`` is a
named attribution with a site and a forward function, while the noise tunnel
takes any attribution function and returns another one (``docs/DESIGN.md``).
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from . import _budget, _normalize as N, _probe
from ._catalog import lookup
from .types import TensorOrTuple

__all__ = ["noise_tunnel"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def noise_tunnel(
    attribution_fn: Callable,
    inputs: TensorOrTuple | None = None,
    *,
    nt_type: str = "smoothgrad",
    nt_samples: int = 5,
    stdevs: float | tuple[float, ...] = 1.0,
    nt_samples_batch_size: int | None = None,
    draw_baseline_from_distrib: bool = False,
    generator: torch.Generator | None = None,
    memory_budget: int | str | None = None,
    **kwargs: Any,
) -> Any:
    """Attributions averaged over Gaussian-noised copies of the inputs.

    Captum's ``NoiseTunnel`` as a function of a function. ``attribution_fn``
    takes the inputs first and the rest by keyword (a method with its model
    bound: ``functools.partial(fnattr.integrated_gradients, model)``, or a
    compat object's ``attribute``); ``kwargs`` go to it, per-example ones
    (``target``, ``baselines``, ``additional_forward_args``) repeated for each
    noisy copy. Differs from Captum in three ways: all ``N * nt_samples``
    copies go through ``attribution_fn`` as one batch (``nt_samples_batch_size``
    copies per example at a time), every random number comes from
    ``generator`` (which is also passed on to an ``attribution_fn`` that takes
    a ``generator``), and the deltas are example-major ``(N * nt_samples,)``
    whatever the chunking. Called without ``inputs`` it is a transform: it
    returns ``f(inputs, **kwargs)`` with the settings bound.

    References:
        Smilkov et al., "SmoothGrad", https://arxiv.org/abs/1706.03825;
        Adebayo et al., "Local Explanation Methods ... VarGrad", https://arxiv.org/abs/1810.03307

    Args:
        attribution_fn: ``f(inputs, **kwargs)`` returning attributions with one
            row per input row (and the deltas with ``return_convergence_delta``).
        inputs: a tensor ``[N, ...]`` or a tuple of floating-point tensors sharing
            dim 0; ``None`` returns the transform ``f(inputs, **kwargs)``.
        nt_type: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares)
            or ``"vargrad"`` (variance) of the noisy attributions.
        nt_samples: noisy copies per example.
        stdevs: the noise's standard deviation, one float or one per input.
        nt_samples_batch_size: copies per example in one call (``None``: all).
        draw_baseline_from_distrib: draw each copy's baseline row at random
            from ``kwargs["baselines"]`` (a set of reference rows).
        {args: generator}
        memory_budget: bytes (or ``"512MiB"``) the call may use: with
            ``nt_samples_batch_size=None`` the copies per call are chosen from a
            probe of two copies, and the wrapped method runs under the same
            budget (see :func:`fnattr.memory_budget`); ``None``: the context's,
            else automatic (on CPU: all copies in one call).
        **kwargs: passed on to ``attribution_fn``.

    Returns:
        What ``attribution_fn`` returns, reduced over the copies; with
        ``return_convergence_delta=True`` also the ``(N * nt_samples,)`` deltas.

    Example:
        {digits}
        >>> import functools
        >>> g = torch.Generator().manual_seed(0)
        >>> sg = fnattr.noise_tunnel(functools.partial(fnattr.gradient, model), x,
        ...                          target=labels, nt_samples=10, stdevs=0.1, generator=g)
        >>> sg.shape
        torch.Size([50, 1, 8, 8])
        >>> vargrad_ig = fnattr.noise_tunnel(  # without inputs: a transform
        ...     functools.partial(fnattr.integrated_gradients, model), nt_type="vargrad")
        >>> vargrad_ig(x, target=labels, n_steps=8).shape
        torch.Size([50, 1, 8, 8])
    """
    settings = dict(nt_type=nt_type, nt_samples=nt_samples, stdevs=stdevs,
                    nt_samples_batch_size=nt_samples_batch_size,
                    draw_baseline_from_distrib=draw_baseline_from_distrib,
                    memory_budget=memory_budget)
    _check_fn(attribution_fn)
    if inputs is None:
        return functools.partial(noise_tunnel, attribution_fn, generator=generator,
                                 **settings, **kwargs)
    xs, was_tuple = N.as_tuple(inputs)
    noise, rows = draw_noise(xs, nt_samples, stdevs, kwargs.get("baselines"),
                             draw_baseline_from_distrib, generator)
    if generator is not None and _takes_generator(attribution_fn):
        kwargs["generator"] = generator
    with _budget.memory_budget(memory_budget) if memory_budget is not None else nullcontext():
        if nt_samples_batch_size is None:
            nt_samples_batch_size = _copies_per_call(attribution_fn, xs, was_tuple, noise, rows,
                                                     kwargs)
        return smooth(attribution_fn, xs, was_tuple, noise, rows, nt_type,
                      nt_samples_batch_size, kwargs)


def _copies_per_call(attribution_fn: Callable, xs: tuple[Tensor, ...], was_tuple: bool,
                     noise: tuple[Tensor, ...], rows: tuple | None, kwargs: dict) -> int | None:
    """Noisy copies per example in one call of ``attribution_fn`` under the memory
    budget in force (``None``: all of them; also on CPU with no budget set).

    The copies' cost is probed with the wrapped method unsplit; when not even
    one copy fits, the copies go one at a time and the method splits its own
    expansion (paths, samples) under the same budget."""
    device = xs[0].device
    budget = _budget.resolve(None)
    if budget is None and _budget.automatic(device) is None:
        return None

    def run(r: int) -> Any:
        first = None if rows is None else tuple(t if t is None else t[:, :r] for t in rows)
        with _budget.memory_budget(None):  # the copies' own cost: the method unsplit
            return smooth(attribution_fn, xs, was_tuple, tuple(e[:, :r] for e in noise), first,
                          "smoothgrad", None, kwargs)

    refs: list = []
    key = ("noise_tunnel", _probe.fingerprint(getattr(attribution_fn, "func", attribution_fn),
                                                refs),
           tuple(_probe.fingerprint(a, refs) for a in getattr(attribution_fn, "args", ())),
           tuple(_probe.fingerprint(x, refs) for x in xs),
           tuple(sorted((k, _probe.fingerprint(v, refs)) for k, v in kwargs.items())))
    try:
        return _budget.block_rows(budget, run, key, refs, noise[0].shape[1], device,
                                  outside=sum(x.numel() * x.element_size() for x in xs))
    except ValueError:
        return 1


def draw_noise(xs: tuple[Tensor, ...], nt_samples: Any, stdevs: Any, baselines: Any,
               draw_baseline_from_distrib: bool, generator: torch.Generator | None
               ) -> tuple[tuple[Tensor, ...], tuple[Tensor | None, ...] | None]:
    """The noise tunnel's draws: ``(N, nt_samples, ...)`` noise per input, and baseline rows.

    Baseline rows (with ``draw_baseline_from_distrib``) are ``(N, nt_samples)``
    indices into each tensor baseline (``None`` for a number baseline).
    """
    nt_samples = N.check_positive_int(nt_samples, "nt_samples")
    sds = N.format_stdevs(stdevs, len(xs))
    N.check_generator(generator)
    for x in xs:
        if not x.is_floating_point():
            raise TypeError(f"`inputs` must be floating point to take noise, got {x.dtype}")
    noise = tuple(
        torch.randn((x.shape[0], nt_samples, *x.shape[1:]), generator=generator,
                    dtype=x.dtype, device=x.device) * sd
        for x, sd in zip(xs, sds))
    if not draw_baseline_from_distrib:
        return noise, None
    if baselines is None:
        raise ValueError("`draw_baseline_from_distrib=True` needs `baselines` (reference rows)")
    bs = N.format_baselines(baselines, xs, distribution=True)
    rows = tuple(
        torch.randint(b.shape[0], (xs[0].shape[0], nt_samples), generator=generator,
                      device=b.device) if isinstance(b, Tensor) else None
        for b in bs)
    return noise, rows


def smooth(attribution_fn: Callable, xs: tuple[Tensor, ...], was_tuple: bool,
           noise: tuple[Tensor, ...], rows: tuple | None, nt_type: str,
           nt_samples_batch_size: Any, kwargs: dict) -> Any:
    """The noise tunnel from explicit draws (see :func:`draw_noise`)."""
    if nt_type not in NT_TYPES:
        raise ValueError(f"`nt_type` must be one of {NT_TYPES}, got {nt_type!r}")
    if isinstance(kwargs.get("target"), N.Each):
        raise ValueError("`target`: fnattr.each(...) is not supported inside noise_tunnel")
    n, samples = noise[0].shape[:2]
    batch = samples if nt_samples_batch_size is None else min(
        samples, N.check_positive_int(nt_samples_batch_size, "nt_samples_batch_size"))
    want_delta = bool(kwargs.get("return_convergence_delta"))
    total = total_sq = None
    deltas = []
    for start in range(0, samples, batch):
        b = min(batch, samples - start)
        noisy = tuple((x.unsqueeze(1) + e[:, start:start + b]).reshape(n * b, *x.shape[1:])
                      for x, e in zip(xs, noise))
        chunk_rows = None if rows is None else tuple(
            r if r is None else r[:, start:start + b] for r in rows)
        out = attribution_fn(N.restore(noisy, was_tuple), **_expand(kwargs, xs, b, chunk_rows))
        attrs, delta = out if want_delta else (out, None)
        is_tuple = isinstance(attrs, tuple)
        # summed in float32 at least (a bfloat16 model's vargrad, a difference of
        # two means, lost 1e-1 of its value in bfloat16 sums)
        per_copy = [_wide(_per_copy(a, n, b)) for a in (attrs if is_tuple else (attrs,))]
        sums = [p.sum(1) for p in per_copy]
        sqs = [p.pow(2).sum(1) for p in per_copy]
        total = sums if total is None else [t + s for t, s in zip(total, sums)]
        total_sq = sqs if total_sq is None else [t + s for t, s in zip(total_sq, sqs)]
        if want_delta:
            deltas.append(delta.reshape(n, b))
    mean = [t / samples for t in total]
    mean_sq = [t / samples for t in total_sq]
    result = {"smoothgrad": mean, "smoothgrad_sq": mean_sq,
              "vargrad": [q - m * m for m, q in zip(mean, mean_sq)]}[nt_type]
    result = tuple(result) if is_tuple else result[0]
    return (result, torch.cat(deltas, 1).reshape(-1)) if want_delta else result


def _wide(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t


def _per_copy(a: Any, n: int, b: int) -> Tensor:
    if not isinstance(a, Tensor) or a.dim() == 0 or a.shape[0] != n * b:
        shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise ValueError(
            f"`attribution_fn` must return one attribution row per noisy input row "
            f"({n * b}), got {shape} (a list of targets or selectors is not supported)")
    return a.reshape(n, b, *a.shape[1:])


def _expand(kwargs: dict, xs: tuple[Tensor, ...], b: int, rows: tuple | None) -> dict:
    """Per-example keyword arguments for ``b`` consecutive noisy copies of each example."""
    n = xs[0].shape[0]
    out = dict(kwargs)
    if "target" in out:
        out["target"] = N.repeat_interleave_target(out["target"], b)
    if out.get("additional_forward_args") is not None:
        out["additional_forward_args"] = N.repeat_interleave_args(
            N.format_args(out["additional_forward_args"]), b, n)
    baselines = out.get("baselines")
    if isinstance(baselines, (Tensor, tuple)):
        bs = N.format_baselines(baselines, xs, distribution=True)  # the method checks them
        if rows is not None:
            bs = tuple(base if r is None else base[r.reshape(-1)] for base, r in zip(bs, rows))
        else:
            bs = tuple(base.repeat_interleave(b, 0)
                       if isinstance(base, Tensor) and base.shape[0] == n > 1 else base
                       for base in bs)
        out["baselines"] = bs if isinstance(baselines, tuple) else bs[0]
    return out


def _check_fn(attribution_fn: Any) -> None:
    if not callable(attribution_fn):
        raise TypeError(f"`attribution_fn` must be callable, got {type(attribution_fn).__name__}")
    entry = lookup(attribution_fn)
    if entry is not None:
        raise TypeError(
            f"`attribution_fn` takes the inputs first: bind the model, e.g. "
            f"functools.partial(fnattr.{entry.name}, model"
            f"{', layer' if entry.needs_layer else ''})")


def _takes_generator(fn: Callable) -> bool:
    try:
        return "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
