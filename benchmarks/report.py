"""RESULTS.md and ratios.png from the runner's results (``benchmarks/RESULTS.json``).

``python -m benchmarks.report [RESULTS.json]`` rewrites both from a saved run.
A hand-written ``benchmarks/analysis.md`` (profiles, explanations of missed
targets), if present, is appended to RESULTS.md verbatim.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FLOOR, EAGER, COMPILED, CAPTUM = "floor", "fnattr eager", "fnattr compiled", "Captum 0.9"
FLOOR_FULL = "floor (full forward)"
EAGER_TARGET, COMPILED_TARGET, MEMORY_TARGET, MANY_TARGET = 1.15, 0.8, 0.65, 3.0
MODEL_ORDER = "SML"


def _ms(t: float | None) -> str:
    if t is None:
        return "-"
    t *= 1e3
    return f"{t:.3f}" if t < 1 else f"{t:.2f}" if t < 100 else f"{t:.0f}"


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _by(block: dict) -> dict[str, dict]:
    return {c["name"]: c for c in block["cands"]}


def _ratio(a: dict | None, b: dict | None, stat: str = "median",
           strict: bool = True) -> float | None:
    """``a[stat] / b[stat]``; None when missing or (``strict``) when a check failed."""
    if not a or not b or a.get(stat) is None or b.get(stat) is None:
        return None
    if strict and not (a["ok"] and b["ok"]):
        return None
    return a[stat] / b[stat]


def _best_floor(block: dict) -> dict | None:
    floors = [c for c in block["cands"] if c["name"].startswith("floor") and c["median"]
              and c["ok"]]
    return min(floors, key=lambda c: c["median"]) if floors else None


def _auto(block: dict, prefix: str) -> dict | None:
    return next((c for c in block["cands"] if c["name"].startswith(prefix)
                 and ("auto" in c["name"] or "compiled" in prefix)), None)


def _xs(a: dict | None, b: dict | None, stat: str = "median") -> str:
    """A table cell: the ratio, marked when a check failed (shown, never used in verdicts)."""
    r = _ratio(a, b, stat, strict=False)
    if r is None:
        return "-"
    return _x(r) + ("" if a["ok"] and b["ok"] else " (wrong result)")


def _check(c: dict) -> str:
    if not c["ok"]:
        return f"**FAILED** ({c['check']})"
    if c["err"] is None or c["check"].startswith("itself"):
        return "reference"
    return f"{c['err']:.1e} vs {c['check']}"


def _models(results: dict) -> list[str]:
    present = {b["model"] for b in results["blocks"]}
    return [m for m in MODEL_ORDER if m in present]


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(target, verdict, numbers) rows."""
    rows = []
    failed = [(b, c) for b in results["blocks"] for c in b["cands"] if not c["ok"]]
    rows.append((
        "every candidate's result equals Captum's before it is timed",
        "met" if not failed else f"missed in {len(failed)}",
        "; ".join(f"{c['name']} on {b['method']} {b['model']}"
                  + (f" K={b['k']}" if b["kind"] == "many" else "")
                  + (f": max rel. err {c['err']:.2g}" if c["err"] is not None else "")
                  + (f" ({c['check']})" if c["check"].startswith("compile") else "")
                  for b, c in failed) or "all checks passed"))
    method_blocks = [b for b in results["blocks"] if b["kind"] == "method"]
    many = [b for b in results["blocks"] if b["kind"] == "many"]

    eager = [(b["method"], b["model"], _ratio(_by(b).get(EAGER), _by(b).get(FLOOR)))
             for b in method_blocks]
    eager = [e for e in eager if e[2] is not None]
    if eager:
        miss = [e for e in eager if e[2] > EAGER_TARGET]
        worst = max(eager, key=lambda e: e[2])
        rows.append((
            f"CPU eager within {EAGER_TARGET}x of the floor, every method and model",
            "met" if not miss else f"missed in {len(miss)} of {len(eager)}",
            ("; ".join(f"{m} {k} {r:.2f}x" for m, k, r in miss) or
             f"worst {worst[0]} {worst[1]} {worst[2]:.2f}x")))

    full = [(b["method"], b["model"], _ratio(_by(b).get(EAGER), _by(b).get(FLOOR_FULL)))
            for b in method_blocks if FLOOR_FULL in _by(b)]
    full = [e for e in full if e[2] is not None]
    if full:
        miss = [e for e in full if e[2] > EAGER_TARGET]
        rows.append((
            f"(context) neuron methods: eager within {EAGER_TARGET}x of a floor that also "
            "runs the rest of the forward, as fnattr eager and Captum must",
            "met" if not miss else f"missed in {len(miss)} of {len(full)}",
            "; ".join(f"{m} {k} {r:.2f}x" for m, k, r in full)))

    comp = [(b["method"], b["model"], _ratio(_by(b).get(COMPILED), _by(b).get(FLOOR)))
            for b in method_blocks]
    comp += [(f"neuron_gradient K={b['k']}", b["model"],
              _ratio(_auto(b, "fnattr compiled"), _best_floor(b))) for b in many]
    wrong = [f"{m} {k}" for m, k, r in comp if r is None]
    comp = [c for c in comp if c[2] is not None]
    if comp:
        miss = [c for c in comp if c[2] > COMPILED_TARGET]
        rows.append((
            f"CPU compiled at most {COMPILED_TARGET}x of the eager floor (K neurons included)",
            ("met" if not miss else f"missed in {len(miss)} of {len(comp)}")
            + (f"; {len(wrong)} not assessable" if wrong else ""),
            ("; ".join(f"{m} {k} {r:.3f}x" for m, k, r in miss) or
             f"worst {max(comp, key=lambda c: c[2])[2]:.2f}x")
            + (f" (not assessable, compiled result wrong or missing: {', '.join(wrong)})"
               if wrong else "")))

    mem = []
    for b in method_blocks:
        if b["method"] == "internal_influence" and b["model"] in ("M", "L"):
            by = _by(b)
            cap = by.get(CAPTUM, {}).get("mem_mb")
            for name in (EAGER, COMPILED):
                m = by.get(name, {}).get("mem_mb")
                if m is not None and cap:
                    mem.append((name, b["model"], m / cap, m, cap))
    if mem:
        miss = [m for m in mem if m[2] > MEMORY_TARGET]
        rows.append((
            f"internal influence peak memory at most {MEMORY_TARGET}x Captum's on M and L "
            "(profiler, CPU allocator)",
            "met" if not miss else f"missed in {len(miss)} of {len(mem)}",
            "; ".join(f"{n} {k}: {m:.0f} vs {c:.0f} MiB = {r:.2f}x" for n, k, r, m, c in mem)
            + "".join(
                f"; peak RSS cross-check {k}: {results['rss'][f'{k}|{EAGER}']:.0f} vs "
                f"{results['rss'][f'{k}|{CAPTUM}']:.0f} MiB = "
                f"{results['rss'][f'{k}|{EAGER}'] / results['rss'][f'{k}|{CAPTUM}']:.2f}x"
                for k in ("M", "L")
                if results.get("rss", {}).get(f"{k}|{EAGER}") and
                results.get("rss", {}).get(f"{k}|{CAPTUM}"))))

    k64 = [b for b in many if b["k"] == max(x["k"] for x in many)] if many else []
    if k64:
        sp = [(b["model"], _ratio(_by(b).get("Captum loop (K calls)"), _auto(b, "fnattr one-pass")))
              for b in k64]
        sp = [s for s in sp if s[1] is not None]
        miss = [s for s in sp if s[1] < MANY_TARGET]
        rows.append((
            f"K={k64[0]['k']} neurons: one-pass (auto chunk) at least {MANY_TARGET}x faster "
            "than a loop of K Captum calls, every model",
            "met" if not miss else f"missed in {len(miss)} of {len(sp)}",
            "; ".join(f"{k} {r:.1f}x" for k, r in sp)))
    if many:
        lo = [(b["model"], b["k"], _ratio(_auto(b, "fnattr one-pass"),
                                          _by(b).get("fnattr loop (K calls)"))) for b in many]
        lo = [x for x in lo if x[2] is not None]
        miss = [x for x in lo if x[2] > 1.0]
        rows.append((
            "one-pass (auto chunk) never slower than K separate fnattr calls",
            "met" if not miss else f"missed in {len(miss)} of {len(lo)}",
            "; ".join(f"{m} K={k} {r:.2f}x" for m, k, r in lo)))
    return rows


