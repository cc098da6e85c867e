"""Pixel flipping (deletion) and insertion curves, as one expanded batch."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .. import _normalize as N
from ..types import Baselines, ForwardFunc, Target, TensorOrTuple
from . import _common as C


def pixel_flipping(
    forward_func: ForwardFunc,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    target: Target = None,
    *,
    steps: int = 20,
    baseline: Baselines = 0.0,
    most_relevant_first: bool = True,
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The model's score as features are deleted (or inserted) in order of relevance.

    Features are the elements of ``attributions`` (one per input element, or
    coarser: an attribution of shape ``[N, 1, H, W]`` for ``[N, 3, H, W]``
    inputs moves whole pixels), ranked per example over all inputs together,
    largest attribution first. At step ``s`` of ``steps`` the first
    ``floor(s * F / steps)`` of the ``F`` features are switched.
    ``most_relevant_first=True`` is the deletion curve (MoRF pixel flipping):
    start at the input and replace the top features by ``baseline``.
    ``most_relevant_first=False`` is the insertion curve: start at the
    baseline and put the top features back from the input (the LeRF curve
    read backwards). All ``N * (steps + 1)`` masked inputs run as one
    expanded batch (or ``max_examples_per_batch`` rows at a time). Ties are
    ranked by position, or in a random order drawn from ``generator``.

    References:
        Samek et al., "Evaluating the visualization of what a deep neural
        network has learned", https://arxiv.org/abs/1509.06321; Petsiuk et
        al., "RISE", https://arxiv.org/abs/1806.07421 (insertion).

    Args:
        {args: forward_func, inputs}
        attributions: one tensor per input, broadcastable to the input's shape
            with the same batch dim.
        {args: target[single]}
        steps: points of the curve besides the start.
        baseline: the value of a deleted feature (a number, or a tensor per
            input shaped like it or with a batch dim of 1).
        most_relevant_first: deletion (``True``) or insertion (``False``).
        {args: additional_forward_args}
        max_examples_per_batch: rows per forward; ``None``: one batch.
        generator: breaks ties between equal attributions at random.

    Returns:
        ``(fractions, scores)``: ``Tensor[steps + 1]`` from 0 to 1 and
        ``Tensor[N, steps + 1]``.

    Example:
        {digits}
        >>> attr = fnattr.integrated_gradients(model, x, target=labels)
        >>> fractions, scores = fnattr.metrics.pixel_flipping(model, x, attr, labels, steps=8)
        >>> fractions.shape, scores.shape
        (torch.Size([9]), torch.Size([50, 9]))
        >>> fnattr.metrics.auc(fractions, scores).shape  # lower: a better deletion order
        torch.Size([50])
    """
    xs, attrs, bs, args = _check(forward_func, inputs, attributions, target, steps, baseline,
                                 most_relevant_first, additional_forward_args,
                                 max_examples_per_batch, generator)
    n = xs[0].shape[0]
    ranks = _ranks(attrs, n, generator)
    counts = torch.arange(steps + 1, device=ranks.device) * ranks.shape[1] // steps
    switched = ranks[None] < counts[:, None, None]  # [S+1, N, F]: feature switched at step s
    keep_input = ~switched if most_relevant_first else switched
    sizes = [a[0].numel() for a in attrs]
    rows = []
    for x, a, b, keep in zip(xs, attrs, bs, keep_input.split(sizes, dim=2)):
        mask = keep.reshape(steps + 1, *a.shape)
        b = b if isinstance(b, Tensor) else torch.tensor(b, dtype=x.dtype, device=x.device)
        rows.append(torch.where(mask, x.detach(), b).reshape(-1, *x.shape[1:]))
    scores = _scores(forward_func, tuple(rows), target, args, steps + 1, n,
                     max_examples_per_batch)
    return counts.to(scores.dtype) / ranks.shape[1], scores.reshape(steps + 1, n).T


