"""Axioms about single features: sensitivity, dummy, symmetry (part of
:mod:`fnattr.testing.axioms`)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ._adapters import _as_attribution
from ._checks import _Masked, _Symmetrized, _change, _check, _feature, _start_points

__all__ = ["assert_dummy", "assert_sensitivity", "assert_symmetry", "dummy", "sensitivity",
           "symmetry"]


def sensitivity(attribute: Callable, forward_func: Callable, inputs: Tensor,
                baselines: Any = None, target: Any = None,
                additional_forward_args: Any = None, *, feature: int | tuple[int, ...],
                zero_tol: float = 0.0) -> Tensor:
    """The output change left unattributed when only ``feature`` differs from the baseline.

    **Axiom** (sensitivity (a)): for every input and baseline that differ in
    one feature but have different outputs, the differing feature gets a
    non-zero attribution. The checker builds that input: the baseline with
    ``feature`` taken from ``inputs``, and attributes it against the baseline.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.1).

    Satisfied by every method satisfying completeness (the feature then gets
    the whole change): integrated gradients, neuron integrated gradients.
    Violated by gradient, guided backprop and deconvolution where the output
    is flat at the input (a ReLU off at ``x`` but on between ``b`` and ``x``).

    Args:
        attribute, forward_func, inputs, baselines, target,
        additional_forward_args: see :func:`completeness`; ``inputs`` is one Tensor.
        feature: the index of one element of an example (an int for a vector
            input, a tuple of ints for ``(C, H, W)``).
        zero_tol: attributions with ``|a| <= zero_tol`` count as zero.

    Returns:
        ``|F(x') - F(b)|`` for examples whose feature attribution is zero,
        else ``0``: ``Tensor[N]``; the assert uses no scale (``rtol`` is 0).

    >>> sensitivity(from_fnattr(fnattr.gradient), model, x, feature=0, target=0)
    """
    return _sensitivity(attribute, forward_func, inputs, baselines, target,
                        additional_forward_args, feature, zero_tol)[0]


def _sensitivity(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any,
                 target: Any, additional_forward_args: Any, feature: Any,
                 zero_tol: float) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    index = (slice(None), *_feature(inputs, feature))
    start = _start_points(baselines, inputs)
    one_differs = start.clone()
    one_differs[index] = inputs[index]
    a = attribute(forward_func, one_differs, baselines, target, additional_forward_args)
    change = _change(attribute, forward_func, one_differs, start, target,
                     additional_forward_args)
    unattributed = torch.where(a.detach()[index].abs() <= zero_tol, change.abs(),
                               torch.zeros_like(change))
    return unattributed, torch.zeros_like(change)


def assert_sensitivity(attribute: Callable, forward_func: Callable, inputs: Tensor,
                       baselines: Any = None, target: Any = None,
                       additional_forward_args: Any = None, *, feature: int | tuple[int, ...],
                       atol: float, zero_tol: float = 0.0) -> None:
    """Raises ``AssertionError`` where a change ``> atol`` gets a zero attribution.

    See :func:`sensitivity`.
    """
    _check("sensitivity", _as_attribution(attribute),
           _sensitivity(attribute, forward_func, inputs, baselines, target,
                        additional_forward_args, feature, zero_tol), atol, 0.0, "0")


def _dummy(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any,
           target: Any, additional_forward_args: Any, feature: Any) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    index = (slice(None), *_feature(inputs, feature))
    keep = torch.ones_like(inputs[:1])
    keep[index] = 0
    a = attribute(_Masked(forward_func, keep), inputs, baselines, target,
                  additional_forward_args).detach()
    return a[index].abs(), a.reshape(a.shape[0], -1).abs().sum(1)


def dummy(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any = None,
          target: Any = None, additional_forward_args: Any = None, *,
          feature: int | tuple[int, ...]) -> Tensor:
    """The attribution of a feature the model ignores (should be zero).

    **Axiom** (dummy / null player; sensitivity (b)): if the function does not
    depend on a variable, the variable's attribution is zero. The checker
    builds such a model from ``forward_func``: ``feature`` is multiplied by
    zero before the model sees it; ``inputs`` and ``baselines`` are used as
    given (so the ignored feature may differ between them).

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.1, "Sensitivity(b)");
        Lundberg & Lee, https://arxiv.org/abs/1705.07874 (Property 2, missingness).

    Satisfied by every gradient-based method here (integrated gradients,
    gradient SHAP, gradient, guided backprop, deconvolution and their neuron
    forms): the feature's gradient is exactly zero. Violated by a method that
    spreads or permutes attribution among features.

    Args:
        attribute, forward_func, inputs, baselines, target,
        additional_forward_args: see :func:`completeness`; ``inputs`` is one Tensor.
        feature: the index of the ignored element of an example.

    Returns:
        ``|attribution of feature|``: ``Tensor[N]``; the assert's scale is
        the example's total ``sum |attributions|``.

    >>> dummy(from_fnattr(fnattr.integrated_gradients), model, x, feature=2, target=0)
    """
    return _dummy(attribute, forward_func, inputs, baselines, target, additional_forward_args,
                  feature)[0]


def assert_dummy(attribute: Callable, forward_func: Callable, inputs: Tensor,
                 baselines: Any = None, target: Any = None, additional_forward_args: Any = None,
                 *, feature: int | tuple[int, ...], atol: float, rtol: float) -> None:
    """Raises ``AssertionError`` where ``dummy > atol + rtol * sum|attributions|``.

    See :func:`dummy`.
    """
    _check("dummy", _as_attribution(attribute),
           _dummy(attribute, forward_func, inputs, baselines, target, additional_forward_args,
                  feature), atol, rtol, "sum|attributions|")


# ---------------------------------------------------------------- symmetry


def _symmetry(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any,
              target: Any, additional_forward_args: Any, features: Sequence[Any]
              ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    if len(features) != 2:
        raise ValueError(f"`features` must be two feature indices, got {features!r}")
    i, j = ((slice(None), *_feature(inputs, f)) for f in features)
    flat = torch.arange(inputs[0].numel()).reshape(inputs.shape[1:])
    perm = flat.flatten().clone()
    fi, fj = int(flat[i[1:]]), int(flat[j[1:]])
    perm[fi], perm[fj] = fj, fi
    x = inputs.clone()
    x[j] = x[i]
    b = baselines
    if isinstance(baselines, Tensor):
        b = baselines.expand_as(inputs[:1]) if baselines.shape[0] == 1 \
            else baselines.expand_as(inputs)
        b = b.clone()
        b[j] = b[i]
    a = attribute(_Symmetrized(forward_func, perm), x, b, target,
                  additional_forward_args).detach()
    return (a[i] - a[j]).abs(), (a[i].abs() + a[j].abs()) / 2


def symmetry(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any = None,
             target: Any = None, additional_forward_args: Any = None, *,
             features: tuple[Any, Any]) -> Tensor:
    """The attribution gap between two symmetric features with equal values.

    **Axiom** (symmetry preservation): if swapping two variables does not
    change the function, and they have equal values in the input and in the
    baseline, they get equal attributions. The checker builds the symmetric
    model ``f(x) + f(swap(x))`` from ``forward_func``, copies the first
    feature's value onto the second in ``inputs`` and in tensor
    ``baselines`` (a single baseline row stays a single row), and attributes.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 4, Theorem 1: integrated
        gradients is the unique symmetry-preserving path method).

    Satisfied by integrated gradients (straight-line path), gradient, guided
    backprop, deconvolution, and gradient SHAP without input noise. Violated
    by path methods whose path is not symmetric (e.g. moving one feature
    after the other) and, per draw, by gradient SHAP with ``stdevs > 0``.

    Args:
        attribute, forward_func, inputs, baselines, target,
        additional_forward_args: see :func:`completeness`; ``inputs`` is one Tensor.
        features: the indices of the two elements of an example to make symmetric.

    Returns:
        ``|a_i - a_j|``: ``Tensor[N]``; the assert's scale is ``(|a_i| + |a_j|) / 2``.

    >>> symmetry(from_fnattr(fnattr.integrated_gradients), model, x, features=(0, 1), target=0)
    """
    return _symmetry(attribute, forward_func, inputs, baselines, target,
                     additional_forward_args, features)[0]


def assert_symmetry(attribute: Callable, forward_func: Callable, inputs: Tensor,
                    baselines: Any = None, target: Any = None,
                    additional_forward_args: Any = None, *, features: tuple[Any, Any],
                    atol: float, rtol: float) -> None:
    """Raises ``AssertionError`` where ``symmetry > atol + rtol * (|a_i| + |a_j|) / 2``.

    See :func:`symmetry`.
    """
    _check("symmetry", _as_attribution(attribute),
           _symmetry(attribute, forward_func, inputs, baselines, target,
                     additional_forward_args, features), atol, rtol, "(|a_i| + |a_j|) / 2")

