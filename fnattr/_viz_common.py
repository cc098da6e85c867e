"""What the plots of :mod:`fnattr.viz` share: array checks, colormaps, new figures.

Figures are built on an Agg canvas without ``pyplot`` (see :mod:`fnattr.viz`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

# sign -> (default colormap, how to transform the attribution, value range).
# The range is given in units of the transformed data's largest magnitude.
_SIGNS = {
    "all": ("RdBu_r", lambda a: a, (-1.0, 1.0)),
    "positive": ("Reds", lambda a: np.maximum(a, 0.0), (0.0, 1.0)),
    "negative": ("Blues_r", lambda a: np.minimum(a, 0.0), (-1.0, 0.0)),
    "absolute": ("Purples", np.abs, (0.0, 1.0)),
}


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """Converts a tensor or array-like to a finite float64 array, or raises naming ``name``."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real-valued, got dtype {value.dtype}")
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a Tensor or array, got {type(value).__name__}") from error
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric Tensor or array, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _shape(array: np.ndarray) -> str:
    return "[" + ", ".join(map(str, array.shape)) + "]"


def _colormap(cmap: str | Colormap | None, sign: str) -> Colormap:
    if cmap is None:
        cmap = _SIGNS[sign][0]
    if isinstance(cmap, Colormap):
        return cmap
    if not isinstance(cmap, str):
        raise TypeError(f"cmap must be a colormap name or Colormap, got {type(cmap).__name__}")
    try:
        return colormaps[cmap]
    except KeyError:
        raise ValueError(f"cmap {cmap!r} is not a known matplotlib colormap") from None


def _check_sign(sign: Any) -> str:
    if sign not in _SIGNS:
        raise ValueError(f"sign must be one of {', '.join(map(repr, _SIGNS))}; got {sign!r}")
    return sign


def _check_titles(titles: Sequence[str] | None, count: int, name: str) -> None:
    if titles is None:
        return
    if isinstance(titles, str) or not isinstance(titles, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(titles).__name__}")
    if len(titles) != count:
        raise ValueError(f"{name} has {len(titles)} entries, expected {count}")


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _hide_frame(ax: Axes) -> None:
    """Removes ticks and spines but keeps the axis labels (used for row titles)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
