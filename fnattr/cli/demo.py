"""``fnattr demo``: every catalog method on the embedded digits model, one PNG grid."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path
from typing import Any

from . import methods as M
from .args import DEMO_COLUMNS_MAX
from .errors import CLIError, one_line, user_code
from .figure import shape_text
from .loading import check_layer

N_STEPS = 50
N_SAMPLES = 20
STDEVS = 0.05


def demo(args: argparse.Namespace) -> int:
    out_dir = _check(args)
    model, x, labels, baselines = _load(args)
    with_target = _target(model, x)
    rows = _run_all(args, model, x, with_target, baselines)
    _write(out_dir, rows, x, labels, with_target, tuple(args.neuron))
    return 0


def _check(args: argparse.Namespace) -> Path:
    if args.n > DEMO_COLUMNS_MAX:
        raise CLIError(f"--n must be at most {DEMO_COLUMNS_MAX} (the embedded examples), "
                       f"got {args.n}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")
    return out_dir


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The model, the first ``--n`` examples, their labels and gradient SHAP's
    baselines: a black image and blurred copies of the last three examples."""
    import torch
    import torch.nn.functional as F

    from fnattr.data import load_digits_examples, load_digits_model

    model = load_digits_model()
    check_layer(model, args.layer)
    images, labels = load_digits_examples()
    x = images[: args.n]
    blurred = F.avg_pool2d(images[-3:], 3, stride=1, padding=1, count_include_pad=False)
    return model, x, labels[: args.n], torch.cat([torch.zeros(1, *x.shape[1:]), blurred])


def _target(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(x).argmax(1)  # 1-D target: the predicted class of each example


def _run_all(args: argparse.Namespace, model: Any, x: Any, pred: Any,
             baselines: Any) -> dict[str, Any]:
    """Runs every method, prints its table row; returns the pictures by method."""
    import torch

    import fnattr

    layer, neuron = args.layer, tuple(args.neuron)
    options = {"n_steps": N_STEPS, "n_samples": N_SAMPLES, "stdevs": STDEVS,
               "neuron_selector": neuron, "target": pred,
               "generator": torch.Generator().manual_seed(args.seed)}
    header = _print_header(x, layer, neuron, args.seed)
    rows: dict[str, Any] = {}
    start = time.perf_counter()
    for entry in M.METHODS.values():
        kwargs = M.fixed_kwargs(entry, options, layer_input=False)
        if M.requires(entry, "baselines"):
            kwargs["baselines"] = baselines
        begin = time.perf_counter()
        with user_code(lambda error: M.failure(entry, error)):
            result = M.bind(entry, model, layer)(x, **kwargs)
        elapsed = (time.perf_counter() - begin) * 1e3
        result, delta = M.split_delta(entry, result, x.shape[0])
        where = "-" if not entry.needs_layer else layer + (
            f" {neuron}" if entry.site == "neuron" else "")
        delta_text = "-" if delta is None else f"{delta.abs().mean().item():.2e}"
        print(f"{entry.name:<28} {where:<22} {elapsed:>9.1f}  {shape_text(result):<16} "
              f"{delta_text:>9}")
        picture = result.detach()
        if picture.dim() == 4 and picture.shape[-2:] != x.shape[-2:]:
            picture = fnattr.interpolate(picture, tuple(x.shape[-2:]))
        rows[entry.name] = picture
    print("-" * len(header))
    print(f"|delta|: mean over examples of |sum(attributions) - (f(x) - f(baseline))|\n"
          f"         (gradient_shap: of each example's mean over its {N_SAMPLES} samples)\n"
          f"methods total: {time.perf_counter() - start:.2f} s")
    return rows


def _print_header(x: Any, layer: str, neuron: tuple, seed: int) -> str:
    print(f"fnattr demo: DigitsNet on {x.shape[0]} held-out digits; target = predicted class; "
          f"layer {layer}, neuron {neuron}; gradient SHAP seed {seed}")
    header = (f"{'method':<28} {'layer / neuron':<22} {'time (ms)':>9}  {'shape':<16} "
              f"{'|delta|':>9}")
    print(header)
    print("-" * len(header))
    return header


def _write(out_dir: Path, rows: dict, x: Any, labels: Any, pred: Any, neuron: tuple) -> None:
    from fnattr import viz

    titles = [f"y={int(label)} pred={int(p)}" for label, p in zip(labels, pred)]
    row_titles = [textwrap.fill(name.replace("_", " "), 14)
                  + (f"\nneuron {neuron}" if name.startswith("neuron_") else "") for name in rows]
    drawn = viz.grid(rows, images=x, titles=titles, row_titles=row_titles, sign="all")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = viz.save(drawn, out_dir / "demo.png", dpi=80)
    except OSError as error:
        raise CLIError(f"cannot write {out_dir / 'demo.png'}: {one_line(error)}") from None
    print(f"wrote {path}")
