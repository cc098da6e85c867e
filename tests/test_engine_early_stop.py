"""Neuron methods stop the forward at the layer only where that is proven exact.

``fnattr._engine.runs_once`` proves from the module structure that a model
calls a layer exactly once (a chain of plain ``nn.Sequential`` containers, the
layer appearing once in the tree); then the eager forward stops at the layer.
Everywhere else the whole forward runs (Captum's rule: the layer's last call).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fnattr
from fnattr._engine import runs_once

from ._catalog_args import ENTRIES, Setting, call
from .conftest import captum_quiet


class Wrapper(nn.Module):
    """The same function as ``net`` behind a custom ``forward``: never stopped early."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


class OverridesForward(nn.Sequential):
    def forward(self, x):
        for m in self:
            x = m(x)
        return x


def _conv_net(inplace=False):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU(inplace=inplace)),
        nn.Flatten(), nn.Linear(6 * 6 * 6, 5),
    ).eval()


def test_runs_once_truth_table():
    net = _conv_net()
    assert runs_once(net, net[0]) and runs_once(net, net[2]) and runs_once(net, net[2][0])
    assert runs_once(net, net[4])
    assert not runs_once(Wrapper(net), net[0])            # custom forward on the chain
    assert not runs_once(OverridesForward(*net), net[0])  # Sequential with its own forward
    relu = nn.ReLU()
    shared = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    assert not runs_once(shared, relu)                    # one module called twice
    assert runs_once(shared, shared[0])
    lin = nn.Linear(3, 3)
    nested = nn.Sequential(lin, nn.Sequential(nn.ReLU(), lin))
    assert not runs_once(nested, lin)                     # reused inside a child
    assert not runs_once(net, nn.Linear(2, 2))            # not a submodule
    assert not runs_once(lambda x: net(x), net[0])        # not a module
    handle = net[2].register_forward_hook(lambda *a: None)
    try:
        assert not runs_once(net, net[2][0])              # a hook on the chain may run code
        assert runs_once(net, net[0])
    finally:
        handle.remove()


def _tail_calls(net, call):
    calls = []
    handle = net[4].register_forward_hook(lambda *a: calls.append(1))
    try:
        out = call()
    finally:
        handle.remove()
    return out, len(calls)


def _neuron_method(entry):
    """``f(model, layer, x, selector, **options)`` for a neuron-site catalog entry."""
    def run(f, layer, x, selector, **k):
        setting = Setting(layer=layer, neuron=selector, n_steps=4,
                          baselines=torch.zeros(2, 3, 8, 8), n_samples=3, stdevs=0.1, seed=3)
        return call(entry, f, x, setting, **k)
    return run


# every catalog method that explains a neuron (the ones that stop early)
METHODS = {e.name: _neuron_method(e) for e in ENTRIES if e.site == "neuron"}


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("selector", [(1, 2, 2), [(0, 0, 0), (5, 3, 1)], "all"])
@pytest.mark.parametrize("name", list(METHODS))
def test_stopped_forward_equals_the_whole_forward(name, selector, inplace, to_input):
    net = _conv_net(inplace)
    layer = net[2][0] if to_input else net[2]    # inputs of conv2 / outputs of block
    if to_input and selector == (1, 2, 2):
        selector = (1, 4, 4)
    if to_input and isinstance(selector, list):
        selector = [(0, 0, 0), (3, 7, 1)]
    x = torch.randn(2, 3, 8, 8)
    method = METHODS[name]
    kw = {"attribute_to_neuron_input": True} if to_input else {}
    stopped, tail = _tail_calls(net, lambda: method(net, layer, x, selector, **kw))
    whole, tail_whole = _tail_calls(net, lambda: method(Wrapper(net), layer, x, selector, **kw))
    assert (tail, tail_whole) == (0, 1)
    torch.testing.assert_close(stopped, whole, rtol=1e-6, atol=1e-7)


