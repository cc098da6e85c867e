"""Objectives: *what* is explained, as a small value carrying its K.

An :class:`Objective` maps ``(output, layer_value)`` to ``Tensor[K, N]``: K
scalars per example (K targets or K neurons; a single target or selector is
K = 1, dropped again on the way out: ``squeeze``). Target objectives read the
model's output, neuron objectives the value of the tapped layer
(``reads_layer``: evaluated in the tap, at the layer's last call). The
selection meanings (Captum's) live in :mod:`fnattr._normalize`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .types import NeuronSelector, Target
from . import _normalize as N

__all__ = ["Objective", "as_objective", "target_objective", "targets_objective",
           "neuron_objective"]


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """``fn(output, layer_value) -> Tensor[K, N]`` and what the engine needs to know.

    ``k``: the number of rows (``None`` until the layer is seen, or for your
    own callables); ``squeeze``: drop the K axis from results (one target or
    selector); ``reads_layer``: ``fn`` reads the layer value, not the output;
    ``auto_chunk``: the engine may pick the backward's chunk size from memory;
    ``targets``: the K Captum targets of a target objective (repeated along
    paths by :meth:`rows`, summed over the output by :meth:`totals`);
    ``row``: for K = 1, the same values as ``(N,)`` (``fn``'s one row without
    the stacking op: one autograd node less per call in eager mode).
    Calling it gives ``(N,)`` for a squeezed objective, else ``(K, N)``.
    """

    fn: Callable[[Any, Any], Tensor]
    k: int | None = None
    squeeze: bool = False
    reads_layer: bool = False
    auto_chunk: bool = False
    targets: tuple | None = None
    row: Callable[[Any, Any], Tensor] | None = None

    def __call__(self, output: Any, value: Any = None) -> Tensor:
        values = self.fn(output, value)
        return values[0] if self.squeeze else values

    def rows(self, n0: int, n1: int, reps: int, n: int) -> "Objective":
        """The objective for examples ``n0:n1`` repeated for ``reps`` steps (step-major)."""
        if self.targets is None:
            return self
        targets = tuple(_target_rows(t, n0, n1, reps, n) for t in self.targets)
        if all(a is b for a, b in zip(targets, self.targets)):
            return self  # shared by every row (an int, a tuple, None)
        return _of_targets(targets, self.squeeze)

    def repeat(self, times: int) -> "Objective":
        """The objective for ``times`` consecutive copies of each example."""
        if self.targets is None:
            return self
        return _of_targets(tuple(N.repeat_interleave_target(t, times) for t in self.targets),
                           self.squeeze)

    def totals(self, output: Tensor) -> Tensor:
        """``(K, N)``: the selected outputs summed per example (convergence deltas)."""
        return _stack([_row_sums(N.select_target(output, t, False)) for t in self.targets])


def _stack(rows: list[Tensor]) -> Tensor:
    return rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)


def _row_sums(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).sum(1)


def _of_targets(targets: tuple, squeeze: bool) -> Objective:
    def fn(output: Tensor, _value: Any = None) -> Tensor:
        return _stack([N.select_target(output, t) for t in targets])

    row = None
    if len(targets) == 1:
        (target,) = targets
        row = lambda output, _value=None: N.select_target(output, target)  # noqa: E731
    return Objective(fn, len(targets), squeeze, auto_chunk=not squeeze, targets=targets,
                     row=row)


def _target_rows(target: Any, n0: int, n1: int, reps: int, n: int) -> Any:
    """A per-example ``target`` for examples ``n0:n1`` repeated ``reps`` times, step-major."""
    if isinstance(target, N.Each):
        return target.map(lambda t: _target_rows(t, n0, n1, reps, n))
    if isinstance(target, list):
        return target[n0:n1] * reps
    if isinstance(target, Tensor) and target.dim() == 1 and target.shape[0] > 1:
        return target[n0:n1].repeat(reps)  # (a (1,) target is one class for all)
    return target


def target_objective(target: Target = None) -> Callable[[Tensor, Any], Tensor]:
    """The objective "the model's output at ``target``", one scalar per example.

    *What* is explained, as a value: pass it to :func:`input_gradients`,
    :func:`layer_gradients` or :func:`path_average`'s gradient function.
    ``fnattr.each`` of K targets gives :func:`targets_objective`.

    Args:
        {args: target}

    Returns:
        ``objective(output, layer_value=None)`` returning a tensor ``[N]``
        (``[K, N]`` for ``fnattr.each`` of K targets).

    Example:
        {digits}
        >>> objective = fnattr.target_objective(labels)
        >>> objective(model(x)).shape
        torch.Size([50])
        >>> (g,) = fnattr.input_gradients(model, (x,), objective)
        >>> g.shape
        torch.Size([50, 1, 8, 8])
    """
    if isinstance(target, Objective):
        return target
    if isinstance(target, N.Each):
        return _of_targets(target.targets, False)
    return _of_targets((target,), True)


def targets_objective(targets: Sequence[Any]) -> Callable[[Tensor, Any], Tensor]:
    """Several targets at once: ``objective(output, _) -> Tensor[K, N]``.

    Each entry of ``targets`` is one Captum ``target`` (an int, a tuple, a
    per-example list or tensor); row ``k`` of the result is the output at
    ``targets[k]``. One forward serves all K, and the gradient of a ``[K, N]``
    objective is one vectorized backward.

    Args:
        targets: a sequence of K targets, each one of ``target``'s forms.

    Returns:
        ``objective(output, layer_value=None)`` returning a tensor ``[K, N]``.

    Example:
        {digits}
        >>> objective = fnattr.targets_objective([0, labels])
        >>> objective(model(x)).shape
        torch.Size([2, 50])
        >>> (g,) = fnattr.input_gradients(model, (x,), objective)
        >>> g.shape
        torch.Size([2, 50, 1, 8, 8])
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("`targets` must hold at least one target")
    return _of_targets(targets, False)


