"""Plots of attributions: image heatmaps, grids of heatmaps, bar charts.

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, not
with ``pyplot``: nothing here switches the global backend, registers figures
with pyplot or needs a display. Show a figure in a notebook by making it the
cell's value, write it with :func:`save`, or pass ``ax=`` to draw into an
existing figure.

Colors follow one convention: red is positive, blue is negative, and the color
range is symmetric about zero. A heatmap is scaled by its largest magnitude (or
``vmax``); a :func:`grid` shares one scale and one colorbar per row (one method
on several examples), or scales each panel with ``scale="panel"``. The image
under a heatmap is drawn as an outline (``image_mode="outline"``), in a panel
beside it (``"side"``) or blended under it (``"overlay"``).

Example:
    >>> import torch
    >>> from fnattr import viz
    >>> attribution = torch.randn(1, 8, 8)
    >>> fig = viz.heatmap(attribution, torch.rand(1, 8, 8), sign="positive")
    >>> viz.save(fig, "attribution.png")
    PosixPath('attribution.png')
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._viz_common import _check_titles, _new_figure, _shape, _to_numpy
from ._viz_heatmap import grid, heatmap
from ._viz_metrics import deletion_curves, sanity_check
from ._viz_tokens import token_matrix, tokens

__all__ = ["heatmap", "grid", "bar", "save", "deletion_curves", "sanity_check", "tokens",
           "token_matrix"]


def bar(
    attribution: Any,
    feature_names: Sequence[str] | None = None,
    *,
    top_k: int | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draws a 1-D (tabular) attribution as horizontal bars, red positive, blue negative.

    Args:
        attribution: Tensor or array of shape ``[F]``, one value per feature.
        feature_names: Optional ``F`` names; by default ``"feature 0"``, ...
        top_k: If given, only the ``top_k`` features with the largest
            magnitude are drawn, largest first. By default all features are
            drawn in order, the first at the top.
        title: Optional axes title.
        ax: Axes to draw into. By default a new figure is created.

    Returns:
        The figure holding the plot (``ax``'s figure when ``ax`` is given).

    Example:
        >>> import torch, fnattr.viz
        >>> attr = torch.tensor([0.5, -0.2, 0.1])  # e.g. one row of a tabular attribution
        >>> fig = fnattr.viz.bar(attr, ["age", "income", "height"], top_k=2)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]  # largest first
        ['age', 'income']
    """
    values = _to_numpy(attribution, "attribution")
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"attribution must have shape [F] with F >= 1, got {_shape(values)}")
    if feature_names is None:
        feature_names = [f"feature {i}" for i in range(values.size)]
    _check_titles(feature_names, values.size, "feature_names")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise TypeError(f"top_k must be an int, got {type(top_k).__name__}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")

    order = np.arange(values.size)
    if top_k is not None:
        order = np.argsort(-np.abs(values), kind="stable")[:top_k]
    diverging = colormaps["RdBu_r"]
    colors = [diverging(0.85) if values[i] >= 0 else diverging(0.15) for i in order]

    if ax is None:
        ax = _new_figure(5.0, 1.0 + 0.3 * order.size).add_subplot()
    positions = np.arange(order.size)
    ax.barh(positions, values[order], color=colors)
    ax.set_yticks(positions, [str(feature_names[i]) for i in order])
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("attribution")
    if title is not None:
        ax.set_title(title)
    return ax.figure


def save(fig: Figure, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Writes ``fig`` to ``path`` atomically; the format follows the file suffix.

    The figure is first written to a hidden temporary file in the same
    directory, which then replaces ``path`` (:func:`os.replace`), so readers
    never see a partial file and a failed write leaves an existing ``path``
    untouched.

    Args:
        fig: The figure, e.g. from :func:`heatmap`.
        path: Destination; its suffix (``.png``, ``.pdf``, ``.svg``, ...)
            picks the format, PNG when there is none. The directory must exist.
        **savefig_kwargs: Passed to :meth:`matplotlib.figure.Figure.savefig`
            (``dpi``, ``bbox_inches``, ...).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import torch, fnattr.viz
        >>> fnattr.viz.save(fnattr.viz.heatmap(torch.randn(8, 8)), "saliency.png")
        PosixPath('saliency.png')
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ValueError(f"path has unsupported image format {fmt!r}")
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            fig.savefig(file, format=fmt, **savefig_kwargs)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path

# Shared argument texts and resolved annotations in the docstrings (fnattr._docs).
from ._docs import render_public as _render_public  # noqa: E402

_render_public(globals(), __all__)
del _render_public