def test_stopped_forward_equals_captum():
    from captum.attr import NeuronGradient

    net = _conv_net(inplace=True)
    x = torch.randn(3, 3, 8, 8)
    with captum_quiet():
        ref = NeuronGradient(net, net[2]).attribute(x, (4, 1, 3))
    got, tail = _tail_calls(net, lambda: fnattr.neuron_gradient(net, net[2], x, (4, 1, 3)))
    assert tail == 0
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


def test_reused_layer_runs_the_whole_forward_and_reads_the_last_call():
    torch.manual_seed(0)
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(3, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 2))
    x = torch.randn(5, 3)
    got = fnattr.neuron_gradient(net, relu, x, 1)
    xx = x.clone().requires_grad_()
    h = torch.relu(net[2](torch.relu(net[0](xx))))       # the second (last) call
    (ref,) = torch.autograd.grad(h[:, 1].sum(), xx)
    torch.testing.assert_close(got, ref)


def test_early_stop_leaves_no_hooks_and_no_flags():
    net = _conv_net()
    x = torch.randn(2, 3, 8, 8)
    before = [(m._forward_hooks.copy(), m._forward_pre_hooks.copy()) for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    fnattr.neuron_gradient(net, net[2], x, (0, 1, 1))
    fnattr.neuron_gradient(net, net[2][0], x, (0, 1, 1), attribute_to_neuron_input=True)
    after = [(m._forward_hooks.copy(), m._forward_pre_hooks.copy()) for m in net.modules()]
    assert [tuple(map(len, b)) for b in before] == [tuple(map(len, a)) for a in after]
    assert flags == [p.requires_grad for p in net.parameters()] and not x.requires_grad


@pytest.mark.parametrize("name", ["neuron_gradient", "neuron_integrated_gradients"])
def test_stop_before_an_inplace_relu_equals_the_whole_forward(name):
    # conv1's output is rewritten in place by the next ReLU(inplace=True) when the
    # whole forward runs (the tap reads a copy); a stopped forward never runs it.
    net = _conv_net(inplace=True)
    x = torch.randn(2, 3, 8, 8)
    method = METHODS[name]
    selectors = [(0, 1, 1), (3, 7, 7), (2, 4, 0)]
    stopped, tail = _tail_calls(net, lambda: method(net, net[0], x, selectors))
    whole, tail_whole = _tail_calls(net, lambda: method(Wrapper(net), net[0], x, selectors))
    assert (tail, tail_whole) == (0, 1)
    torch.testing.assert_close(stopped, whole, rtol=1e-6, atol=1e-7)
    assert stopped.abs().sum() > 0


@pytest.mark.parametrize("wrap", ["functional", "with_rule", "functional_of_rule"])
def test_early_stop_through_functional_values(wrap):
    # The early stop is decided from the Functional value (its .root), so a model
    # passed as functional(model) or with_rule(model) to the public transforms stops
    # at the layer too (before issue 14 the wrapped callable lost it).
    net = _conv_net()
    x = torch.randn(2, 3, 8, 8)
    f = {"functional": lambda: fnattr.functional(net),
         "with_rule": lambda: fnattr.with_rule(net, fnattr.guided_relu),
         "functional_of_rule": lambda: fnattr.functional(fnattr.with_rule(net))}[wrap]()
    objective = fnattr.neuron_objective([(0, 1, 1), (4, 2, 3)])
    (stopped,), tail = _tail_calls(net, lambda: fnattr.input_gradients(
        f, (x,), objective, layer=net[2]))
    f_whole = fnattr.with_rule(Wrapper(net)) if wrap != "functional" else Wrapper(net)
    (whole,), tail_whole = _tail_calls(net, lambda: fnattr.input_gradients(
        f_whole, (x,), objective, layer=net[2]))
    assert (tail, tail_whole) == (0, 1)
    assert stopped.shape == (2, *x.shape)
    torch.testing.assert_close(stopped, whole, rtol=1e-6, atol=1e-7)
    _, tail_method = _tail_calls(net, lambda: fnattr.neuron_gradient(f, net[2], x, (0, 1, 1)))
    assert tail_method == 0
