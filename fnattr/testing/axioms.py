"""Axiom checkers for any attribution method: fnattr functions, Captum classes or your own.

**Calling convention.** An attribution is any callable

    ``attribute(forward_func, inputs, baselines, target) -> attributions``

(``additional_forward_args=`` is added as a keyword when a checker is given
some). Checkers call it on models they build themselves (a masked model for
:func:`dummy`, a symmetrized one for :func:`symmetry`, a combination for
:func:`linearity`), so it must take the model as an argument rather than
close over it. :func:`from_fnattr` and :func:`from_captum` adapt fnattr
functions and Captum classes to this convention; :class:`Attribution`
adapts a user function and says what it explains (the target output, or a
neuron: :func:`neuron_value`).

**Results.** Every checker returns the measured violation, one value per
example (a ``Tensor[N]``, detached): the signed completeness gap, or a
non-negative distance for the other axioms. Every ``assert_*`` helper raises
``AssertionError`` naming the method, the axiom and the worst example when
``|violation| > atol + rtol * scale`` for some example, where ``scale`` is
the natural size of the compared quantity (stated per checker). ``atol`` and
``rtol`` are required: the right tolerance depends on the method
(quadrature error, sampling error) and the dtype.

Models built by the checkers are ``nn.Module`` wrappers whose
``get_submodule`` resolves layer names against the wrapped model (except
the two-model combination of :func:`linearity`), so layers given by name or
as modules keep working for fnattr's and Captum's neuron methods.

>>> import fnattr
>>> ig = from_fnattr(fnattr.integrated_gradients, n_steps=64)
>>> assert_completeness(ig, model, x, torch.zeros_like(x), target=0, atol=1e-4, rtol=1e-3)
"""

from ._adapters import Attribution, from_captum, from_fnattr, neuron_value, output_at
from ._completeness import (
    assert_completeness,
    assert_layer_completeness,
    completeness,
    layer_completeness,
)
from ._feature_axioms import (
    assert_dummy,
    assert_sensitivity,
    assert_symmetry,
    dummy,
    sensitivity,
    symmetry,
)
from ._two_model_axioms import (
    assert_implementation_invariance,
    assert_linearity,
    implementation_invariance,
    linearity,
)

__all__ = [
    "Attribution",
    "assert_completeness",
    "assert_dummy",
    "assert_implementation_invariance",
    "assert_layer_completeness",
    "assert_linearity",
    "assert_sensitivity",
    "assert_symmetry",
    "completeness",
    "dummy",
    "from_captum",
    "from_fnattr",
    "implementation_invariance",
    "layer_completeness",
    "linearity",
    "neuron_value",
    "output_at",
    "sensitivity",
    "symmetry",
]
