"""Reproduces the sanity check of Adebayo et al. (cascading randomization) and deletion
curves; writes the README table (stdout) and docs/sanity_check.png, docs/deletion.png.

``PYTHONPATH=. python scripts/sanity_check.py``  (about a minute on one CPU thread)
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import fnattr
from fnattr import metrics, viz
from fnattr.data import load_digits_examples, load_digits_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.models import build  # noqa: E402

METHODS = {
    "gradient": fnattr.gradient,
    "integrated gradients": functools.partial(fnattr.integrated_gradients, n_steps=16),
    "guided backprop": fnattr.guided_backprop,
}


def sanity(model, x, target, similarity):
    return {name: metrics.model_randomization(fn, model, x, target=target, similarity=similarity,
                                              generator=torch.Generator().manual_seed(0))
            for name, fn in METHODS.items()}


def table(title, results):
    layers = list(next(iter(results.values())))
    print(f"\n{title}\n")
    print("| method | " + " | ".join(f"`{n}`" for n in layers) + " |")
    print("|---|" + "---|" * len(layers))
    for name, sims in results.items():
        print(f"| {name} | " + " | ".join(f"{s.mean():+.2f}" for s in sims.values()) + " |")


def main() -> None:
    torch.set_num_threads(1)
    digits, (x, y) = load_digits_model(), load_digits_examples()
    spec = build("L")
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, width_ratios=[1, 2.6, 1.2])
    for similarity in ("spearman", "spearman_abs", "ssim"):
        res = sanity(digits, x, y, similarity)
        table(f"digits model, 50 examples, mean {similarity}", res)
        if similarity == "spearman":
            viz.sanity_check(res, title="digits CNN (Spearman)", ax=axes[0])
    for similarity in ("spearman", "spearman_abs"):
        res = sanity(spec.model, spec.inputs, spec.target, similarity)
        table(f"L benchmark model (random weights, 8 noise images), mean {similarity}", res)
        if similarity == "spearman":
            viz.sanity_check(res, title="L ResNet-style (Spearman)", ax=axes[1])
    attrs = {name: fn(digits, x, target=y) for name, fn in METHODS.items()}
    attrs["gradient x input"] = attrs["gradient"] * x
    attrs["random"] = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    curves = {name: metrics.pixel_flipping(digits, x, a, y, steps=32) for name, a in attrs.items()}
    viz.deletion_curves(curves, title="digits: deletion (MoRF)", ax=axes[2])
    print("\ndeletion AUC (digits, logit of the label, lower is better): " + ", ".join(
        f"{name} {metrics.auc(*c).mean():.2f}" for name, c in curves.items()))
    viz.save(fig, Path(__file__).resolve().parent.parent / "docs" / "sanity_check.png", dpi=90)


if __name__ == "__main__":
    main()
