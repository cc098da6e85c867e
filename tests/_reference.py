"""Naive reference implementations, written the slow obvious way, and test helpers.

Every reference loops over examples (a batch of one at a time), over path
steps and over neurons, takes ``torch.autograd.grad`` of one scalar at a time,
and reads layer values with explicit forward (pre-)hooks that clone. No
vectorization, no probes, nothing shared with fnattr. They follow Captum 0.9's
meanings: a reused module is read at its LAST call; a tuple selector with
slices sums the selected neurons; a callable selector maps the layer value
(a tensor or a tuple) to one scalar per example.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn


# ----------------------------------------------------------------- helpers


@contextlib.contextmanager
def quiet():
    """Silences Captum's own warnings (the oracle's, not fnattr's).

    (``conftest.captum_quiet()`` returns an already-entered ``catch_warnings``,
    which cannot be used in a ``with`` statement: "Cannot enter twice".)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_same(actual: Any, expected: Any, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """``assert_close`` that also demands the same structure (tensor vs tuple)."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), f"expected a tuple, got {type(actual).__name__}"
        assert len(actual) == len(expected), (len(actual), len(expected))
        for a, e in zip(actual, expected):
            assert_same(a, e, atol, rtol)
        return
    assert isinstance(actual, Tensor), f"expected a Tensor, got {type(actual).__name__}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


# ----------------------------------------------------------------- small test models


class OneOut(nn.Module):
    """One output per example: shape (N,), or (N, 1) with ``keepdim``."""

    def __init__(self, keepdim=False):
        super().__init__()
        self.keepdim = keepdim
        self.fc1 = nn.Linear(6, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 1)

    def forward(self, x):
        y = self.fc2(self.relu(self.fc1(x)))
        return y if self.keepdim else y.squeeze(-1)


class Out3D(nn.Module):
    """Output of shape (N, 2, 3): targets are tuples."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 6)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x))).view(-1, 2, 3)


class SelfAttention(nn.Module):
    """A ViT-style block: ``nn.MultiheadAttention(batch_first=True)`` self-attention on
    ``(N, tokens, 8)`` inputs, mean over tokens, 3 outputs."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def bfloat16_conv() -> tuple[nn.Module, Tensor]:
    """A seeded bfloat16 conv net (conv, ReLU, linear) and 4 bfloat16 inputs of 3x8x8."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 5)).eval().to(torch.bfloat16)
    return model, torch.randn(4, 3, 8, 8, dtype=torch.bfloat16)


class Split(nn.Module):
    """A layer whose output is a tuple of two tensors."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(6, 4)

    def forward(self, x):
        return self.a(x), self.b(x)


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.split = Split()
        self.relu = nn.ReLU()
        self.head = nn.Linear(9, 3)

    def forward(self, x):
        h1, h2 = self.split(x)
        return self.head(torch.cat([self.relu(h1), torch.tanh(h2)], 1))


class Combine(nn.Module):
    """A layer with two tensor inputs: its input side is a tuple."""

    def forward(self, a, b):
        return a * torch.sigmoid(b)


class TwoInputLayerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(6, 5)
        self.combine = Combine()
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.combine(torch.tanh(self.a(x)), self.b(x)))


class Looped(nn.Module):
    """Calls ``lin`` ``times`` times (a non-tensor forward arg)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x, times=1):
        h = x
        for _ in range(times):
            h = torch.tanh(self.lin(h))
        return self.head(h)


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


# ----------------------------------------------------------------- quadrature


def naive_quadrature(method: str, n: int) -> tuple[list[float], list[float]]:
    """Exact (float64) nodes and weights of each rule on [0, 1]."""
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return [(1 + float(t)) / 2 for t in x], [float(t) / 2 for t in w]
    weights = [1.0 / n] * n
    if method == "riemann_right":
        alphas = [(k + 1) / n for k in range(n)]
    elif method == "riemann_left":
        alphas = [k / n for k in range(n)]
    elif method == "riemann_middle":
        alphas = [(k + 0.5) / n for k in range(n)]
    elif method == "riemann_trapezoid":
        alphas = [k / (n - 1) for k in range(n)]
        weights[0] /= 2
        weights[-1] /= 2
    else:
        raise KeyError(method)
    return alphas, weights


# ----------------------------------------------------------------- layer access


