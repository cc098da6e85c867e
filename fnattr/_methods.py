"""Named attribution methods: short compositions of the public transforms.

Arguments shared by every method (``forward_func``, ``inputs``, ``target``,
``baselines``, ``additional_forward_args``, ``neuron_selector``, ``n_steps``,
``method``, ``internal_batch_size``, ``attribute_to_layer_input``,
``create_graph``, ``memory_budget``) are documented once, in :mod:`fnattr._normalize`
and the README's "Shared arguments": they mean exactly what they mean in Captum 0.9.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .types import Baselines, ForwardFunc, Layer, Target, TensorOrTuple
from . import _normalize as N
from ._boundary import attribution
from ._engine import Site
from ._functional import functional, transforms_active
from ._objectives import target_objective
from ._paths import at_inputs, path_average, quadrature
from ._transforms import completeness_gap, site_gradient

__all__ = [
    "convergence_delta",
    "deconvolution",
    "gradient",
    "guided_backprop",
    "integrated_gradients",
    "internal_influence",
    "interpolate",
    "layer_conductance",
]


@attribution("inputs", compat="Saliency")
def gradient(
    forward_func: ForwardFunc,
    inputs: TensorOrTuple,
    target: Target = None,
    additional_forward_args: Any = None,
    *,
    create_graph: bool = False,
    memory_budget: int | str | None = None,
) -> TensorOrTuple:
    """Gradient of the target output with respect to the inputs (signed saliency).

    Captum's ``Saliency(abs=False)``; the base that ReLU rules turn into
    guided backprop and deconvolution. ``fnattr.each`` of K targets gives all
    K gradients from one forward and one vectorized backward.

    References:
        Simonyan et al., "Deep Inside Convolutional Networks", https://arxiv.org/abs/1312.6034

    Args:
        {args: forward_func, inputs, target, additional_forward_args, create_graph, memory_budget}

    Returns:
        Gradients shaped like ``inputs`` (a tensor or a tuple), with a leading
        ``K`` for ``fnattr.each`` of K targets.

    Example:
        {digits}
        >>> fnattr.gradient(model, x, target=labels).shape
        torch.Size([50, 1, 8, 8])
        >>> fnattr.gradient(model, x, target=fnattr.each([0, 1])).shape  # two classes, one pass
        torch.Size([2, 50, 1, 8, 8])
    """
    return at_inputs(site_gradient(forward_func, create_graph=create_graph), inputs, target,
                     additional_forward_args, memory_budget)


@attribution("inputs", path="quadrature", delta=True, compat="IntegratedGradients")
def integrated_gradients(
    forward_func: ForwardFunc,
    inputs: TensorOrTuple,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
    multiply_by_inputs: bool = True,
    *,
    create_graph: bool = False,
    memory_budget: int | str | None = None,
) -> Any:
    """Path integral of the input gradient times ``input - baseline``.

    Captum's ``IntegratedGradients``: :func:`path_average` of the input
    gradient over ``method``'s quadrature, multiplied by ``x - b``. Satisfies
    completeness up to the quadrature error. All path points go through the
    model as one expanded batch (``internal_batch_size`` rows at most).

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365

    Args:
        {args: forward_func, inputs, baselines, target, additional_forward_args,
        n_steps, method, internal_batch_size, return_convergence_delta,
        multiply_by_inputs, create_graph, memory_budget}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for ``fnattr.each``
        of K targets); with ``return_convergence_delta``, ``(attributions,
        delta)`` with ``delta`` of shape ``[N]`` (``[K, N]``).

    Example:
        {digits}
        >>> attr, delta = fnattr.integrated_gradients(
        ...     model, x, target=labels, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([50, 1, 8, 8]), torch.Size([50]))
    """
    grad = site_gradient(forward_func, create_graph=create_graph)
    attrs = path_average(grad, inputs, baselines, *quadrature(method, n_steps), target=target,
                         additional_forward_args=additional_forward_args,
                         multiply_by_delta=multiply_by_inputs, stacked=True,
                         internal_batch_size=internal_batch_size, memory_budget=memory_budget)
    return attrs, (completeness_gap(forward_func, attrs, baselines, inputs, target,
                                    additional_forward_args) if return_convergence_delta else None)


def _rule_gradient(name: str, rule: str, compat: str, summary: str, about: str,
                   reference: str) -> Callable:
    """The gradient under a ReLU rule: ``gradient(with_rule(model, <rule>_relu), ...)``,
    registered as ``name`` (the boundary applies the catalog's ``rule``)."""
    def body(
        model: ForwardFunc,
        inputs: TensorOrTuple,
        target: Target = None,
        additional_forward_args: Any = None,
        *,
        create_graph: bool = False,
    ) -> TensorOrTuple:
        return gradient.__wrapped__(model, inputs, target, additional_forward_args,
                                    create_graph=create_graph)

    body.__name__ = body.__qualname__ = name
    body.__doc__ = f"""Gradient with every ReLU's backward replaced by the {summary} rule.

    {about}

    References:
        {reference}

    Args:
        {{args: model, inputs, target, additional_forward_args, create_graph}}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for
        ``fnattr.each`` of K targets).

    Example:
        {{digits}}
        >>> attr = fnattr.{name}(model, x, target=labels)
        >>> attr.shape
        torch.Size([50, 1, 8, 8])
    """
    return attribution("inputs", rule=rule, compat=compat)(body)


guided_backprop = _rule_gradient(
    "guided_backprop", "guided", "GuidedBackprop", "guided",
    """Captum's ``GuidedBackprop``, as ``gradient(with_rule(model,
    guided_relu), ...)``. Differs from Captum in reaching every ReLU the
    forward runs (``F.relu``, ``torch.relu``, ``Tensor.relu`` and in-place
    forms, not only ``nn.ReLU`` modules) and in printing no warnings.""",
    """Springenberg et al., "Striving for Simplicity", https://arxiv.org/abs/1412.6806""")

deconvolution = _rule_gradient(
    "deconvolution", "deconv", "Deconvolution", "deconvolution",
    """Captum's ``Deconvolution``, as ``gradient(with_rule(model, deconv_relu), ...)``;
    reaches every ReLU the forward runs (see :func:`with_rule`).""",
    """Zeiler & Fergus, "Visualizing and Understanding Convolutional
        Networks", https://arxiv.org/abs/1311.2901""")


@attribution("layer", path="quadrature", compat="InternalInfluence")
def internal_influence(
    forward_func: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    *,
    create_graph: bool = False,
    grad_kwargs: dict | None = None,
    memory_budget: int | str | None = None,
) -> TensorOrTuple:
    """Integral of the layer gradient along the straight path baseline -> input.

    Captum's ``InternalInfluence`` as one function: the layer gradient of the
    target output, averaged with ``method``'s quadrature weights over
    ``n_steps`` points ``baseline + alpha * (input - baseline)``. All points
    go through the model as one expanded batch (``internal_batch_size`` rows
    at most per forward) with one backward, and no graph is recorded for the
    parameters unless ``create_graph=True``.

    References:
        Leino et al., "Influence-Directed Explanations for Deep Convolutional
        Networks", https://arxiv.org/abs/1802.03788

    Args:
        {args: forward_func, layer, inputs, baselines, target, additional_forward_args,
        n_steps, method, internal_batch_size, attribute_to_layer_input, create_graph,
        grad_kwargs, memory_budget}

    Returns:
        Attributions shaped like the layer's output (input), ``[N, *layer_dims]``;
        a tuple when the layer's value is a tuple of several tensors; a leading
        ``K`` for ``fnattr.each`` of K targets.

    Example:
        {digits}
        >>> attr = fnattr.internal_influence(model, "features.2", x, target=labels, n_steps=16)
        >>> attr.shape  # features.2: conv(8 -> 16), padding 1
        torch.Size([50, 16, 8, 8])
    """
    grad = site_gradient(forward_func, Site(layer, attribute_to_layer_input), wrt_site=True,
                         create_graph=create_graph)
    return path_average(grad, inputs, baselines, *quadrature(method, n_steps), target=target,
                        additional_forward_args=additional_forward_args, stacked=True,
                        internal_batch_size=internal_batch_size, memory_budget=memory_budget)


@attribution("layer", path="quadrature", delta=True, compat="LayerConductance")
def layer_conductance(
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
    *,
    create_graph: bool = False,
    grad_kwargs: dict | None = None,
    memory_budget: int | str | None = None,
) -> Any:
    """Conductance of each neuron of a layer: ``sum_s dF/dy(s) * (y(s+1) - y(s))``.

    Captum's ``LayerConductance``: the layer gradient at ``n_steps + 1`` path
    points (``method``'s nodes for ``n_steps + 1``) times the change of the
    layer's value to the next point, summed. The layer attributions sum to
    ``f(x) - f(b)`` up to the discretization error (layer completeness).
    ``grad_kwargs`` is accepted as in :func:`internal_influence`.

    References:
        Dhamdhere et al., "How Important Is a Neuron?", https://arxiv.org/abs/1805.12233

    Args:
        {args: forward_func, layer, inputs, baselines, target, additional_forward_args,
        n_steps, method, internal_batch_size, return_convergence_delta,
        attribute_to_layer_input, create_graph, grad_kwargs, memory_budget}

    Returns:
        Attributions shaped like the layer's output (input), ``[N, *layer_dims]``
        (a tuple for a tuple-valued layer, a leading ``K`` for ``fnattr.each``);
        with ``return_convergence_delta``, ``(attributions, delta)``, ``delta``
        of shape ``[N]``.

    Example:
        {digits}
        >>> attr, delta = fnattr.layer_conductance(
        ...     model, "classifier.1", x, target=labels, return_convergence_delta=True)
        >>> attr.shape, delta.shape  # classifier.1: linear(256 -> 32)
        (torch.Size([50, 32]), torch.Size([50]))
    """
    alphas, _ = quadrature(method, n_steps + 1)
    grad = site_gradient(forward_func, Site(layer, attribute_to_layer_input), wrt_site=True,
                         create_graph=create_graph, return_value=True)
    per_point = path_average(grad, inputs, baselines, alphas, [1.0] * len(alphas), target=target,
                             additional_forward_args=additional_forward_args, stacked=True,
                             internal_batch_size=internal_batch_size, reduce=False,
                             memory_budget=memory_budget)
    half = len(per_point) // 2  # (K, steps, N, ...) gradients, then the layer values
    # One temporary the size of a layer value per point (the differences,
    # multiplied in place where no transform or graph needs them kept).
    inplace = not (create_graph or transforms_active())
    attrs = tuple((d.mul_(g[:, :-1]) if inplace else d * g[:, :-1]).sum(1)
                  for g, d in ((g, torch.diff(v, dim=1))
                               for g, v in zip(per_point[:half], per_point[half:])))
    return attrs, (completeness_gap(forward_func, attrs, baselines, inputs, target,
                                    additional_forward_args) if return_convergence_delta else None)


def convergence_delta(
    forward_func: ForwardFunc,
    attributions: TensorOrTuple,
    start_point: Baselines,
    end_point: TensorOrTuple,
    target: Target = None,
    additional_forward_args: Any = None,
    *,
    layer_attributions: bool = False,
) -> Tensor:
    """Completeness gap per example: ``sum(attributions) - (f(end) - f(start))``.

    Captum's ``compute_convergence_delta``: attributions are summed over all
    features of all inputs; ``f`` is the target output (summed over any
    remaining dims). Input attributions come one tensor per input (another
    count is a ``ValueError``, where Captum silently sums the tensors it is
    given); a layer's attributions (any number of tensors with one row per
    example, as Captum's layer classes check them) need
    ``layer_attributions=True``. Evaluated without recording a graph.

    Args:
        {args: forward_func}
        attributions: a tensor or a tuple of tensors, each with one row per
            example of ``end_point``: one per input, or a layer's with
            ``layer_attributions``.
        start_point: the path start, as ``baselines``: ``None`` (zeros), a
            number, a tensor of the input's shape or with a batch dim of 1, or a
            tuple of those.
        end_point: the inputs, a tensor ``[N, ...]`` or a tuple of them.
        {args: target[single], additional_forward_args}
        layer_attributions: ``attributions`` are a layer's (any number of
            tensors), not the inputs'.

    Returns:
        A tensor ``[N]``: one gap per example.

    Example:
        {digits}
        >>> attr = fnattr.integrated_gradients(model, x, target=labels)
        >>> delta = fnattr.convergence_delta(model, attr, None, x, target=labels)
        >>> delta.shape
        torch.Size([50])
        >>> with torch.no_grad():  # f(x) - f(0) for the target class
        ...     gap = (model(x) - model(0 * x)).gather(1, labels[:, None]).squeeze(1)
        >>> bool((delta.abs() < 0.05 * gap.abs()).all())  # quadrature error at ReLU kinks
        True
    """
    ends, _ = N.as_tuple(end_point, "end_point")
    attrs, _ = N.as_tuple(attributions, "attributions")
    if not isinstance(layer_attributions, bool):
        raise TypeError(f"`layer_attributions` must be a bool, got "
                        f"{type(layer_attributions).__name__}")
    if not layer_attributions and len(attrs) != len(ends):
        raise ValueError(
            f"`attributions` holds {len(attrs)} tensor(s) for {len(ends)} input(s) "
            "(`end_point`): input attributions come one per input; for a layer's "
            "attributions pass `layer_attributions=True`")
    if any(a.shape[0] != ends[0].shape[0] for a in attrs):
        raise ValueError(
            "`attributions` must have one row per example of `end_point` "
            f"({ends[0].shape[0]}), got batch sizes {[a.shape[0] for a in attrs]}"
        )
    starts = N.format_baselines(start_point, ends, name="start_point")
    N.check_target(target, ends[0].shape[0])
    return completeness_gap(functional(forward_func), tuple(a.unsqueeze(0) for a in attrs),
                            starts, ends, target_objective(target),
                            N.format_args(additional_forward_args))[0]


def interpolate(layer_attribution: Tensor, interpolate_dims: int | tuple[int, ...],
                interpolate_mode: str = "nearest") -> Tensor:
    """Upsamples a layer attribution to ``interpolate_dims`` (``F.interpolate``).

    Captum's ``LayerAttribution.interpolate``: dims 0 and 1 (examples,
    channels) are kept, the spatial dims are resized with ``interpolate_mode``,
    so that a convolution layer's attribution can be laid over the input image.

    Args:
        layer_attribution: a tensor ``[N, C, *spatial]`` (1 to 3 spatial dims).
        interpolate_dims: the new spatial size: an int or one int per spatial dim.
        interpolate_mode: ``F.interpolate``'s ``mode``: ``"nearest"``,
            ``"linear"`` (1 spatial dim), ``"bilinear"``/``"bicubic"`` (2),
            ``"trilinear"`` (3), ``"area"`` or ``"nearest-exact"``.

    Returns:
        A tensor ``[N, C, *interpolate_dims]``.

    Example:
        {digits}
        >>> attr = fnattr.internal_influence(model, "features.4", x, target=labels)
        >>> attr.shape  # after the 2x2 max-pool
        torch.Size([50, 16, 4, 4])
        >>> fnattr.interpolate(attr, (8, 8), "bilinear").shape
        torch.Size([50, 16, 8, 8])
    """
    if not isinstance(layer_attribution, Tensor):
        raise TypeError(
            f"`layer_attribution` must be a Tensor, got {type(layer_attribution).__name__}"
        )
    if layer_attribution.dim() < 3:
        raise ValueError(
            "`layer_attribution` needs (examples, channels, *spatial) dims, got shape "
            f"{tuple(layer_attribution.shape)}"
        )
    spatial = layer_attribution.dim() - 2
    dims = interpolate_dims if isinstance(interpolate_dims, tuple) else (interpolate_dims,)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims) or (
            len(dims) not in (1, spatial)):
        raise ValueError(
            f"`interpolate_dims` must be a positive int or a tuple of {spatial} of them "
            f"(the attribution's spatial dims), got {interpolate_dims!r}")
    ranks = _INTERPOLATE_RANKS.get(interpolate_mode)
    if ranks is None:
        raise ValueError(f"`interpolate_mode` must be one of {sorted(_INTERPOLATE_RANKS)}, "
                         f"got {interpolate_mode!r}")
    if spatial not in ranks:
        raise ValueError(
            f"`interpolate_mode` {interpolate_mode!r} needs {' or '.join(map(str, ranks))} "
            f"spatial dims, the attribution has {spatial} (shape "
            f"{tuple(layer_attribution.shape)})")
    return F.interpolate(layer_attribution, interpolate_dims, mode=interpolate_mode)


# F.interpolate's modes and the spatial ranks each supports
_INTERPOLATE_RANKS = {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "linear": (1,),
                      "bilinear": (2,), "bicubic": (2,), "trilinear": (3,), "area": (1, 2, 3)}
