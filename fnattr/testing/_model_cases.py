"""Drawn models: :class:`ModelCase`, :func:`models`, :func:`build_model` and
:func:`equivalent_models` (part of :mod:`fnattr.testing.strategies`, which
re-exports them and states how they shrink)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from hypothesis import strategies as st
from torch import nn

__all__ = ["ModelCase", "build_model", "equivalent_models", "models"]

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
