"""Many neurons and many targets in one pass equal a Python loop of single calls.

The methods are the catalog's (``tests/_catalog_args.py``): every entry with a
``target``, every entry with a convergence delta, every neuron-site entry.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fnattr
from fnattr._catalog import CATALOG

from ._catalog_args import ENTRIES, Setting, call
from .conftest import ConvNet


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(4, 3, 8, 8)
    base = torch.randn(5, 3, 8, 8)
    return net, x, base


TARGETS = [0, 3, [1, 2, 3, 4], torch.tensor([4, 3, 2, 1])]
SELECTORS = [(0, 1, 1), (3, 0, 2), (5, 2, 2), (slice(0, 2), 1, 1)]
OPTIONS = {"internal_influence": {"internal_batch_size": 7}}  # chunked paths, K targets too


def _method(name, net, base, **options):
    """``f(x, target_or_selector, **k)`` for catalog entry ``name`` on ``net.conv2``."""
    entry = CATALOG[name]
    steps = 4 if entry.site == "neuron" else 5

    def run(x, which, **k):
        setting = Setting(layer="conv2", target=which, neuron=which, n_steps=steps,
                          baselines=base, n_samples=3, stdevs=0.1, seed=5)
        return call(entry, net, x, setting, **OPTIONS.get(name, {}), **options, **k)
    return run


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.target])
def test_each_target_equals_a_loop(setup, name):
    net, x, base = setup
    method = _method(name, net, base)
    many = method(x, fnattr.each(TARGETS))
    assert many.shape[0] == len(TARGETS)
    for k, t in enumerate(TARGETS):
        torch.testing.assert_close(many[k], method(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.delta])
def test_each_target_deltas_equal_a_loop(setup, name):
    net, x, base = setup
    method = _method(name, net, base, return_convergence_delta=True)
    _, deltas = method(x, fnattr.each(TARGETS))
    for k, t in enumerate(TARGETS):
        torch.testing.assert_close(deltas[k], method(x, t)[1], rtol=1e-5, atol=1e-6)


# Int-only selectors take the one-gather fast path (fnattr._normalize.select_neurons);
# a slice sends the whole list through the per-selector path.
INT_SELECTORS = [(0, 1, 1), (-1, 0, 2), (5, -2, 3), (2, 3, 3), (0, 1, 1)]


@pytest.mark.parametrize("selectors", [SELECTORS, INT_SELECTORS], ids=["with_slice", "ints"])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.site == "neuron"])
def test_neuron_list_equals_a_loop(setup, name, chunk_size, selectors):
    net, x, base = setup
    method = _method(name, net, base)
    many = method(x, selectors, chunk_size=chunk_size)
    assert many.shape == (len(selectors), *x.shape)
    for k, s in enumerate(selectors):
        torch.testing.assert_close(many[k], method(x, s), rtol=1e-5, atol=1e-6)


def test_every_neuron_of_a_layer(setup):
    net, x, _ = setup
    every = fnattr.neuron_gradient(net, net.conv2, x, "all", chunk_size=16)
    per_example = net.conv2(net.relu1(net.conv1(x))).shape[1:]  # (6, 4, 4)
    assert every.shape == (per_example.numel(), *x.shape)
    every = every.reshape(*per_example, *x.shape)
    for index in [(0, 0, 0), (2, 3, 1), (5, 1, 3)]:
        torch.testing.assert_close(every[index], fnattr.neuron_gradient(net, net.conv2, x, index),
                                   rtol=1e-5, atol=1e-6)


def test_one_shared_forward_for_many_neurons(setup):
    net, x, _ = setup
    calls = []
    handle = net.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        fnattr.neuron_gradient(net, net.conv2, x, SELECTORS * 8)
        fnattr.gradient(net, x, target=fnattr.each(range(5)))
    finally:
        handle.remove()
    assert len(calls) == 2


def test_each_is_validated():
    with pytest.raises(ValueError, match="target"):
        fnattr.each([])
    net = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="target"):
        fnattr.gradient(net, torch.randn(4, 3), target=fnattr.each([[0, 1]]))
    with pytest.raises(TypeError, match="target"):
        fnattr.gradient(net, torch.randn(4, 3), target=fnattr.each([fnattr.each([0])]))
    with pytest.raises(ValueError, match="neuron_selector"):
        fnattr.neuron_gradient(net, net, torch.randn(4, 3), "every")


def test_int_selector_list_on_a_flat_layer():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(6, 5)
    many = fnattr.neuron_gradient(net, net[1], x, [0, -1, 3, (4,)])
    w = net[0].weight
    for k, i in enumerate([0, 6, 3, 4]):  # d tanh(W x + b)_i / dx = (1 - h_i^2) W_i
        h = torch.tanh(net[0](x))[:, i]
        torch.testing.assert_close(many[k], (1 - h**2)[:, None] * w[i], rtol=1e-5, atol=1e-6)


def test_int_selector_list_errors_name_the_argument(setup):
    net, x, _ = setup
    with pytest.raises(IndexError, match="neuron_selector"):
        fnattr.neuron_gradient(net, net.conv2, x, [(0, 1, 1), (6, 0, 0)])
    with pytest.raises(ValueError, match="neuron_selector"):
        fnattr.neuron_gradient(net, net.conv2, x, [(0, 1, 1), (0, 1)])


def test_auto_chunk_rule():
    from fnattr._engine import _auto_chunk

    cpu = torch.device("cpu")
    budget = fnattr._engine.CHUNK_BUDGET_BYTES["cpu"]
    assert _auto_chunk(64, 0, cpu) == 64
    assert _auto_chunk(64, budget // 100, cpu) == 64   # small model: all rows at once
    assert _auto_chunk(64, budget // 5, cpu) == 4      # largest power of two <= 5
    assert _auto_chunk(64, budget, cpu) == 1
    assert _auto_chunk(64, 10 * budget, cpu) == 1      # never below one row


@pytest.mark.parametrize("budget", [1, 2**40])  # forces one row at a time / all rows
def test_default_chunk_size_does_not_change_results(setup, monkeypatch, budget):
    net, x, _ = setup
    expected = fnattr.neuron_gradient(net, net.conv2, x, INT_SELECTORS, chunk_size=2)
    monkeypatch.setitem(fnattr._engine.CHUNK_BUDGET_BYTES, "cpu", budget)
    chosen = []
    real = fnattr._engine._auto_chunk
    monkeypatch.setattr(fnattr._engine, "_auto_chunk",
                        lambda *a: chosen.append(real(*a)) or chosen[-1])
    got = fnattr.neuron_gradient(net, net.conv2, x, INT_SELECTORS)
    assert chosen == [1 if budget == 1 else len(INT_SELECTORS)]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    each = fnattr.gradient(net, x, target=fnattr.each([0, 1, 2]))
    assert len(chosen) == 2
    torch.testing.assert_close(each[1], fnattr.gradient(net, x, target=1))
