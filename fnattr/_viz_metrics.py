"""Plots of evaluation metrics: the sanity check and deletion/insertion curves.

Re-exported from :mod:`fnattr.viz`; like it, figures are built on an Agg canvas
without ``pyplot``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._viz_common import _new_figure

__all__ = ["sanity_check", "deletion_curves"]


def _axes(ax: Axes | None, width: float, height: float) -> Axes:
    if ax is None:
        return _new_figure(width, height).add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(f"`ax` must be a matplotlib Axes, got {type(ax).__name__}")
    return ax


def _rows(value: Any, name: str) -> np.ndarray:
    """A tensor/array of per-example values as float64 ``[N, ...]``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0 or array.size == 0:
        raise ValueError(f"`{name}` must hold one value per example, got shape {array.shape}")
    return array


def _check_mapping(value: Any, name: str) -> None:
    if not isinstance(value, Mapping) or not value:
        raise TypeError(f"`{name}` must be a non-empty mapping of method name -> results")


def sanity_check(results: Mapping[str, Mapping[str, Any]], *, title: str | None = None,
                 ylabel: str = "similarity to the trained model's map",
                 xlabel: str = "randomized up to layer (cascading, from the output)",
                 ax: Axes | None = None) -> Figure:
    """Similarity vs randomized layer, one line per method (Adebayo et al., Fig. 2).

    Args:
        results: ``{method: fnattr.metrics.model_randomization(...)}``, every
            inner mapping ``{layer: Tensor[N]}`` with the same layers in the
            same order. The line is the mean over examples, the band +- one
            standard deviation; the first point, "original", is 1.
        title: optional axes title.
        ylabel: the y axis label (name the similarity measure).
        xlabel: the x axis label (say so for ``order="independent"``).
        ax: axes to draw into; by default a new figure.

    Returns:
        The figure.

    Example:
        {digits}
        >>> import fnattr.viz
        >>> g = torch.Generator().manual_seed(0)
        >>> sims = fnattr.metrics.model_randomization(fnattr.gradient, model, x,
        ...                                           target=labels, generator=g)
        >>> fig = fnattr.viz.sanity_check({"gradient": sims})
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()][:2]
        ['original', 'classifier.3']
    """
    _check_mapping(results, "results")
    layers = list(next(iter(results.values())))
    ax = _axes(ax, 1.5 + 0.8 * len(layers), 3.5)
    positions = np.arange(len(layers) + 1)
    for method, per_layer in results.items():
        _check_mapping(per_layer, f"results[{method!r}]")
        if list(per_layer) != layers:
            raise ValueError(f"`results[{method!r}]` has layers {list(per_layer)}, expected "
                             f"{layers}")
        values = [_rows(v, f"results[{method!r}][{k!r}]") for k, v in per_layer.items()]
        mean = np.array([1.0] + [v.mean() for v in values])
        std = np.array([0.0] + [v.std() for v in values])
        (line,) = ax.plot(positions, mean, marker="o", label=method)
        ax.fill_between(positions, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xticks(positions, ["original", *layers], rotation=45, ha="right")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-1.05, 1.05)
    ax.legend()
    if title is not None:
        ax.set_title(title)
    return ax.figure


def deletion_curves(curves: Mapping[str, tuple[Any, Any]], *, title: str | None = None,
                    xlabel: str = "fraction of features deleted",
                    ax: Axes | None = None) -> Figure:
    """Mean score vs fraction of features switched, one line per method.

    Args:
        curves: ``{method: fnattr.metrics.pixel_flipping(...)}``, i.e.
            ``(fractions[S+1], scores[N, S+1])``; the legend gives the mean AUC.
        title: optional axes title.
        xlabel: the x axis label (say "inserted" for insertion curves).
        ax: axes to draw into; by default a new figure.

    Returns:
        The figure.

    Example:
        {digits}
        >>> import fnattr.viz
        >>> attr = fnattr.gradient(model, x, target=labels)
        >>> curve = fnattr.metrics.pixel_flipping(model, x, attr, labels, steps=8)
        >>> fig = fnattr.viz.deletion_curves({"gradient": curve})
        >>> fig.axes[0].get_legend().get_texts()[0].get_text()
        'gradient (AUC ...)'
    """
    _check_mapping(curves, "curves")
    ax = _axes(ax, 5.0, 3.5)
    for method, pair in curves.items():
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"`curves[{method!r}]` must be a pair (fractions, scores)")
        fractions = _rows(pair[0], f"curves[{method!r}] fractions")
        scores = _rows(pair[1], f"curves[{method!r}] scores").reshape(-1, fractions.size)
        mean = scores.mean(0)
        area = np.trapezoid(mean, fractions)
        ax.plot(fractions, mean, label=f"{method} (AUC {area:.3g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (mean over examples)")
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax.figure
