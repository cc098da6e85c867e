"""Tests for fnattr.viz: rendered pixels follow the attribution; files are written atomically."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fnattr import viz

SIZE = 16
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")


def quadrant_attribution(**values: float) -> torch.Tensor:
    """A ``[SIZE, SIZE]`` map that is constant in each named quadrant, zero elsewhere."""
    attribution = torch.zeros(SIZE, SIZE)
    half = SIZE // 2
    slices = {
        "top_left": (slice(0, half), slice(0, half)),
        "top_right": (slice(0, half), slice(half, None)),
        "bottom_left": (slice(half, None), slice(0, half)),
        "bottom_right": (slice(half, None), slice(half, None)),
    }
    for name, value in values.items():
        attribution[slices[name]] = value
    return attribution


def axes_quadrants(fig: Figure) -> dict[str, np.ndarray]:
    """Renders ``fig`` and returns the RGB pixels of each quadrant of its first axes."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    box = fig.axes[0].get_window_extent()
    # Display coordinates start at the bottom of the canvas, array rows at the top.
    top, bottom = rgb.shape[0] - box.y1, rgb.shape[0] - box.y0
    rows = np.linspace(top, bottom, 3).round().astype(int)
    columns = np.linspace(box.x0, box.x1, 3).round().astype(int)
    margin = 3  # pixels next to quadrant borders may be antialiased

    def crop(i, j):
        vertical = slice(rows[i] + margin, rows[i + 1] - margin)
        return rgb[vertical, columns[j] + margin : columns[j + 1] - margin]

    return {
        "top_left": crop(0, 0),
        "top_right": crop(0, 1),
        "bottom_left": crop(1, 0),
        "bottom_right": crop(1, 1),
    }


