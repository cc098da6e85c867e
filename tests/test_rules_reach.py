"""The ReLU rules reach torch.export programs; TorchScript is refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch

import fnattr

from .conftest import ConvNet


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(3, 3, 8, 8)
    ep = torch.export.export(net, (x,))
    return net, x, ep


@pytest.mark.parametrize("method", [fnattr.guided_backprop, fnattr.deconvolution])
@pytest.mark.parametrize("as_module", ["module", "unflatten"])
def test_rules_reach_aten_relu_in_exported_programs(exported, method, as_module):
    net, x, ep = exported
    with warnings.catch_warnings():  # torch's own deprecations inside unflatten
        warnings.simplefilter("ignore")
        program = ep.module() if as_module == "module" else torch.export.unflatten(ep)
    got = method(program, x, target=2)
    torch.testing.assert_close(got, method(net, x, target=2), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, fnattr.gradient(net, x, target=2)), "the rule must apply"


def test_torchscript_is_refused_by_name():
    net = ConvNet().eval()
    with warnings.catch_warnings():  # torch.jit.script's own deprecation warning
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(net)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fnattr.gradient(scripted, x, target=1),
                               fnattr.gradient(net, x, target=1))
    with pytest.raises(TypeError, match="forward_func"):
        fnattr.guided_backprop(scripted, x, target=1)
    with pytest.raises(TypeError, match="layer"):
        fnattr.internal_influence(scripted, "conv2", x, target=1)
    with pytest.raises(TypeError, match="layer"):
        fnattr.neuron_gradient(net, scripted.conv2, x, (0, 1, 1))
