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
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

__all__ = ["heatmap", "grid", "bar", "save"]

# sign -> (default colormap, how to transform the attribution, value range).
# The range is given in units of the transformed data's largest magnitude.
_SIGNS = {
    "all": ("RdBu_r", lambda a: a, (-1.0, 1.0)),
    "positive": ("Reds", lambda a: np.maximum(a, 0.0), (0.0, 1.0)),
    "negative": ("Blues_r", lambda a: np.minimum(a, 0.0), (-1.0, 0.0)),
    "absolute": ("Purples", np.abs, (0.0, 1.0)),
}
_HEATMAP_INCHES = 3.0
_CELL_INCHES = 1.8
_IMAGE_MODES = ("outline", "side", "overlay")


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


def _attribution_map(attribution: Any) -> np.ndarray:
    """Returns the ``[H, W]`` map of a ``[C, H, W]`` or ``[H, W]`` attribution."""
    array = _to_numpy(attribution, "attribution")
    if array.ndim not in (2, 3) or 0 in array.shape:
        hint = {1: "; use bar() for 1-D attributions", 4: "; pass one example, e.g. x[0]"}
        raise ValueError(
            "attribution must have shape [C, H, W] or [H, W], "
            f"got {_shape(array)}{hint.get(array.ndim, '')}"
        )
    return array.sum(axis=0) if array.ndim == 3 else array


def _display_image(image: Any, size: tuple[int, int]) -> np.ndarray:
    """Returns ``image`` as ``[H, W]`` (grayscale) or ``[H, W, 3]`` (RGB) scaled to ``[0, 1]``."""
    array = _to_numpy(image, "image")
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    elif array.ndim != 2:
        raise ValueError(
            f"image must have shape [1, H, W], [3, H, W] or [H, W], got {_shape(array)}"
        )
    if array.shape[:2] != size:
        raise ValueError(
            f"image has spatial size {array.shape[:2]} but attribution has {size}; they must match"
        )
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


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


def heatmap(
    attribution: Any,
    image: Any = None,
    *,
    sign: str = "all",
    alpha: float = 0.5,
    cmap: str | Colormap | None = None,
    colorbar: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
    image_mode: str = "outline",
    vmax: float | None = None,
    neuron: Any = None,
) -> Figure:
    """Draws an image attribution as a heatmap, optionally with the image.

    Channels are summed into one ``[H, W]`` map (the usual reduction for
    per-pixel relevance). With ``sign="all"`` the map uses a diverging colormap
    centered at zero (red positive, blue negative); the other signs keep only
    one part of the map and use a sequential colormap that is white at zero.
    The color range is symmetric, ``[-m, m]``, ``[0, m]`` or ``[-m, 0]``, where
    ``m`` is ``vmax`` or the largest magnitude shown, so zero always has the
    same color. The image stays readable: by default its outline (contours of
    its brightness) is drawn over the opaque heatmap.

    Args:
        attribution: Tensor or array of shape ``[C, H, W]`` or ``[H, W]``.
        image: Optional Tensor or array of shape ``[1, H, W]``, ``[3, H, W]``
            or ``[H, W]``, shown as ``image_mode`` says. Its values are
            min-max scaled for display.
        sign: Which part to show: ``"all"``, ``"positive"``, ``"negative"``
            (the negative part, darkest where most negative) or ``"absolute"``
            (the magnitude).
        alpha: Opacity of the heatmap over ``image`` with
            ``image_mode="overlay"``, in ``[0, 1]`` (otherwise the heatmap is opaque).
        cmap: Colormap name or object overriding the default for ``sign``.
        colorbar: Whether to add a colorbar.
        title: Optional axes title.
        ax: Axes to draw into. By default a new figure is created.
        image_mode: ``"outline"`` (the image's contours over the heatmap),
            ``"side"`` (the image in its own panel on the left; needs a new
            figure, not ``ax``) or ``"overlay"`` (blended under the heatmap).
        vmax: The magnitude at the end of the color range (a scale shared
            with other plots); by default the largest magnitude shown.
        neuron: The explained neuron (its selector), named in the title.

    Returns:
        The figure holding the plot (``ax``'s figure when ``ax`` is given).

    Example:
        {digits}
        >>> import fnattr.viz
        >>> attr = fnattr.integrated_gradients(model, x, target=labels)  # [50, 1, 8, 8]
        >>> fig = fnattr.viz.heatmap(attr[0], x[0], title=f"digit {int(labels[0])}")
        >>> len(fig.axes)  # the heatmap and its colorbar
        2
    """
    _check_sign(sign)
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    if image_mode not in _IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {_IMAGE_MODES}, got {image_mode!r}")
    if image_mode == "side" and ax is not None and image is not None:
        raise ValueError("image_mode='side' draws its own two panels; pass no ax")
    colormap = _colormap(cmap, sign)
    values = _attribution_map(attribution)
    background = None if image is None else _display_image(image, values.shape)

    _, transform, (low, high) = _SIGNS[sign]
    shown = transform(values)
    scale = _check_vmax(vmax) if vmax is not None else (np.abs(shown).max() or 1.0)

    if ax is None:
        side = image_mode == "side" and background is not None
        width = _HEATMAP_INCHES * ((2 if side else 1) + (0.25 if colorbar else 0.0))
        panels = _new_figure(width, _HEATMAP_INCHES).subplots(1, 1 + side, squeeze=False)[0]
        ax = panels[-1]
        if side:
            _image_panel(panels[0], background)
    overlay = background is not None and image_mode == "overlay"
    if overlay:
        ax.imshow(background, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    mappable = ax.imshow(shown, cmap=colormap, norm=Normalize(low * scale, high * scale),
                         alpha=alpha if overlay else 1.0, interpolation="nearest")
    if background is not None and image_mode == "outline":
        _outline(ax, background)
    _hide_frame(ax)
    title = _with_neuron(title, neuron)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax)
    return ax.figure


