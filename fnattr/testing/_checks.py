"""What the axiom checkers share: the models they build and the measurements.

Part of :mod:`fnattr.testing.axioms`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ._adapters import Attribution, TensorOrTuple, _as_tuple


# ---------------------------------------------------------------- models the checkers build


class _Around(nn.Module):
    """A model built around ``model``; layer names resolve against ``model``."""

    def __init__(self, model: Callable) -> None:
        super().__init__()
        self.model = model

    def get_submodule(self, target: str) -> nn.Module:
        return self.model.get_submodule(target) if target else self


class _Masked(_Around):
    """``model`` with one input feature replaced by zero: the model ignores it."""

    def __init__(self, model: Callable, keep: Tensor) -> None:
        super().__init__(model)
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        return self.model(x * self.keep, *args)


class _Symmetrized(_Around):
    """``f(x) + f(swap(x))``: symmetric in the two swapped features."""

    def __init__(self, model: Callable, perm: Tensor) -> None:
        super().__init__(model)
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        swapped = x.flatten(1)[:, self.perm].reshape(x.shape)
        return self.model(x, *args) + self.model(swapped, *args)


class _Combined(nn.Module):
    """``a * f + b * g``."""

    def __init__(self, f: Callable, g: Callable, a: float, b: float) -> None:
        super().__init__()
        self.f, self.g, self.a, self.b = f, g, a, b

    def forward(self, *args: Any) -> Tensor:
        return self.a * self.f(*args) + self.b * self.g(*args)


# ---------------------------------------------------------------- helpers


def _start_points(baselines: Any, inputs: TensorOrTuple) -> TensorOrTuple:
    """Baselines as full tensors shaped like ``inputs`` (None -> zeros)."""
    xs = _as_tuple(inputs)
    bs = baselines if isinstance(baselines, tuple) else (baselines,) * len(xs)
    starts = tuple(
        torch.zeros_like(x) if b is None
        else torch.full_like(x, b) if not isinstance(b, Tensor)
        else b.to(x.dtype).expand_as(x)
        for x, b in zip(xs, bs))
    return starts if isinstance(inputs, (tuple, list)) else starts[0]


def _change(attribute: Attribution, forward_func: Callable, end: TensorOrTuple,
            start: TensorOrTuple, target: Any, additional_forward_args: Any) -> Tensor:
    """``F(end) - F(start)`` per example, ``F`` being what ``attribute`` explains."""
    with torch.no_grad():
        return (attribute.explains(forward_func, end, target, additional_forward_args)
                - attribute.explains(forward_func, start, target, additional_forward_args))


def _flat(attrs: TensorOrTuple) -> Tensor:
    """All attributions of an example in one row: ``(N, total features)``."""
    return torch.cat([a.detach().reshape(a.shape[0], -1) for a in _as_tuple(attrs)], 1)


def _feature(inputs: Any, feature: Any) -> tuple[int, ...]:
    if not isinstance(inputs, Tensor):
        raise TypeError("feature checks need `inputs` as one Tensor, "
                        f"got {type(inputs).__name__}")
    index = feature if isinstance(feature, tuple) else (feature,)
    shape = inputs.shape[1:]
    if len(index) != len(shape) or any(not -s <= i < s for i, s in zip(index, shape)):
        raise ValueError(f"feature {feature!r} does not index one element of an example of "
                         f"shape {tuple(shape)}")
    return index


def _check(axiom: str, attribute: Attribution, measured: tuple[Tensor, Tensor], atol: float,
           rtol: float, scale_name: str) -> None:
    violation, scale = measured
    allowed = atol + rtol * scale
    ok = violation.abs() <= allowed  # NaN fails
    if not bool(ok.all()):
        k = int(torch.where(ok, -torch.inf, violation.abs() - allowed).argmax())
        raise AssertionError(
            f"{axiom} violated by {attribute.name}: violation {float(violation[k]):.4g} at "
            f"example {k} exceeds atol + rtol * {scale_name} = {float(allowed[k]):.4g} "
            f"({int((~ok).sum())} of {ok.numel()} examples fail)")

