"""The heatmap ``fnattr explain`` draws next to its attributions."""

from __future__ import annotations

import sys
from typing import Any

from .errors import CLIError, one_line

MAX_PANELS = 8


def shape_text(tensor: Any) -> str:
    return "[" + ", ".join(map(str, tensor.shape)) + "]"


def column_titles(targets: list, n: int) -> list[str]:
    """``#i`` plus the target of example ``i`` (``targets``: (target, rows) per batch)."""
    import torch

    labels: list[str] = []
    for target, rows in targets:
        if isinstance(target, torch.Tensor) and target.dim() == 1:
            labels += [f"t={int(v)}" for v in target]
        else:
            labels += [f"t={target}" if target is not None else ""] * rows
    labels += [""] * (n - len(labels))
    return [f"#{i} {label}".strip() for i, label in enumerate(labels[:n])]


def figure(attributions: Any, x: Any, title: str, layer_method: bool, titles: list[str],
           explicit: bool, neuron: tuple | None = None) -> Any:
    """A heatmap grid (image-like attributions) or bar chart (1-D features), or None
    (with a note on stderr) when nothing fits; with ``explicit`` (--png given) that
    is an error instead."""
    try:
        drawn = _draw(attributions, x, title, layer_method, titles, neuron)
    except (TypeError, ValueError) as error:
        reason = one_line(error)
    else:
        if drawn is not None:
            return drawn
        reason = f"attributions of shape {shape_text(attributions)}"
    if explicit:
        raise CLIError(f"cannot draw --png ({reason})")
    print(f"fnattr: note: no heatmap written ({reason})", file=sys.stderr)
    return None


def _draw(attributions: Any, x: Any, title: str, layer_method: bool, titles: list[str],
          neuron: tuple | None) -> Any:
    import fnattr
    from fnattr import viz

    show, images = attributions, x  # the grid shows MAX_PANELS and says how many of N
    shown = dict(titles=titles[: show.shape[0]], max_examples=MAX_PANELS, neuron=neuron)
    if show.dim() == 4:
        if layer_method and show.shape[-2:] != images.shape[-2:] and images.dim() == 4:
            show = fnattr.interpolate(show, tuple(images.shape[-2:]))
        under = images if images.dim() == 4 and images.shape[1] in (1, 3) \
            and images.shape[-2:] == show.shape[-2:] else None
        drawn = viz.grid([show], images=under, **shown)
        drawn.suptitle(title)
        return drawn
    if show.dim() == 3:
        drawn = viz.grid([show], **shown)
        drawn.suptitle(title)
        return drawn
    if show.dim() == 2:
        top_k = min(20, attributions.shape[1])
        if attributions.shape[0] == 1:
            return viz.bar(attributions[0], top_k=top_k, title=title)
        return viz.bar(attributions.mean(0), top_k=top_k,
                       title=f"{title}: mean over {attributions.shape[0]} examples")
    return None