def _check_sign(sign: Any) -> str:
    if sign not in _SIGNS:
        raise ValueError(f"sign must be one of {', '.join(map(repr, _SIGNS))}; got {sign!r}")
    return sign


def _check_vmax(vmax: Any) -> float:
    if isinstance(vmax, bool) or not isinstance(vmax, Real):
        raise TypeError(f"vmax must be a positive number, got {type(vmax).__name__}")
    if not 0.0 < vmax < float("inf"):
        raise ValueError(f"vmax must be a positive finite number, got {vmax}")
    return float(vmax)


def _with_neuron(title: str | None, neuron: Any) -> str | None:
    """``title`` with the explained neuron named on its own line."""
    if neuron is None:
        return title
    label = f"neuron {tuple(neuron) if isinstance(neuron, list) else neuron}"
    return label if not title else f"{title}\n{label}"


def _image_panel(ax: Axes, background: np.ndarray) -> None:
    ax.imshow(background, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    _hide_frame(ax)


def _outline(ax: Axes, background: np.ndarray) -> None:
    """The contour of the image's brightness at half its range, over the heatmap."""
    gray = background.mean(axis=-1) if background.ndim == 3 else background
    low, high = gray.min(), gray.max()
    if high > low and min(gray.shape) >= 2:
        ax.contour(gray, levels=[(low + high) / 2], colors="black", linewidths=0.9)


def _as_rows(attributions: Any) -> tuple[list[Any], list[str] | None]:
    """Splits ``grid``'s ``attributions`` into rows and, for a mapping, their titles."""
    if isinstance(attributions, Mapping):
        return list(attributions.values()), [str(key) for key in attributions]
    if isinstance(attributions, (torch.Tensor, np.ndarray)):
        return [attributions], None
    if isinstance(attributions, Sequence) and not isinstance(attributions, str):
        return list(attributions), None
    raise TypeError(
        "attributions must be a Tensor/array batch, a sequence of batches or a mapping "
        f"from row title to batch; got {type(attributions).__name__}"
    )


def _check_titles(titles: Sequence[str] | None, count: int, name: str) -> None:
    if titles is None:
        return
    if isinstance(titles, str) or not isinstance(titles, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(titles).__name__}")
    if len(titles) != count:
        raise ValueError(f"{name} has {len(titles)} entries, expected {count}")


def grid(
    attributions: Any,
    images: Any = None,
    titles: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    *,
    scale: str = "row",
    max_examples: int | None = None,
    neuron: Any = None,
    **heatmap_kwargs: Any,
) -> Figure:
    """Draws a grid of heatmaps: one row per method, one column per example.

    Rows usually compare attribution methods on the same batch of examples,
    so ``images`` (and ``titles``) belong to the columns and ``row_titles`` to
    the rows. Each row shares one symmetric color scale and one colorbar (a
    method's examples are comparable), or each panel has its own
    (``scale="panel"``). With ``image_mode="side"`` the images form a first
    row of their own. A grid cut to ``max_examples`` columns says so.

    Args:
        attributions: One row per batch: a mapping from row title to a batch,
            a sequence of batches, or a single batch (one row). A batch is a
            Tensor or array of shape ``[N, C, H, W]`` or ``[N, H, W]``; all
            rows must have the same ``N``.
        images: Optional batch ``[N, C, H, W]`` or ``[N, H, W]`` shown with
            every row (``C`` is 1 or 3).
        titles: Optional ``N`` column titles (for example the labels).
        row_titles: Optional row titles; by default the mapping's keys.
        scale: ``"row"`` (one scale and colorbar per row) or ``"panel"``.
        max_examples: Show only the first ``max_examples`` columns (the
            figure then says "showing k of N examples").
        neuron: The explained neuron, named under each row title.
        **heatmap_kwargs: Passed to :func:`heatmap` (``sign``, ``alpha``,
            ``cmap``, ``colorbar``, ``image_mode``).

    Returns:
        A new figure with ``rows x N`` heatmap axes (plus colorbars).

    Example:
        {digits}
        >>> import fnattr.viz
        >>> rows = {"gradient": fnattr.gradient(model, x, target=labels),
        ...         "integrated gradients": fnattr.integrated_gradients(model, x, target=labels)}
        >>> fig = fnattr.viz.grid(rows, x, titles=[str(int(t)) for t in labels],
        ...                       max_examples=4)  # "showing 4 of 50 examples"
        >>> len(fig.axes)  # 2 rows x 4 examples, and one colorbar per row
        10
    """
    for reserved in ("ax", "title", "vmax", "neuron"):
        if reserved in heatmap_kwargs:
            raise TypeError(f"grid() sets {reserved!r} itself; use titles/row_titles instead")
    if scale not in ("row", "panel"):
        raise ValueError(f"scale must be 'row' or 'panel', got {scale!r}")
    colorbar = heatmap_kwargs.pop("colorbar", True)
    rows, keys = _as_rows(attributions)
    if not rows:
        raise ValueError("attributions must contain at least one row")
    lengths = {len(row) for row in rows}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"attributions rows must be non-empty with equal lengths, got {sorted(lengths)}"
        )
    (total,) = lengths
    if images is not None and len(images) != total:
        raise ValueError(f"images has {len(images)} examples but attributions has {total}")
    _check_titles(titles, total, "titles")
    _check_titles(row_titles, len(rows), "row_titles")
    columns = total if max_examples is None else min(total, _check_count(max_examples))
    row_titles = row_titles if row_titles is not None else keys
    side = images is not None and heatmap_kwargs.get("image_mode", "outline") == "side"

    figure = _new_figure(_CELL_INCHES * columns + 0.6 * colorbar,
                         _CELL_INCHES * (len(rows) + side))
    axes = figure.subplots(len(rows) + side, columns, squeeze=False)
    if side:
        for j in range(columns):
            _image_panel(axes[0, j], _display_image(images[j], _size(images[j])))
        axes[0, 0].set_ylabel("input")
    for i, row in enumerate(rows):
        cells = axes[i + side]
        vmax = None if scale == "panel" else _row_scale(row, columns, heatmap_kwargs)
        for j in range(columns):
            heatmap(row[j], None if images is None or side else images[j], ax=cells[j],
                    colorbar=colorbar and scale == "panel", vmax=vmax, **heatmap_kwargs)
        if colorbar and scale == "row":
            figure.colorbar(cells[-1].images[-1], ax=list(cells))
        label = _with_neuron(row_titles[i] if row_titles is not None else None, neuron)
        if label is not None:
            cells[0].set_ylabel(label)
    for j in range(columns if titles is not None else 0):
        axes[0, j].set_title(titles[j])
    if columns < total:
        figure.supxlabel(f"showing {columns} of {total} examples")
    return figure


def _check_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_examples must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_examples must be at least 1, got {value}")
    return value


def _size(image: Any) -> tuple[int, int]:
    return tuple(np.shape(image)[-2:])  # type: ignore[return-value]


def _row_scale(row: Any, columns: int, heatmap_kwargs: dict) -> float:
    """The largest magnitude a row shows (after ``sign``'s transform): its shared ``vmax``."""
    transform = _SIGNS[_check_sign(heatmap_kwargs.get("sign", "all"))][1]
    return max(np.abs(transform(_attribution_map(row[j]))).max() for j in range(columns)) or 1.0


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

from ._viz_metrics import deletion_curves, sanity_check  # noqa: E402,F401  (metric plots)

from ._viz_tokens import token_matrix, tokens  # noqa: E402  (token attributions)

__all__ += ["deletion_curves", "sanity_check", "tokens", "token_matrix"]

# Shared argument texts and resolved annotations in the docstrings (fnattr._docs).
from ._docs import render_public as _render_public  # noqa: E402

_render_public(globals(), __all__)
del _render_public
