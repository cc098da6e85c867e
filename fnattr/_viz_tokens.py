"""Token attributions as coloured text (HTML or a figure) and as a token x token matrix.

Re-exported by :mod:`fnattr.viz` (``viz.tokens``, ``viz.token_matrix``).
Colours follow :mod:`fnattr.viz`: red is positive, blue negative, on a scale
symmetric around zero (``[-m, m]``, ``m`` the largest magnitude unless given).
"""

from __future__ import annotations

import html as _html
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from ._viz_common import _colormap, _new_figure, _shape, _to_numpy

__all__ = ["tokens", "token_matrix"]

_FONT_SIZE = 11
_LINE_INCHES = 0.3  # one line of tokens
_TITLE_INCHES = 0.35
_BAR_INCHES = 0.75  # the colour bar below them
_PAD, _GAP = 0.1, 0.1  # inches at the ends of a line, and between tokens


def _words(tokens: Any, name: str = "tokens") -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"`{name}` must be a sequence of strings, got {type(tokens).__name__}")
    return [str(t) for t in tokens]


def _scale(values: np.ndarray, vmax: float | None) -> Normalize:
    if vmax is None:
        vmax = float(np.abs(values).max()) if values.size else 0.0
    elif not vmax > 0:
        raise ValueError(f"`vmax` must be positive, got {vmax}")
    return Normalize(-(vmax or 1.0), vmax or 1.0)


def tokens(
    tokens: Sequence[str],
    scores: Any,
    *,
    html: bool = False,
    cmap: str | Colormap = "RdBu_r",
    vmax: float | None = None,
    title: str | None = None,
    width: float = 8.0,
    ax: Axes | None = None,
) -> Figure | str:
    """Draws tokens coloured by their scores, with a colour bar.

    The scores (one per token, e.g. from :func:`fnattr.token_scores`) are
    mapped on a diverging scale symmetric around zero, so white always means
    zero: red tokens pushed the explained output up, blue ones down. The text
    wraps at the figure's (or ``ax``'s) width. As HTML (``html=True``) each token
    is a ``<span>`` whose tooltip shows its score, followed by a colour bar;
    paste it into a notebook (``IPython.display.HTML``) or a page.

    Args:
        tokens: the token strings, e.g. ``tokenizer.convert_ids_to_tokens(ids)``.
        scores: a Tensor or array with one score per token.
        html: return an HTML string instead of a figure.
        cmap: a diverging colormap (name or object).
        vmax: the magnitude at the ends of the scale (default: the largest ``|score|``).
        title: optional title.
        width: the figure's width in inches (figure only, without ``ax``).
        ax: axes to draw into (figure only); by default a new figure.

    Returns:
        A :class:`matplotlib.figure.Figure`, or a ``str`` of HTML.

    Example:
        >>> import torch, fnattr.viz
        >>> words, scores = ["[CLS]", "a", "fine", "film"], torch.tensor([0.0, 0.1, 0.8, -0.3])
        >>> fig = fnattr.viz.tokens(words, scores)
        >>> html = fnattr.viz.tokens(words, scores, html=True)
        >>> html.count('<span title="')  # one span per token, its score as tooltip
        4
    """
    words = _words(tokens)
    values = _to_numpy(scores, "scores").reshape(-1)
    if values.shape[0] != len(words):
        raise ValueError(f"`scores` must have one value per token ({len(words)}), got "
                         f"{values.shape[0]}")
    colormap, norm = _colormap(cmap, "all"), _scale(values, vmax)
    colors = colormap(norm(values))
    if html:
        return _as_html(words, values, colors, colormap, norm, title)
    return _as_figure(words, colors, colormap, norm, title, width, ax)


def _text_color(rgba: np.ndarray) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "black" if luminance > 0.5 else "white"


def _hex(rgba: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgba[:3])


def _as_html(words, values, colors, colormap, norm, title) -> str:
    spans = "".join(
        f'<span title="{v:.4g}" style="background:{_hex(c)};color:{_text_color(c)};'
        f'padding:1px 3px;margin:1px;border-radius:3px;font-family:monospace">'
        f"{_html.escape(w)}</span>"
        for w, v, c in zip(words, values, colors))
    stops = ", ".join(_hex(colormap(x)) for x in np.linspace(0, 1, 9))
    bar = (f'<div style="display:flex;align-items:center;gap:6px;margin-top:6px;'
           f'font-family:monospace;font-size:small"><span>{norm.vmin:.3g}</span>'
           f'<div style="width:200px;height:10px;background:linear-gradient(to right, '
           f'{stops})"></div><span>{norm.vmax:.3g}</span></div>')
    head = f"<div><b>{_html.escape(title)}</b></div>" if title else ""
    return f'<div class="fnattr-tokens">{head}<div style="line-height:1.9">{spans}</div>{bar}</div>'