class _Recorder:
    """Forward (pre-)hook keeping the layer's value at its last call.

    ``mode="read"``: stores a clone (graph kept) of the value, returns nothing.
    ``mode="leaf"``: replaces the value with a fresh leaf clone that requires
    grad (stored), and hands the model a clone of that leaf (so that a
    following in-place op does not hit a leaf).
    """

    def __init__(self, input_side: bool, mode: str) -> None:
        self.input_side = input_side
        self.mode = mode
        self.value: Any = None

    def __call__(self, module, args, output=None):
        value = args if self.input_side else output
        was_tuple = isinstance(value, tuple)
        tensors = value if was_tuple else (value,)
        if self.input_side:
            was_tuple = len(tensors) > 1
        if self.mode == "read":
            kept = tuple(t.clone() for t in tensors)
            self.value = kept if was_tuple else kept[0]
            return None
        leaves = tuple(t.detach().clone().requires_grad_() for t in tensors)
        self.value = leaves if was_tuple else leaves[0]
        handed = tuple(l.clone() for l in leaves)
        if self.input_side:
            return handed
        return handed if isinstance(output, tuple) else handed[0]


def _run(model, layer, inputs, args, input_side, mode):
    rec = _Recorder(input_side, mode)
    handle = (layer.register_forward_pre_hook(rec) if input_side
              else layer.register_forward_hook(rec))
    try:
        out = model(*inputs, *args)
    finally:
        handle.remove()
    return out, rec.value


def _one_example(t: Any, i: int, n: int) -> Any:
    if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n:
        return t[i:i + 1]
    return t


def _neuron_of_one(value: Any, selector: Any) -> Tensor:
    """The selected neuron of a batch-of-one layer value, as a 0-d tensor."""
    if callable(selector):
        out = selector(value)
        return out.reshape(-1)[0] if out.numel() == 1 else out[0]
    v = value[0] if isinstance(value, tuple) else value
    index = selector if isinstance(selector, tuple) else (selector,)
    picked = v[0][index]
    return picked.sum() if any(isinstance(i, slice) for i in index) else picked


def _target_of_one(output: Tensor, target: Any) -> Tensor:
    """``target`` here is already per example: None, an int or a tuple of ints."""
    row = output[0]
    if target is None:
        return row.reshape(())
    index = target if isinstance(target, tuple) else (target,)
    return row[index]


def per_example_targets(target: Any, n: int) -> list:
    """Captum's target forms as one plain index (None / int / tuple) per example."""
    if target is None or isinstance(target, (int, tuple)):
        return [target] * n
    if isinstance(target, Tensor):
        if target.dim() == 0:
            return [int(target)] * n
        return [int(t) for t in target]
    return list(target)


def full_baselines(baselines: Any, inputs: tuple) -> tuple:
    """Captum's baseline forms as one full ``(N, ...)`` tensor per input."""
    if baselines is None:
        baselines = tuple(0.0 for _ in inputs)
    tup = baselines if isinstance(baselines, tuple) else (baselines,)
    out = []
    for b, x in zip(tup, inputs):
        if isinstance(b, Tensor):
            out.append(b.expand_as(x).clone())
        else:
            out.append(torch.full_like(x, float(b)))
    return tuple(out)


# ----------------------------------------------------------------- references


def naive_neuron_gradient(model: Callable, layer: nn.Module, inputs: tuple,
                          selector: Any, args: tuple = (),
                          to_input: bool = False) -> tuple[Tensor, ...]:
    """d neuron / d inputs, one example and one scalar at a time."""
    n = inputs[0].shape[0]
    grads = [torch.zeros_like(x) for x in inputs]
    for i in range(n):
        xi = tuple(x[i:i + 1].detach().clone().requires_grad_() for x in inputs)
        ai = tuple(_one_example(a, i, n) for a in args)
        _, value = _run(model, layer, xi, ai, to_input, "read")
        neuron = _neuron_of_one(value, selector)
        gi = torch.autograd.grad(neuron, xi, allow_unused=True)
        for g, gx in zip(grads, gi):
            if gx is not None:
                g[i] = gx[0]
    return tuple(grads)


