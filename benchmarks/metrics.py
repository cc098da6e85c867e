"""Benchmark of fnattr.metrics against Captum's and Quantus's metrics (CPU, one thread).

``python -m benchmarks.metrics [--models S M L] [--repeats 3]``

* ``sensitivity_max`` with 10 and 200 perturbations of the gradient map
  (Captum ``Saliency(abs=False)``): fnattr vs ``captum.metrics.sensitivity_max``
  vs ``quantus.MaxSensitivity`` (uniform noise of radius 0.02, Frobenius norms;
  Quantus's explanation is the same Captum call, through its ``explain_func``).
* ``model_randomization`` (cascading, gradient maps, Spearman) vs a naive loop
  that deep-copies the model and re-initializes one more layer per step (what
  Quantus does), and vs ``quantus.MPRT``.

Candidates run interleaved (the first of a round rotates), one call per sample;
the table gives medians and the ratio other / fnattr (> 1: fnattr is faster).
Quantus is optional (``pip install quantus``); its columns are empty without it.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import statistics
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

import fnattr
from fnattr import metrics

from .models import build

try:
    import quantus
except ImportError:  # optional benchmark dependency
    quantus = None


def _captum_saliency(model: Any, inputs: Any, targets: Any, **_: Any) -> np.ndarray:
    from captum.attr import Saliency

    x = torch.as_tensor(inputs, dtype=torch.float32)
    return Saliency(model).attribute(x, target=torch.as_tensor(targets), abs=False).numpy()


def sensitivity_candidates(spec: Any, n: int) -> dict[str, Callable[[], Any]]:
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    model, x = spec.model, spec.inputs
    y = torch.full((x.shape[0],), spec.target)
    ours = functools.partial(fnattr.gradient, model)
    cands = {
        "fnattr": lambda: metrics.sensitivity_max(
            ours, x, target=spec.target, n_perturb_samples=n,
            generator=torch.Generator().manual_seed(0)),
        "captum": lambda: sensitivity_max(Saliency(model).attribute, x, target=spec.target,
                                          abs=False, n_perturb_samples=n),
    }
    if quantus is not None:
        q = quantus.MaxSensitivity(nr_samples=n, lower_bound=0.02, disable_warnings=True,
                                   display_progressbar=False)
        xn, yn = x.numpy(), y.numpy()
        an = _captum_saliency(model, xn, yn)
        cands["quantus"] = lambda: q(model, xn, yn, a_batch=an, explain_func=_captum_saliency,
                                     batch_size=x.shape[0], device="cpu")
    return cands


def naive_randomization(model: Any, x: Any, target: int) -> dict:
    """Deep copy, re-initialize one more layer (from the output), explain, correlate."""
    names = [n for n, m in model.named_modules()
             if any(p.dim() >= 2 for p in m.parameters(recurse=False))][::-1]
    reference = fnattr.gradient(model, x, target)
    work, out = copy.deepcopy(model), {}
    for name in names:
        for p in work.get_submodule(name).parameters(recurse=False):
            w = [q for q in work.get_submodule(name).parameters(recurse=False) if q.dim() >= 2]
            bound = 1 / math.sqrt(w[0][0].numel())
            with torch.no_grad():
                p.uniform_(-bound, bound)
        out[name] = metrics.similarity(reference, fnattr.gradient(work, x, target))
    return out


def randomization_candidates(spec: Any) -> dict[str, Callable[[], Any]]:
    model, x = spec.model, spec.inputs
    cands = {
        "fnattr": lambda: metrics.model_randomization(
            fnattr.gradient, model, x, target=spec.target,
            generator=torch.Generator().manual_seed(0)),
        "deepcopy loop": lambda: naive_randomization(model, x, spec.target),
    }
    if quantus is not None:
        q = quantus.MPRT(layer_order="top_down", disable_warnings=True,
                         display_progressbar=False, abs=False, normalise=False)
        xn = x.numpy()
        yn = np.full(x.shape[0], spec.target)
        an = _captum_saliency(model, xn, yn)
        cands["quantus"] = lambda: q(model, xn, yn, a_batch=an, explain_func=_captum_saliency,
                                     batch_size=x.shape[0], device="cpu")
    return cands


def interleaved(cands: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call, candidates interleaved with a rotating first."""
    names = list(cands)
    times: dict[str, list[float]] = {k: [] for k in names}
    for k in names:
        cands[k]()  # warm
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            cands[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["S", "M", "L"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the oracles' own warnings
    print(f"torch {torch.__version__}, quantus {getattr(quantus, '__version__', 'absent')}, "
          f"1 thread, {args.repeats} interleaved repeats, medians")
    print("| model | metric | fnattr ms | captum / fnattr | deepcopy loop / fnattr "
          "| quantus / fnattr |")
    print("|---|---|---|---|---|---|")
    for key in args.models:
        spec = build(key)
        blocks = [(f"sensitivity_max n={n}", sensitivity_candidates(spec, n)) for n in (10, 200)]
        blocks.append(("model_randomization", randomization_candidates(spec)))
        for label, cands in blocks:
            med = interleaved(cands, args.repeats)
            ratio = {k: f"{med[k] / med['fnattr']:.2f}x" for k in med if k != "fnattr"}
            print(f"| {key} | {label} | {1e3 * med['fnattr']:.1f} | {ratio.get('captum', '')} | "
                  f"{ratio.get('deepcopy loop', '')} | {ratio.get('quantus', '')} |", flush=True)


if __name__ == "__main__":
    main()
