"""fnattr: functional, JIT-compilable attribution for PyTorch.

Public names are re-exported here; see the README for the composable core.
"""

from ._engine import functional, transforms_active
from ._methods import convergence_delta, internal_influence, interpolate, neuron_gradient
from ._transforms import (
    input_gradients,
    layer_gradients,
    neuron_objective,
    path_average,
    quadrature,
    target_objective,
    targets_objective,
)

__version__ = "0.1.0"

__all__ = [
    "convergence_delta",
    "functional",
    "input_gradients",
    "internal_influence",
    "interpolate",
    "layer_gradients",
    "neuron_gradient",
    "neuron_objective",
    "path_average",
    "quadrature",
    "target_objective",
    "targets_objective",
    "transforms_active",
]
