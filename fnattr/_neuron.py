"""Neuron methods: the gradient of one neuron (or K) of a layer with respect to the inputs.

The same compositions as the input methods (:mod:`fnattr._methods`) with a
neuron objective read at a layer (``Site(layer, attribute_to_neuron_input)``):
the forward stops at the layer where :func:`fnattr._taps.runs_once` proves it
exact. Neuron gradient SHAP is in :mod:`fnattr._shap`.
"""

from __future__ import annotations

from typing import Any, Callable

from .types import Baselines, ForwardFunc, Layer, NeuronSelector, TensorOrTuple
from ._boundary import attribution
from ._engine import Site
from ._paths import at_inputs, path_average, quadrature
from ._transforms import site_gradient

__all__ = [
    "neuron_deconvolution",
    "neuron_gradient",
    "neuron_guided_backprop",
    "neuron_integrated_gradients",
]


@attribution("neuron", compat="NeuronGradient")
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
    grad = site_gradient(forward_func, Site(layer, attribute_to_neuron_input),
                         create_graph=create_graph, chunk_size=chunk_size)
    return at_inputs(grad, inputs, neuron_selector, additional_forward_args, memory_budget)


@attribution("neuron", path="quadrature", compat="NeuronIntegratedGradients")
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
    grad = site_gradient(forward_func, Site(layer, attribute_to_neuron_input),
                         create_graph=create_graph, chunk_size=chunk_size)
    return path_average(grad, inputs, baselines, *quadrature(method, n_steps),
                        target=neuron_selector, additional_forward_args=additional_forward_args,
                        multiply_by_delta=multiply_by_inputs, stacked=True,
                        internal_batch_size=internal_batch_size, memory_budget=memory_budget)


def _rule_neuron_gradient(name: str, rule: str, compat: str, summary: str, about: str,
                          reference: str, example: str) -> Callable:
    """:func:`neuron_gradient` under a ReLU rule, registered as ``name`` (the
    boundary applies the catalog's ``rule``)."""
    def body(
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
        return neuron_gradient.__wrapped__(model, layer, inputs, neuron_selector,
                                           additional_forward_args, attribute_to_neuron_input,
                                           create_graph=create_graph, chunk_size=chunk_size)

    body.__name__ = body.__qualname__ = name
    body.__doc__ = f"""Neuron gradient under the {summary} (Captum's ``{compat}``).

    {about}

    References:
        {reference}

    Args:
        {{args: model, layer, inputs, neuron_selector, additional_forward_args,
        attribute_to_neuron_input, create_graph, chunk_size}}

    Returns:
        Attributions shaped like ``inputs`` (a leading ``K`` for K selectors).

    Example:
        {{digits}}
        {example}
    """
    return attribution("neuron", rule=rule, compat=compat)(body)


neuron_guided_backprop = _rule_neuron_gradient(
    "neuron_guided_backprop", "guided", "NeuronGuidedBackprop", "guided ReLU rule",
    """:func:`neuron_gradient` of ``with_rule(model, guided_relu)``: every ReLU
    the forward runs gets the guided backward; a list of selectors gives all
    neurons from one pass.""",
    """Springenberg et al., "Striving for Simplicity", https://arxiv.org/abs/1412.6806""",
    """>>> attr = fnattr.neuron_guided_backprop(model, "features.2", x, (0, 3, 3))
        >>> attr.shape  # channel 0 at row 3, column 3 of the second convolution
        torch.Size([50, 1, 8, 8])""")

neuron_deconvolution = _rule_neuron_gradient(
    "neuron_deconvolution", "deconv", "NeuronDeconvolution", "deconvolution rule",
    """:func:`neuron_gradient` of ``with_rule(model, deconv_relu)``: every ReLU
    the forward runs gets the deconvolution backward; a list of selectors
    gives all neurons from one pass.""",
    """Zeiler & Fergus, "Visualizing and Understanding Convolutional
        Networks", https://arxiv.org/abs/1311.2901""",
    """>>> attr = fnattr.neuron_deconvolution(model, "features.2", x, [(0, 3, 3), (1, 3, 3)])
        >>> attr.shape
        torch.Size([2, 50, 1, 8, 8])""")
