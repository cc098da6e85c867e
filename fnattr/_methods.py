"""Named attribution methods: short compositions of the public transforms.

Arguments shared by every method (``forward_func``, ``inputs``, ``target``,
``baselines``, ``additional_forward_args``, ``neuron_selector``, ``n_steps``,
``method``, ``internal_batch_size``, ``attribute_to_layer_input``,
``create_graph``, ``memory_budget``) are documented once, in :mod:`fnattr._docs`
(rendered into each docstring's ``Args:``) and the README's "Shared arguments":
they mean exactly what they mean in Captum 0.9.
"""

from __future__ import annotations

import math
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .types import Baselines, ForwardFunc, Layer, NeuronSelector, Target, TensorOrTuple
from . import _budget, _normalize as N
from ._catalog import register
from ._engine import functional, transforms_active
from ._rules import deconv_relu, guided_relu, with_rule
from ._transforms import (
    input_gradients,
    layer_gradients,
    neuron_objective,
    path_average,
    quadrature,
    sample_paths,
    target_objective,
)

__all__ = [
    "convergence_delta",
    "deconvolution",
    "gradient",
    "gradient_shap",
    "guided_backprop",
    "integrated_gradients",
    "internal_influence",
    "interpolate",
    "layer_conductance",
    "neuron_deconvolution",
    "neuron_gradient",
    "neuron_gradient_shap",
    "neuron_guided_backprop",
    "neuron_integrated_gradients",
]


