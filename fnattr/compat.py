"""Captum-compatible classes: migrating is an import change.

``from fnattr.compat import NeuronGradient`` instead of
``from captum.attr import NeuronGradient``. Each class keeps Captum 0.9's
constructor and ``attribute`` signatures and is a thin shell over the
function of the same name in :mod:`fnattr`; ``attribute`` also accepts that
function's keyword-only extras (``create_graph``, ``generator``,
``chunk_size``, ``internal_batch_size``).

``device_ids`` is accepted for signature compatibility and ignored: a
``DataParallel``/``DistributedDataParallel`` model is run through its
``.module`` on one device (fnattr never gathers per-device hook outputs).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from . import _methods as M

__all__ = [
    "Deconvolution",
    "GradientShap",
    "GuidedBackprop",
    "InternalInfluence",
    "LayerAttribution",
    "NeuronDeconvolution",
    "NeuronGradient",
    "NeuronGradientShap",
    "NeuronGuidedBackprop",
]


class _Shell:
    """What every Captum attribution object offers besides ``attribute``."""

    _has_delta = False
    _multiply_by_inputs = False

    def __init__(self, forward_func: Callable) -> None:
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be callable, got {type(forward_func).__name__}")
        self.forward_func = forward_func

    @classmethod
    def get_name(cls) -> str:
        """The class name with spaces: ``"Neuron Gradient Shap"``."""
        return "".join(c if c.islower() or i == 0 else " " + c
                       for i, c in enumerate(cls.__name__))

    def has_convergence_delta(self) -> bool:
        return self._has_delta

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def compute_convergence_delta(self, attributions: Any, start_point: Any, end_point: Any,
                                  target: Any = None, additional_forward_args: Any = None) -> Tensor:
        return M.convergence_delta(self.forward_func, attributions, start_point, end_point,
                                   target, additional_forward_args)


class _LayerShell(_Shell):
    def __init__(self, forward_func: Callable, layer: nn.Module,
                 device_ids: list[int] | None = None) -> None:
        super().__init__(forward_func)
        self.layer = layer
        self.device_ids = device_ids


class LayerAttribution:
    """Holder of Captum's static ``LayerAttribution.interpolate``."""

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims: int | tuple[int, ...],
                    interpolate_mode: str = "nearest") -> Tensor:
        return M.interpolate(layer_attribution, interpolate_dims, interpolate_mode)


class NeuronGradient(_LayerShell):
    """Captum's ``NeuronGradient`` over :func:`fnattr.neuron_gradient`."""

    def attribute(self, inputs: Any, neuron_selector: Any, additional_forward_args: Any = None,
                  attribute_to_neuron_input: bool = False, **kwargs: Any) -> Any:
        return M.neuron_gradient(self.forward_func, self.layer, inputs, neuron_selector,
                                 additional_forward_args, attribute_to_neuron_input, **kwargs)


class InternalInfluence(_LayerShell):
    """Captum's ``InternalInfluence`` over :func:`fnattr.internal_influence`."""

    def attribute(self, inputs: Any, baselines: Any = None, target: Any = None,
                  additional_forward_args: Any = None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  attribute_to_layer_input: bool = False,
                  grad_kwargs: dict | None = None, **kwargs: Any) -> Any:
        return M.internal_influence(self.forward_func, self.layer, inputs, baselines, target,
                                    additional_forward_args, n_steps, method,
                                    internal_batch_size, attribute_to_layer_input,
                                    grad_kwargs=grad_kwargs, **kwargs)


class GradientShap(_Shell):
    """Captum's ``GradientShap`` over :func:`fnattr.gradient_shap`."""

    _has_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(self, inputs: Any, baselines: Any, n_samples: int = 5,
                  stdevs: float | tuple[float, ...] = 0.0, target: Any = None,
                  additional_forward_args: Any = None, return_convergence_delta: bool = False,
                  **kwargs: Any) -> Any:
        return M.gradient_shap(self.forward_func, inputs, baselines, n_samples, stdevs, target,
                               additional_forward_args, return_convergence_delta,
                               self._multiply_by_inputs, **kwargs)


class NeuronGradientShap(_LayerShell):
    """Captum's ``NeuronGradientShap`` over :func:`fnattr.neuron_gradient_shap`."""

    def __init__(self, forward_func: Callable, layer: nn.Module,
                 device_ids: list[int] | None = None, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func, layer, device_ids)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(self, inputs: Any, neuron_selector: Any, baselines: Any, n_samples: int = 5,
                  stdevs: float | tuple[float, ...] = 0.0, additional_forward_args: Any = None,
                  attribute_to_neuron_input: bool = False, **kwargs: Any) -> Any:
        return M.neuron_gradient_shap(self.forward_func, self.layer, inputs, neuron_selector,
                                      baselines, n_samples, stdevs, additional_forward_args,
                                      attribute_to_neuron_input, self._multiply_by_inputs,
                                      **kwargs)


class GuidedBackprop(_Shell):
    """Captum's ``GuidedBackprop`` over :func:`fnattr.guided_backprop` (reaches every ReLU)."""

    def __init__(self, model: Callable) -> None:
        super().__init__(model)
        self.model = model

    def attribute(self, inputs: Any, target: Any = None, additional_forward_args: Any = None,
                  **kwargs: Any) -> Any:
        return M.guided_backprop(self.model, inputs, target, additional_forward_args, **kwargs)


class Deconvolution(GuidedBackprop):
    """Captum's ``Deconvolution`` over :func:`fnattr.deconvolution` (reaches every ReLU)."""

    def attribute(self, inputs: Any, target: Any = None, additional_forward_args: Any = None,
                  **kwargs: Any) -> Any:
        return M.deconvolution(self.model, inputs, target, additional_forward_args, **kwargs)


class NeuronGuidedBackprop(_LayerShell):
    """Captum's ``NeuronGuidedBackprop`` over :func:`fnattr.neuron_guided_backprop`."""

    def __init__(self, model: Callable, layer: nn.Module,
                 device_ids: list[int] | None = None) -> None:
        super().__init__(model, layer, device_ids)
        self.model = model

    def attribute(self, inputs: Any, neuron_selector: Any, additional_forward_args: Any = None,
                  attribute_to_neuron_input: bool = False, **kwargs: Any) -> Any:
        return M.neuron_guided_backprop(self.model, self.layer, inputs, neuron_selector,
                                        additional_forward_args, attribute_to_neuron_input,
                                        **kwargs)


class NeuronDeconvolution(NeuronGuidedBackprop):
    """Captum's ``NeuronDeconvolution`` over :func:`fnattr.neuron_deconvolution`."""

    def attribute(self, inputs: Any, neuron_selector: Any, additional_forward_args: Any = None,
                  attribute_to_neuron_input: bool = False, **kwargs: Any) -> Any:
        return M.neuron_deconvolution(self.model, self.layer, inputs, neuron_selector,
                                      additional_forward_args, attribute_to_neuron_input,
                                      **kwargs)
