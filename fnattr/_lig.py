"""Layer integrated gradients, the method for models fed token ids, and token summaries.

Integrated gradients needs a straight path between a baseline and the input,
which token ids (integers into an ``nn.Embedding``) do not have. Layer
integrated gradients integrates along the path between the *layer's values*
at the baselines and at the inputs instead: the forward runs on the inputs and
the layer's value is replaced by the path point (a substituting tap,
``layer_gradients(..., substitute=points)``), so the inputs may be integers.
Baselines for token inputs are token ids (a pad or mask id), as in Captum.

Hugging Face models return a ``ModelOutput`` (a dict), not a Tensor: pass a
one-line wrapper as the forward function, e.g.
``lambda ids, mask: model(ids, attention_mask=mask).logits`` with
``additional_forward_args=mask``, and the layer as a module object
(``model.bert.embeddings``), which works with any callable.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor

from .types import Baselines, ForwardFunc, Layer, Target, TensorOrTuple
from . import _engine
from ._boundary import attribution
from ._engine import Site
from ._functional import Functional, transforms_active
from ._objectives import Objective
from ._paths import path_average, quadrature
from ._transforms import completeness_gap

__all__ = ["layer_integrated_gradients", "token_scores"]


@attribution("layer", path="quadrature", delta=True, compat="LayerIntegratedGradients",
             integer_inputs=True, layers=True)
def layer_integrated_gradients(
    forward_func: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
    attribute_to_layer_input: bool = False,
    multiply_by_inputs: bool = True,
    *,
    create_graph: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
) -> Any:
    """Integrated gradients along the path between a layer's values at the baselines and inputs.

    Captum's ``LayerIntegratedGradients`` as one function: the layer's values
    ``y(b)`` and ``y(x)`` are read with two forwards, then the forward runs on
    the inputs (repeated per path point, one expanded batch) with the layer's
    value *replaced* by ``y(b) + alpha * (y(x) - y(b))``; the gradient at that
    value, averaged with ``method``'s quadrature, is multiplied by
    ``y(x) - y(b)``. The inputs may be integer token ids: nothing is
    differentiated at them. Differs from Captum in that
    ``target=fnattr.each([...])`` gives all K targets from one forward and a
    vectorized backward (``chunk_size`` rows at a time) and
    ``create_graph=True`` keeps the result differentiable. ``layer`` may be a
    list of layers, as in Captum: their values are substituted together at each
    point of the path, and a list with one attribution per layer comes back (the
    layers must not feed each other: a substituted value replaces what an
    earlier listed layer computed).

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (applied at a layer, as in Captum)

    Args:
        {args: forward_func, layer}
        inputs: a tensor ``[N, ...]`` or a tuple of tensors sharing dim 0; may
            be integer token ids.
        {args: baselines}
            For integer inputs the baselines are token ids (an int, or an
            integer tensor like the inputs).
        {args: target, additional_forward_args, n_steps, method, internal_batch_size,
        return_convergence_delta, attribute_to_layer_input}
        multiply_by_inputs: multiply by ``y(x) - y(b)`` (else the path-averaged gradient).
        create_graph: keep the result differentiable.
        chunk_size: targets per vectorized backward for ``fnattr.each`` targets.
        {args: memory_budget}

    Returns:
        Attributions shaped like the layer's output (input), a tuple when its
        value is a tuple of several tensors (a leading ``K`` for K targets);
        for a list of layers, a list of those, one per layer; and the deltas
        (``[N]``, or ``[K, N]``) with ``return_convergence_delta``.

    Example:
        {digits}
        >>> attr = fnattr.layer_integrated_gradients(model, "features.0", x, target=labels)
        >>> attr.shape  # features.0: conv(1 -> 8), padding 1
        torch.Size([50, 8, 8, 8])
        >>> text = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Flatten(),
        ...                            torch.nn.Linear(12 * 16, 2))
        >>> ids = torch.randint(1, 100, (4, 12))  # 4 sentences of 12 token ids
        >>> attr = fnattr.layer_integrated_gradients(text, text[0], ids, baselines=0, target=1)
        >>> attr.shape  # [N, tokens, hidden]
        torch.Size([4, 12, 16])
    """
    starts = _token_baselines(baselines, inputs)
    # Several layers (a tuple) are substituted together, at the same point of the
    # path (Captum's); each one's value is read in one forward per path end.
    at_ends, at_starts = (_layer_values(forward_func, layer, attribute_to_layer_input, xs,
                                        additional_forward_args, create_graph)
                          for xs in (inputs, starts))
    counts = tuple(len(v) for v in at_ends)
    site = Site(layer, attribute_to_layer_input, counts if isinstance(layer, tuple) else None)
    # A value of r rows per example (a layer run on the examples' tokens flattened
    # into the batch, (N * T, ...)) is integrated as (N, r, ...), as Captum does.
    n = inputs[0].shape[0]
    per = tuple(v.shape[0] // n for part in at_ends for v in part)
    ends_at, starts_at = (tuple(v.reshape(n, r, *v.shape[1:]) if r != 1 else v
                                for v, r in zip((v for part in side for v in part), per))
                          for side in (at_ends, at_starts))
    grad = _substituted_gradient(forward_func, site, len(inputs), create_graph, chunk_size, per)
    attrs = path_average(grad, ends_at, starts_at, *quadrature(method, n_steps), target=target,
                         additional_forward_args=inputs + additional_forward_args,
                         multiply_by_delta=multiply_by_inputs, stacked=True,
                         internal_batch_size=internal_batch_size, memory_budget=memory_budget)
    gap = completeness_gap(forward_func, attrs, starts, inputs, target,
                           additional_forward_args) if return_convergence_delta else None
    attrs = _flat(attrs, per, 1)
    if isinstance(layer, tuple):  # one tuple of attributions per layer
        attrs = tuple(_engine.split(attrs, counts))
    return attrs, gap


def _flat(tensors: tuple[Tensor, ...], per: tuple[int, ...], dim: int) -> tuple[Tensor, ...]:
    """``(..., N, r, ...)`` at ``dim`` back to ``(..., N * r, ...)`` where ``r != 1``."""
    return tuple(t.flatten(dim, dim + 1) if r != 1 else t for t, r in zip(tensors, per))


def _substituted_gradient(f: Functional, site: Site, n_inputs: int, create_graph: bool,
                          chunk_size: int | None, per: tuple[int, ...]) -> Callable:
    """The integrand: the gradient at the layer's value replaced by the path points.

    The inputs travel with the additional arguments (their first ``n_inputs``),
    so that ``path_average`` repeats them per point instead of interpolating them.
    Points of a value with ``r != 1`` rows per example come as ``(rows, r, ...)``
    and are substituted flattened."""
    def grad(points: tuple, objective: Objective, args: tuple) -> tuple[Tensor, ...]:
        rows = points[0].shape[0]  # inputs of one example are broadcast by path_average
        ids = tuple(x if x.shape[0] == rows else x.expand(rows, *x.shape[1:])
                    for x in args[:n_inputs])
        grads = _engine.gradients(f, ids, args[n_inputs:], objective, site, wrt_site=True,
                                  create_graph=create_graph, chunk_size=chunk_size,
                                  substitute=_flat(points, per, 0))
        return tuple(g.unflatten(1, (rows, r)) if r != 1 else g for g, r in zip(grads, per))

    return grad


def _token_baselines(baselines: tuple, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Baselines as full input-shaped tensors (the forward at the baselines needs the
    inputs' batch); token ids for integer inputs."""
    out = []
    for i, (b, x) in enumerate(zip(baselines, xs)):
        integer = not (x.dtype.is_floating_point or x.dtype.is_complex)
        if not isinstance(b, Tensor):
            if integer and b != int(b):
                raise ValueError(
                    f"`baselines` for the integer input {i} must be token ids (ints), got {b}")
            out.append(torch.full_like(x, int(b) if integer else b))
            continue
        if integer and (b.dtype.is_floating_point or b.dtype.is_complex):
            raise TypeError(
                f"`baselines[{i}]` for an integer input must hold token ids (an integer "
                f"tensor), got {b.dtype}")
        out.append(b.expand_as(x) if b.shape[0] != x.shape[0] else b)
    return tuple(out)


