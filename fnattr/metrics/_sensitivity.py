"""Max-sensitivity (Yeh et al. 2019), as ``captum.metrics.sensitivity_max`` defines it."""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from .. import _normalize as N
from ..types import TensorOrTuple
from . import _common as C


def uniform_perturbation(inputs: TensorOrTuple, perturb_radius: float = 0.02, *,
                         generator: torch.Generator | None = None) -> TensorOrTuple:
    """``inputs`` plus noise uniform in ``[-perturb_radius, perturb_radius)``.

    The default perturbation of :func:`sensitivity_max`, drawn input by input
    from ``generator`` (the global RNG if ``None``: then Captum's default
    draws, for float32 inputs on the CPU).

    Args:
        {args: inputs}
        perturb_radius: the half-width of the uniform noise.
        {args: generator}

    Returns:
        The perturbed inputs, shaped like ``inputs``.

    Example:
        {digits}
        >>> g = torch.Generator().manual_seed(0)
        >>> noisy = fnattr.metrics.uniform_perturbation(x, 0.1, generator=g)
        >>> noisy.shape, bool((noisy - x).abs().max() <= 0.1)
        (torch.Size([50, 1, 8, 8]), True)
    """
    xs, was_tuple = N.as_tuple(inputs)
    _check_noisable(xs)
    device = generator.device if generator is not None else torch.device("cpu")
    out = [x + torch.empty(x.shape, dtype=x.dtype, device=device)
           .uniform_(-perturb_radius, perturb_radius, generator=generator).to(x.device)
           for x in xs]
    return N.restore(out, was_tuple)


def sensitivity_max(
    explanation_func: Callable,
    inputs: TensorOrTuple,
    perturb_func: Callable | None = None,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str | float = "fro",
    max_examples_per_batch: int | None = None,
    *,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> Tensor:
    """Largest relative change of an explanation under small input perturbations.

    The numbers of ``captum.metrics.sensitivity_max`` for the same
    perturbations: ``max_k ||e(x_k) - e(x)|| / ||e(x)||`` per example, with
    ``e = explanation_func(inputs, **kwargs)`` (for fnattr functions bind the
    model first: ``functools.partial(fnattr.gradient, model)``; a Captum or
    ``fnattr.compat`` object's ``.attribute`` works as it is). The perturbed
    copies of all examples are explained as one expanded batch per
    ``max_examples_per_batch`` (``target``, ``additional_forward_args`` and
    per-example ``baselines`` in ``kwargs`` are repeated with them).
    ``perturb_func(expanded_inputs[, perturb_radius][, generator=])`` returns
    the perturbed inputs; the default (:func:`uniform_perturbation`) draws
    from ``generator``. Differs from Captum in passing ``inputs`` to the
    unperturbed explanation in the structure given (Captum passes a tuple).

    References:
        Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
        https://arxiv.org/abs/1901.09392

    Args:
        explanation_func: ``explanation_func(inputs, **kwargs)`` -> attributions.
        {args: inputs}
        perturb_func: as above; ``None``: uniform noise of ``perturb_radius``
            (floating-point inputs only: token ids need a ``perturb_func`` that
            perturbs ids).
        perturb_radius: passed to ``perturb_func`` if it takes a second argument.
        n_perturb_samples: perturbations per example.
        norm_ord: ``p`` of ``torch.norm`` over the flattened explanation.
        max_examples_per_batch: rows per explanation call; ``None``: one call.
        generator: the perturbations' randomness.
        **kwargs: passed to ``explanation_func``.

    Returns:
        ``Tensor[N]``, one sensitivity per example.

    Example:
        {digits}
        >>> import functools
        >>> sens = fnattr.metrics.sensitivity_max(
        ...     functools.partial(fnattr.gradient, model), x, target=labels,
        ...     generator=torch.Generator().manual_seed(0))
        >>> sens.shape
        torch.Size([50])
    """
    xs = _check(explanation_func, inputs, perturb_func, perturb_radius, n_perturb_samples,
                norm_ord, max_examples_per_batch, generator)
    perturb = uniform_perturbation if perturb_func is None else perturb_func
    n = xs[0].shape[0]
    base = C.flat_rows(N.as_tuple(explanation_func(inputs, **kwargs), "explanation")[0], n)
    base_norm = torch.norm(base, p=norm_ord, dim=1, keepdim=True)
    base_norm = torch.where(base_norm == 0, torch.ones_like(base_norm), base_norm)
    best = None
    for k in C.chunks(n_perturb_samples, n, max_examples_per_batch):
        expanded = tuple(x.repeat_interleave(k, dim=0) for x in xs)
        args = (expanded if len(xs) > 1 else expanded[0],)
        if C.positional_count(perturb) > 1:
            args += (perturb_radius,)
        perturbed = C.call_with_generator(perturb, args, generator)
        expl = explanation_func(perturbed, **_repeat_kwargs(kwargs, k, xs))
        flat = C.flat_rows(N.as_tuple(expl, "explanation")[0], n * k).reshape(n, k, -1)
        ratio = torch.norm(flat - base[:, None], p=norm_ord, dim=2) / base_norm
        step = ratio.detach().amax(dim=1)
        best = step if best is None else torch.maximum(best, step)
    return best


def _check_noisable(xs: tuple) -> None:
    N.check_floating(xs, purpose="to take uniform noise",
                     hint="for token ids pass a `perturb_func` that perturbs ids (e.g. "
                          "replaces a few at random), or perturb the embeddings")


def _repeat_kwargs(kwargs: dict, k: int, xs: tuple) -> dict:
    """``target``, ``additional_forward_args`` and per-example ``baselines`` for ``k``
    consecutive copies of every example (Captum's expansion)."""
    n = xs[0].shape[0]
    out = dict(kwargs)
    if "target" in out:
        out["target"] = N.repeat_interleave_target(out["target"], k)
    if out.get("additional_forward_args") is not None:
        args = N.repeat_interleave_args(N.format_args(out["additional_forward_args"]), k, n)
        out["additional_forward_args"] = args
    baselines = out.get("baselines")
    if baselines is not None and not callable(baselines):
        tup = baselines if isinstance(baselines, tuple) else (baselines,)
        rep = tuple(b.repeat_interleave(k, dim=0) if isinstance(b, Tensor) and b.dim() > 0
                    and b.shape[0] == n and n > 1 else b for b in tup)
        out["baselines"] = rep if isinstance(baselines, tuple) else rep[0]
    return out


def _check(explanation_func: Any, inputs: Any, perturb_func: Any, perturb_radius: Any,
           n_perturb_samples: Any, norm_ord: Any, max_examples_per_batch: Any,
           generator: Any) -> tuple:
    N.check_forward_func(explanation_func, "explanation_func")
    if perturb_func is not None:
        N.check_forward_func(perturb_func, "perturb_func")
    xs, _ = N.as_tuple(inputs)
    if perturb_func is None:
        _check_noisable(xs)
    C.check_real(perturb_radius, "perturb_radius", 0.0)
    N.check_positive_int(n_perturb_samples, "n_perturb_samples")
    if not (norm_ord == "fro" or isinstance(norm_ord, numbers.Real)
            and not isinstance(norm_ord, bool)):
        raise ValueError(f"`norm_ord` must be 'fro' or a number, got {norm_ord!r}")
    C.check_max_examples(max_examples_per_batch)
    C.check_generator(generator)
    return xs