def naive_layer_gradient_one(model, layer, point: tuple, args: tuple, target: Any,
                             to_input: bool) -> tuple[Tensor, ...]:
    """d output[target] / d layer value for a batch of ONE point."""
    out, leaves = _run(model, layer, point, args, to_input, "leaf")
    leaves = leaves if isinstance(leaves, tuple) else (leaves,)
    scalar = _target_of_one(out, target)
    grads = torch.autograd.grad(scalar, leaves, allow_unused=True)
    return tuple(torch.zeros_like(l) if g is None else g for g, l in zip(grads, leaves))


def naive_internal_influence(model, layer, inputs: tuple, baselines: Any = None,
                             target: Any = None, args: tuple = (), n_steps: int = 5,
                             method: str = "gausslegendre",
                             to_input: bool = False) -> Any:
    """sum_s w_s * d F / d layer (b + alpha_s (x - b)), per example, per step."""
    n = inputs[0].shape[0]
    bs = full_baselines(baselines, inputs)
    targets = per_example_targets(target, n)
    alphas, weights = naive_quadrature(method, n_steps)
    rows = []
    for i in range(n):
        ai = tuple(_one_example(a, i, n) for a in args)
        acc = None
        for alpha, w in zip(alphas, weights):
            point = tuple((b[i:i + 1] + alpha * (x[i:i + 1] - b[i:i + 1])).detach()
                          for x, b in zip(inputs, bs))
            g = naive_layer_gradient_one(model, layer, point, ai, targets[i], to_input)
            acc = [w * t for t in g] if acc is None else [a + w * t for a, t in zip(acc, g)]
        rows.append(acc)
    attrs = tuple(torch.cat([r[k] for r in rows]) for k in range(len(rows[0])))
    return attrs if len(attrs) > 1 else attrs[0]


def naive_integrated_gradients(model, inputs: tuple, baselines: Any = None,
                               target: Any = None, args: tuple = (), n_steps: int = 5,
                               method: str = "gausslegendre") -> tuple[Tensor, ...]:
    """(x - b) * sum_s w_s dF/dx (b + alpha_s (x - b)), one example and step at a time."""
    n = inputs[0].shape[0]
    bs = full_baselines(baselines, inputs)
    targets = per_example_targets(target, n)
    alphas, weights = naive_quadrature(method, n_steps)
    out = [torch.zeros_like(x) for x in inputs]
    for i in range(n):
        ai = tuple(_one_example(a, i, n) for a in args)
        for alpha, w in zip(alphas, weights):
            point = tuple((b[i:i + 1] + alpha * (x[i:i + 1] - b[i:i + 1])).detach()
                          .requires_grad_() for x, b in zip(inputs, bs))
            scalar = _target_of_one(model(*point, *ai), targets[i])
            grads = torch.autograd.grad(scalar, point, allow_unused=True)
            for k, g in enumerate(grads):
                if g is not None:
                    out[k][i] += w * g[0] * (inputs[k][i] - bs[k][i])
    return tuple(out)


def naive_neuron_integrated_gradients(model, layer, inputs: tuple, selector: Any,
                                      baselines: Any = None, args: tuple = (),
                                      n_steps: int = 5, method: str = "gausslegendre",
                                      to_input: bool = False) -> tuple[Tensor, ...]:
    """(x - b) * sum_s w_s d neuron/dx (b + alpha_s (x - b)), naive loops."""
    n = inputs[0].shape[0]
    bs = full_baselines(baselines, inputs)
    alphas, weights = naive_quadrature(method, n_steps)
    out = [torch.zeros_like(x) for x in inputs]
    for i in range(n):
        ai = tuple(_one_example(a, i, n) for a in args)
        for alpha, w in zip(alphas, weights):
            point = tuple((b[i:i + 1] + alpha * (x[i:i + 1] - b[i:i + 1])).detach()
                          .requires_grad_() for x, b in zip(inputs, bs))
            _, value = _run(model, layer, point, ai, to_input, "read")
            grads = torch.autograd.grad(_neuron_of_one(value, selector), point,
                                        allow_unused=True)
            for k, g in enumerate(grads):
                if g is not None:
                    out[k][i] += w * g[0] * (inputs[k][i] - bs[k][i])
    return tuple(out)


def naive_jacobian_rows(model, layer, inputs: tuple, neurons: Sequence[tuple],
                        args: tuple = ()) -> list[tuple[Tensor, ...]]:
    """One naive neuron gradient per neuron index (the loop over neurons)."""
    return [naive_neuron_gradient(model, layer, inputs, nrn, args) for nrn in neurons]
