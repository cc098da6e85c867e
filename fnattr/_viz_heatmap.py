"""Image heatmaps: one attribution (:func:`heatmap`) or a grid of them (:func:`grid`).

Re-exported from :mod:`fnattr.viz`, whose docstring states the color conventions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from ._viz_common import (_SIGNS, _check_sign, _check_titles, _colormap, _hide_frame,
                          _new_figure, _shape, _to_numpy)

__all__ = ["heatmap", "grid"]

_HEATMAP_INCHES = 3.0
_CELL_INCHES = 1.8
_IMAGE_MODES = ("outline", "side", "overlay")


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
