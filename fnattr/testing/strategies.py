"""Hypothesis strategies for attribution problems: small random models and what to explain.

Every model is built from a few drawn integers (input size, hidden widths,
activation, dtype, a weight seed): its weights come from a
``torch.Generator`` seeded with the drawn seed, never from the global RNG.
Hypothesis shrinks integers toward their minimum and ``sampled_from`` toward
its first element, so a failing property shrinks to a one-unit, one-layer
``tanh`` float32 model with seed 0 unless the failure needs more.

Strategies take a :class:`ModelCase` (a model and its shapes) and draw what is
shaped for it: :func:`inputs`, :func:`baselines`, :func:`targets`,
:func:`layers`, :func:`neuron_selectors`, :func:`features`.
:func:`attribution_problems` draws all of them at once; :func:`equivalent_models`
draws a functionally equal re-implementation of a model (for implementation
invariance).

>>> from hypothesis import given
>>> @given(attribution_problems())
... def test_runs(p):
...     assert p.model(p.inputs).shape == (p.inputs.shape[0], p.case.n_outputs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from ._model_cases import _SEEDS, ModelCase, build_model, equivalent_models, models

__all__ = [
    "AttributionProblem",
    "ModelCase",
    "attribution_problems",
    "baselines",
    "build_model",
    "equivalent_models",
    "features",
    "inputs",
    "layers",
    "models",
    "neuron_selectors",
    "targets",
]


@dataclass(frozen=True)
class AttributionProblem:
    """Everything one attribution call needs, drawn for one :class:`ModelCase`.

    Attributes:
        case: the model and its shapes.
        inputs: ``(N, *case.input_shape)``.
        baselines: one reference row ``(1, *case.input_shape)`` (it broadcasts
            over the examples, and is a one-row distribution for gradient SHAP).
        target: an output index.
        layer: the name of a layer of ``case.model``.
        neuron_selector: a tuple of ints indexing one neuron of ``layer``.
    """

    case: ModelCase
    inputs: Tensor
    baselines: Tensor
    target: int
    layer: str
    neuron_selector: tuple[int, ...]

    @property
    def model(self) -> nn.Module:
        """The drawn network (``case.model``)."""
        return self.case.model


def _uniform(shape: tuple[int, ...], dtype: torch.dtype, seed: int, low: float,
             high: float) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)


@st.composite
def inputs(draw: st.DrawFn, case: ModelCase,
           batch: int | st.SearchStrategy[int] = st.integers(1, 3), low: float = -2.0,
           high: float = 2.0) -> Tensor:
    """Inputs for ``case.model``: ``(batch, *input_shape)``, uniform in ``[low, high)``.

    The values come from a ``torch.Generator`` seeded with a drawn integer
    (continuous values: no ties, no inputs exactly on a ReLU kink).

    Args:
        case: the model case.
        batch: the number of examples, or a strategy for it.
        low, high: the value range.

    Returns:
        A strategy of tensors of ``case.dtype``.

    >>> case = models().example()
    >>> inputs(case, batch=2).example().shape == (2, *case.input_shape)
    True
    """
    n = batch if isinstance(batch, int) else draw(batch)
    return _uniform((n, *case.input_shape), case.dtype, draw(_SEEDS), low, high)


@st.composite
def baselines(draw: st.DrawFn, case: ModelCase, batch: int = 1,
              kinds: Sequence[str] = ("zeros", "uniform"), low: float = -2.0,
              high: float = 2.0) -> Tensor:
    """Baselines for ``case.model``: ``(batch, *input_shape)`` zeros or uniform rows.

    ``batch=1`` (the default) gives one reference row: it broadcasts over any
    number of examples and is a one-row distribution for gradient SHAP, so
    ``f(x) - f(baseline)`` is well defined for sampled methods too.

    Args:
        case: the model case.
        batch: rows (``1``, or the number of examples for per-example baselines).
        kinds: ``"zeros"`` and/or ``"uniform"`` (in ``[low, high)``); shrinks to the first.
        low, high: the range of uniform baselines.

    Returns:
        A strategy of tensors of ``case.dtype``.

    >>> case = models().example()
    >>> baselines(case, kinds=("zeros",)).example().abs().sum().item()
    0.0
    """
    kind = draw(st.sampled_from(tuple(kinds)))
    shape = (batch, *case.input_shape)
    if kind == "zeros":
        return torch.zeros(shape, dtype=case.dtype)
    if kind == "uniform":
        return _uniform(shape, case.dtype, draw(_SEEDS), low, high)
    raise ValueError(f"`kinds` must contain 'zeros' and/or 'uniform', got {kind!r}")


def targets(case: ModelCase, batch: int | None = None) -> st.SearchStrategy:
    """Targets for ``case.model``: an output index, or (with ``batch``) also a per-example list.

    Args:
        case: the model case.
        batch: if given, also draw lists of ``batch`` indices (one per example).

    Returns:
        A strategy of ints (or lists of ints).

    >>> case = models(n_outputs=3).example()
    >>> targets(case).example() in range(3)
    True
    """
    index = st.integers(0, case.n_outputs - 1)
    if batch is None:
        return index
    return st.one_of(index, st.lists(index, min_size=batch, max_size=batch))


def layers(case: ModelCase, include_output: bool = True) -> st.SearchStrategy[str]:
    """Names of attribution sites of ``case.model`` (resolve with ``case.layers[name]``).

    Args:
        case: the model case.
        include_output: also draw the final ``"out"`` layer.

    Returns:
        A strategy of layer names, shrinking toward the first layer.

    >>> case = models().example()
    >>> layers(case).example() in case.layers
    True
    """
    names = [n for n in case.layers if include_output or n != "out"]
    return st.sampled_from(names)


def features(case: ModelCase) -> st.SearchStrategy[tuple[int, ...]]:
    """Indices of one element of an example (the ``feature`` of the axiom checkers).

    Args:
        case: the model case.

    Returns:
        A strategy of tuples of ints indexing ``case.input_shape``, shrinking
        toward ``(0, ..., 0)``.

    >>> case = models(kind=("mlp",)).example()
    >>> features(case).example()[0] < case.input_shape[0]
    True
    """
    return st.tuples(*(st.integers(0, s - 1) for s in case.input_shape))


def neuron_selectors(case: ModelCase, layer: str) -> st.SearchStrategy[tuple[int, ...]]:
    """Neuron selectors valid for ``layer``: a tuple of in-range indices of its output.

    ``value[(slice(None), *selector)]`` is one scalar per example, which is
    what ``neuron_selector`` means in Captum and fnattr.

    Args:
        case: the model case.
        layer: a name from ``case.layers``.

    Returns:
        A strategy of tuples of ints, shrinking toward ``(0, ..., 0)``.

    >>> case = models(kind=("conv",)).example()
    >>> len(neuron_selectors(case, "conv0").example())
    3
    """
    if layer not in case.layer_shapes:
        raise ValueError(f"`layer` {layer!r} is not one of {list(case.layer_shapes)}")
    return st.tuples(*(st.integers(0, s - 1) for s in case.layer_shapes[layer]))


@st.composite
def attribution_problems(draw: st.DrawFn, cases: st.SearchStrategy[ModelCase] | None = None,
                         batch: int | st.SearchStrategy[int] = st.integers(1, 3)
                         ) -> AttributionProblem:
    """A model with inputs, one baseline row, a target, a layer and a neuron of it.

    Args:
        cases: a strategy of :class:`ModelCase` (default: :func:`models` ``()``).
        batch: the number of examples, or a strategy for it.

    Returns:
        A strategy of :class:`AttributionProblem`.

    >>> p = attribution_problems(models(activations=("tanh",))).example()
    >>> p.model(p.inputs).shape == (p.inputs.shape[0], p.case.n_outputs)
    True
    """
    case = draw(models() if cases is None else cases)
    layer = draw(layers(case))
    return AttributionProblem(
        case=case,
        inputs=draw(inputs(case, batch)),
        baselines=draw(baselines(case)),
        target=draw(targets(case)),
        layer=layer,
        neuron_selector=draw(neuron_selectors(case, layer)),
    )


