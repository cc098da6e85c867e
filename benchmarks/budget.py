"""Memory budget benchmark: ``python -m benchmarks.budget [--quick] [--repeats R]``.

For each method and model (M, L of :mod:`benchmarks.models`) and three budgets
(1/2, 1/4, 1/8 of the unbounded call's peak; 1/1.2, 1/1.35, 1/1.5 for layer
conductance, whose per-point result is most of it) it reports the peak working
memory over the budget and the time over the unbounded call's, and compares
with the best hand-picked ``internal_batch_size`` whose peak fits the same
budget (the fastest of the whole-step sizes 1, 2, 4, 8, 16 steps, each
measured the same way and timed in the same interleaved rounds). Then the
case Captum cannot do: gradient SHAP with ``n_samples=200`` on L under
256 MiB, next to Captum's ``GradientShap`` peak (20 and 200 samples) in the
same run.

Peak: the CPU allocator's peak during one call, net of frees (torch.profiler
allocation events, as :mod:`benchmarks.run`). Times: medians of ``R``
interleaved rounds (every candidate once per round, start rotating).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

import fnattr
from fnattr import _budget, _probe
from benchmarks.models import build

MiB = 2**20


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes the CPU allocator held during ``fn()`` above what it held before."""
    box: list = []
    return _probe._peak(lambda: box.append(fn()))


def interleaved(cands: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    names = list(cands)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            cands[name]()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def methods(spec: Any, n_steps: int) -> dict[str, Callable[..., Any]]:
    m, x, layer = spec.model, spec.inputs, spec.layer
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    return {
        "integrated_gradients": lambda **k: fnattr.integrated_gradients(
            m, x, target=spec.target, n_steps=n_steps, **k),
        "internal_influence": lambda **k: fnattr.internal_influence(
            m, layer, x, target=spec.target, n_steps=n_steps, **k),
        "layer_conductance": lambda **k: fnattr.layer_conductance(
            m, layer, x, target=spec.target, n_steps=n_steps, **k),
        "gradient_shap": lambda **k: fnattr.gradient_shap(
            m, x, spec.shap_baselines, n_samples=n_steps, target=spec.target,
            generator=gen(), **k),
    }


def table(keys: str, n_steps: int, repeats: int) -> list[str]:
    rows = ["| method | model | budget MiB | peak / budget | time / unbounded | "
            "best hand-picked ibs within the budget | time / that |",
            "|---|---|---|---|---|---|---|"]
    for key in keys:
        spec = build(key)
        n = spec.inputs.shape[0]
        for name, call in methods(spec, n_steps).items():
            unbounded = lambda: call(internal_batch_size=10**9)  # noqa: E731
            unbounded()
            full = peak_bytes(unbounded)
            sizes = [n * s for s in (1, 2, 4, 8, 16) if n * s < n_steps * n]
            hand = {s: peak_bytes(lambda s=s: call(internal_batch_size=s)) for s in sizes}
            # layer conductance keeps a layer value per point: its result alone
            # is most of the unbounded peak, so its budgets are closer to it
            for frac in ((1.2, 1.35, 1.5) if name == "layer_conductance" else (2, 4, 8)):
                budget = int(full / frac)
                try:
                    call(memory_budget=budget)  # probe (cached)
                except ValueError as e:  # the result alone does not fit
                    need = str(e).rsplit("at least ", 1)[-1].split(" MiB")[0]
                    rows.append(f"| {name} | {key} | {budget / MiB:.1f} | ValueError: needs "
                                f"at least {need} MiB | | | |")
                    print(rows[-1], flush=True)
                    continue
                used = peak_bytes(lambda: call(memory_budget=budget))
                fits = [s for s in sizes if hand[s] <= budget] or sizes[:1]
                cands = {"budget": lambda: call(memory_budget=budget), "unbounded": unbounded}
                cands.update({f"ibs{s}": (lambda s=s: call(internal_batch_size=s)) for s in fits})
                t = interleaved(cands, repeats)
                best = min(fits, key=lambda s: t[f"ibs{s}"])
                rows.append(
                    f"| {name} | {key} | {budget / MiB:.1f} | {used / budget:.2f} | "
                    f"{t['budget'] / t['unbounded']:.2f} | {best} ({hand[best] / MiB:.1f} MiB) | "
                    f"{t['budget'] / t[f'ibs{best}']:.2f} |")
                print(rows[-1], flush=True)
    return rows


def captum_case(n_samples: int, budget: str, captum_samples: tuple[int, ...]) -> list[str]:
    """fnattr's gradient SHAP at ``n_samples`` under ``budget``, and Captum's peak
    and time at ``captum_samples`` (one expanded batch: linear in ``n_samples``)."""
    from captum.attr import GradientShap

    spec = build("L")
    m, x, b = spec.model, spec.inputs, spec.shap_baselines
    ours = lambda: fnattr.gradient_shap(  # noqa: E731
        m, x, b, n_samples=n_samples, target=spec.target,
        generator=torch.Generator().manual_seed(0), memory_budget=budget)
    ours()
    p_ours = peak_bytes(ours)
    t_ours = interleaved({"fnattr": ours}, 3)["fnattr"]
    limit = _budget.parse(budget)
    lines = [f"| gradient SHAP on L (batch 8) | n_samples | peak MiB | peak / {budget} | time s |",
             "|---|---|---|---|---|",
             f"| fnattr, memory_budget={budget!r} | {n_samples} | {p_ours / MiB:.1f} | "
             f"{p_ours / limit:.2f} | {t_ours:.2f} |"]
    peaks = []
    for s in captum_samples:
        theirs = lambda s=s: GradientShap(m).attribute(  # noqa: E731
            x, b, n_samples=s, target=spec.target)
        theirs()
        peaks.append(peak_bytes(theirs))
        t = interleaved({"captum": theirs}, 3)["captum"]
        lines.append(f"| Captum 0.9 GradientShap | {s} | {peaks[-1] / MiB:.1f} | "
                     f"{peaks[-1] / limit:.2f} | {t:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M only, fewer steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keys = "M" if args.quick else "ML"
    steps = 16 if args.quick else args.steps
    lines = table(keys, steps, args.repeats)
    lines += [""] + captum_case(200 if not args.quick else 20, "256MiB",
                                (20, 200) if not args.quick else (5, 20))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
