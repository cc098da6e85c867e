"""Axioms comparing the attributions of two models: linearity, implementation
invariance (part of :mod:`fnattr.testing.axioms`)."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ._adapters import TensorOrTuple, _as_attribution
from ._checks import _Combined, _check, _flat

__all__ = ["assert_implementation_invariance", "assert_linearity", "implementation_invariance",
           "linearity"]


def _gap(a: TensorOrTuple, expected: TensorOrTuple) -> tuple[Tensor, Tensor]:
    a, expected = _flat(a), _flat(expected)
    return (a - expected).abs().amax(1), expected.abs().amax(1)


def _linearity(attribute: Callable, forward_func: Callable, other_func: Callable,
               inputs: TensorOrTuple, baselines: Any, target: Any,
               additional_forward_args: Any, coefficients: tuple[float, float]
               ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    a, b = coefficients
    combined = _Combined(forward_func, other_func, a, b)

    def run(f: Callable) -> Tensor:
        return _flat(attribute(f, inputs, baselines, target, additional_forward_args))

    return _gap(run(combined), a * run(forward_func) + b * run(other_func))


def linearity(attribute: Callable, forward_func: Callable, other_func: Callable,
              inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
              additional_forward_args: Any = None, *,
              coefficients: tuple[float, float] = (2.0, -0.5)) -> Tensor:
    """How far the attributions of ``a f + b g`` are from ``a A(f) + b A(g)``.

    **Axiom** (linearity): attributing a linear combination of two networks
    gives the same combination of their attributions. The checker builds
    ``a * forward_func + b * other_func`` (the two must take the same inputs
    and give outputs of the same shape). The default coefficients include a
    negative one, which rules that depend on the gradient's sign fail.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.2, "Linearity").

    Satisfied by integrated gradients, gradient, and gradient SHAP with a
    fixed seed (the same samples for all three calls). Violated by guided
    backprop and deconvolution for negative coefficients.

    Args:
        attribute: see :func:`completeness`.
        forward_func, other_func: the two networks ``f`` and ``g``.
        inputs, baselines, target, additional_forward_args: see :func:`completeness`.
        coefficients: ``(a, b)``.

    Returns:
        The per-example largest ``|A(a f + b g) - (a A(f) + b A(g))|``:
        ``Tensor[N]``; the assert's scale is the largest ``|a A(f) + b A(g)|``.

    >>> linearity(from_fnattr(fnattr.integrated_gradients), f, g, x, target=0)
    """
    return _linearity(attribute, forward_func, other_func, inputs, baselines, target,
                      additional_forward_args, coefficients)[0]


def assert_linearity(attribute: Callable, forward_func: Callable, other_func: Callable,
                     inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
                     additional_forward_args: Any = None, *,
                     coefficients: tuple[float, float] = (2.0, -0.5), atol: float,
                     rtol: float) -> None:
    """Raises ``AssertionError`` where ``linearity > atol + rtol * max|a A(f) + b A(g)|``.

    See :func:`linearity`.
    """
    _check("linearity", _as_attribution(attribute),
           _linearity(attribute, forward_func, other_func, inputs, baselines, target,
                      additional_forward_args, coefficients),
           atol, rtol, "max|a A(f) + b A(g)|")


def _implementation_invariance(attribute: Callable, forward_func: Callable,
                               other_func: Callable, inputs: TensorOrTuple, baselines: Any,
                               target: Any, additional_forward_args: Any
                               ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    return _gap(attribute(other_func, inputs, baselines, target, additional_forward_args),
                attribute(forward_func, inputs, baselines, target, additional_forward_args))


def implementation_invariance(attribute: Callable, forward_func: Callable,
                              other_func: Callable, inputs: TensorOrTuple,
                              baselines: Any = None, target: Any = None,
                              additional_forward_args: Any = None) -> Tensor:
    """How far the attributions of two functionally equal networks are apart.

    **Axiom** (implementation invariance): two networks that compute the
    same function (equal outputs for all inputs, however implemented) get
    identical attributions. The caller supplies the pair
    (:func:`fnattr.testing.strategies.equivalent_models` draws one); the
    checker does not verify that they are equal.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.2, "Implementation Invariance").

    Satisfied by every method that depends on the function only through its
    gradients: integrated gradients, gradient, gradient SHAP (fixed seed).
    Violated by guided backprop and deconvolution, whose ReLU rules depend on
    how the function is written (e.g. ``z`` versus ``relu(z) - relu(-z)``).

    Args:
        attribute: see :func:`completeness`.
        forward_func, other_func: two functionally equal networks.
        inputs, baselines, target, additional_forward_args: see :func:`completeness`.

    Returns:
        The per-example largest ``|A(other) - A(forward_func)|``: ``Tensor[N]``;
        the assert's scale is the largest ``|A(forward_func)|``.

    >>> implementation_invariance(from_fnattr(fnattr.guided_backprop), f, f_twin, x, target=0)
    """
    return _implementation_invariance(attribute, forward_func, other_func, inputs, baselines,
                                      target, additional_forward_args)[0]


def assert_implementation_invariance(attribute: Callable, forward_func: Callable,
                                     other_func: Callable, inputs: TensorOrTuple,
                                     baselines: Any = None, target: Any = None,
                                     additional_forward_args: Any = None, *, atol: float,
                                     rtol: float) -> None:
    """Raises ``AssertionError`` where ``implementation_invariance > atol + rtol * max|A(f)|``.

    See :func:`implementation_invariance`.
    """
    _check("implementation invariance", _as_attribution(attribute),
           _implementation_invariance(attribute, forward_func, other_func, inputs, baselines,
                                      target, additional_forward_args),
           atol, rtol, "max|A(f)|")
