"""fnattr: functional, JIT-compilable attribution for PyTorch.

Named methods are short compositions of the public transforms re-exported
here; see the README for the composable core.
"""

from ._budget import memory_budget
from ._compile import compile
from .dataset import attribute_dataset, open_attributions
from ._engine import functional, transforms_active
from ._normalize import each
from ._methods import (
    convergence_delta,
    deconvolution,
    gradient,
    gradient_shap,
    guided_backprop,
    integrated_gradients,
    internal_influence,
    interpolate,
    layer_conductance,
    neuron_deconvolution,
    neuron_gradient,
    neuron_gradient_shap,
    neuron_guided_backprop,
    neuron_integrated_gradients,
)
from ._noise import noise_tunnel

from ._lig import layer_integrated_gradients, token_scores
from ._rules import DeconvReLU, GuidedReLU, deconv_relu, guided_relu, with_rule
from ._transforms import (
    input_gradients,
    layer_gradients,
    neuron_objective,
    path_average,
    quadrature,
    sample_paths,
    target_objective,
    targets_objective,
)

from . import metrics  # noqa: E402  (fnattr.metrics: evaluation metrics)

__version__ = "0.1.0"

__all__ = [
    "DeconvReLU",
    "GuidedReLU",
    "attribute_dataset",
    "compile",
    "convergence_delta",
    "deconv_relu",
    "deconvolution",
    "each",
    "functional",
    "gradient",
    "gradient_shap",
    "guided_backprop",
    "guided_relu",
    "input_gradients",
    "integrated_gradients",
    "internal_influence",
    "interpolate",
    "layer_conductance",
    "layer_gradients",
    "layer_integrated_gradients",

    "memory_budget",
    "neuron_deconvolution",
    "neuron_gradient",
    "neuron_gradient_shap",
    "neuron_guided_backprop",
    "neuron_integrated_gradients",
    "neuron_objective",
    "noise_tunnel",
    "open_attributions",
    "path_average",
    "quadrature",
    "sample_paths",
    "target_objective",
    "targets_objective",
    "token_scores",
    "transforms_active",
    "with_rule",
]

# Shared argument texts rendered into the docstrings, annotations resolved (fnattr._docs).
from ._docs import render_public as _render_public  # noqa: E402

from . import dataset as _dataset  # noqa: E402

_render_public(globals(), __all__)
_render_public(vars(metrics), metrics.__all__)
_render_public(vars(_dataset), _dataset.__all__)
del _render_public, _dataset
