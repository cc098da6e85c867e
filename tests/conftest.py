"""Shared test models: nn.ReLU models and their functional twins.

Twins share parameters with their module twin and compute the same function
with F.relu / torch.relu / Tensor.relu / in-place forms, which Captum's
module hooks do not reach.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def captum_quiet():
    """Silences Captum's own warnings (the oracle's, not ours) inside a ``with``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class MLP(nn.Module):
    def __init__(self, d_in=6, d_hidden=8, d_out=4, inplace=False):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.fc3 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


class MLPFunctional(nn.Module):
    """Same function as MLP (shares its parameters), ReLUs as F.relu / Tensor.relu_."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = mlp.fc1, mlp.fc2, mlp.fc3

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = self.fc2(h).relu_()
        return self.fc3(h)


class ConvNet(nn.Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(6 * 2 * 2, 8)
        self.relu3 = nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(8, 5)

    def forward(self, x):
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(h.flatten(1))))


class ConvNetFunctional(nn.Module):
    """Same function as ConvNet: torch.relu, Tensor.relu, torch.relu_."""

    def __init__(self, net: ConvNet):
        super().__init__()
        self.conv1, self.conv2, self.pool = net.conv1, net.conv2, net.pool
        self.fc1, self.fc2 = net.fc1, net.fc2

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = self.pool(self.conv2(h).relu())
        h = self.fc1(h.flatten(1))
        return self.fc2(torch.relu_(h))


class ReusedReLU(nn.Module):
    """One nn.ReLU module called three times."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 7)
        self.fc3 = nn.Linear(7, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class MultiInput(nn.Module):
    """Two inputs plus additional args: a tensor scale and a non-tensor flag."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(3, 6)
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x1, x2, scale=None, square=False):
        h = self.relu(self.a(x1) + self.b(x2))
        if scale is not None:
            h = h * scale
        if square:
            h = h * h
        return self.head(h)


def compat_setup(kind):
    """(model, inputs, additional_forward_args) of the compat and noise tunnel tests."""
    torch.manual_seed(0)
    if kind == "multi":
        scale = torch.rand(3, 6) + 0.5
        return MultiInput().eval(), (torch.randn(3, 4), torch.randn(3, 3)), (scale, True)
    return MLP().eval(), torch.randn(3, 6), None


def compat_ctor(name, model):
    """Constructor arguments of compat class ``name`` on the compat tests' model."""
    if name in ("NeuronIntegratedGradients", "LayerConductance"):
        return (model, model.relu if isinstance(model, MultiInput) else model.fc2)
    return (model,)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def mlp():
    return MLP().eval()


@pytest.fixture
def convnet():
    return ConvNet().eval()
