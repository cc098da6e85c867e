"""The benchmark models and their inputs.

* **S**: MLP 784-256-256-10, batch 32; layer ``fc2`` (256 units).
* **M**: 2 conv + 2 fc on 3x32x32, batch 16; layer ``conv2`` (32x16x16).
* **L**: ResNet-style, a stride-2 3x3 stem + 4 BasicBlocks (16@32x32,
  32@16x16, 64@8x8, 128@4x4) with BatchNorm (eval mode) on 3x64x64, batch 8;
  layer ``block3`` (64x8x8).

Every model is an ``nn.Sequential`` of named stages, so that the hand-written
floor can run the forward up to a layer (:func:`run_to`) without hooks, and
every ReLU is its own ``nn.ReLU`` module (not in place, never reused), so that
Captum's module hooks reach all of them and every candidate computes the same
function. Weights come from a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MODELS", "ModelSpec", "build", "run_to", "MLP", "ConvNet", "ResNetish"]


class MLP(nn.Sequential):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(256, 256)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(256, 10)


class ConvNet(nn.Sequential):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 8 * 8, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)


class BasicBlock(nn.Module):
    """ResNet's BasicBlock (two 3x3 convs + BN, identity or 1x1 projection shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu2(h + self.shortcut(x))


class ResNetish(nn.Sequential):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.block1 = BasicBlock(16, 16)
        self.block2 = BasicBlock(16, 32, stride=2)
        self.block3 = BasicBlock(32, 64, stride=2)
        self.block4 = BasicBlock(64, 128, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(128, 10)


def _randomize_bn(model: nn.Module, g: torch.Generator) -> None:
    """Non-trivial running statistics, so that eval-mode BN is not the identity."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))


@dataclass
class ModelSpec:
    """A model with its benchmark inputs and the arguments every method uses."""

    key: str  # "S", "M", "L"
    description: str
    model: nn.Module
    layer_name: str
    inputs: Tensor
    target: int
    neuron: tuple  # the neuron for the single-neuron methods
    shap_baselines: Tensor  # reference rows for (neuron) gradient SHAP
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> nn.Module:
        return self.model.get_submodule(self.layer_name)

    def neurons(self, k: int) -> list[tuple]:
        """``k`` distinct neurons of the layer, spread over its shape (deterministic)."""
        shape = self.extra["layer_shape"]
        total = 1
        for s in shape:
            total *= s
        stride = max(1, total // k)
        out = []
        for i in range(k):
            flat = (i * stride + i * 7) % total
            idx = []
            for s in reversed(shape):
                idx.append(flat % s)
                flat //= s
            out.append(tuple(reversed(idx)))
        assert len(set(out)) == k
        return out


MODELS = {
    "S": ("MLP 784-256-256-10, batch 32, layer fc2", MLP, (32, 784), "fc2", (256,), (5,)),
    "M": ("2-conv+2-fc on 3x32x32, batch 16, layer conv2", ConvNet, (16, 3, 32, 32),
          "conv2", (32, 16, 16), (3, 8, 8)),
    "L": ("ResNet-style: stride-2 stem + 4 BasicBlocks (16-32-64-128) + BN (eval) on "
          "3x64x64, batch 8, layer block3", ResNetish, (8, 3, 64, 64), "block3",
          (64, 8, 8), (2, 4, 4)),
}


def build(key: str, device: str | torch.device = "cpu", seed: int = 0) -> ModelSpec:
    """Builds model ``key`` ("S", "M" or "L") in eval mode with its inputs on ``device``."""
    description, cls, in_shape, layer_name, layer_shape, neuron = MODELS[key]
    torch.manual_seed(seed)
    model = cls()
    g = torch.Generator().manual_seed(seed + 1)
    _randomize_bn(model, g)
    model.eval().to(device)
    x = torch.randn(in_shape, generator=g).to(device)
    baselines = (0.1 * torch.randn((4, *in_shape[1:]), generator=g)).to(device)
    return ModelSpec(key, description, model, layer_name, x, target=3, neuron=neuron,
                     shap_baselines=baselines, extra={"layer_shape": layer_shape})


def run_to(model: nn.Sequential, layer: nn.Module, x: Tensor) -> Tensor:
    """Runs the stages of ``model`` up to and including ``layer``; returns its output."""
    for stage in model:
        x = stage(x)
        if stage is layer:
            return x
    raise ValueError("`layer` is not a stage of the model")
