"""Per-example similarity of two explanations (for the randomization test)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _normalize as N
from ..types import TensorOrTuple
from . import _common as C


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(denom > 0, (a * b).sum(1) / torch.where(denom > 0, denom, 1.0), 0.0)


def average_ranks(x: Tensor) -> Tensor:
    """Ranks along dim 1 (0-based), ties sharing their average rank (as scipy's ``rankdata``).

    The ranks behind the ``"spearman"`` :func:`similarity`.

    Args:
        x: a tensor ``[N, F]``.

    Returns:
        A float tensor ``[N, F]`` of ranks.

    Example:
        >>> import torch, fnattr
        >>> fnattr.metrics.average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))
        tensor([[2.5000, 0.0000, 2.5000, 1.0000]])
    """
    values, order = x.sort(dim=1)
    left = torch.searchsorted(values, values, right=False)
    right = torch.searchsorted(values, values, right=True)
    mean = (left + right - 1).to(x.dtype if x.is_floating_point() else torch.float64) / 2
    return torch.empty_like(mean).scatter_(1, order, mean)


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    return _pearson(average_ranks(a), average_ranks(b))


def _spearman_abs(a: Tensor, b: Tensor) -> Tensor:
    return _spearman(a.abs(), b.abs())


def _unit_range(x: Tensor) -> Tensor:
    """Each example's map scaled to [0, 1] (a constant map becomes 0)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(1).reshape(-1, *[1] * (x.dim() - 1))
    span = (flat.amax(1) - flat.amin(1)).reshape(lo.shape)
    return (x - lo) / torch.where(span > 0, span, 1.0)


def _ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of maps scaled to [0, 1]: 7x7 windows over the last two dims of
    ``[N, ..., H, W]`` maps (smaller windows for smaller maps), one window otherwise."""
    a, b = _unit_range(a), _unit_range(b)
    if a.dim() >= 3:
        k = min(7, a.shape[-1], a.shape[-2])
        a2, b2 = a.reshape(-1, 1, *a.shape[-2:]), b.reshape(-1, 1, *b.shape[-2:])

        def mean(t: Tensor) -> Tensor:
            return F.avg_pool2d(t, k, stride=1)
    else:
        a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)

        def mean(t: Tensor) -> Tensor:
            return t.mean(1, keepdim=True)
    c1, c2 = 0.01**2, 0.03**2
    ma, mb = mean(a2), mean(b2)
    va, vb, cov = mean(a2 * a2) - ma**2, mean(b2 * b2) - mb**2, mean(a2 * b2) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return s.reshape(a.shape[0], -1).mean(1)


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "spearman": _spearman,
    "spearman_abs": _spearman_abs,
    "pearson": _pearson,
    "ssim": _ssim,
}


def similarity(a: TensorOrTuple, b: TensorOrTuple, kind: str = "spearman") -> Tensor:
    """Per-example similarity of two explanations: ``Tensor[N]``.

    ``"spearman"``: rank correlation of the flattened maps (all inputs
    together, ties ranked by their average); ``"spearman_abs"``: of their
    absolute values; ``"pearson"``: linear correlation (0 for a constant
    map); ``"ssim"``: structural similarity of the maps scaled to [0, 1] per
    example, over 7x7 windows of the last two dims for maps with >= 2
    non-batch dims (averaged over inputs), Adebayo et al.'s third measure.

    Args:
        a: attributions, a tensor ``[N, ...]`` or a tuple of them.
        b: attributions of the same structure and shapes as ``a``.
        kind: ``"spearman"``, ``"spearman_abs"``, ``"pearson"`` or ``"ssim"``.

    Returns:
        A tensor ``[N]``: one similarity per example, in ``[-1, 1]``.

    Example:
        >>> import torch, fnattr
        >>> a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 5.0, 6.0]])
        >>> fnattr.metrics.similarity(a, b)
        tensor([1.])
        >>> fnattr.metrics.similarity(a, b, "pearson")
        tensor([0.9449])
    """
    if kind not in SIMILARITIES:
        raise ValueError(f"`kind` must be one of {tuple(SIMILARITIES)}, got {kind!r}")
    xa, _ = N.as_tuple(a, "a")
    xb, _ = N.as_tuple(b, "b")
    if len(xa) != len(xb) or any(s.shape != t.shape for s, t in zip(xa, xb)):
        raise ValueError("`a` and `b` must have the same structure and shapes")
    return compare_to(xa, kind)(xb)


def compare_to(reference: tuple, kind: str) -> Callable[[tuple], Tensor]:
    """``similarity(reference, ., kind)`` with the reference's part (its ranks) done once."""
    n = reference[0].shape[0]
    if kind == "ssim":
        return lambda other: torch.stack([_ssim(s, t) for s, t in zip(reference, other)]).mean(0)
    flat = C.flat_rows(reference, n)
    if kind == "pearson":
        return lambda other: _pearson(flat, C.flat_rows(other, n))
    fold = torch.abs if kind == "spearman_abs" else (lambda t: t)
    ranks = average_ranks(fold(flat))
    return lambda other: _pearson(ranks, average_ranks(fold(C.flat_rows(other, n))))
