"""The ReLU rules reach torch.export programs; TorchScript is refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch

import fnattr

from ._catalog_args import ENTRIES
from .conftest import ConvNet


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(3, 3, 8, 8)
    ep = torch.export.export(net, (x,))
    return net, x, ep


@pytest.mark.parametrize("method", [e.fn for e in ENTRIES if e.rule and e.site == "inputs"],
                         ids=lambda f: f.__name__)
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


# Every spelling of ReLU that reaches aten's relu / relu_ from Python (issue 12.11):
# an overload packet reaches the mode as the packet, not as its ``.default``.
SPELLINGS = {
    "aten.relu packet": lambda h: torch.ops.aten.relu(h),
    "aten.relu.default": lambda h: torch.ops.aten.relu.default(h),
    "aten.relu_ packet": lambda h: torch.ops.aten.relu_(h),
    "aten.relu_.default": lambda h: torch.ops.aten.relu_.default(h),
    "torch.relu": torch.relu,
    "torch.relu_": torch.relu_,
    "Tensor.relu": torch.Tensor.relu,
    "Tensor.relu_": torch.Tensor.relu_,
    "F.relu": torch.nn.functional.relu,
    "F.relu inplace": lambda h: torch.nn.functional.relu(h, inplace=True),
    "F.relu_": torch.nn.functional.relu_,
    "torch._C._VariableFunctions.relu": torch._C._VariableFunctions.relu,
    "nn.ReLU": torch.nn.ReLU(),
}


class _Spelled(torch.nn.Module):
    """Two linear layers with ReLUs written as ``relu``; the twin uses ``nn.ReLU``."""

    def __init__(self, relu):
        super().__init__()
        torch.manual_seed(3)
        self.fc1, self.fc2, self.fc3 = (torch.nn.Linear(6, 9), torch.nn.Linear(9, 9),
                                        torch.nn.Linear(9, 4))
        self.relu, self.r1, self.r2 = relu, torch.nn.ReLU(), torch.nn.ReLU()

    def forward(self, x):
        if self.relu is None:
            return self.fc3(self.r2(self.fc2(self.r1(self.fc1(x)))))
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


@pytest.mark.parametrize("cls_name", ["GuidedBackprop", "Deconvolution"])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_every_aten_relu_spelling_is_reached(spelling, cls_name):
    import captum.attr as C

    method = fnattr.guided_backprop if cls_name == "GuidedBackprop" else fnattr.deconvolution
    spelled, twin = _Spelled(SPELLINGS[spelling]).eval(), _Spelled(None).eval()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():  # Captum's own warnings
        warnings.simplefilter("ignore")
        ref = getattr(C, cls_name)(twin).attribute(x, target=1)
    got = method(spelled, x, target=1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, fnattr.gradient(spelled, x, target=1)), "the rule must apply"
