"""fnattr.testing: property-test any attribution method with hypothesis.

* :mod:`fnattr.testing.strategies` draws small random models (MLPs and conv
  nets, smooth and ReLU activations, float32/float64) and inputs, baselines,
  targets, layers and neuron selectors shaped for them, built from integers
  so that failures shrink to small models.
* :mod:`fnattr.testing.axioms` measures how far any attribution callable
  (an fnattr function, a Captum class, your own code) is from completeness,
  layer completeness, sensitivity, dummy, linearity, symmetry preservation
  and implementation invariance, with ``assert_*`` helpers.
* :func:`property_settings` gives hypothesis settings for such tests.

>>> from hypothesis import given
>>> from fnattr.testing import axioms, property_settings, strategies
>>> @property_settings(max_examples=20)
... @given(strategies.attribution_problems())
... def test_ig_is_complete(p):
...     ig = axioms.from_fnattr(fnattr.integrated_gradients, n_steps=256)
...     axioms.assert_completeness(ig, p.model, p.inputs, p.baselines, p.target,
...                                atol=1e-3, rtol=1e-2)
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import settings

from . import axioms, strategies

__all__ = ["axioms", "property_settings", "strategies"]

settings.register_profile("fnattr-dev", deadline=None)
settings.register_profile("fnattr-ci", deadline=None, derandomize=True, database=None)


def property_settings(max_examples: int = 20, **overrides: Any) -> settings:
    """Hypothesis settings for attribution property tests.

    Bounded ``max_examples``, no deadline (the first call of a method pays for
    warm-up), and derandomized with no example database when the ``CI``
    environment variable is set (the ``"fnattr-ci"`` profile; ``"fnattr-dev"``
    otherwise). Both profiles are registered on import; nothing is loaded
    globally. Usable as a decorator.

    Args:
        max_examples: examples per test.
        **overrides: any other ``hypothesis.settings`` argument.

    Returns:
        A ``hypothesis.settings``.

    >>> @property_settings(max_examples=10)
    ... @given(strategies.models())
    ... def test_forward_runs(case): ...
    """
    parent = settings.get_profile("fnattr-ci" if os.environ.get("CI") else "fnattr-dev")
    return settings(parent, max_examples=max_examples, **overrides)
