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

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

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

_ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}
_SEEDS = st.integers(0, 2**31 - 1)


@dataclass(frozen=True)
class ModelCase:
    """A drawn model with the shapes that strategies need to draw for it.

    ``model`` is an ``nn.Sequential`` in eval mode whose children are named
    ``fc0, act0, fc1, act1, ..., out`` (MLP) or ``conv0, act0, ..., flatten,
    out`` (conv net: 3x3 convolutions with padding 1, then a linear head).
    Its repr shows only the integers it was built from.

    Attributes:
        model: the network; ``model(x)`` maps ``(N, *input_shape)`` to ``(N, n_outputs)``.
        kind: ``"mlp"`` or ``"conv"``.
        activation: ``"tanh"``, ``"softplus"`` or ``"relu"``.
        dtype: the dtype of the parameters (inputs must match).
        input_shape: the shape of one example.
        widths: hidden units (MLP) or channels (conv) per hidden layer.
        n_outputs: number of outputs.
        seed: the weight seed.
        layers: attribution sites by name (every child except ``flatten``).
        layer_shapes: the per-example output shape of each layer in ``layers``.
        equivalence: for a model from :func:`equivalent_models`, the
            ``(permutation, scales)`` applied to each hidden layer.
    """

    model: nn.Module = field(repr=False, compare=False)
    kind: str
    activation: str
    dtype: torch.dtype
    input_shape: tuple[int, ...]
    widths: tuple[int, ...]
    n_outputs: int
    seed: int
    layers: dict[str, nn.Module] = field(repr=False, compare=False)
    layer_shapes: dict[str, tuple[int, ...]] = field(repr=False, compare=False)
    equivalence: tuple = ()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis (and IPython) print the short repr, not every field."""
        printer.text(repr(self))


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


def build_model(kind: str, activation: str, dtype: torch.dtype, input_shape: tuple[int, ...],
                widths: tuple[int, ...], n_outputs: int, seed: int) -> ModelCase:
    """The model :func:`models` draws for these values (rebuild a printed case with it).

    Weights are ``N(0, 1/fan_in)`` and biases ``N(0, 1/4)``, drawn in float64
    from ``torch.Generator().manual_seed(seed)`` and rounded to ``dtype`` (so
    both dtypes get the same weights); the global RNG is not touched.

    Args:
        kind, activation, dtype, input_shape, widths, n_outputs, seed: the
            fields of the :class:`ModelCase` to build.

    Returns:
        A :class:`ModelCase`.

    >>> case = build_model("mlp", "tanh", torch.float32, (1,), (1,), 1, 0)
    >>> list(case.layers)
    ['fc0', 'act0', 'out']
    """
    children: list[tuple[str, nn.Module]] = []
    prev = input_shape[0]
    for k, width in enumerate(widths):
        if kind == "mlp":
            children.append((f"fc{k}", nn.utils.skip_init(nn.Linear, prev, width, dtype=dtype)))
        else:
            children.append((f"conv{k}", nn.utils.skip_init(
                nn.Conv2d, prev, width, 3, padding=1, dtype=dtype)))
        children.append((f"act{k}", _ACTIVATIONS[activation]()))
        prev = width
    if kind == "conv":
        children.append(("flatten", nn.Flatten()))
        prev = prev * input_shape[1] * input_shape[2]
    children.append(("out", nn.utils.skip_init(nn.Linear, prev, n_outputs, dtype=dtype)))
    model = nn.Sequential(OrderedDict(children)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # drawn in float64 and rounded, so both dtypes get the same weights
            scale = 0.5 if name.endswith("bias") else p[0].numel() ** -0.5
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return _case(model, kind, activation, dtype, input_shape, widths, n_outputs, seed)


def _case(model: nn.Module, kind: str, activation: str, dtype: torch.dtype,
          input_shape: tuple[int, ...], widths: tuple[int, ...], n_outputs: int, seed: int,
          equivalence: tuple = ()) -> ModelCase:
    layers = {name: m for name, m in model.named_children() if name != "flatten"}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _a, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, m in layers.items()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return ModelCase(model, kind, activation, dtype, input_shape, widths, n_outputs, seed,
                     layers, shapes, equivalence)


@st.composite
def models(
    draw: st.DrawFn,
    kind: Sequence[str] = ("mlp", "conv"),
    activations: Sequence[str] = ("tanh", "softplus", "relu"),
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    max_width: int = 8,
    max_depth: int = 3,
    max_outputs: int = 3,
    input_shape: tuple[int, ...] | None = None,
    n_outputs: int | None = None,
) -> ModelCase:
    """Small random MLPs and conv nets, as :class:`ModelCase`.

    Draws, in this order (each shrinks toward the first/smallest): the kind,
    the activation, the dtype, the input shape (``(d,)`` with ``1 <= d <=
    max_width`` for an MLP; ``(c, h, w)`` with ``c <= 3``, ``h, w <= 4`` for a
    conv net), ``1..max_depth`` hidden widths in ``1..max_width``, the number
    of outputs and the weight seed.

    Args:
        kind: model kinds to draw from, ``"mlp"`` and/or ``"conv"``.
        activations: ``"tanh"``, ``"softplus"`` (smooth) and/or ``"relu"``
            (piecewise linear).
        dtypes: parameter dtypes to draw from.
        max_width: largest hidden width (units or channels) and MLP input size.
        max_depth: largest number of hidden layers.
        max_outputs: largest number of outputs.
        input_shape: pin the per-example input shape (it must fit every kind drawn).
        n_outputs: pin the number of outputs.

    Returns:
        A strategy of :class:`ModelCase`.

    >>> case = models(kind=("mlp",), activations=("relu",)).example()
    >>> case.model(torch.zeros(2, *case.input_shape, dtype=case.dtype)).shape[1] == case.n_outputs
    True
    """
    for name, chosen, allowed in (("kind", kind, ("mlp", "conv")),
                                  ("activations", activations, tuple(_ACTIVATIONS))):
        if not chosen or any(c not in allowed for c in chosen):
            raise ValueError(f"`{name}` must be a non-empty subset of {allowed}, got {chosen!r}")
    k = draw(st.sampled_from(tuple(kind)))
    activation = draw(st.sampled_from(tuple(activations)))
    dtype = draw(st.sampled_from(tuple(dtypes)))
    if input_shape is None:
        if k == "mlp":
            input_shape = (draw(st.integers(1, max_width)),)
        else:
            input_shape = tuple(draw(st.integers(1, hi)) for hi in (3, 4, 4))
    elif len(input_shape) != (1 if k == "mlp" else 3):
        raise ValueError(f"`input_shape` {input_shape} does not fit a {k!r} model")
    widths = tuple(draw(st.lists(st.integers(1, max_width), min_size=1, max_size=max_depth)))
    outputs = n_outputs if n_outputs is not None else draw(st.integers(1, max_outputs))
    return build_model(k, activation, dtype, tuple(input_shape), widths, outputs, draw(_SEEDS))


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


@st.composite
def equivalent_models(draw: st.DrawFn, case: ModelCase) -> ModelCase:
    """A functionally equal re-implementation of ``case.model``.

    Each hidden layer's units (channels) are permuted and rescaled, and the
    next layer's inputs are transformed back: for ``relu`` by powers of two
    (``relu(c z) / c == relu(z)`` for ``c > 0``, exact in floating point), for
    ``tanh`` by signs (``-tanh(-z) == tanh(z)``), for ``softplus`` permuted
    only. The function is the same up to float summation order; the
    parameters, and so any implementation-dependent attribution, are not.

    Args:
        case: the model case to re-implement.

    Returns:
        A strategy of :class:`ModelCase` with the same names and shapes;
        ``equivalence`` records the transformation.

    >>> case = models(activations=("relu",)).example()
    >>> twin = equivalent_models(case).example()
    >>> x = torch.randn(2, *case.input_shape, dtype=case.dtype)
    >>> torch.allclose(case.model(x), twin.model(x), atol=1e-5)
    True
    """
    scale_choices = {"relu": (1.0, 2.0, 0.5, 4.0), "tanh": (1.0, -1.0), "softplus": (1.0,)}
    model = copy.deepcopy(case.model)
    weighted = [m for m in model.children() if isinstance(m, (nn.Linear, nn.Conv2d))]
    applied = []
    for k, width in enumerate(case.widths):
        perm = draw(st.permutations(range(width)))
        scales = draw(st.lists(st.sampled_from(scale_choices[case.activation]),
                               min_size=width, max_size=width))
        p = torch.tensor(perm)
        s = torch.tensor(scales, dtype=case.dtype)
        layer, nxt = weighted[k], weighted[k + 1]
        with torch.no_grad():
            out_shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.copy_(layer.weight[p] * s.reshape(out_shape))
            layer.bias.copy_(layer.bias[p] * s)
            w = nxt.weight
            # the head of a conv net reads (channels, h, w) flattened: act on dim 1 of that view
            view = w.reshape(w.shape[0], width, -1) if w.dim() == 2 else w.unsqueeze(2)
            view = view[:, p] / s.reshape(1, -1, *[1] * (view.dim() - 2))
            w.copy_(view.reshape(w.shape))
        applied.append((tuple(perm), tuple(scales)))
    return _case(model, case.kind, case.activation, case.dtype, case.input_shape, case.widths,
                 case.n_outputs, case.seed, tuple(applied))
