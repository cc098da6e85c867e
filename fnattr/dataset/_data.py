"""What a dataset run reads: items as ``(x, y)``, folders of images, factories."""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["Items", "as_items", "collate", "from_folder", "load_dataset_spec"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class Items(Dataset):
    """A dataset whose items are ``(x, y)``, ``y`` an int or ``None`` (no labels)."""

    def __init__(self, data: Any, labels: Tensor | None = None) -> None:
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Tensor, int | None]:
        if self.labels is not None:
            return _x(self.data[i], i), int(self.labels[i])
        item = self.data[i]
        if isinstance(item, (tuple, list)):
            if not item:
                raise ValueError(f"`data` item {i} is empty")
            y = _label(item[1], i) if len(item) > 1 else None
            return _x(item[0], i), y
        return _x(item, i), None


def _x(x: Any, i: int) -> Tensor:
    if isinstance(x, (tuple, list)) and any(isinstance(t, Tensor) for t in x):
        raise TypeError(
            f"`data` item {i}: its x is a {type(x).__name__} of tensors; attribute_dataset "
            "takes one input tensor per example (wrap a model of several inputs so that it "
            "takes one, e.g. split a concatenated tensor inside its forward)")
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"`data` item {i}: its x must be a tensor (or array-like), got "
                        f"{type(x).__name__} ({e})") from None


def _label(y: Any, i: int) -> int:
    try:
        return int(y)
    except (TypeError, ValueError, RuntimeError):
        shape = f" of shape {tuple(y.shape)}" if isinstance(y, Tensor) else ""
        raise ValueError(f"`data` item {i}: its y must be one integer label, got "
                         f"{type(y).__name__}{shape}") from None


def as_items(data: Any) -> Items:
    """A map-style Dataset, a Tensor, or ``(X, Y)`` as :class:`Items`."""
    if isinstance(data, Tensor):
        return Items(data)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, Tensor) for d in data):
        xs, ys = data
        if ys.dim() != 1 or len(ys) != len(xs):
            raise ValueError(f"`data` (X, Y): Y must be 1-D with one label per row of X "
                             f"({len(xs)}), got shape {tuple(ys.shape)}")
        return Items(xs, ys)
    if isinstance(data, Dataset) or hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return Items(data)
    raise TypeError("`data` must be a map-style Dataset, a Tensor or a tuple (X, Y) of "
                    f"Tensors, got {type(data).__name__}")


def collate(items: list) -> tuple[Tensor, Tensor | None]:
    """Stacks ``(x, y)`` items; ``y`` is ``None`` when the items have no labels."""
    xs = torch.stack([x for x, _ in items])
    if any(y is None for _, y in items):
        return xs, None
    return xs, torch.tensor([y for _, y in items], dtype=torch.long)


class ImageFolder(Dataset):
    """Images under ``root/<class>/...`` (recursive, sorted), labelled by sub-folder."""

    def __init__(self, root: str, transform: Any = None) -> None:
        self.root, self.transform = root, transform
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not self.classes:
            raise ValueError(f"`path` {root!r} has no sub-folders (one per class)")
        self.samples = []
        for label, name in enumerate(self.classes):
            for folder, dirs, files in os.walk(os.path.join(root, name)):
                dirs.sort()
                self.samples += [(os.path.join(folder, f), label) for f in sorted(files)
                                 if f.lower().endswith(IMAGE_SUFFIXES)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image  # matplotlib's dependency; only needed to read images

        path, label = self.samples[i]
        with Image.open(path) as image:
            x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        x = x.permute(2, 0, 1).contiguous()
        return (self.transform(x) if self.transform is not None else x), label


def from_folder(path: str, transform: Any = None) -> ImageFolder:
    """A dataset of the images in a folder tree, labelled by their class sub-folder.

    As torchvision's ``ImageFolder``: classes are the sorted names of ``path``'s
    sub-folders (label = position), images are found recursively below each and
    sorted by path. Items are ``(x, label)`` with ``x`` a float32 ``(3, H, W)``
    tensor in ``[0, 1]``, passed through ``transform`` when given.

    Args:
        path: the root folder.
        transform: an optional function applied to each image tensor.

    Returns:
        A map-style Dataset with ``classes`` and ``samples`` (path, label) lists.

    Example:
        >>> import os, numpy as np, fnattr.dataset
        >>> from PIL import Image
        >>> for name in ("cat", "dog"):  # val/cat/1.png, val/dog/1.png
        ...     os.makedirs(f"val/{name}", exist_ok=True)
        ...     Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f"val/{name}/1.png")
        >>> ds = fnattr.dataset.from_folder("val")
        >>> ds.classes, len(ds)
        (['cat', 'dog'], 2)
        >>> x, y = ds[1]
        >>> x.shape, y
        (torch.Size([3, 8, 8]), 1)
    """
    if not os.path.isdir(path):
        raise ValueError(f"`path` {path!r} is not a folder")
    return ImageFolder(path, transform)


def load_dataset_spec(spec: str) -> Any:
    """The Dataset returned by ``factory()`` for a ``"package.module:factory"`` spec.

    Args:
        spec: ``"module:attribute"``; a callable attribute is called with no
            arguments, anything else is returned as it is.

    Returns:
        The dataset.

    Example:
        >>> import fnattr.dataset
        >>> spec = "fnattr.data:load_digits_examples"  # called: returns (images, labels)
        >>> images, labels = fnattr.dataset.load_dataset_spec(spec)
        >>> images.shape
        torch.Size([50, 1, 8, 8])
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"`spec` must read 'package.module:factory', got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"`spec` {spec!r} cannot be loaded: {e}") from None
    return obj() if callable(obj) and not isinstance(obj, Dataset) else obj