def fraction(pixels: np.ndarray, kind: str) -> float:
    """Fraction of ``pixels`` that are clearly red ("hot"), blue ("cold") or colored at all."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    masks = {
        "hot": (red - blue > 30) & (red - green > 30),
        "cold": (blue - red > 30) & (blue - green > 10),
        "colored": pixels.max(axis=-1) - pixels.min(axis=-1) > 40,
    }
    return masks[kind].mean()


def colorbar_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def heatmap_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def clim(ax) -> tuple[float, float]:
    """The color range of the heatmap drawn on ``ax`` (its last image)."""
    norm = ax.images[-1].norm
    return norm.vmin, norm.vmax


def test_hot_pixels_are_where_the_attribution_is():
    fig = viz.heatmap(quadrant_attribution(top_right=3.0), colorbar=False)
    hot = {name: fraction(pixels, "hot") for name, pixels in axes_quadrants(fig).items()}
    assert hot["top_right"] > 0.95
    assert all(hot[name] == 0.0 for name in QUADRANTS if name != "top_right")


def test_hot_pixels_survive_blending_over_an_image():
    image = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    fig = viz.heatmap(quadrant_attribution(bottom_left=1.0), image, alpha=0.6, colorbar=False,
                      image_mode="overlay")
    hot = {name: fraction(pixels, "hot") for name, pixels in axes_quadrants(fig).items()}
    assert hot["bottom_left"] > 0.95
    assert all(hot[name] == 0.0 for name in QUADRANTS if name != "bottom_left")


@pytest.mark.parametrize(
    ("sign", "expected"),
    [
        ("all", {"top_left": "hot", "bottom_right": "cold"}),
        ("positive", {"top_left": "hot"}),
        ("negative", {"bottom_right": "cold"}),
        ("absolute", {"top_left": "colored", "bottom_right": "colored"}),
    ],
)
def test_sign_selects_what_is_colored(sign, expected):
    attribution = quadrant_attribution(top_left=2.0, bottom_right=-2.0)
    quadrants = axes_quadrants(viz.heatmap(attribution, sign=sign, colorbar=False))
    for name in QUADRANTS:
        if name in expected:
            assert fraction(quadrants[name], expected[name]) > 0.95, name
        else:
            assert fraction(quadrants[name], "colored") == 0.0, name


def test_absolute_shows_equal_magnitudes_alike():
    attribution = quadrant_attribution(top_left=2.0, bottom_right=-2.0)
    quadrants = axes_quadrants(viz.heatmap(attribution, sign="absolute", colorbar=False))
    np.testing.assert_array_equal(
        np.median(quadrants["top_left"], axis=(0, 1)),
        np.median(quadrants["bottom_right"], axis=(0, 1)),
    )


def test_channels_are_summed():
    cancelling = torch.stack(
        [quadrant_attribution(top_left=1.0), quadrant_attribution(top_left=-1.0)]
    )
    quadrants = axes_quadrants(viz.heatmap(cancelling, colorbar=False))
    assert fraction(quadrants["top_left"], "colored") == 0.0

    reinforcing = torch.stack([quadrant_attribution(top_left=1.0)] * 3)
    quadrants = axes_quadrants(viz.heatmap(reinforcing, colorbar=False))
    assert fraction(quadrants["top_left"], "hot") > 0.95


def test_cmap_overrides_the_default():
    attribution = quadrant_attribution(top_left=1.0)
    fig = viz.heatmap(attribution, sign="positive", cmap="Greens", colorbar=False)
    pixels = axes_quadrants(fig)["top_left"]
    assert (pixels[..., 1] > pixels[..., 0] + 40).mean() > 0.95


def test_accepts_arrays_tensors_requiring_grad_and_rgb_images():
    attribution = torch.randn(3, SIZE, SIZE, requires_grad=True)
    assert isinstance(viz.heatmap(attribution, torch.rand(3, SIZE, SIZE)), Figure)
    assert isinstance(viz.heatmap(np.ones((SIZE, SIZE)), np.zeros((SIZE, SIZE))), Figure)


def test_draws_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert viz.heatmap(torch.randn(SIZE, SIZE), ax=ax, title="saliency") is fig
    assert ax.get_title() == "saliency"
    assert viz.bar(torch.randn(3), ax=ax) is fig


def test_grid_layout_and_titles():
    batch = torch.randn(4, 1, SIZE, SIZE)
    fig = viz.grid(
        {"gradient": batch, "gradient x input": -batch},
        images=torch.rand(4, 1, SIZE, SIZE),
        titles=["0", "1", "2", "3"],
    )
    assert len(heatmap_axes(fig)) == 8 and len(colorbar_axes(fig)) == 2  # one per row
    axes = heatmap_axes(fig)
    assert [ax.get_title() for ax in axes[:4]] == ["0", "1", "2", "3"]
    assert [ax.get_title() for ax in axes[4:]] == [""] * 4
    assert axes[0].get_ylabel() == "gradient"
    assert axes[4].get_ylabel() == "gradient x input"


def test_grid_accepts_a_single_batch_and_forwards_heatmap_options():
    batch = torch.randn(3, SIZE, SIZE)
    fig = viz.grid(batch, row_titles=["saliency"], sign="absolute", colorbar=False)
    assert len(fig.axes) == 3 and not colorbar_axes(fig)
    assert fig.axes[0].get_ylabel() == "saliency"
    assert fig.axes[0].images[-1].norm.vmin == 0.0  # sign="absolute" reached the cells


def test_bar_orders_and_colors_features():
    fig = viz.bar(torch.tensor([0.1, -0.5, 0.3, 0.0]), ["a", "b", "c", "d"], top_k=3)
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["b", "c", "a"]
    bars = ax.patches
    assert [bar.get_width() for bar in bars] == pytest.approx([-0.5, 0.3, 0.1])
    blue, red = bars[0].get_facecolor(), bars[1].get_facecolor()
    assert blue[2] > blue[0] and red[0] > red[2]


def test_bar_default_names_keep_feature_order():
    ax = viz.bar(np.array([1.0, 2.0])).axes[0]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["feature 0", "feature 1"]


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_save_writes_the_format_of_the_suffix(tmp_path, suffix):
    path = viz.save(viz.heatmap(torch.randn(SIZE, SIZE)), str(tmp_path / f"heatmap{suffix}"))
    assert path == tmp_path / f"heatmap{suffix}"
    magic = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}[suffix]
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_replaces_existing_files_and_keeps_them_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old")
    viz.save(viz.grid(torch.randn(2, SIZE, SIZE)), path)
    saved = path.read_bytes()
    assert saved.startswith(b"\x89PNG")

    fig = viz.heatmap(torch.randn(SIZE, SIZE))

    def fail_midway(file, **kwargs):
        file.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        viz.save(fig, path)
    assert path.read_bytes() == saved
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_does_not_touch_pyplot_or_the_backend():
    code = (
        "import sys, torch\n"
        "from fnattr import viz\n"
        "viz.heatmap(torch.randn(8, 8), torch.rand(8, 8)).canvas.draw()\n"
        "viz.grid(torch.randn(2, 8, 8)).canvas.draw()\n"
        "viz.bar(torch.randn(3)).canvas.draw()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


GOOD = torch.randn(SIZE, SIZE)
PAIR = torch.randn(2, SIZE, SIZE)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: viz.heatmap(GOOD, sign="both"), ValueError, "sign"),
        (lambda: viz.heatmap(GOOD, alpha=1.5), ValueError, "alpha"),
        (lambda: viz.heatmap(GOOD, alpha="0.5"), TypeError, "alpha"),
        (lambda: viz.heatmap(GOOD, cmap="no-such-map"), ValueError, "cmap"),
        (lambda: viz.heatmap(GOOD, cmap=3), TypeError, "cmap"),
        (lambda: viz.heatmap(GOOD, ax="axes"), TypeError, "ax"),
        (lambda: viz.heatmap(torch.randn(1, 1, SIZE, SIZE)), ValueError, "attribution"),
        (lambda: viz.heatmap(torch.randn(SIZE)), ValueError, "bar"),
        (lambda: viz.heatmap("attribution"), TypeError, "attribution"),
        (lambda: viz.heatmap(torch.ones(SIZE, SIZE, dtype=torch.cfloat)), TypeError, "attribution"),
        (lambda: viz.heatmap(torch.full((SIZE, SIZE), float("nan"))), ValueError, "attribution"),
        (lambda: viz.heatmap(GOOD, torch.rand(SIZE, SIZE + 1)), ValueError, "image"),
        (lambda: viz.heatmap(GOOD, torch.rand(2, SIZE, SIZE)), ValueError, "image"),
        (lambda: viz.grid([GOOD[None], GOOD[None].expand(2, -1, -1)]), ValueError, "attributions"),
        (lambda: viz.grid([]), ValueError, "attributions"),
        (lambda: viz.grid(42), TypeError, "attributions"),
        (lambda: viz.grid(PAIR, torch.rand(3, SIZE, SIZE)), ValueError, "images"),
        (lambda: viz.grid(PAIR, titles=["a"]), ValueError, "titles"),
        (lambda: viz.grid(PAIR, row_titles="a"), TypeError, "row_titles"),
        (lambda: viz.grid(PAIR, ax=None), TypeError, "ax"),
        (lambda: viz.bar(torch.randn(2, 3)), ValueError, "attribution"),
        (lambda: viz.bar(torch.randn(3), ["a", "b"]), ValueError, "feature_names"),
        (lambda: viz.bar(torch.randn(3), top_k=0), ValueError, "top_k"),
        (lambda: viz.bar(torch.randn(3), top_k=1.5), TypeError, "top_k"),
        (lambda: viz.save("figure", "out.png"), TypeError, "fig"),
        (lambda: viz.save(Figure(), "out.docx"), ValueError, "path"),
    ],
)
def test_bad_arguments_raise_errors_naming_them(call, error, name):
    with pytest.raises(error, match=name):
        call()


# ------------------------------------------------ scales, colorbars, images, neurons


def test_heatmap_has_a_colorbar_with_a_symmetric_range():
    fig = viz.heatmap(quadrant_attribution(top_left=2.0, bottom_right=-0.5))
    (bar,) = colorbar_axes(fig)
    assert clim(heatmap_axes(fig)[0]) == (-2.0, 2.0)
    assert bar.get_ylim() == pytest.approx((-2.0, 2.0))
    assert clim(viz.heatmap(GOOD, vmax=7.0, colorbar=False).axes[0]) == (-7.0, 7.0)


def test_grid_shares_one_symmetric_scale_per_row():
    weak, strong = torch.randn(3, SIZE, SIZE), 10 * torch.randn(3, SIZE, SIZE)
    strong[1, 0, 0] = 100.0
    fig = viz.grid({"weak": weak, "strong": strong})
    axes = heatmap_axes(fig)
    ranges = [clim(ax) for ax in axes]
    assert ranges[:3] == [ranges[0]] * 3 and ranges[3:] == [ranges[3]] * 3
    assert ranges[0] == (-weak.abs().max().item(), weak.abs().max().item())
    assert ranges[3] == (-100.0, 100.0)
    bars = colorbar_axes(fig)
    assert len(bars) == 2 and bars[1].get_ylim() == pytest.approx((-100.0, 100.0))


def test_grid_scale_per_panel():
    batch = torch.stack([quadrant_attribution(top_left=v) for v in (1.0, -3.0)])
    fig = viz.grid(batch, scale="panel")
    assert [clim(ax) for ax in heatmap_axes(fig)] == [(-1.0, 1.0), (-3.0, 3.0)]
    assert len(colorbar_axes(fig)) == 2


def test_truncated_grid_says_how_many_examples_it_shows():
    fig = viz.grid({"a": torch.randn(10, SIZE, SIZE)}, images=torch.rand(10, SIZE, SIZE),
                   titles=[str(i) for i in range(10)], max_examples=4)
    axes = heatmap_axes(fig)
    assert len(axes) == 4 and [ax.get_title() for ax in axes] == ["0", "1", "2", "3"]
    assert fig.get_supxlabel() == "showing 4 of 10 examples"
    assert viz.grid(torch.randn(3, SIZE, SIZE), max_examples=5).get_supxlabel() == ""


def test_neuron_heatmaps_name_the_neuron():
    assert viz.heatmap(GOOD, neuron=(0, 3, 3)).axes[0].get_title() == "neuron (0, 3, 3)"
    fig = viz.heatmap(GOOD, title="neuron gradient", neuron=[4])
    assert fig.axes[0].get_title() == "neuron gradient\nneuron (4,)"
    fig = viz.grid({"neuron gradient": PAIR}, neuron=2)
    assert heatmap_axes(fig)[0].get_ylabel() == "neuron gradient\nneuron 2"


def test_outline_keeps_the_heatmap_opaque_and_the_image_readable():
    image = torch.zeros(SIZE, SIZE)
    image[4:12, 4:12] = 1.0  # a square: its outline is a contour
    fig = viz.heatmap(quadrant_attribution(top_right=3.0), image, colorbar=False)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and ax.images[0].get_alpha() == 1.0  # no blended gray layer
    (contours,) = [c for c in ax.collections]
    assert len(contours.allsegs) == 1 and len(contours.allsegs[0]) == 1  # one closed outline
    hot = {name: fraction(pixels, "hot") for name, pixels in axes_quadrants(fig).items()}
    assert hot["top_right"] > 0.8 and hot["bottom_left"] == 0.0


def test_side_panel_shows_the_image_beside_the_heatmap():
    image = torch.rand(SIZE, SIZE)
    fig = viz.heatmap(GOOD, image, image_mode="side")
    left, right = heatmap_axes(fig)
    assert left.images[0].get_cmap().name == "gray" and right.images[0].get_alpha() == 1.0
    np.testing.assert_allclose(left.images[0].get_array(),
                               (image - image.min()) / (image.max() - image.min()))
    fig = viz.grid({"a": PAIR, "b": PAIR}, images=torch.rand(2, SIZE, SIZE),
                   titles=["x", "y"], image_mode="side")
    axes = heatmap_axes(fig)
    assert len(axes) == 6 and axes[0].get_ylabel() == "input"
    assert [ax.get_title() for ax in axes[:2]] == ["x", "y"]
    assert all(not ax.collections for ax in axes[2:])  # no outline under the side panel


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: viz.heatmap(GOOD, image_mode="blend"), ValueError, "image_mode"),
        (lambda: viz.heatmap(GOOD, GOOD, image_mode="side", ax=Figure().add_subplot()),
         ValueError, "image_mode"),
        (lambda: viz.heatmap(GOOD, vmax=0.0), ValueError, "vmax"),
        (lambda: viz.heatmap(GOOD, vmax="1"), TypeError, "vmax"),
        (lambda: viz.grid(PAIR, scale="column"), ValueError, "scale"),
        (lambda: viz.grid(PAIR, max_examples=0), ValueError, "max_examples"),
        (lambda: viz.grid(PAIR, vmax=1.0), TypeError, "vmax"),
    ],
)
def test_new_bad_arguments_raise_errors_naming_them(call, error, name):
    with pytest.raises(error, match=name):
        call()
