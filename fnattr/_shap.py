"""Gradient SHAP (input and neuron): path averages over randomly drawn points.

Each sampled method is split in two: its random draws
(:func:`fnattr.sample_paths`, from one ``generator``) and a deterministic
*core* that computes the attributions from explicit draws. The catalog records
both (``draw``, ``core``): ``fnattr.compile`` and dataset runs make the draws
eagerly, outside the compiled graph, and trace only the core.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .types import ForwardFunc, Layer, NeuronSelector, Target, TensorOrTuple
from . import _normalize as N
from ._boundary import attribution, boundary, draw_paths
from ._engine import Site
from ._objectives import Objective
from ._paths import path_average, sample_paths
from ._transforms import completeness_gap, site_gradient

__all__ = ["gradient_shap", "neuron_gradient_shap"]


def _gradient_shap(forward_func: Callable, inputs: tuple, paths: tuple, target: Objective,
                   additional_forward_args: tuple = (), return_convergence_delta: bool = False,
                   multiply_by_inputs: bool = True, *, create_graph: bool = False,
                   internal_batch_size: int | None = None,
                   memory_budget: Any = None) -> tuple:
    """Gradient SHAP from drawn paths (the deterministic part, which compiles)."""
    ends, starts, alphas = paths
    s, n = alphas.shape
    per_sample = path_average(site_gradient(forward_func, create_graph=create_graph), ends,
                              starts, alphas, [1.0] * s, target=target,
                              additional_forward_args=additional_forward_args,
                              multiply_by_delta=multiply_by_inputs, stacked=True,
                              internal_batch_size=internal_batch_size, reduce=False,
                              convex=True, memory_budget=memory_budget)
    attrs = tuple(p.mean(1) for p in per_sample)
    if not return_convergence_delta:
        return attrs, None
    flat = lambda t, lead: t.transpose(lead, lead + 1).flatten(lead, lead + 1)  # example-major
    return attrs, completeness_gap(
        forward_func, tuple(flat(p, 1) for p in per_sample), tuple(flat(t, 0) for t in starts),
        tuple(flat(t, 0) for t in ends), target.repeat(s),
        N.repeat_interleave_args(additional_forward_args, s, n))


def _neuron_gradient_shap(forward_func: Callable, layer: Any, inputs: tuple, paths: tuple,
                          neuron_selector: Objective, additional_forward_args: tuple = (),
                          attribute_to_neuron_input: bool = False,
                          multiply_by_inputs: bool = True, *, create_graph: bool = False,
                          internal_batch_size: int | None = None,
                          chunk_size: int | None = None, memory_budget: Any = None) -> tuple:
    """Neuron gradient SHAP from drawn paths (the deterministic part, which compiles)."""
    ends, starts, alphas = paths
    s = alphas.shape[0]
    grad = site_gradient(forward_func, Site(layer, attribute_to_neuron_input),
                         create_graph=create_graph, chunk_size=chunk_size)
    return path_average(grad, ends, starts, alphas, [1.0 / s] * s, target=neuron_selector,
                        additional_forward_args=additional_forward_args,
                        multiply_by_delta=multiply_by_inputs, stacked=True,
                        internal_batch_size=internal_batch_size, convex=True,
                        memory_budget=memory_budget)


@attribution("inputs", path="sampled", delta=True, compat="GradientShap",
             draw=draw_paths, core=boundary(_gradient_shap, "inputs", path="sampled", delta=True))
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
    paths = sample_paths(inputs, baselines, n_samples, stdevs, generator)
    return _gradient_shap(forward_func, inputs, paths, target, additional_forward_args,
                          return_convergence_delta, multiply_by_inputs,
                          create_graph=create_graph, internal_batch_size=internal_batch_size,
                          memory_budget=memory_budget)


@attribution("neuron", path="sampled", compat="NeuronGradientShap",
             draw=draw_paths, core=boundary(_neuron_gradient_shap, "neuron", path="sampled"))
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
    paths = sample_paths(inputs, baselines, n_samples, stdevs, generator)
    return _neuron_gradient_shap(forward_func, layer, inputs, paths, neuron_selector,
                                 additional_forward_args, attribute_to_neuron_input,
                                 multiply_by_inputs, create_graph=create_graph,
                                 internal_batch_size=internal_batch_size, chunk_size=chunk_size,
                                 memory_budget=memory_budget)