def neuron_objective(neuron_selector: NeuronSelector) -> Callable[[Any, Any], Tensor]:
    """The objective "the value of a neuron of the tapped layer", per example.

    A list of selectors makes a ``[K, N]`` objective (all K neurons from one
    forward); ``"all"`` takes every neuron of the layer, ``K =
    value[0].numel()`` rows in row-major order of the layer's per-example shape
    (reshape the result's leading dim to that shape).

    Args:
        {args: neuron_selector}

    Returns:
        ``objective(output, layer_value)`` returning a tensor ``[N]`` (``[K,
        N]`` for K selectors); use it with ``layer=`` in :func:`input_gradients`.

    Example:
        {digits}
        >>> objective = fnattr.neuron_objective([0, 1])
        >>> (g,) = fnattr.input_gradients(model, (x,), objective, layer=model.classifier[1])
        >>> g.shape
        torch.Size([2, 50, 1, 8, 8])
    """
    if isinstance(neuron_selector, Objective):
        return neuron_selector
    selectors, many = N.format_selectors(neuron_selector)

    def fn(_output: Any, value: Any) -> Tensor:
        if selectors == ["all"]:
            if isinstance(value, tuple):
                raise ValueError('`neuron_selector` "all" needs a layer whose value is one tensor')
            return value.reshape(value.shape[0], math.prod(value.shape[1:])).T.clone()
        if many:
            gathered = N.select_neurons(value, selectors)
            if gathered is not None:
                return gathered
        return _stack([_per_example(N.select_neuron(value, s), value) for s in selectors])

    row = None
    if not many:
        (selector,) = selectors
        row = lambda _output, value: _per_example(N.select_neuron(value, selector), value)  # noqa: E731
    k = None if selectors == ["all"] else len(selectors)
    return Objective(fn, k, squeeze=not many, reads_layer=True, auto_chunk=many, row=row)


def _per_example(picked: Tensor, value: Any) -> Tensor:
    n = (value[0] if isinstance(value, tuple) else value).shape[0]
    if picked.dim() > 1 and picked.shape[0] == n and picked[0].numel() == 1:
        picked = picked.reshape(n)  # e.g. (N, 1): one scalar per example, as Captum
    if picked.dim() == 1 and picked.shape[0] == n:
        # A copy, not a view: a later in-place op on the layer value must not
        # rewrite the neuron's history (Captum clones the layer value likewise).
        return picked.clone() if picked._base is not None else picked
    if picked.numel() == 1:  # an aggregate over the batch: its gradient is the same
        return picked.reshape(1).expand(n) / n
    raise ValueError(
        "a callable `neuron_selector` must return one scalar per example (shape "
        f"({n},)) or a single scalar, got shape {tuple(picked.shape)}"
    )


def as_objective(objective: Any, reads_layer: bool) -> Objective:
    """Your own ``objective(output, layer_value) -> Tensor[N] | Tensor[K, N]`` as a value
    (gradients get a leading K exactly when it returns one)."""
    if isinstance(objective, Objective):
        return objective
    if not callable(objective):
        raise TypeError(f"`objective` must be callable, got {type(objective).__name__}")
    return Objective(objective, None, False, reads_layer)