def render(results: dict) -> str:
    info, settings = results["info"], results["settings"]
    out = ["# fnattr benchmarks", ""]
    out += [
        "Generated by `benchmarks/run.py`; do not edit by hand (the analysis at the end "
        "comes from `benchmarks/analysis.md`).", "",
        "## Command and machine", "",
        f"    {info['command']}", "",
        f"- date: {info['date']}; wall time {info['wall_s'] / 60:.1f} min",
        f"- CPU: {info['cpu']}, {info['cores']} cores; torch intra-op threads {info['threads']} "
        + ("(torch's default, left as it is)" if info["threads"] == info.get("default_threads")
           else f"(set by `--threads`; torch's default here is {info.get('default_threads')})")
        + f", interop threads {info['interop_threads']}",
        f"- torch {info['torch']}, Captum {info['captum']}, Python {info['python']}; "
        f"fnattr at {info['commit']}",
        f"- device: {info['device']}" + (f" ({info['gpu']})" if info.get("gpu") else ""),
        f"- load average at start / end: {info['load']} / {info['load_end']} (the machine is "
        "shared; interleaving spreads the noise over all candidates alike)",
    ]
    if info["device"] == "cpu":
        out += ["- **GPU tables are pending a GPU session** (`python -m benchmarks.run "
                "--device cuda`: CUDA-event timings, `torch.cuda.max_memory_allocated`)."]
    out += [
        "", "## Method", "",
        f"- Settings: internal influence `n_steps={settings['n_steps']}`, `gausslegendre`, "
        f"zero baseline, `target=3`; gradient SHAP and neuron gradient SHAP "
        f"`n_samples={settings['shap']['n_samples']}`, `stdevs={settings['shap']['stdevs']}`, "
        "4 random reference rows as `baselines`; guided backprop / deconvolution `target=3`; "
        "neuron methods one fixed neuron of the layer named in the model row.",
        "- Candidates: **floor** = the same math hand-written in plain PyTorch "
        "(`benchmarks/floor.py`: a frozen copy of the model, one expanded batch, one "
        "`torch.autograd.grad`, the forward split at the layer instead of hooks, guided "
        "backprop / deconvolution through a hand-written modified-ReLU model - a copy whose "
        "`nn.ReLU`s call a custom `autograd.Function` - built once outside the timed region); "
        "**fnattr eager**; **fnattr compiled** (`fnattr.compile(method, model, layer)`, "
        "default options); **Captum 0.9** (attribution object built once).",
        f"- Timing: all candidates of a row run interleaved in one process, {settings['repeats']}"
        " rounds, one sample of every candidate per round, the first candidate rotating; a "
        f"sample is back-to-back calls (about {settings['sample_s'] * 1e3:.0f} ms worth, at "
        "least one), each call timed on its own (`perf_counter`, `cuda.synchronize` around "
        "each call on GPU); `gc.collect()` before each sample. `median`/`min` are over all "
        "timed calls of a candidate, `rounds` is the range of its per-round medians; `x "
        "floor` and `x Captum` are ratios of medians, `x floor (min)` of minimums (the "
        "least disturbed call, useful on a loaded machine). "
        "Compile time = the first call of the compiled function, on-disk compile caches "
        "(FX graph, AOT autograd) disabled and a fresh inductor cache directory, "
        "after inductor's one-time process start-up "
        + (f"({info['startup_compile_s']:.1f} s, not counted)." if info.get('startup_compile_s')
           else "(not measured: no compile)."),
        f"- Checks, before timing: every candidate vs Captum, `max|a - b| <= {settings['tol']:g} "
        "* max|captum|` (the `check` column gives `max|a - b| / max|captum|`). Sampled "
        "methods: the floor run on Captum's own draws (replayed from its numpy/torch seeds) "
        "vs Captum; fnattr eager vs the floor with the same `torch.Generator` seed (the floor "
        "draws in fnattr's documented order); fnattr compiled vs fnattr eager with the same "
        "seed; same tolerance for each link.",
        "- Peak memory (CPU): working memory of one call = peak of bytes held by PyTorch's "
        "CPU allocator during the call, net of frees, from `torch.profiler` "
        "(`profile_memory=True`) allocation events (tensors that existed before the call, "
        "such as weights and inputs, are not counted). On CUDA: "
        "`torch.cuda.max_memory_allocated()` minus the allocation before the call.",
    ]
    for key in _models(results):
        blocks = [b for b in results["blocks"] if b["kind"] == "method" and b["model"] == key]
        if not blocks:
            continue
        from .models import MODELS

        out += ["", f"## Model {key}: {MODELS[key][0]}", "",
                "| method | candidate | median ms | min ms | rounds ms | x floor | "
                "x floor (min) | x Captum | peak MiB | check |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for b in blocks:
            by = _by(b)
            for c in b["cands"]:
                out.append(
                    f"| {b['method']} | {c['name']} | {_ms(c['median'])} | {_ms(c['min'])} | "
                    f"{_ms(c['lo'])}-{_ms(c['hi'])} | {_xs(c, by.get(FLOOR))} | "
                    f"{_xs(c, by.get(FLOOR), 'min')} | {_xs(c, by.get(CAPTUM))} | "
                    f"{'-' if c['mem_mb'] is None else format(c['mem_mb'], '.1f')} | "
                    f"{_check(c)} |")
    comp = {(b["method"], b["model"]): _by(b).get(COMPILED, {}).get("compile_s")
            for b in results["blocks"] if b["kind"] == "method"}
    comp.update({(f"neuron_gradient K={b['k']} (one-pass)", b["model"]):
                 (_auto(b, "fnattr compiled") or {}).get("compile_s")
                 for b in results["blocks"] if b["kind"] == "many"})
    if any(v for v in comp.values()):
        models = _models(results)
        out += ["", "## Compile time (first call, seconds, cold caches)", "",
                "| method | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
        for method in dict.fromkeys(m for m, _ in comp):
            out.append(f"| {method} | " + " | ".join(
                f"{comp[(method, k)]:.1f}" if comp.get((method, k)) else "-" for k in models)
                + " |")
    mem_rows = [b for b in results["blocks"] if b["kind"] == "method"
                and b["method"] == "internal_influence"]
    if mem_rows and any(c["mem_mb"] for b in mem_rows for c in b["cands"]):
        out += ["", "## Internal influence peak memory", "",
                "| model | candidate | profiler peak MiB | x Captum | peak RSS growth MiB "
                "(fresh process) |", "|---|---|---:|---:|---:|"]
        for b in mem_rows:
            cap = _by(b).get(CAPTUM, {}).get("mem_mb")
            for c in b["cands"]:
                if c["mem_mb"] is None:
                    continue
                rss = results.get("rss", {}).get(f"{b['model']}|{c['name']}")
                out.append(f"| {b['model']} | {c['name']} | {c['mem_mb']:.1f} | "
                           f"{_x(c['mem_mb'] / cap if cap else None)} | "
                           f"{'-' if rss is None else f'{rss:.0f}'} |")
        out += ["", "Peak RSS growth (`--rss`): the process's peak resident set during one "
                "call (`VmHWM`, reset through `/proc/self/clear_refs`) minus its resident set "
                "before, in a fresh subprocess per candidate warmed up on a 1-example batch; "
                "coarser than the profiler (glibc arenas, pages), a cross-check of it."]
    many = [b for b in results["blocks"] if b["kind"] == "many"]
    if many:
        out += ["", "## Many neurons: `neuron_gradient` for K neurons", "",
                "One-pass = `fnattr.neuron_gradient(model, layer, x, [sel_1, ..., sel_K], "
                "chunk_size=c)` (one shared forward, backwards `c` rows at a time: batched "
                "with `is_grads_batched`, or plain backwards when `c` is 1). `default` = "
                "`chunk_size=None`: fnattr picks the largest power of two such that `c` "
                "copies of the activations the forward saves fit a per-device budget "
                "(`fnattr._engine._auto_chunk`; 4 MiB on CPU), shown with the `c` it picked. "
                "Floors: a shared forward then a loop of K "
                "`autograd.grad(retain_graph=True)` (`floor loop`), or batched one-hot "
                "backwards (`is_grads_batched`, chunk from `benchmarks.run.auto_chunk`: "
                f"activations between input and layer under "
                f"{results['settings']['chunk_budget'] // 2**20} MiB, at least 4); "
                "`x best floor` divides by the faster one.", "",
                "| model | K | candidate | median ms | min ms | rounds ms | x best floor | "
                "Captum loop / this | this / fnattr loop | peak MiB | check |",
                "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for b in many:
            by, best = _by(b), _best_floor(b)
            for c in b["cands"]:
                out.append(
                    f"| {b['model']} | {b['k']} | {c['name']} | {_ms(c['median'])} | "
                    f"{_ms(c['min'])} | {_ms(c['lo'])}-{_ms(c['hi'])} | {_xs(c, best)} | "
                    f"{_xs(by.get('Captum loop (K calls)'), c)} | "
                    f"{_xs(c, by.get('fnattr loop (K calls)'))} | "
                    f"{'-' if c['mem_mb'] is None else format(c['mem_mb'], '.1f')} | "
                    f"{_check(c)} |")
    rows = targets(results)
    if rows:
        out += ["", "## Targets", "", "| target | verdict | numbers |", "|---|---|---|"]
        out += [f"| {t} | {v} | {n} |" for t, v, n in rows]
    analysis = Path(__file__).resolve().parent / "analysis.md"
    if analysis.exists():
        out += ["", analysis.read_text().rstrip()]
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> None:
    models = _models(results)
    many = [b for b in results["blocks"] if b["kind"] == "many"]
    rows = 2 if many else 1
    fig = Figure(figsize=(5.2 * max(1, len(models)), 4.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    colors = {EAGER: "tab:blue", COMPILED: "tab:green", CAPTUM: "tab:red"}
    for j, key in enumerate(models):
        ax = fig.add_subplot(rows, max(1, len(models)), j + 1)
        blocks = [b for b in results["blocks"] if b["kind"] == "method" and b["model"] == key]
        width = 0.8 / len(colors)
        for i, (name, color) in enumerate(colors.items()):
            xs, ys = [], []
            for n, b in enumerate(blocks):
                r = _ratio(_by(b).get(name), _by(b).get(FLOOR))
                if r is not None:
                    xs.append(n + (i - 1) * width)
                    ys.append(r)
            if ys:
                ax.bar(xs, ys, width, color=color, label=name)
        ax.axhline(1.0, color="k", lw=1)
        ax.axhline(EAGER_TARGET, color="tab:blue", ls="--", lw=0.8)
        ax.axhline(COMPILED_TARGET, color="tab:green", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.2)
        ax.set_xticks(range(len(blocks)))
        ax.set_xticklabels([b["method"].replace("_", "\n") for b in blocks], fontsize=7)
        ax.set_title(f"model {key}: time / floor (median)")
        if j == 0:
            ax.legend(fontsize=7)
    if many:
        names = [("fnattr one-pass", "tab:blue"), ("fnattr compiled", "tab:green"),
                 ("fnattr loop (K calls)", "tab:purple"), ("Captum loop (K calls)", "tab:red")]
        for j, key in enumerate(models):
            ax = fig.add_subplot(rows, max(1, len(models)), len(models) + j + 1)
            blocks = [b for b in many if b["model"] == key]
            width = 0.8 / len(names)
            for i, (prefix, color) in enumerate(names):
                xs, ys = [], []
                for n, b in enumerate(blocks):
                    c = _auto(b, prefix) if "one-pass" in prefix or "compiled" in prefix \
                        else _by(b).get(prefix)
                    r = _ratio(c, _best_floor(b))
                    if r is not None:
                        xs.append(n + (i - 1.5) * width)
                        ys.append(r)
                if ys:
                    ax.bar(xs, ys, width, color=color,
                           label=prefix + (" (auto chunk)" if "one-pass" in prefix else ""))
            ax.axhline(1.0, color="k", lw=1)
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.2)
            ax.set_xticks(range(len(blocks)))
            ax.set_xticklabels([f"K={b['k']}" for b in blocks])
            ax.set_title(f"model {key}: K neurons, time / best floor")
            if j == 0:
                ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


# Sections below this line in RESULTS.md come from the other benchmark modules
# (benchmarks/metrics.py, dataset.py, budget.py, lig.py, ...): regenerating the
# main tables keeps them.
KEEP_MARKER = "<!-- sections below: other benchmark modules (kept when benchmarks.run rewrites this file) -->"


def write_report(results: dict, md: Path, png: Path) -> None:
    kept = ""
    if md.exists():
        old = md.read_text()
        if KEEP_MARKER in old:
            kept = old.split(KEEP_MARKER, 1)[1]
    md.write_text(render(results).rstrip() + "\n\n" + KEEP_MARKER + kept)
    plot(results, png)


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "RESULTS.json"
    res: Any = json.loads(src.read_text())
    write_report(res, src.with_suffix(".md"), src.with_name("ratios.png"))
