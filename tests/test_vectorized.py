"""Many neurons and many targets in one pass equal a Python loop of single calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fnattr

from .conftest import ConvNet


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(4, 3, 8, 8)
    base = torch.randn(5, 3, 8, 8)
    return net, x, base


TARGETS = [0, 3, [1, 2, 3, 4], torch.tensor([4, 3, 2, 1])]
GEN = lambda: torch.Generator().manual_seed(5)  # noqa: E731


def _output_methods(net, base):
    return {
        "gradient": lambda x, t: fnattr.gradient(net, x, target=t),
        "guided_backprop": lambda x, t: fnattr.guided_backprop(net, x, target=t),
        "deconvolution": lambda x, t: fnattr.deconvolution(net, x, target=t),
        "internal_influence": lambda x, t: fnattr.internal_influence(
            net, net.conv2, x, target=t, n_steps=5, internal_batch_size=7),
        "integrated_gradients": lambda x, t: fnattr.integrated_gradients(
            net, x, target=t, n_steps=5),
        "layer_conductance": lambda x, t: fnattr.layer_conductance(
            net, net.conv2, x, target=t, n_steps=5),
        "gradient_shap": lambda x, t: fnattr.gradient_shap(
            net, x, base, n_samples=3, stdevs=0.1, target=t, generator=GEN()),
    }


@pytest.mark.parametrize("name", list(_output_methods(None, None)))
def test_each_target_equals_a_loop(setup, name):
    net, x, base = setup
    method = _output_methods(net, base)[name]
    many = method(x, fnattr.each(TARGETS))
    assert many.shape[0] == len(TARGETS)
    for k, t in enumerate(TARGETS):
        torch.testing.assert_close(many[k], method(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["integrated_gradients", "layer_conductance", "gradient_shap"])
def test_each_target_deltas_equal_a_loop(setup, name):
    net, x, base = setup
    calls = {
        "integrated_gradients": lambda t: fnattr.integrated_gradients(
            net, x, target=t, n_steps=5, return_convergence_delta=True),
        "layer_conductance": lambda t: fnattr.layer_conductance(
            net, net.conv2, x, target=t, n_steps=5, return_convergence_delta=True),
        "gradient_shap": lambda t: fnattr.gradient_shap(
            net, x, base, n_samples=3, target=t, generator=GEN(),
            return_convergence_delta=True),
    }
    _, deltas = calls[name](fnattr.each(TARGETS))
    for k, t in enumerate(TARGETS):
        torch.testing.assert_close(deltas[k], calls[name](t)[1], rtol=1e-5, atol=1e-6)


SELECTORS = [(0, 1, 1), (3, 0, 2), (5, 2, 2), (slice(0, 2), 1, 1)]


def _neuron_methods(net, base):
    return {
        "neuron_gradient": lambda x, s, **k: fnattr.neuron_gradient(net, net.conv2, x, s, **k),
        "neuron_guided_backprop": lambda x, s, **k: fnattr.neuron_guided_backprop(
            net, net.conv2, x, s, **k),
        "neuron_deconvolution": lambda x, s, **k: fnattr.neuron_deconvolution(
            net, net.conv2, x, s, **k),
        "neuron_gradient_shap": lambda x, s, **k: fnattr.neuron_gradient_shap(
            net, net.conv2, x, s, base, n_samples=3, stdevs=0.1, generator=GEN(), **k),
        "neuron_integrated_gradients": lambda x, s, **k: fnattr.neuron_integrated_gradients(
            net, net.conv2, x, s, n_steps=4, **k),
    }


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("name", list(_neuron_methods(None, None)))
def test_neuron_list_equals_a_loop(setup, name, chunk_size):
    net, x, base = setup
    method = _neuron_methods(net, base)[name]
    many = method(x, SELECTORS, chunk_size=chunk_size)
    assert many.shape == (len(SELECTORS), *x.shape)
    for k, s in enumerate(SELECTORS):
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
