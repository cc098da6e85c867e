"""Hypothesis properties of the core methods (small, derandomized).

Each property draws model sizes, a batch and a seed; the model is built from
the seed, so every example is reproducible. Tolerances: float32
``atol=1e-5, rtol=1e-4`` for closed forms, ``atol=1e-6, rtol=1e-5`` where
the same computation is merely re-batched.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fnattr

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._reference import assert_same, naive_quadrature
except ImportError:
    from _reference import assert_same, naive_quadrature

METHODS = ["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
           "gausslegendre"]
SETTINGS = dict(max_examples=25, deadline=None, derandomize=True)
CLOSED = dict(atol=1e-5, rtol=1e-4)
REBATCH = dict(atol=1e-6, rtol=1e-5)


class Body(nn.Module):
    """x -> lin1 -> tanh -> lin2 -> act -> head (Linear)."""

    def __init__(self, d_in, d_h, d_out):
        super().__init__()
        self.lin1 = nn.Linear(d_in, d_h)
        self.tanh = nn.Tanh()
        self.lin2 = nn.Linear(d_h, d_h)
        self.act = nn.Softplus()
        self.head = nn.Linear(d_h, d_out)

    def forward(self, x):
        return self.head(self.act(self.lin2(self.tanh(self.lin1(x)))))


sizes = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4),
                  st.integers(1, 4))  # d_in, d_h, d_out, n
seeds = st.integers(0, 2**16)


def _build(d_in, d_h, d_out, n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Body(d_in, d_h, d_out).to(dtype).eval()
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64).to(dtype)
    return model, x


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_neuron_gradient_of_linear_unit_is_its_weight_row(sizes, seed, data):
    # y_j = W[j] . x + b_j  =>  d y_j / d x = W[j] for every example.
    d_in, d_h, d_out, n = sizes
    model, x = _build(d_in, d_h, d_out, n, seed)
    j = data.draw(st.integers(0, d_h - 1), label="j")
    grad = fnattr.neuron_gradient(model, model.lin1, x, j)
    assert grad.shape == x.shape
    assert_same(grad, model.lin1.weight[j].detach().expand(n, d_in), **CLOSED)
    # and the selector as a 1-tuple, and by dotted name
    assert_same(fnattr.neuron_gradient(model, "lin1", x, (j,)), grad, atol=0, rtol=0)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_neuron_gradient_of_a_layer_input_is_one_hot(sizes, seed, data):
    # lin1's input is x itself: d x_j / d x = e_j.
    d_in, d_h, d_out, n = sizes
    model, x = _build(d_in, d_h, d_out, n, seed)
    j = data.draw(st.integers(0, d_in - 1), label="j")
    grad = fnattr.neuron_gradient(model, model.lin1, x, j, attribute_to_neuron_input=True)
    expected = torch.zeros_like(x)
    expected[:, j] = 1
    assert_same(grad, expected, atol=0, rtol=0)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_neuron_gradient_of_linear_composition_is_product_of_weights(sizes, seed, data):
    # Two Linear layers with nothing between: d (B A x)_j / d x = (B A)[j].
    d_in, d_h, d_out, n = sizes
    torch.manual_seed(seed)
    a, b = nn.Linear(d_in, d_h), nn.Linear(d_h, d_out)
    model = nn.Sequential(a, b).eval()
    x = torch.randn(n, d_in)
    j = data.draw(st.integers(0, d_out - 1), label="j")
    expected = (b.weight @ a.weight)[j].detach().expand(n, d_in)
    assert_same(fnattr.neuron_gradient(model, "1", x, j), expected, **CLOSED)
    # a slice over all units sums the rows
    assert_same(fnattr.neuron_gradient(model, b, x, (slice(None),)),
                (b.weight @ a.weight).sum(0).detach().expand(n, d_in), **CLOSED)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_internal_influence_before_linear_head_is_weight_row_times_weight_sum(
        sizes, seed, data):
    # F(x) = head(h(x))[t] = W[t] . h + b[t], with h = act's output (the
    # layer). dF/dh = W[t] at every point of the path, whatever h is. Internal
    # influence is the quadrature sum_s w_s * dF/dh(point_s) -- it is NOT
    # multiplied by any delta (neither input nor layer) -- so it equals
    # W[t] * sum_s w_s for every example and every baseline. sum_s w_s = 1
    # for Gauss-Legendre and the left/right/middle Riemann rules; Captum's
    # trapezoid rule uses weights 1/n with halved ends, which sum to 1 - 1/n.
    d_in, d_h, d_out, n = sizes
    model, x = _build(d_in, d_h, d_out, n, seed)
    t = data.draw(st.integers(0, d_out - 1), label="target")
    method = data.draw(st.sampled_from(METHODS), label="method")
    n_steps = data.draw(st.integers(2, 6), label="n_steps")
    baselines = data.draw(st.sampled_from([None, 0.5, "random"]), label="baselines")
    if baselines == "random":
        baselines = torch.randn(n, d_in)
    attr = fnattr.internal_influence(model, model.act, x, baselines, t, n_steps=n_steps,
                                     method=method)
    weight_sum = sum(naive_quadrature(method, n_steps)[1])
    expected = (model.head.weight[t].detach() * weight_sum).expand(n, d_h)
    assert attr.shape == (n, d_h)
    assert_same(attr, expected, **CLOSED)
    # attributing to the head's input is the same site
    assert_same(fnattr.internal_influence(model, model.head, x, baselines, t, n_steps=n_steps,
                                          method=method, attribute_to_layer_input=True),
                expected, **CLOSED)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_internal_batch_size_never_changes_results(sizes, seed, data):
    d_in, d_h, d_out, n = sizes
    model, x = _build(d_in, d_h, d_out, n, seed)
    method = data.draw(st.sampled_from(METHODS), label="method")
    n_steps = data.draw(st.integers(2, 5), label="n_steps")
    ibs = data.draw(st.integers(1, n * n_steps + 3), label="internal_batch_size")
    targets = data.draw(st.lists(st.integers(0, d_out - 1), min_size=n, max_size=n),
                        label="target")
    layer = data.draw(st.sampled_from(["lin1", "tanh", "lin2", "act"]), label="layer")
    to_input = data.draw(st.booleans(), label="attribute_to_layer_input")
    kw = dict(baselines=torch.randn(n, d_in), target=targets, n_steps=n_steps, method=method,
              attribute_to_layer_input=to_input)
    full = fnattr.internal_influence(model, layer, x, **kw)
    assert_same(fnattr.internal_influence(model, layer, x, internal_batch_size=ibs, **kw),
                full, **REBATCH)
    assert_same(fnattr.integrated_gradients(model, x, kw["baselines"], targets,
                                            n_steps=n_steps, method=method,
                                            internal_batch_size=ibs),
                fnattr.integrated_gradients(model, x, kw["baselines"], targets,
                                            n_steps=n_steps, method=method), **REBATCH)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_float64_and_float32_agree(sizes, seed, data):
    d_in, d_h, d_out, n = sizes
    m32, x32 = _build(d_in, d_h, d_out, n, seed, torch.float32)
    m64, x64 = _build(d_in, d_h, d_out, n, seed, torch.float64)
    with torch.no_grad():
        for p32, p64 in zip(m32.parameters(), m64.parameters()):
            p64.copy_(p32.double())
        x64 = x32.double()
    j = data.draw(st.integers(0, d_h - 1), label="j")
    t = data.draw(st.integers(0, d_out - 1), label="target")
    layer = data.draw(st.sampled_from(["lin1", "tanh", "lin2", "act"]), label="layer")
    g32 = fnattr.neuron_gradient(m32, layer, x32, j)
    g64 = fnattr.neuron_gradient(m64, layer, x64, j)
    assert g32.dtype == torch.float32 and g64.dtype == torch.float64
    assert_same(g32.double(), g64, atol=1e-5, rtol=1e-4)
    i32 = fnattr.internal_influence(m32, layer, x32, target=t, n_steps=4)
    i64 = fnattr.internal_influence(m64, layer, x64, target=t, n_steps=4)
    assert i32.dtype == torch.float32 and i64.dtype == torch.float64
    assert_same(i32.double(), i64, atol=1e-5, rtol=1e-4)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_chunk_size_never_changes_multi_neuron_results(sizes, seed, data):
    d_in, d_h, d_out, n = sizes
    model, x = _build(d_in, d_h, d_out, n, seed)
    neuron = st.one_of(st.integers(0, d_h - 1),
                       st.tuples(st.integers(0, d_h - 1)),
                       st.integers(0, d_h - 1).map(lambda a: (slice(a, None),)))
    selectors = data.draw(st.lists(neuron, min_size=1, max_size=6), label="selectors")
    chunk = data.draw(st.integers(1, 7), label="chunk_size")
    layer = data.draw(st.sampled_from(["lin1", "tanh", "lin2", "act"]), label="layer")
    full = fnattr.neuron_gradient(model, layer, x, selectors)
    assert full.shape == (len(selectors), *x.shape)
    assert_same(fnattr.neuron_gradient(model, layer, x, selectors, chunk_size=chunk), full,
                **REBATCH)
    singles = torch.stack([fnattr.neuron_gradient(model, layer, x, s) for s in selectors])
    assert_same(full, singles, **REBATCH)
    nig = fnattr.neuron_integrated_gradients(model, layer, x, selectors, n_steps=3)
    assert_same(fnattr.neuron_integrated_gradients(model, layer, x, selectors, n_steps=3,
                                                   chunk_size=chunk), nig, **REBATCH)


@settings(**SETTINGS)
@given(sizes=sizes, seed=seeds, data=st.data())
def test_integrated_gradients_completeness_on_linear_model(sizes, seed, data):
    # For F(x) = W x + b, IG is exactly W[t] * (x - b) with any rule whose
    # weights sum to 1, so the attributions sum to F(x) - F(baseline) and
    # convergence_delta is ~0.
    d_in, _, d_out, n = sizes
    torch.manual_seed(seed)
    model = nn.Linear(d_in, d_out).eval()
    x, base = torch.randn(n, d_in), torch.randn(n, d_in)
    t = data.draw(st.integers(0, d_out - 1), label="target")
    method = data.draw(st.sampled_from(["riemann_right", "riemann_left", "riemann_middle",
                                        "gausslegendre"]), label="method")
    attr = fnattr.integrated_gradients(model, x, base, t, n_steps=3, method=method)
    assert_same(attr, model.weight[t].detach() * (x - base), **CLOSED)
    delta = fnattr.convergence_delta(model, attr, base, x, t)
    assert delta.shape == (n,)
    assert_same(delta, torch.zeros(n), **CLOSED)
