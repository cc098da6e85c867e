"""Explanation infidelity (Yeh et al. 2019), as ``captum.metrics.infidelity`` defines it."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .. import _normalize as N
from ..types import Baselines, ForwardFunc, Target, TensorOrTuple
from . import _common as C


def infidelity(
    forward_func: ForwardFunc,
    perturb_func: Callable,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    baselines: Baselines = None,
    additional_forward_args: Any = None,
    target: Target = None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Expected squared error between ``I . attribution`` and ``f(x) - f(x - I)``.

    The numbers of ``captum.metrics.infidelity`` for the same perturbations:
    ``perturb_func(inputs[, baselines][, generator=])`` receives every example
    repeated ``k`` times (consecutively) and returns ``(perturbations,
    perturbed_inputs)``; ``captum.metrics.infidelity_perturb_func_decorator``
    works unchanged. Differs from Captum in running the unperturbed forward
    once (not once per batch), in multiplying attributions by perturbations
    by broadcasting (no repeated copy), and in handing ``generator`` to a
    ``perturb_func`` that accepts it.

    References:
        Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
        https://arxiv.org/abs/1901.09392

    Args:
        {args: forward_func}
        perturb_func: the perturbation, as above.
        {args: inputs}
        attributions: shaped like ``inputs``.
        baselines: passed to ``perturb_func`` if it takes a second argument
            (``None``, a number, a tensor, or a tuple of those).
        {args: additional_forward_args, target[single]}
        n_perturb_samples: perturbations per example.
        max_examples_per_batch: rows per forward (at least one perturbation per
            example per batch); ``None``: all in one batch.
        normalize: scale the attributions by the least-squares ``beta`` first.
        generator: handed to ``perturb_func`` if it takes ``generator``.

    Returns:
        ``Tensor[N]``, one infidelity per example.

    Example:
        {digits}
        >>> def perturb(x, generator=None):
        ...     noise = 0.01 * torch.randn(x.shape, generator=generator)
        ...     return noise, x - noise
        >>> attr = fnattr.gradient(model, x, target=labels)
        >>> infid = fnattr.metrics.infidelity(model, perturb, x, attr, target=labels,
        ...                                   generator=torch.Generator().manual_seed(0))
        >>> infid.shape
        torch.Size([50])
    """
    xs, attrs, bs, args = _check(forward_func, perturb_func, inputs, attributions, baselines,
                                 additional_forward_args, target, n_perturb_samples,
                                 max_examples_per_batch, normalize, generator)
    n = xs[0].shape[0]
    sums = None
    with torch.no_grad():
        f0 = C.scalar_outputs(forward_func, xs, target, args)
        for k in C.chunks(n_perturb_samples, n, max_examples_per_batch):
            dots, diffs = _one_batch(forward_func, perturb_func, xs, attrs, bs, args, target,
                                     f0, k, generator)
            terms = ((dots * dots).sum(1), (dots * diffs).sum(1), (diffs * diffs).sum(1)) \
                if normalize else (((dots - diffs) ** 2).sum(1),)
            sums = terms if sums is None else tuple(s + t for s, t in zip(sums, terms))
    if normalize:
        a2, ad, d2 = sums
        beta = ad / torch.where(a2 != 0, a2, torch.ones_like(a2))  # Captum's safe_div
        return (beta * beta * a2 - 2 * beta * ad + d2) / n_perturb_samples
    return sums[0] / n_perturb_samples


def _one_batch(forward_func: Callable, perturb_func: Callable, xs: tuple, attrs: tuple,
               bs: tuple | None, args: tuple, target: Any, f0: Tensor, k: int,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``I . attribution`` and ``f(x) - f(x - I)`` for ``k`` perturbations per example: [N, k]."""
    n = xs[0].shape[0]
    expanded = tuple(x.repeat_interleave(k, dim=0) for x in xs)
    call_args: tuple = (expanded if len(xs) > 1 else expanded[0],)
    if bs is not None:
        bs_k = tuple(b.repeat_interleave(k, dim=0) if isinstance(b, Tensor) and b.shape[0] == n
                     and n > 1 else b for b in bs)
        call_args += (bs_k if len(bs) > 1 else bs_k[0],)
    out = C.call_with_generator(perturb_func, call_args, generator)
    if not isinstance(out, tuple) or len(out) != 2:
        raise ValueError("`perturb_func` must return a pair (perturbations, perturbed_inputs)")
    perts, _ = N.as_tuple(out[0], "perturbations")
    perturbed, _ = N.as_tuple(out[1], "perturbed_inputs")
    if len(perts) != len(xs) or len(perturbed) != len(xs) or any(
            p.shape != e.shape or q.shape != e.shape
            for p, q, e in zip(perts, perturbed, expanded)):
        raise ValueError("`perturb_func` must return perturbations and perturbed inputs shaped "
                         "like its (expanded) inputs")
    fk = C.scalar_outputs(forward_func, perturbed, N.repeat_interleave_target(target, k),
                          N.repeat_interleave_args(args, k, n))
    dots = sum((p.reshape(n, k, -1) * a.reshape(n, 1, -1)).sum(-1) for p, a in zip(perts, attrs))
    return dots, f0.reshape(n, 1) - fk.reshape(n, k)


def _check(forward_func: Any, perturb_func: Any, inputs: Any, attributions: Any, baselines: Any,
           additional_forward_args: Any, target: Any, n_perturb_samples: Any,
           max_examples_per_batch: Any, normalize: Any, generator: Any) -> tuple:
    N.check_forward_func(forward_func)
    N.check_forward_func(perturb_func, "perturb_func")
    xs, _ = N.as_tuple(inputs)
    attrs, _ = N.as_tuple(attributions, "attributions")
    if len(attrs) != len(xs) or any(a.shape != x.shape for a, x in zip(attrs, xs)):
        raise ValueError(f"`attributions` must be shaped like `inputs`: got "
                         f"{[tuple(a.shape) for a in attrs]} for {[tuple(x.shape) for x in xs]}")
    bs = None if baselines is None else N.format_baselines(baselines, xs)
    C.check_target(target, xs[0].shape[0])
    N.check_positive_int(n_perturb_samples, "n_perturb_samples")
    C.check_max_examples(max_examples_per_batch)
    C.check_flag(normalize, "normalize")
    C.check_generator(generator)
    return xs, attrs, bs, N.format_args(additional_forward_args)
