"""The composable core: objectives, gradients at a site, path averaging.

Every named method in :mod:`fnattr` is a short composition of these public
transforms; compose them yourself for methods Captum does not ship (see the
README's "Composable core" section).

* An **objective** (:mod:`fnattr._objectives`) says *what* is explained:
  ``target_objective(target)`` (a model output per example) or
  ``neuron_objective(selector)`` (a neuron of a layer per example), with K rows.
* :func:`input_gradients` / :func:`layer_gradients` say *with respect to
  what*: the gradient of the objective (summed over examples) at the inputs
  or at a layer's output/input.
* :func:`fnattr.quadrature` and :func:`fnattr.path_average` say *where*
  (:mod:`fnattr._paths`): a weighted average of a gradient function over
  points ``baseline + alpha * (input - baseline)``.
* :func:`completeness_gap` is the one convergence-delta computation.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .types import ForwardFunc
from . import _engine, _normalize as N
from ._engine import INPUTS, Site
from ._functional import Functional, functional
from ._objectives import Objective, as_objective

__all__ = ["completeness_gap", "site_gradient", "input_gradients", "layer_gradients"]


def input_gradients(
    forward_func: ForwardFunc,
    inputs: Sequence[Tensor],
    objective: Callable,
    *,
    additional_forward_args: tuple = (),
    layer: nn.Module | None = None,
    attribute_to_layer_input: bool = False,
    create_graph: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, ...]:
    """Gradient of ``objective`` (summed over examples) with respect to the inputs.

    With ``layer`` given, ``objective`` reads that layer's output (or input,
    with ``attribute_to_layer_input``) instead of the model's output, and the
    forward stops at the layer when the model provably calls it once (a chain
    of plain ``nn.Sequential`` containers). A ``[K, N]`` objective gives
    gradients with a leading ``K`` from one forward and a vectorized backward
    (``chunk_size`` rows at a time).

    Args:
        {args: forward_func}
        inputs: a tuple of tensors ``[N, ...]`` (always a tuple here).
        objective: from :func:`target_objective`, :func:`neuron_objective`, or
            your own ``objective(output, layer_value) -> Tensor[N] | Tensor[K, N]``.
        additional_forward_args: a tuple passed to the model after the inputs.
        layer: the ``nn.Module`` whose value the objective reads, if any.
        attribute_to_layer_input: read the layer's input instead of its output.
        create_graph: keep the result differentiable.
        chunk_size: rows per vectorized backward over K (``None``: chosen from
            the bytes the forward saves for fnattr's objectives; all K for your
            own objectives unless you set ``objective.stacked = True``).

    Returns:
        A tuple of gradients shaped like ``inputs`` (with a leading ``K``).

    Example:
        {digits}
        >>> (g,) = fnattr.input_gradients(model, (x,), fnattr.target_objective(labels))
        >>> torch.equal(g, fnattr.gradient(model, x, target=labels))
        True
    """
    N.check_floating(inputs)
    f = functional(forward_func, detach=not create_graph)
    site = INPUTS if layer is None else Site(N.resolve_layer(f.root, layer),
                                             attribute_to_layer_input)
    objective = as_objective(objective, reads_layer=layer is not None)
    grads = _engine.gradients(f, inputs, additional_forward_args, objective, site,
                              create_graph=create_graph, chunk_size=_chunk(chunk_size))
    return _squeeze(grads, objective)


def layer_gradients(
    forward_func: ForwardFunc,
    layer: nn.Module,
    inputs: Sequence[Tensor],
    objective: Callable,
    *,
    additional_forward_args: tuple = (),
    attribute_to_layer_input: bool = False,
    create_graph: bool = False,
    chunk_size: int | None = None,
    return_value: bool = False,
    substitute: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, ...]:
    """Gradient of ``objective`` (summed over examples) with respect to a layer's value.

    The layer's output (or input) is tapped with a zero probe; the gradient
    with respect to the probe is returned, one tensor per tensor of the
    layer's value (Captum's tuple convention), with a leading ``K`` for a
    ``[K, N]`` objective. With ``substitute`` (one tensor per tensor of the
    layer's value, same shapes) the layer's value is *replaced* by those
    tensors at every call and the gradient is taken at them: the inputs only
    drive the rest of the forward and may be integer token ids (see
    :func:`fnattr.layer_integrated_gradients`).

    Args:
        {args: forward_func}
        layer: the ``nn.Module`` whose value the gradient is taken at.
        inputs: a tuple of tensors ``[N, ...]`` (always a tuple here).
        objective: as in :func:`input_gradients`.
        additional_forward_args: a tuple passed to the model after the inputs.
        {args: attribute_to_layer_input, create_graph, chunk_size}
        return_value: also return the layer's value (a copy taken when the
            layer ran), as ``(grads, value)``.
        substitute: tensors to put in place of the layer's value (``None``:
            the value the layer computes).

    Returns:
        A tuple of gradients shaped like the layer's value (with a leading
        ``K``); ``(grads, value)`` with ``return_value``.

    Example:
        {digits}
        >>> layer = model.classifier[1]  # linear(256 -> 32)
        >>> (g,) = fnattr.layer_gradients(model, layer, (x,), fnattr.target_objective(labels))
        >>> g.shape
        torch.Size([50, 32])
    """
    f = functional(forward_func, detach=not create_graph)
    site = Site(N.resolve_layer(f.root, layer), attribute_to_layer_input)
    objective = as_objective(objective, reads_layer=False)
    out = _engine.gradients(f, inputs, additional_forward_args, objective, site,
                            wrt_site=True, create_graph=create_graph,
                            chunk_size=_chunk(chunk_size), return_value=return_value,
                            substitute=substitute)
    return (_squeeze(out[0], objective), out[1]) if return_value else _squeeze(out, objective)


def _squeeze(grads: tuple[Tensor, ...], objective: Objective) -> tuple[Tensor, ...]:
    return tuple(g[0] for g in grads) if objective.squeeze else grads


def site_gradient(f: Functional, site: Site = INPUTS, *, wrt_site: bool = False,
                  create_graph: bool = False, chunk_size: int | None = None,
                  return_value: bool = False) -> Callable:
    """The integrand of the named methods: ``grad(points, objective, args)``.

    Returns the gradients of ``objective`` at ``points`` (with respect to the
    points, or to ``site``'s layer value with ``wrt_site``), always with the
    objective's leading ``K``; with ``return_value`` the layer's values follow
    the gradients in the same tuple, broadcast over ``K``.
    """
    def grad(points: tuple, objective: Objective, args: tuple) -> tuple[Tensor, ...]:
        out = _engine.gradients(f, points, args, objective, site, wrt_site=wrt_site,
                                create_graph=create_graph, chunk_size=chunk_size,
                                return_value=return_value)
        if not return_value:
            return out
        grads, value = out
        k = grads[0].shape[0]
        return (*grads, *(v.expand(k, *v.shape) for v in value))

    return grad


def completeness_gap(f: Callable, attributions: Sequence[Tensor], starts: Sequence[Any],
                     ends: Sequence[Tensor], objective: Objective, args: tuple) -> Tensor:
    """``(K, N)``: ``sum(attributions[k]) - (F_k(ends) - F_k(starts))`` per example.

    ``F_k`` is the objective's ``k``-th output selection summed per example
    (:meth:`Objective.totals`); attributions are ``(K, N, ...)`` tensors of any
    shape (input- or layer-shaped). Captum's convergence delta, evaluated
    without recording a graph.
    """
    starts = tuple(torch.full_like(e, s) if not isinstance(s, Tensor) else s.expand_as(e)
                   for s, e in zip(starts, ends))
    with torch.no_grad():
        f_end = objective.totals(f(*ends, *args))
        f_start = objective.totals(f(*starts, *args))
        total = sum(a.reshape(*a.shape[:2], math.prod(a.shape[2:])).sum(2) for a in attributions)
    return total - (f_end - f_start)


def _chunk(chunk_size: Any) -> int | None:
    return None if chunk_size is None else N.check_positive_int(chunk_size, "chunk_size")
