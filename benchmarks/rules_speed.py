"""ReLU-rule methods: fnattr eager vs compiled vs Captum (issue 12, items 12/14/22).

``python -m benchmarks.rules_speed [--models R V B] [--repeats 15] [--no-compile]``

For every model (:mod:`benchmarks.models`) and rule method (guided backprop,
deconvolution): checks fnattr eager and ``fnattr.compile`` against Captum
(``max|a - b| <= 1e-4 max|captum|``), then times fnattr eager, fnattr compiled
and Captum interleaved in this process (one thread, the starting candidate
rotating each round) and prints medians, and ratios of medians and of minima
(the minimum is the steadier one on a shared machine), as a Markdown table. The
compiled call runs once first with warnings turned into a list: every warning
that compiling raises is printed (eager raises none).

The last column is the median of the per-round ratios eager / Captum (the two
calls of one round run back to back, so slow spells of a shared machine hit
both) with a distribution-free 95% confidence interval: the order statistics
``n/2 -+ 0.98 sqrt(n)`` of the n round ratios.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch

import fnattr

from .models import build

METHODS = {"guided_backprop": "GuidedBackprop", "deconvolution": "Deconvolution"}


def _time(fns: dict, repeats: int) -> dict:
    for f in fns.values():
        f()
    times: dict = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, \
        {k: min(v) for k, v in times.items()}, times


def paired_ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median of the per-round ratios ``a[i] / b[i]`` and its 95% confidence
    interval (order statistics of the sorted ratios; distribution-free)."""
    r = sorted(x / y for x, y in zip(a, b))
    n = len(r)
    half = 0.98 * math.sqrt(n)
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return statistics.median(r), r[lo], r[hi]


def run(models: list[str], repeats: int, compile_it: bool) -> list[str]:
    import captum.attr as C

    rows = ["| model | method | fnattr eager ms | fnattr compiled ms | Captum ms | "
            "eager / Captum | (min) | compiled / eager | (min) | compile s | "
            "warnings while compiling | eager / Captum per round (95% CI) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for key in models:
        spec = build(key)
        m, x, t = spec.model, spec.inputs, spec.target
        for method, cname in METHODS.items():
            fn = getattr(fnattr, method)
            cap = getattr(C, cname)(m)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Captum's own warnings
                ref = cap.attribute(x, target=t)
            fns = {"eager": lambda: fn(m, x, target=t)}
            tol = 1e-4 * float(ref.abs().max())
            assert (fns["eager"]() - ref).abs().max() <= tol, (key, method, "eager")
            compile_s, seen = None, []
            if compile_it:
                torch._dynamo.reset()
                compiled = fnattr.compile(fn, m)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    t0 = time.perf_counter()
                    out = compiled(x, target=t)
                    compile_s = time.perf_counter() - t0
                seen = sorted({f"{w.category.__name__}: {str(w.message)[:80]}" for w in caught})
                assert (out - ref).abs().max() <= tol, (key, method, "compiled")
                fns["compiled"] = lambda: compiled(x, target=t)

            def captum_call():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return cap.attribute(x, target=t)

            fns["captum"] = captum_call
            med, low, times = _time(fns, repeats)
            mid, lo, hi = paired_ratio(times["eager"], times["captum"])
            comp = med.get("compiled")
            rows.append(
                f"| {key} | {method} | {med['eager'] * 1e3:.2f} | "
                f"{'-' if comp is None else format(comp * 1e3, '.2f')} | "
                f"{med['captum'] * 1e3:.2f} | {med['eager'] / med['captum']:.2f}x | "
                f"{low['eager'] / low['captum']:.2f}x | "
                f"{'-' if comp is None else format(comp / med['eager'], '.2f') + 'x'} | "
                f"{'-' if comp is None else format(low['compiled'] / low['eager'], '.2f') + 'x'} | "
                f"{'-' if compile_s is None else format(compile_s, '.1f')} | "
                f"{'; '.join(seen) or 'none'} | {mid:.3f}x ({lo:.3f}-{hi:.3f}) |")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rules_speed",
                                description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["R", "V", "B"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(run(a.models, a.repeats, not a.no_compile)[:2]))


if __name__ == "__main__":
    main()
