"""fnattr.compile: no graph breaks, no recompiles for new targets/neurons,
the documented behaviour when the batch size changes, reproducible sampling."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import fnattr

from ._catalog_args import ENTRIES, Setting, build
from .conftest import MLP, ConvNet

pytestmark = pytest.mark.compile


@pytest.fixture
def net():
    torch._dynamo.reset()
    counters.clear()
    return MLP().eval()


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _breaks() -> int:
    return sum(counters["graph_break"].values())


GEN = lambda: torch.Generator().manual_seed(3)  # noqa: E731
CALLS = {e.name: e for e in ENTRIES}  # every catalog method


def _setting(layer: str, index: int, target: int, neuron: tuple, baselines) -> Setting:
    """A new target / neuron index for each ``index``: must not recompile."""
    return Setting(layer=layer, target=target, neuron=neuron, n_steps=5 if layer == "fc2" else 4,
                   baselines=baselines, n_samples=4 if layer == "fc2" else 3, stdevs=0.2,
                   seed=3)


def _compiled_and_eager(entry, net, setting):
    head, _ = build(entry, setting)
    layers = [net.get_submodule(h) for h in head]
    compiled = fnattr.compile(entry.fn, net, *layers)
    return compiled, (lambda x, **k: entry.fn(net, *layers, x, **k))


@pytest.mark.parametrize("name", list(CALLS))
def test_fullgraph_no_breaks_no_recompile_for_new_index(net, name):
    entry = CALLS[name]
    settings = {i: _setting("fc2", i, i % 4, (i,), torch.zeros(3, 6)) for i in (1, 2, 3)}
    compiled, eager = _compiled_and_eager(entry, net, settings[1])
    x = torch.randn(5, 6)
    for index in (1, 2, 3):  # a new target / neuron index each call
        _, kwargs = build(entry, settings[index])
        _, again = build(entry, settings[index])  # a fresh generator for the eager call
        torch.testing.assert_close(compiled(x, **kwargs), eager(x, **again),
                                   rtol=1e-5, atol=1e-6)
    assert _breaks() == 0
    assert _graphs() == 1, "a new target or neuron index must not recompile"


def test_new_batch_size_recompiles_once_then_dynamic(net):
    compiled = fnattr.compile(fnattr.internal_influence, net, net.fc1)
    for n in (4, 7, 9, 12):
        x = torch.randn(n, 6)
        torch.testing.assert_close(compiled(x, target=1, n_steps=4),
                                   fnattr.internal_influence(net, net.fc1, x, target=1, n_steps=4),
                                   rtol=1e-5, atol=1e-6)
    # the first batch size compiles a static graph, the second a dynamic one,
    # which every later batch size reuses
    assert _graphs() == 2


def test_sampled_methods_reproducible_and_equal_to_eager(net):
    compiled = fnattr.compile(fnattr.gradient_shap, net)
    x = torch.randn(5, 6)
    base = torch.randn(4, 6)
    a = compiled(x, base, n_samples=6, stdevs=0.3, target=2, generator=GEN())
    b = compiled(x, base, n_samples=6, stdevs=0.3, target=2, generator=GEN())
    c = fnattr.gradient_shap(net, x, base, n_samples=6, stdevs=0.3, target=2, generator=GEN())
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    state = torch.get_rng_state()
    compiled(x, base, n_samples=6, stdevs=0.3, target=2, generator=GEN())
    assert torch.equal(state, torch.get_rng_state()), "the global RNG must not be touched"


def test_layer_taps_need_fnattr_compile(net):
    f = torch.compile(lambda x: fnattr.neuron_gradient(net, net.fc1, x, (0,)), fullgraph=True)
    with pytest.raises(Exception, match="fnattr.compile"):
        f(torch.randn(3, 6))
    assert not net.fc1._forward_hooks and not net.fc1._forward_pre_hooks


def test_compile_rejects_bad_arguments(net):
    with pytest.raises(ValueError, match="method"):
        fnattr.compile(torch.sin, net)
    with pytest.raises(ValueError, match="layer"):
        fnattr.compile(fnattr.neuron_gradient, net)
    with pytest.raises(ValueError, match="layer"):
        fnattr.compile(fnattr.guided_backprop, net, net.fc1)


def test_many_neurons_compiled_equal_eager(net):
    x = torch.randn(4, 6)
    selectors = [(0,), (3,), (5,)]
    compiled = fnattr.compile(fnattr.neuron_gradient, net, net.fc2)
    torch.testing.assert_close(compiled(x, selectors),
                               fnattr.neuron_gradient(net, net.fc2, x, selectors),
                               rtol=1e-5, atol=1e-6)


def test_many_compiled_functions_in_one_process(net):
    x = torch.randn(3, 6)
    for layer in (net.fc1, net.fc2, net.fc3):
        for method in (fnattr.neuron_gradient, fnattr.neuron_integrated_gradients,
                       fnattr.neuron_guided_backprop):
            fnattr.compile(method, net, layer)(x, (1,))


# On the conv net, one method per (site, path) kind (the MLP test above covers every
# method, rules included): compiling is slow on CPU and the suite must stay short.
CONV_CALLS = list({(e.site, e.path): e.name for e in reversed(ENTRIES) if e.rule is None}.values())


@pytest.mark.parametrize("name", CONV_CALLS)
def test_conv_net_fullgraph_no_breaks_no_recompile_for_new_index(name):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = ConvNet().eval()
    entry = CALLS[name]
    base = torch.zeros(3, 3, 8, 8)
    settings = {i: _setting("conv2", i, i, (i, 1, 2), base) for i in (1, 3)}
    compiled, eager = _compiled_and_eager(entry, net, settings[1])
    x = torch.randn(4, 3, 8, 8)
    for index in (1, 3):  # a new target / neuron index each call
        _, kwargs = build(entry, settings[index])
        _, again = build(entry, settings[index])  # a fresh generator for the eager call
        torch.testing.assert_close(compiled(x, **kwargs), eager(x, **again),
                                   rtol=1e-5, atol=1e-6)
    assert _breaks() == 0
    assert _graphs() == 1, "a new target or neuron index must not recompile"


def test_sequential_model_compiles_like_eager_early_stop():
    # Eager stops nn.Sequential forwards at the layer; compiled code traces the
    # whole forward (inductor drops the unused tail): same numbers, one graph.
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(inplace=True),
                              torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    compiled = fnattr.compile(fnattr.neuron_gradient, net, net[1])
    x = torch.randn(5, 6)
    for sel in ((2,), (5,), [(1,), (7,)]):
        torch.testing.assert_close(compiled(x, sel), fnattr.neuron_gradient(net, net[1], x, sel),
                                   rtol=1e-5, atol=1e-6)
    assert _breaks() == 0


def test_compiled_call_binds_arguments_like_python(net):
    compiled = fnattr.compile(fnattr.internal_influence, net, net.fc1)
    x = torch.randn(3, 6)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_step'"):
        compiled(x, n_step=4)
    with pytest.raises(TypeError, match="multiple values for argument 'target'"):
        compiled(x, None, 1, target=1)
    with pytest.raises(TypeError, match="positional"):
        compiled(x, *([None] * 12))
    with pytest.raises(TypeError, match="missing required argument"):
        compiled()
    with pytest.raises(TypeError, match="unexpected keyword argument 'layer'"):
        compiled(x, layer=net.fc2)
    assert _graphs() == 0  # nothing was compiled for the bad calls


class _TinyAttention(torch.nn.Module):
    """Token embedding (a Linear on a contiguous ``(n, t, d)`` input) + self-attention."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Linear(4, 8)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        h = self.emb(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.fc(h.mean(1))


@pytest.mark.parametrize("selector", [[(0, 1), (2, 3), (4, 7)], (1, 5)],
                         ids=["list", "single"])
def test_attention_new_batch_sizes_recompile_once(selector):
    # issue 12.13: a list of selectors recompiled for every batch size (vmap of the
    # gather's backward specialized it), and so did any 3-D Linear input under vjp
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = _TinyAttention().eval()
    compiled = fnattr.compile(fnattr.neuron_gradient, net, net.emb)
    for n in (2, 3, 5):
        x = torch.randn(n, 5, 4)
        torch.testing.assert_close(compiled(x, selector),
                                   fnattr.neuron_gradient(net, net.emb, x, selector),
                                   rtol=1e-5, atol=1e-6)
    assert _breaks() == 0
    assert _graphs() <= 2, "one static graph, then one dynamic graph for every batch size"