def _layer_values(f: Functional, layer: Any, input_side: bool, xs: tuple, args: tuple,
                  create_graph: bool) -> list[tuple[Tensor, ...]]:
    """The value of ``layer`` (its last call; of each layer of a tuple, in one
    forward) for ``xs``: constants unless the result must stay differentiable
    (``create_graph``, or under ``torch.func`` transforms; under ``torch.compile``
    alone as in eager mode)."""
    keep_graph = create_graph or (transforms_active() and not torch.compiler.is_compiling())
    layers = layer if isinstance(layer, tuple) else (layer,)
    taps = [_engine._Tap(input_side, keep=True) for _ in layers]
    with contextlib.nullcontext() if keep_graph else torch.no_grad():
        _engine.forward_at(f, xs, args, Site(layer, input_side),
                           _engine._Taps(taps) if isinstance(layer, tuple) else taps[0])
    n = xs[0].shape[0]
    for m, tap in zip(layers, taps):
        if any(v.dim() == 0 or v.shape[0] % n for v in tap.value):
            shapes = ", ".join(str(tuple(v.shape)) for v in tap.value)
            raise ValueError(
                f"the `layer` {type(m).__name__}'s "
                f"{'input' if input_side else 'value'} has shape {shapes}: dim 0 is not "
                f"the inputs' {n} examples (or a multiple, rows of one example after "
                "another): layer integrated gradients replaces it per example (a value "
                "shared by all examples, e.g. rotary position embeddings, cannot be; a "
                "sequence-first layer, e.g. nn.LSTM without batch_first, needs "
                "batch_first=True)")
    return [tap.value for tap in taps]


