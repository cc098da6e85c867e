"""Completeness and layer completeness (part of :mod:`fnattr.testing.axioms`)."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ._adapters import TensorOrTuple, _as_attribution
from ._checks import _change, _check, _flat, _start_points

__all__ = ["assert_completeness", "assert_layer_completeness", "completeness",
           "layer_completeness"]


def _completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                  baselines: Any, target: Any, additional_forward_args: Any
                  ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    attrs = attribute(forward_func, inputs, baselines, target, additional_forward_args)
    change = _change(attribute, forward_func, inputs, _start_points(baselines, inputs), target,
                     additional_forward_args)
    return _flat(attrs).sum(1) - change, change.abs()


def completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                 baselines: Any = None, target: Any = None,
                 additional_forward_args: Any = None) -> Tensor:
    """Completeness gap: ``sum(attributions) - (F(inputs) - F(baselines))`` per example.

    **Axiom** (completeness; SHAP's *local accuracy*): the attributions of an
    example add up to the difference between the explained output at the
    input and at the baseline. ``F`` is ``attribute.explains``: the target
    output, or the neuron's value for neuron methods (so neuron integrated
    gradients is checked against the neuron).

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Proposition 1); Lundberg & Lee,
        "A Unified Approach to Interpreting Model Predictions",
        https://arxiv.org/abs/1705.07874 (Property 1).

    Satisfied by integrated gradients and neuron integrated gradients (up to
    the quadrature error), by gradient SHAP only in expectation over its
    samples; not by gradient, guided backprop or deconvolution.

    Args:
        attribute: an :class:`Attribution` or ``attribute(f, inputs, baselines, target)``.
        forward_func, inputs, target, additional_forward_args: as in Captum.
        baselines: ``None`` (zeros), a number, or a tensor broadcastable to
            ``inputs`` (e.g. one reference row), or a tuple of those.

    Returns:
        The signed gap, ``Tensor[N]`` (Captum's convergence delta); the
        assert's scale is ``|F(inputs) - F(baselines)|``.

    >>> completeness(from_fnattr(fnattr.integrated_gradients), model, x, target=0).abs().max()
    """
    return _completeness(attribute, forward_func, inputs, baselines, target,
                         additional_forward_args)[0]


def layer_completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                       baselines: Any = None, target: Any = None,
                       additional_forward_args: Any = None) -> Tensor:
    """Layer completeness gap: ``sum(layer attributions) - (F(inputs) - F(baselines))``.

    **Axiom** (conductance's completeness): the attributions of the neurons
    of one layer add up to the change of the target output between baseline
    and input, because the conductances of a layer partition the integrated
    gradients of the inputs. ``attribute`` returns layer-shaped attributions
    (e.g. ``from_fnattr(fnattr.layer_conductance, layer="fc0")``); the
    measurement is :func:`completeness`'s.

    References:
        Dhamdhere et al., "How Important Is a Neuron?",
        https://arxiv.org/abs/1805.12233 (Section 3, completeness).

    Satisfied by layer conductance (up to the discretization error of its
    ``n_steps``); not by internal influence (an averaged gradient, not
    multiplied by the layer's change).

    Returns:
        The signed gap, ``Tensor[N]``; the assert's scale is ``|F(x) - F(b)|``.

    >>> layer_completeness(from_fnattr(fnattr.layer_conductance, layer="fc0"), model, x,
    ...                    target=0)
    """
    return completeness(attribute, forward_func, inputs, baselines, target,
                        additional_forward_args)


def _asserting(axiom: str) -> Callable[..., None]:
    """``assert_<axiom>``: :func:`completeness`'s measurement against its scale."""
    def check(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
              baselines: Any = None, target: Any = None, additional_forward_args: Any = None,
              *, atol: float, rtol: float) -> None:
        _check(axiom.replace("_", " "), _as_attribution(attribute),
               _completeness(attribute, forward_func, inputs, baselines, target,
                             additional_forward_args), atol, rtol, "|F(x) - F(b)|")

    check.__name__ = check.__qualname__ = f"assert_{axiom}"
    check.__doc__ = f"""Raises ``AssertionError`` where ``|{axiom}| > atol + rtol * |F(x) - F(b)|``.

    See :func:`{axiom}`.
    """
    return check


assert_completeness = _asserting("completeness")
assert_layer_completeness = _asserting("layer_completeness")