def _layout(words: list[str], widths: list[float], width: float) -> list[tuple[int, float]]:
    """(line, x in inches) of each token, wrapping before ``width`` inches."""
    places, line, x = [], 0, _PAD
    for w in widths:
        if x > _PAD and x + w > width - _PAD:
            line, x = line + 1, _PAD
        places.append((line, x))
        x += w + _GAP
    return places


def _as_figure(words, colors, colormap, norm, title, width, ax) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.font_manager import FontProperties

    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"`width` must be a positive number of inches, got {width!r}")
    figure = ax.figure if ax is not None else Figure(figsize=(width, 1.0))
    if ax is None:
        FigureCanvasAgg(figure)
    else:  # the axes' own width
        width = ax.get_position().width * figure.get_figwidth()
    renderer = figure.canvas.get_renderer()
    font = FontProperties(family="monospace", size=_FONT_SIZE)
    widths = [renderer.get_text_width_height_descent(w, font, ismath=False)[0] / figure.dpi
              for w in words]
    places = _layout(words, widths, width)
    lines = places[-1][0] + 1 if places else 1
    top = _TITLE_INCHES if title is not None and ax is None else 0.0
    if ax is None:  # sized to the text: a title, the lines, a colour bar below
        text = top + lines * _LINE_INCHES
        height = text + _BAR_INCHES
        figure.set_size_inches(width, height)
        ax = figure.add_axes((0.0, _BAR_INCHES / height, 1.0, text / height))
        bar = figure.add_axes((0.25, 0.3 / height, 0.5, 0.1 / height))
        figure.colorbar(ScalarMappable(norm, colormap), cax=bar, orientation="horizontal")
        if title is not None:
            ax.text(width / 2, top / 2, title, ha="center", va="center", parse_math=False)
    else:
        figure.colorbar(ScalarMappable(norm, colormap), ax=ax, location="bottom", shrink=0.6)
        if title is not None:
            ax.set_title(title)
    ax.set_xlim(0, width)
    ax.set_ylim(top + lines * _LINE_INCHES, 0)
    ax.axis("off")
    for w, (line, x), c in zip(words, places, colors):
        ax.text(x, top + (line + 0.5) * _LINE_INCHES, w, family="monospace",
                fontsize=_FONT_SIZE, va="center", ha="left", color=_text_color(c),
                parse_math=False,
                bbox=dict(boxstyle="round,pad=0.2", facecolor=c, edgecolor="none"))
    return figure


def token_matrix(
    row_tokens: Sequence[str],
    col_tokens: Sequence[str],
    matrix: Any,
    *,
    cmap: str | Colormap = "RdBu_r",
    vmax: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draws a token x token attribution matrix (rows explained, columns attributed to).

    E.g. the ``K x T`` matrix of a causal language model: row ``k`` holds the
    scores of the prompt tokens for the ``k``-th generated token. Same
    symmetric diverging scale as :func:`tokens`, with a colour bar.

    Args:
        row_tokens: labels of the rows (e.g. the generated tokens).
        col_tokens: labels of the columns (e.g. the prompt tokens).
        matrix: a ``(len(row_tokens), len(col_tokens))`` Tensor or array.
        cmap: a diverging colormap (name or object).
        vmax: the magnitude at the ends of the scale (default: the largest ``|value|``).
        title: optional title.
        ax: axes to draw into; by default a new figure.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Example:
        >>> import torch, fnattr.viz
        >>> prompt, generated = ["the", "cat", "sat"], ["on", "the", "mat"]
        >>> fig = fnattr.viz.token_matrix(generated, prompt, torch.randn(3, 3))
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['on', 'the', 'mat']
    """
    rows, cols = _words(row_tokens, "row_tokens"), _words(col_tokens, "col_tokens")
    values = _to_numpy(matrix, "matrix")
    if values.shape != (len(rows), len(cols)):
        raise ValueError(f"`matrix` must have shape ({len(rows)}, {len(cols)}) (rows x "
                         f"columns), got {_shape(values)}")
    if ax is None:
        ax = _new_figure(0.32 * len(cols) + 2.2, 0.3 * len(rows) + 1.6).add_subplot()
    image = ax.imshow(values, cmap=_colormap(cmap, "all"), norm=_scale(values, vmax),
                      aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, rotation=90, family="monospace")
    ax.set_yticks(range(len(rows)), rows, family="monospace")
    if title is not None:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax)
    return ax.figure