def token_scores(attributions: Tensor, normalize: bool = True) -> Tensor:
    """One score per token: layer attributions on embeddings summed over the hidden dim.

    The usual reduction of embedding attributions (Captum's NLP tutorials):
    the last dim (hidden features) is summed, so each token's score is its
    share of the total attribution (the scores sum to the attributions' sum).
    With ``normalize`` each row of scores (the tokens of one example, or one
    target's row) is divided by its L2 norm (rows of zeros stay zero), which
    makes examples comparable on one colour scale but no longer sums to the
    attribution.

    Args:
        attributions: a ``(..., T, H)`` Tensor: ``(N, T, H)`` from
            :func:`layer_integrated_gradients` on an embedding layer, or
            ``(K, N, T, H)`` for ``fnattr.each`` targets.
        normalize: divide each row of ``T`` scores by its L2 norm.

    Returns:
        A ``(..., T)`` Tensor of token scores.

    Example:
        >>> import torch, fnattr
        >>> text = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Flatten(),
        ...                            torch.nn.Linear(12 * 16, 2))
        >>> ids = torch.randint(1, 100, (4, 12))  # 4 sentences of 12 token ids
        >>> attr = fnattr.layer_integrated_gradients(text, text[0], ids, target=1)
        >>> scores = fnattr.token_scores(attr)
        >>> scores.shape, torch.allclose(scores.norm(dim=1), torch.ones(4))
        (torch.Size([4, 12]), True)
    """
    if not isinstance(attributions, Tensor):
        raise TypeError(
            "`attributions` must be a Tensor (..., tokens, hidden); for a layer whose value "
            f"is a tuple pass one of its tensors, got {type(attributions).__name__}")
    if attributions.dim() < 2:
        raise ValueError(
            "`attributions` needs (..., tokens, hidden) dims, got shape "
            f"{tuple(attributions.shape)}")
    scores = attributions.sum(-1)
    if not normalize:
        return scores
    norm = torch.linalg.vector_norm(scores, dim=-1, keepdim=True)
    return scores / torch.where(norm > 0, norm, torch.ones_like(norm))
