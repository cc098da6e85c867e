"""Embedded default model and examples: a small CNN on 8x8 handwritten digits.

The weights and a few held-out test images ship with the package (in
``digits.pt``, written by ``scripts/train_embedded.py``), so that the demo and
the tutorials run offline without downloading anything. The data are the
handwritten digits bundled with scikit-learn (``sklearn.datasets.load_digits``:
8x8 grayscale, 10 classes); scikit-learn is only needed to retrain, not to load.

Inputs to :class:`DigitsNet` are pixel values divided by 16, i.e. in ``[0, 1]``;
:func:`load_digits_examples` already returns them in that range.
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn

__all__ = ["DigitsNet", "load_digits_model", "load_digits_examples"]

_ARTIFACT = "digits.pt"


class DigitsNet(nn.Module):
    """Small CNN classifier for 8x8 grayscale digits.

    ``features`` is conv(1->8) - ReLU - conv(8->16) - ReLU - maxpool(2) and
    ``classifier`` is flatten - linear(256->32) - ReLU - linear(32->10), so
    layers have dotted names such as ``features.2`` (the second convolution).
    The ReLUs are ``nn.ReLU`` modules (not in place).

    Args:
        num_classes: Number of output logits.

    Example:
        >>> import torch, fnattr.data
        >>> net = fnattr.data.DigitsNet()  # untrained; load_digits_model() is trained
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``[N, 1, 8, 8]`` with values in ``[0, 1]`` to logits ``[N, 10]``."""
        return self.classifier(self.features(x))


def _load_artifact() -> dict:
    with resources.as_file(resources.files(__name__) / _ARTIFACT) as path:
        return torch.load(path, map_location="cpu", weights_only=True)


def load_digits_model() -> DigitsNet:
    """Returns the pretrained :class:`DigitsNet`, in eval mode, on the CPU.

    Each call builds a fresh module, so callers may modify or move it freely.

    Returns:
        A :class:`DigitsNet` mapping ``[N, 1, 8, 8]`` images in ``[0, 1]`` to
        logits ``[N, 10]``.

    Example:
        >>> import fnattr.data
        >>> model = fnattr.data.load_digits_model()
        >>> images, labels = fnattr.data.load_digits_examples()
        >>> model(images).argmax(dim=1).shape
        torch.Size([50])
    """
    model = DigitsNet()
    model.load_state_dict(_load_artifact()["state_dict"])
    return model.eval()


def load_digits_examples() -> tuple[torch.Tensor, torch.Tensor]:
    """Returns held-out test digits that the embedded model never saw in training.

    Returns:
        ``(images, labels)``: ``images`` is float32 of shape ``[N, 1, 8, 8]``
        with values in ``[0, 1]`` (pixel values / 16), ``labels`` is int64 of
        shape ``[N]``. The shipped artifact has 5 digits per class, interleaved:
        ``N == 50`` and ``labels[i] == i % 10``.

    Example:
        >>> import fnattr.data
        >>> images, labels = fnattr.data.load_digits_examples()
        >>> images.shape, labels[:12].tolist()
        (torch.Size([50, 1, 8, 8]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    """
    artifact = _load_artifact()
    return artifact["images"], artifact["labels"]