def auc(fractions: Tensor, scores: Tensor) -> Tensor:
    """Area under curves by the trapezoidal rule: ``Tensor[N]`` for ``scores[N, S+1]``.

    The summary of a :func:`pixel_flipping` curve (deletion: lower is better;
    insertion: higher is better).

    Args:
        fractions: a 1-D tensor ``[S + 1]`` of x positions (the fractions of
            features switched).
        scores: a tensor ``[..., S + 1]``, one curve per row.

    Returns:
        A tensor ``[...]``: one area per curve.

    Example:
        >>> import torch, fnattr
        >>> fnattr.metrics.auc(torch.linspace(0, 1, 3), torch.tensor([[1.0, 0.5, 0.0]]))
        tensor([0.5000])
    """
    if not isinstance(fractions, Tensor) or fractions.dim() != 1:
        raise TypeError("`fractions` must be a 1-D tensor")
    if not isinstance(scores, Tensor) or scores.shape[-1:] != fractions.shape:
        raise ValueError(f"`scores` must end in a dim of {fractions.shape[0]} (one per fraction)")
    return torch.trapezoid(scores, fractions, dim=-1)


def _ranks(attrs: tuple, n: int, generator: torch.Generator | None) -> Tensor:
    """Rank of every feature per example (0 = largest attribution): [N, F]."""
    flat = C.flat_rows(attrs, n).detach()
    order = torch.arange(flat.shape[1], device=flat.device).expand(n, -1)
    if generator is not None:  # a random tie order: sort a random permutation stably
        perm = torch.rand(flat.shape, generator=generator, device=generator.device)
        order = perm.to(flat.device).argsort(dim=1)
    by_value = flat.gather(1, order).argsort(dim=1, descending=True, stable=True)
    ranked = order.gather(1, by_value)  # feature indices, most relevant first
    ranks = torch.empty_like(ranked)
    return ranks.scatter_(1, ranked, torch.arange(flat.shape[1], device=flat.device).expand(n, -1))


def _scores(forward_func: Callable, rows: tuple, target: Any, args: tuple, copies: int, n: int,
            max_examples_per_batch: int | None) -> Tensor:
    """Scores of ``copies`` stacked copies of the batch (copy-major rows)."""
    target_rows = _tile_target(target, copies)
    args_rows = tuple(a.repeat(copies, *([1] * (a.dim() - 1))) if isinstance(a, Tensor)
                      and a.dim() > 0 and a.shape[0] == n else a for a in args)
    total = copies * n
    step = total if max_examples_per_batch is None else max(n, max_examples_per_batch // n * n)
    out = []
    for start in range(0, total, step):
        part = slice(start, start + step)
        t = target_rows[part] if isinstance(target_rows, (Tensor, list)) else target_rows
        a = tuple(x[part] if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == total
                  else x for x in args_rows)
        out.append(C.scalar_outputs(forward_func, tuple(r[part] for r in rows), t, a))
    return torch.cat(out)


def _tile_target(target: Any, copies: int) -> Any:
    if isinstance(target, list):
        return target * copies
    if isinstance(target, Tensor) and target.dim() == 1:
        return target.repeat(copies)
    return target


def _check(forward_func: Any, inputs: Any, attributions: Any, target: Any, steps: Any,
           baseline: Any, most_relevant_first: Any, additional_forward_args: Any,
           max_examples_per_batch: Any, generator: Any) -> tuple:
    N.check_forward_func(forward_func)
    xs, _ = N.as_tuple(inputs)
    attrs, _ = N.as_tuple(attributions, "attributions")
    if len(attrs) != len(xs):
        raise ValueError(f"`attributions` must give one tensor per input: {len(attrs)} for "
                         f"{len(xs)}")
    for a, x in zip(attrs, xs):
        try:
            ok = a.shape[0] == x.shape[0] and torch.broadcast_shapes(a.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"`attributions` of shape {tuple(a.shape)} does not broadcast to "
                             f"its input's shape {tuple(x.shape)} with the same batch dim")
    C.check_target(target, xs[0].shape[0])
    N.check_positive_int(steps, "steps")
    bs = N.format_baselines(baseline, xs, name="baseline")
    for x, b in zip(xs, bs):  # token ids: a pad/mask id, not a value rounded into one
        if not (x.dtype.is_floating_point or x.dtype.is_complex):
            values = b if isinstance(b, Tensor) else torch.tensor(b)
            if values.is_floating_point() and not torch.equal(values, values.round()):
                raise ValueError(
                    f"`baseline` must be a whole number for {x.dtype} inputs (token ids take "
                    f"a pad or mask id), got {b if not isinstance(b, Tensor) else 'a tensor'}"
                    " with a fractional part")
    C.check_flag(most_relevant_first, "most_relevant_first")
    C.check_max_examples(max_examples_per_batch)
    C.check_generator(generator)
    return xs, attrs, bs, N.format_args(additional_forward_args)
