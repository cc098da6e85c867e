"""Shared pieces of the metrics: perturbation chunks, calling user functions, forwards."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from .. import _normalize as N


def check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")


def check_target(target: Any, n_examples: int) -> None:
    """Captum's target forms; ``fnattr.each`` (several targets per call) is not a metric's."""
    if isinstance(target, N.Each):
        raise TypeError("`target`: fnattr.each() is not supported by the metrics; call the "
                        "metric once per target")
    N.check_target(target, n_examples)


def check_max_examples(max_examples_per_batch: Any) -> None:
    if max_examples_per_batch is not None:
        N.check_positive_int(max_examples_per_batch, "max_examples_per_batch")


def chunks(n_perturb_samples: int, n_examples: int, max_examples_per_batch: int | None) -> list[int]:
    """Perturbations per example in each expanded batch, as Captum divides them.

    Each batch holds ``n_examples * k`` rows; ``k`` is at least one (a
    ``max_examples_per_batch`` below the batch size runs one perturbation per
    example per batch; Captum warns there, fnattr does not).
    """
    per = n_perturb_samples if max_examples_per_batch is None else min(
        max(max_examples_per_batch // n_examples, 1), n_perturb_samples)
    full, rest = divmod(n_perturb_samples, per)
    return [per] * full + ([rest] if rest else [])


def accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name and p.kind != p.POSITIONAL_ONLY or p.kind == p.VAR_KEYWORD
               for p in params)


def positional_count(fn: Callable, skip: str = "generator") -> int:
    """How many parameters ``fn`` has besides ``skip`` (Captum counts all of them)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.name != skip
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def call_with_generator(fn: Callable, args: tuple, generator: torch.Generator | None) -> Any:
    """``fn(*args)``, plus ``generator=`` when ``fn`` accepts it."""
    if accepts(fn, "generator"):
        return fn(*args, generator=generator)
    return fn(*args)


def scalar_outputs(forward_func: Callable, xs: tuple, target: Any, args: tuple) -> Tensor:
    """One scalar per row: ``forward_func(*xs, *args)`` read at ``target``, without a graph."""
    with torch.no_grad():
        return N.select_target(forward_func(*xs, *args), target)


def flat_rows(tensors: tuple, rows: int) -> Tensor:
    """The tensors flattened per row and concatenated: ``[rows, features]``."""
    return torch.cat([t.reshape(rows, -1) for t in tensors], dim=1)


def check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def check_real(value: Any, name: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return float(value)
