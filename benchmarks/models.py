"""The benchmark models and their inputs.

* **S**: MLP 784-256-256-10, batch 32; layer ``fc2`` (256 units).
* **M**: 2 conv + 2 fc on 3x32x32, batch 16; layer ``conv2`` (32x16x16).
* **L**: ResNet-style, a stride-2 3x3 stem + 4 BasicBlocks (16@32x32,
  32@16x16, 64@8x8, 128@4x4) with BatchNorm (eval mode) on 3x64x64, batch 8;
  layer ``block3`` (64x8x8).
* **R**: resnet18-shaped (torchvision's layout at a quarter of the width): a
  7x7 stride-2 stem, BatchNorm, max-pool, 4 stages of 2 BasicBlocks
  (16-32-64-128) whose ReLU is ``inplace=True`` and **reused** twice per block,
  as in torchvision; 3x64x64, batch 8; layer ``layer3`` (64x4x4).
* **V**: a small ViT: 4x4 patches of 3x32x32 (64 tokens + a class token),
  width 64, 3 pre-LN encoder blocks (``nn.MultiheadAttention``, 4 heads, GELU
  MLP), no ReLU anywhere; batch 8; layer ``block2`` (65x64).
* **B**: a small BERT-style text encoder on float token embeddings (batch 8,
  32 tokens, width 64): learned positions + LayerNorm, 2 post-LN blocks with
  hand-written scaled dot-product attention and a GELU MLP, a tanh pooler;
  no ReLU; layer ``block1`` (32x64).

Every model is an ``nn.Sequential`` of named stages, so that the hand-written
floor can run the forward up to a layer (:func:`run_to`) without hooks. In S, M
and L every ReLU is its own ``nn.ReLU`` module (not in place, never reused);
R keeps torchvision's in-place, reused ReLU (Captum's hooks handle it: the
suite checks every candidate against Captum before timing). V and B have no
ReLU: the rule methods there cost what the rule machinery costs. Weights come
from a fixed seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MODELS", "ModelSpec", "build", "run_to", "MLP", "ConvNet", "ResNetish",
           "ResNet18ish", "ViT", "TextEncoder", "import_torchvision"]


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


class TVBasicBlock(nn.Module):
    """torchvision's BasicBlock: one ``nn.ReLU(inplace=True)`` used twice."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18ish(nn.Sequential):
    """resnet18's layout (7x7 stem, max-pool, 2+2+2+2 BasicBlocks) at 1/4 width."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = w[0]
        for i, c_out in enumerate(w):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(
                TVBasicBlock(c, c_out, stride), TVBasicBlock(c_out, c_out)))
            c = c_out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, 10)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int, n_patches: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos


class ViTBlock(nn.Module):
    """Pre-LN encoder block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GELU)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ClassHead(nn.Module):
    def __init__(self, dim: int, n_out: int = 10) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.ln(x[:, 0]))


class ViT(nn.Sequential):
    def __init__(self, size: int = 32, patch: int = 4, dim: int = 64, depth: int = 3,
                 heads: int = 4) -> None:
        super().__init__()
        self.embed = PatchEmbed(patch, dim, (size // patch) ** 2)
        for i in range(depth):
            self.add_module(f"block{i + 1}", ViTBlock(dim, heads, 2 * dim))
        self.head = ClassHead(dim)


class TextEmbed(nn.Module):
    """BERT's embedding tail on given token embeddings: + positions, LayerNorm."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(0.02 * torch.randn(1, length, dim))
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x + self.pos)


class BertBlock(nn.Module):
    """Post-LN encoder block with hand-written multi-head attention (BERT's layout)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, hidden)
        self.ff2 = nn.Linear(hidden, dim)
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        a = (w @ v).transpose(1, 2).reshape(n, t, d)
        x = self.ln1(x + self.out(a))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class Pooler(nn.Module):
    def __init__(self, dim: int, n_out: int = 10) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.dense(x[:, 0])))


class TextEncoder(nn.Sequential):
    def __init__(self, length: int = 32, dim: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = TextEmbed(length, dim)
        for i in range(depth):
            self.add_module(f"block{i + 1}", BertBlock(dim, heads, 2 * dim))
        self.pooler = Pooler(dim)


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
    "R": ("resnet18-shaped: 7x7 stem + max-pool + 2x4 BasicBlocks (16-32-64-128, in-place "
          "reused ReLU) + BN (eval) on 3x64x64, batch 8, layer layer3", ResNet18ish,
          (8, 3, 64, 64), "layer3", (64, 4, 4), (5, 1, 2)),
    "V": ("ViT: 4x4 patches of 3x32x32 (65 tokens), width 64, 3 pre-LN blocks "
          "(nn.MultiheadAttention, GELU), no ReLU, batch 8, layer block2", ViT,
          (8, 3, 32, 32), "block2", (65, 64), (0, 7)),
    "B": ("BERT-style: 32 float token embeddings of width 64, 2 post-LN blocks "
          "(hand-written attention, GELU), tanh pooler, no ReLU, batch 8, layer block1",
          TextEncoder, (8, 32, 64), "block1", (32, 64), (0, 7)),
}


def build(key: str, device: str | torch.device = "cpu", seed: int = 0) -> ModelSpec:
    """Builds model ``key`` (a key of :data:`MODELS`) in eval mode with its inputs on ``device``."""
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


def import_torchvision() -> Any:
    """``import torchvision`` for its model definitions, next to the CPU torch wheel.

    The public torchvision wheel is built against CUDA torch: its C++ ops
    (``torchvision::nms``, ``roi_align``, ...) do not load, and its import then
    fails registering fake kernels for them. The models are plain Python and
    need none of those ops, so the registration of ``torchvision::`` fake kernels
    is skipped during the import (the benchmarks only; torchvision is never a
    dependency of fnattr or of its tests).
    """
    import torch.library as library

    register_fake = library.register_fake

    def skip_torchvision(op: Any, *args: Any, **kwargs: Any) -> Any:
        if str(op).startswith("torchvision::"):
            return lambda fn: fn
        return register_fake(op, *args, **kwargs)

    library.register_fake = skip_torchvision
    try:
        import torchvision
    finally:
        library.register_fake = register_fake
    return torchvision