def neuron_gradient(
    forward_func: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    neuron_selector: NeuronSelector,
    additional_forward_args: Any = None,
    attribute_to_neuron_input: bool = False,
    *,
    create_graph: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
) -> TensorOrTuple:
    """Gradient of one neuron of a layer with respect to the inputs.

    Captum's ``NeuronGradient`` as one function. Differs from it in that a
    **list** of selectors gives all neurons from one forward and one
    vectorized backward (``chunk_size`` rows at a time; ``None`` picks a
    memory-bounded size), stacked on a new leading dim; the forward stops at
    ``layer`` when the model provably calls it once (a chain of plain
    ``nn.Sequential`` containers); and ``create_graph=True`` keeps the result
    differentiable.

    References:
        Simonyan et al., "Deep Inside Convolutional Networks", https://arxiv.org/abs/1312.6034

    Args:
        {args: forward_func, layer, inputs, neuron_selector, additional_forward_args,
        attribute_to_neuron_input, create_graph, chunk_size, memory_budget}

    Returns:
        Gradients shaped like ``inputs`` (a tensor or a tuple), with a leading
        ``K`` for a list of K selectors.

    Example:
        {digits}
        >>> fnattr.neuron_gradient(model, model.classifier[1], x, neuron_selector=3).shape
        torch.Size([50, 1, 8, 8])
        >>> fnattr.neuron_gradient(model, "classifier.1", x, [0, 1, 2]).shape  # 3 neurons, one pass
        torch.Size([3, 50, 1, 8, 8])
    """
    xs, was_tuple = N.as_tuple(inputs)
    layer = N.resolve_layer(forward_func, layer)

    def grad_at(points: tuple, _target: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return input_gradients(forward_func, points, neuron_objective(neuron_selector),
                               additional_forward_args=args_rows, layer=layer,
                               attribute_to_layer_input=attribute_to_neuron_input,
                               create_graph=create_graph, chunk_size=chunk_size)

    args = N.format_args(additional_forward_args)
    many = N.format_selectors(neuron_selector)[1]
    return N.restore(_once(grad_at, xs, None, args, many, memory_budget), was_tuple)


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
    xs, _ = N.as_tuple(inputs)
    bs = N.format_baselines(baselines, xs)
    N.check_target(target, xs[0].shape[0])
    N.check_grad_kwargs(grad_kwargs)
    alphas, weights = quadrature(method, n_steps)
    layer = N.resolve_layer(forward_func, layer)
    internal_batch_size = _batch(internal_batch_size)
    xs, bs = _constants(xs, create_graph), _constants(bs, create_graph)

    def grad_at(points: tuple, target_rows: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return layer_gradients(
            forward_func, layer, points, target_objective(target_rows),
            additional_forward_args=args_rows,
            attribute_to_layer_input=attribute_to_layer_input,
            create_graph=create_graph,
        )

    attrs = path_average(
        grad_at, xs, bs, alphas, weights, target=target,
        additional_forward_args=N.format_args(additional_forward_args),
        stacked=isinstance(target, N.Each), internal_batch_size=internal_batch_size,
        memory_budget=memory_budget,
    )
    return attrs if len(attrs) > 1 else attrs[0]


def convergence_delta(
    forward_func: ForwardFunc,
    attributions: TensorOrTuple,
    start_point: Baselines,
    end_point: TensorOrTuple,
    target: Target = None,
    additional_forward_args: Any = None,
) -> Tensor:
    """Completeness gap per example: ``sum(attributions) - (f(end) - f(start))``.

    Captum's ``compute_convergence_delta``: attributions are summed over all
    features of all inputs; ``f`` is the target output (summed over any
    remaining dims). The attributions may be input- or layer-shaped (any
    number of tensors with one row per example). Evaluated without recording
    a graph.

    Args:
        {args: forward_func}
        attributions: a tensor or a tuple of tensors, each with one row per
            example of ``end_point``.
        start_point: the path start, as ``baselines``: ``None`` (zeros), a
            number, a tensor of the input's shape or with a batch dim of 1, or a
            tuple of those.
        end_point: the inputs, a tensor ``[N, ...]`` or a tuple of them.
        {args: target[single], additional_forward_args}

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
    if any(a.shape[0] != ends[0].shape[0] for a in attrs):
        raise ValueError(
            "`attributions` must have one row per example of `end_point` "
            f"({ends[0].shape[0]}), got batch sizes {[a.shape[0] for a in attrs]}"
        )
    starts = N.format_baselines(start_point, ends, name="start_point")
    starts = tuple(
        torch.full_like(e, s) if not isinstance(s, Tensor) else s.expand_as(e)
        for s, e in zip(starts, ends)
    )
    N.check_target(target, ends[0].shape[0])
    args = N.format_args(additional_forward_args)
    run = functional(forward_func)  # train-mode buffers left as they were
    with torch.no_grad():
        f_end = _row_sums(N.select_target(run(*ends, *args), target, False))
        f_start = _row_sums(N.select_target(run(*starts, *args), target, False))
        total = sum(_row_sums(a) for a in attrs)
    return total - (f_end - f_start)


def _row_sums(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).sum(1)


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
    xs, was_tuple = N.as_tuple(inputs)
    N.check_target(target, xs[0].shape[0])

    def grad_at(points: tuple, target_rows: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return input_gradients(forward_func, points, target_objective(target_rows),
                               additional_forward_args=args_rows, create_graph=create_graph)

    args = N.format_args(additional_forward_args)
    grads = _once(grad_at, xs, target, args, isinstance(target, N.Each), memory_budget)
    return N.restore(grads, was_tuple)


def guided_backprop(
    model: ForwardFunc,
    inputs: TensorOrTuple,
    target: Target = None,
    additional_forward_args: Any = None,
    *,
    create_graph: bool = False,
) -> TensorOrTuple:
    """Gradient with every ReLU's backward replaced by the guided rule.

    Captum's ``GuidedBackprop``, as ``gradient(with_rule(model,
    guided_relu), ...)``. Differs from Captum in reaching every ReLU the
    forward runs (``F.relu``, ``torch.relu``, ``Tensor.relu`` and in-place
    forms, not only ``nn.ReLU`` modules) and in printing no warnings.

    References:
        Springenberg et al., "Striving for Simplicity", https://arxiv.org/abs/1412.6806

    Args:
        {args: model, inputs, target, additional_forward_args, create_graph}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for
        ``fnattr.each`` of K targets).

    Example:
        {digits}
        >>> attr = fnattr.guided_backprop(model, x, target=labels)
        >>> attr.shape
        torch.Size([50, 1, 8, 8])
    """
    N.check_forward_func(model, "model")
    return gradient(with_rule(model, guided_relu), inputs, target,
                    additional_forward_args, create_graph=create_graph)


def deconvolution(
    model: ForwardFunc,
    inputs: TensorOrTuple,
    target: Target = None,
    additional_forward_args: Any = None,
    *,
    create_graph: bool = False,
) -> TensorOrTuple:
    """Gradient with every ReLU's backward replaced by the deconvolution rule.

    Captum's ``Deconvolution``, as ``gradient(with_rule(model, deconv_relu), ...)``;
    reaches every ReLU the forward runs (see :func:`with_rule`).

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional
        Networks", https://arxiv.org/abs/1311.2901

    Args:
        {args: model, inputs, target, additional_forward_args, create_graph}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for
        ``fnattr.each`` of K targets).

    Example:
        {digits}
        >>> attr = fnattr.deconvolution(model, x, target=labels)
        >>> attr.shape
        torch.Size([50, 1, 8, 8])
    """
    N.check_forward_func(model, "model")
    return gradient(with_rule(model, deconv_relu), inputs, target,
                    additional_forward_args, create_graph=create_graph)


def neuron_guided_backprop(
    model: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    neuron_selector: NeuronSelector,
    additional_forward_args: Any = None,
    attribute_to_neuron_input: bool = False,
    *,
    create_graph: bool = False,
    chunk_size: int | None = None,
) -> TensorOrTuple:
    """Neuron gradient under the guided ReLU rule (Captum's ``NeuronGuidedBackprop``).

    :func:`neuron_gradient` of ``with_rule(model, guided_relu)``: every ReLU
    the forward runs gets the guided backward; a list of selectors gives all
    neurons from one pass.

    References:
        Springenberg et al., "Striving for Simplicity", https://arxiv.org/abs/1412.6806

    Args:
        {args: model, layer, inputs, neuron_selector, additional_forward_args,
        attribute_to_neuron_input, create_graph, chunk_size}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for K selectors).

    Example:
        {digits}
        >>> attr = fnattr.neuron_guided_backprop(model, "features.2", x, (0, 3, 3))
        >>> attr.shape  # channel 0 at row 3, column 3 of the second convolution
        torch.Size([50, 1, 8, 8])
    """
    N.check_forward_func(model, "model")
    return neuron_gradient(with_rule(model, guided_relu), layer, inputs, neuron_selector,
                           additional_forward_args, attribute_to_neuron_input,
                           create_graph=create_graph, chunk_size=chunk_size)


def neuron_deconvolution(
    model: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    neuron_selector: NeuronSelector,
    additional_forward_args: Any = None,
    attribute_to_neuron_input: bool = False,
    *,
    create_graph: bool = False,
    chunk_size: int | None = None,
) -> TensorOrTuple:
    """Neuron gradient under the deconvolution rule (Captum's ``NeuronDeconvolution``).

    :func:`neuron_gradient` of ``with_rule(model, deconv_relu)``: every ReLU
    the forward runs gets the deconvolution backward; a list of selectors
    gives all neurons from one pass.

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional
        Networks", https://arxiv.org/abs/1311.2901

    Args:
        {args: model, layer, inputs, neuron_selector, additional_forward_args,
        attribute_to_neuron_input, create_graph, chunk_size}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for K selectors).

    Example:
        {digits}
        >>> attr = fnattr.neuron_deconvolution(model, "features.2", x, [(0, 3, 3), (1, 3, 3)])
        >>> attr.shape
        torch.Size([2, 50, 1, 8, 8])
    """
    N.check_forward_func(model, "model")
    return neuron_gradient(with_rule(model, deconv_relu), layer, inputs, neuron_selector,
                           additional_forward_args, attribute_to_neuron_input,
                           create_graph=create_graph, chunk_size=chunk_size)


def _shap_paths(inputs: Any, baselines: Any, n_samples: Any, stdevs: Any,
                generator: Any) -> tuple:
    xs, was_tuple = N.as_tuple(inputs)
    N.check_floating(xs)
    n_samples = N.check_positive_int(n_samples, "n_samples")
    if callable(baselines) and not isinstance(baselines, Tensor):
        baselines = baselines(inputs) if inspect.signature(baselines).parameters else baselines()
    if baselines is None:
        raise ValueError("`baselines` is required for gradient SHAP (a distribution of reference rows)")
    bs = N.format_baselines(baselines, xs, distribution=True)
    sds = N.format_stdevs(stdevs, len(xs))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    return xs, was_tuple, sample_paths(xs, bs, n_samples, sds, generator)


def gradient_shap(
    forward_func: ForwardFunc,
    inputs: TensorOrTuple,
    baselines: Any,
    n_samples: int = 5,
    stdevs: float | tuple[float, ...] = 0.0,
    target: Target = None,
    additional_forward_args: Any = None,
    return_convergence_delta: bool = False,
    multiply_by_inputs: bool = True,
    *,
    generator: torch.Generator | None = None,
    create_graph: bool = False,
    internal_batch_size: int | None = None,
    memory_budget: int | str | None = None,
) -> Any:
    """Expected gradient over random points on random paths (GradientSHAP).

    Captum's ``GradientShap``: the same path average as integrated gradients
    with the quadrature replaced by samples (see :func:`sample_paths`): a
    baseline row drawn from ``baselines``, Gaussian noise on the input, a
    uniform position on the path; the gradient there is multiplied by
    ``noisy input - baseline`` when ``multiply_by_inputs``. Differs from Captum
    in drawing every random number from ``generator`` (bit-identical results
    for the same generator state; numpy's RNG is never used) and in bounding
    memory with ``internal_batch_size`` rows per forward.

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model
        Predictions", https://arxiv.org/abs/1705.07874

    Args:
        {args: forward_func, inputs, baselines[sampled], n_samples, stdevs, target,
        additional_forward_args}
        return_convergence_delta: also return ``sum(attr) - (f(x') - f(b))``
            per example and sample, example-major (``N * n_samples`` values).
        {args: multiply_by_inputs, generator, create_graph, internal_batch_size, memory_budget}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for ``fnattr.each``
        of K targets); with ``return_convergence_delta``, ``(attributions,
        delta)`` with ``delta`` of shape ``[N * n_samples]``.

    Example:
        {digits}
        >>> g = torch.Generator().manual_seed(0)
        >>> attr, delta = fnattr.gradient_shap(
        ...     model, x, baselines=torch.zeros(4, 1, 8, 8), target=labels, n_samples=8,
        ...     return_convergence_delta=True, generator=g)
        >>> attr.shape, delta.shape
        (torch.Size([50, 1, 8, 8]), torch.Size([400]))
    """
    N.check_forward_func(forward_func)  # every check before the first draw
    xs, _ = N.as_tuple(inputs)
    N.check_target(target, xs[0].shape[0])
    _batch(internal_batch_size)
    xs, was_tuple, paths = _shap_paths(inputs, baselines, n_samples, stdevs, generator)
    return _gradient_shap(forward_func, xs, was_tuple, paths, target, additional_forward_args,
                          return_convergence_delta, multiply_by_inputs, create_graph,
                          internal_batch_size, memory_budget)


def _gradient_shap(forward_func: Callable, xs: tuple, was_tuple: bool, paths: tuple,
                   target: Any, additional_forward_args: Any, return_convergence_delta: bool,
                   multiply_by_inputs: bool, create_graph: bool,
                   internal_batch_size: int | None, memory_budget: Any = None) -> Any:
    """Gradient SHAP from drawn paths (the deterministic part, which compiles)."""
    ends, starts = _constants(paths[0], create_graph), _constants(paths[1], create_graph)
    alphas = paths[2]
    n_samples = alphas.shape[0]
    N.check_target(target, xs[0].shape[0])
    args = N.format_args(additional_forward_args)

    def grad_at(points: tuple, target_rows: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return input_gradients(forward_func, points, target_objective(target_rows),
                               additional_forward_args=args_rows, create_graph=create_graph)

    many = isinstance(target, N.Each)
    per_sample = path_average(grad_at, ends, starts, alphas, [1.0] * n_samples,
                              target=target, additional_forward_args=args,
                              multiply_by_delta=multiply_by_inputs, stacked=many,
                              internal_batch_size=_batch(internal_batch_size), reduce=False,
                              convex=True,
                              memory_budget=memory_budget)
    attrs = N.restore([p.mean(int(many)) for p in per_sample], was_tuple)
    if not return_convergence_delta:
        return attrs
    flat = lambda t: t.transpose(0, 1).reshape(-1, *t.shape[2:])  # example-major rows
    n = xs[0].shape[0]

    def delta(k: int | None) -> Tensor:
        t = target if k is None else target.targets[k]
        return convergence_delta(
            forward_func, tuple(flat(p if k is None else p[k]) for p in per_sample),
            tuple(flat(s) for s in starts), tuple(flat(e) for e in ends),
            target=N.repeat_interleave_target(t, n_samples),
            additional_forward_args=N.repeat_interleave_args(args, n_samples, n))

    return attrs, (torch.stack([delta(k) for k in range(len(target))]) if many else delta(None))


def neuron_gradient_shap(
    forward_func: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    neuron_selector: NeuronSelector,
    baselines: Any,
    n_samples: int = 5,
    stdevs: float | tuple[float, ...] = 0.0,
    additional_forward_args: Any = None,
    attribute_to_neuron_input: bool = False,
    multiply_by_inputs: bool = True,
    *,
    generator: torch.Generator | None = None,
    create_graph: bool = False,
    internal_batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
) -> TensorOrTuple:
    """GradientSHAP of a neuron: :func:`gradient_shap` with a neuron objective.

    Captum's ``NeuronGradientShap``. A list of selectors shares one set of
    draws, so slice ``k`` equals the single-selector call with the same seed.

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model
        Predictions", https://arxiv.org/abs/1705.07874

    Args:
        {args: forward_func, layer, inputs, neuron_selector, baselines[sampled], n_samples,
        stdevs, additional_forward_args, attribute_to_neuron_input, multiply_by_inputs,
        generator, create_graph, internal_batch_size, chunk_size, memory_budget}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for K selectors).

    Example:
        {digits}
        >>> g = torch.Generator().manual_seed(0)
        >>> attr = fnattr.neuron_gradient_shap(model, "classifier.1", x, 3,
        ...                                    torch.zeros(4, 1, 8, 8), generator=g)
        >>> attr.shape
        torch.Size([50, 1, 8, 8])
    """
    N.check_forward_func(forward_func)  # every check before the first draw
    N.resolve_layer(forward_func, layer)
    N.format_selectors(neuron_selector)
    _batch(internal_batch_size)
    if chunk_size is not None:
        N.check_positive_int(chunk_size, "chunk_size")
    xs, was_tuple, paths = _shap_paths(inputs, baselines, n_samples, stdevs, generator)
    return _neuron_gradient_shap(forward_func, layer, xs, was_tuple, paths, neuron_selector,
                                 additional_forward_args, attribute_to_neuron_input,
                                 multiply_by_inputs, create_graph, internal_batch_size,
                                 chunk_size, memory_budget)


def _neuron_gradient_shap(forward_func: Callable, layer: Any, xs: tuple, was_tuple: bool,
                          paths: tuple, neuron_selector: Any, additional_forward_args: Any,
                          attribute_to_neuron_input: bool, multiply_by_inputs: bool,
                          create_graph: bool, internal_batch_size: int | None,
                          chunk_size: int | None, memory_budget: Any = None) -> N.TensorOrTuple:
    """Neuron gradient SHAP from drawn paths (the deterministic part, which compiles)."""
    ends, starts = _constants(paths[0], create_graph), _constants(paths[1], create_graph)
    alphas = paths[2]
    n_samples = alphas.shape[0]
    _, many = N.format_selectors(neuron_selector)
    layer = N.resolve_layer(forward_func, layer)

    def grad_at(points: tuple, _target: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return input_gradients(forward_func, points, neuron_objective(neuron_selector),
                               additional_forward_args=args_rows, layer=layer,
                               attribute_to_layer_input=attribute_to_neuron_input,
                               create_graph=create_graph, chunk_size=chunk_size)

    attrs = path_average(grad_at, ends, starts, alphas, [1.0 / n_samples] * n_samples,
                         additional_forward_args=N.format_args(additional_forward_args),
                         multiply_by_delta=multiply_by_inputs, stacked=many,
                         internal_batch_size=_batch(internal_batch_size), convex=True,
                         memory_budget=memory_budget)
    return N.restore(attrs, was_tuple)


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
    xs, was_tuple = N.as_tuple(inputs)
    bs = N.format_baselines(baselines, xs)
    N.check_target(target, xs[0].shape[0])
    alphas, weights = quadrature(method, n_steps)
    args = N.format_args(additional_forward_args)
    xs, bs = _constants(xs, create_graph), _constants(bs, create_graph)

    def grad_at(points: tuple, target_rows: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return input_gradients(forward_func, points, target_objective(target_rows),
                               additional_forward_args=args_rows, create_graph=create_graph)

    many = isinstance(target, N.Each)
    attrs = path_average(grad_at, xs, bs, alphas, weights, target=target,
                         additional_forward_args=args, multiply_by_delta=multiply_by_inputs,
                         stacked=many, internal_batch_size=_batch(internal_batch_size),
                         memory_budget=memory_budget)
    out = N.restore(attrs, was_tuple)
    if not return_convergence_delta:
        return out
    if many:
        return out, torch.stack([
            convergence_delta(forward_func, tuple(a[k] for a in attrs), bs, xs, t, args)
            for k, t in enumerate(target.targets)])
    return out, convergence_delta(forward_func, attrs, bs, xs, target, args)


def neuron_integrated_gradients(
    forward_func: ForwardFunc,
    layer: Layer,
    inputs: TensorOrTuple,
    neuron_selector: NeuronSelector,
    baselines: Baselines = None,
    additional_forward_args: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    attribute_to_neuron_input: bool = False,
    multiply_by_inputs: bool = True,
    *,
    create_graph: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
) -> TensorOrTuple:
    """Integrated gradients of a neuron (Captum's ``NeuronIntegratedGradients``).

    :func:`path_average` of :func:`neuron_gradient` times ``x - b``; a list of
    selectors gives all neurons from one pass.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365

    Args:
        {args: forward_func, layer, inputs, neuron_selector, baselines,
        additional_forward_args, n_steps, method, internal_batch_size,
        attribute_to_neuron_input, multiply_by_inputs, create_graph, chunk_size, memory_budget}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for K selectors).

    Example:
        {digits}
        >>> attr = fnattr.neuron_integrated_gradients(model, "classifier.1", x, [0, 1])
        >>> attr.shape
        torch.Size([2, 50, 1, 8, 8])
    """
    xs, was_tuple = N.as_tuple(inputs)
    bs = N.format_baselines(baselines, xs)
    alphas, weights = quadrature(method, n_steps)
    layer = N.resolve_layer(forward_func, layer)
    _, many = N.format_selectors(neuron_selector)
    xs, bs = _constants(xs, create_graph), _constants(bs, create_graph)

    def grad_at(points: tuple, _target: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        return input_gradients(forward_func, points, neuron_objective(neuron_selector),
                               additional_forward_args=args_rows, layer=layer,
                               attribute_to_layer_input=attribute_to_neuron_input,
                               create_graph=create_graph, chunk_size=chunk_size)

    attrs = path_average(grad_at, xs, bs, alphas, weights,
                         additional_forward_args=N.format_args(additional_forward_args),
                         multiply_by_delta=multiply_by_inputs, stacked=many,
                         internal_batch_size=_batch(internal_batch_size),
                         memory_budget=memory_budget)
    return N.restore(attrs, was_tuple)


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
    xs, _ = N.as_tuple(inputs)
    bs = N.format_baselines(baselines, xs)
    N.check_target(target, xs[0].shape[0])
    N.check_grad_kwargs(grad_kwargs)
    alphas, _ = quadrature(method, N.check_positive_int(n_steps, "n_steps") + 1)
    layer = N.resolve_layer(forward_func, layer)
    args = N.format_args(additional_forward_args)

    many = isinstance(target, N.Each)

    def grad_and_value(points: tuple, target_rows: Any, args_rows: tuple) -> tuple[Tensor, ...]:
        grads, value = layer_gradients(
            forward_func, layer, points, target_objective(target_rows),
            additional_forward_args=args_rows, attribute_to_layer_input=attribute_to_layer_input,
            create_graph=create_graph, return_value=True)
        if many:  # the layer value is shared by every target
            value = tuple(v.expand(len(target), *v.shape) for v in value)
        return (*grads, *value)

    per_point = path_average(grad_and_value, xs, bs, alphas, [1.0] * len(alphas),
                             target=target, additional_forward_args=args, stacked=many,
                             internal_batch_size=_batch(internal_batch_size), reduce=False,
                              memory_budget=memory_budget)
    half = len(per_point) // 2
    step = (slice(None),) * int(many)  # the path axis follows the optional K axis
    # One temporary the size of a layer value per point (the differences,
    # multiplied in place where no transform or graph needs them kept).
    inplace = not (create_graph or transforms_active())
    attrs = tuple(
        (d.mul_(g[(*step, slice(None, -1))]) if inplace else d * g[(*step, slice(None, -1))])
        .sum(int(many))
        for g, d in ((g, torch.diff(v, dim=int(many)))
                     for g, v in zip(per_point[:half], per_point[half:])))
    out = attrs if len(attrs) > 1 else attrs[0]
    if not return_convergence_delta:
        return out
    starts = tuple(torch.full_like(x, b) if not isinstance(b, Tensor) else b.expand_as(x)
                   for x, b in zip(xs, bs))

    def delta(k: int | None) -> Tensor:
        t = target if k is None else target.targets[k]
        total = sum(_row_sums(a if k is None else a[k]) for a in attrs)
        run = functional(forward_func)  # train-mode buffers left as they were
        with torch.no_grad():
            f_end = _row_sums(N.select_target(run(*xs, *args), t, False))
            f_start = _row_sums(N.select_target(run(*starts, *args), t, False))
        return total - (f_end - f_start)

    return out, (torch.stack([delta(k) for k in range(len(target))]) if many else delta(None))


def _once(grad_at: Callable, xs: tuple, target: Any, args: tuple, many: bool,
          memory_budget: Any) -> tuple[Tensor, ...]:
    """``grad_at`` at the inputs themselves; under a memory budget (or on CUDA)
    as a one-point path (``0 + 1 * x`` is ``x`` exactly), so that the planner
    splits the examples and the K rows like every expanded method's."""
    if transforms_active() or (_budget.resolve(memory_budget) is None
                               and xs[0].device.type != "cuda"):
        return grad_at(xs, target, args)
    return path_average(grad_at, xs, (0.0,) * len(xs), [1.0], [1.0], target=target,
                        additional_forward_args=args, stacked=many,
                        memory_budget=memory_budget)


def _constants(tensors: tuple, create_graph: bool) -> tuple:
    """Detached path ends unless the result must stay differentiable.

    Under ``torch.func`` transforms nothing is detached: the transform decides
    what is differentiated (``torch.func.grad`` always builds the graph).
    """
    if create_graph or transforms_active():
        return tensors
    return tuple(t.detach() if isinstance(t, Tensor) else t for t in tensors)


def _batch(internal_batch_size: Any) -> int | None:
    if internal_batch_size is None:
        return None
    return N.check_positive_int(internal_batch_size, "internal_batch_size")


# The catalog: every method above, declared once (see fnattr._catalog).
def _shap_draw(a: dict) -> tuple:
    """Draws a gradient SHAP method's paths from its bound arguments."""
    return _shap_paths(a["inputs"], a["baselines"], a["n_samples"], a["stdevs"], a["generator"])


register(gradient, "inputs", compat="Saliency")
register(integrated_gradients, "inputs", path="quadrature", delta=True,
         compat="IntegratedGradients")
register(gradient_shap, "inputs", path="sampled", delta=True, compat="GradientShap",
         draw=_shap_draw, core=_gradient_shap)
register(guided_backprop, "inputs", rule="guided", compat="GuidedBackprop")
register(deconvolution, "inputs", rule="deconv", compat="Deconvolution")
register(internal_influence, "layer", path="quadrature", compat="InternalInfluence")
register(layer_conductance, "layer", path="quadrature", delta=True, compat="LayerConductance")
register(neuron_gradient, "neuron", compat="NeuronGradient")
register(neuron_integrated_gradients, "neuron", path="quadrature",
         compat="NeuronIntegratedGradients")
register(neuron_gradient_shap, "neuron", path="sampled", compat="NeuronGradientShap",
         draw=_shap_draw, core=_neuron_gradient_shap)
register(neuron_guided_backprop, "neuron", rule="guided", compat="NeuronGuidedBackprop")
register(neuron_deconvolution, "neuron", rule="deconv", compat="NeuronDeconvolution")
