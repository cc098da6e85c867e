"""Every method in every variant gives the same answer.

Variants: eager (plain autograd), ``torch.func.vmap`` over examples (the
engine's functional mode), and ``fnattr.compile`` (marked ``compile``).
Sampled methods use ``randomness="same"`` under vmap: the per-example calls
draw the same paths, so they equal a loop of single-example calls with the
same seed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import vmap

import fnattr

from .conftest import ConvNet


def _seed():
    return torch.Generator().manual_seed(7)


def _cases(net: nn.Module):
    base = torch.zeros(3, 3, 8, 8)
    base[1] += 0.5
    return {
        "neuron_gradient": (fnattr.neuron_gradient, net.conv2,
                            dict(neuron_selector=(1, 2, 2))),
        "neuron_gradient_many": (fnattr.neuron_gradient, net.conv2,
                                 dict(neuron_selector=[(1, 2, 2), (0, 0, 1)])),
        "internal_influence": (fnattr.internal_influence, net.conv2, dict(target=3, n_steps=6)),
        "layer_conductance": (fnattr.layer_conductance, net.conv2, dict(target=1, n_steps=6)),
        "integrated_gradients": (fnattr.integrated_gradients, None, dict(target=2, n_steps=6)),
        "neuron_integrated_gradients": (fnattr.neuron_integrated_gradients, net.fc1,
                                        dict(neuron_selector=(3,), n_steps=6)),
        "gradient": (fnattr.gradient, None, dict(target=4)),
        "gradient_each": (fnattr.gradient, None, dict(target=fnattr.each([0, 3]))),
        "guided_backprop": (fnattr.guided_backprop, None, dict(target=2)),
        "deconvolution": (fnattr.deconvolution, None, dict(target=2)),
        "neuron_guided_backprop": (fnattr.neuron_guided_backprop, net.conv2,
                                   dict(neuron_selector=(2, 1, 1))),
        "neuron_deconvolution": (fnattr.neuron_deconvolution, net.conv2,
                                 dict(neuron_selector=(2, 1, 1))),
        "gradient_shap": (fnattr.gradient_shap, None,
                          dict(baselines=base, n_samples=3, stdevs=0.1, target=1)),
        "neuron_gradient_shap": (fnattr.neuron_gradient_shap, net.conv2,
                                 dict(neuron_selector=(0, 1, 1), baselines=base, n_samples=3)),
    }


CASES = list(_cases(ConvNet()))
SAMPLED = {"gradient_shap", "neuron_gradient_shap"}


def _call(method, net, layer, x, kwargs, sampled):
    kwargs = dict(kwargs)
    if sampled:
        kwargs["generator"] = _seed()
    head = (net, layer) if layer is not None else (net,)
    return method(*head, x, **kwargs)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(4, 3, 8, 8)
    return net, x, _cases(net)


def _eager(setup, name):
    net, x, cases = setup
    method, layer, kwargs = cases[name]
    if name in SAMPLED:  # loop of single-example calls, same seed each: what vmap "same" means
        outs = [_call(method, net, layer, x[i:i + 1], kwargs, True) for i in range(len(x))]
        return torch.cat(outs, dim=-4)
    return _call(method, net, layer, x, kwargs, False)


@pytest.mark.parametrize("name", CASES)
def test_vmap_over_examples_equals_eager(setup, name):
    net, x, cases = setup
    method, layer, kwargs = cases[name]
    sampled = name in SAMPLED

    def one(xi):
        out = _call(method, net, layer, xi[None], kwargs, sampled)
        return out.select(-4, 0)

    got = vmap(one, randomness="same" if sampled else "error")(x)
    want = _eager(setup, name)
    if want.dim() > 4:  # a leading K: vmap puts the example dim first
        got = got.movedim(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_functional_mode_equals_plain(setup, name):
    """The same call inside torch.func.grad (functional mode) and outside (plain)."""
    net, x, cases = setup
    method, layer, kwargs = cases[name]
    sampled = name in SAMPLED
    plain = _call(method, net, layer, x, kwargs, sampled)
    box = {}

    def inside(scale):
        out = _call(method, net, layer, x * scale, kwargs, sampled)
        box["out"] = out.detach()
        return out.sum()

    torch.func.grad(inside)(torch.tensor(1.0))
    torch.testing.assert_close(box["out"], plain, rtol=1e-5, atol=1e-6)


@pytest.mark.compile
@pytest.mark.parametrize("name", [n for n in CASES if not n.endswith(("_many", "_each"))])
def test_compiled_equals_eager(setup, name):
    net, x, cases = setup
    method, layer, kwargs = cases[name]
    sampled = name in SAMPLED
    torch._dynamo.reset()
    compiled = fnattr.compile(method, net, layer)
    kwargs = dict(kwargs)
    if sampled:
        kwargs["generator"] = _seed()
    got = compiled(x, **kwargs)
    want = _call(method, net, layer, x, cases[name][2], sampled)
    # inductor may reorder float32 reductions
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
