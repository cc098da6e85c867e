"""fnattr's benchmark suite: ``python -m benchmarks.run [--quick] [--device cpu|cuda] ...``.

For every method and model (:mod:`benchmarks.models`) it builds four
candidates: the hand-written **floor** (:mod:`benchmarks.floor`), **fnattr
eager**, **fnattr compiled** (``fnattr.compile``) and **Captum 0.9**; checks
each one's result against Captum's before timing it; times them interleaved
(round-robin per round, the starting candidate rotating; every call timed on
its own) in this one process; measures the peak memory of one call; and writes ``RESULTS.md`` (tables, the
command, the machine) and ``ratios.png`` (ratio to the floor).

The "many neurons" part times ``neuron_gradient`` for K neurons: fnattr's
one-pass call (a list of selectors, several ``chunk_size`` values), K separate
fnattr calls, a Python loop of K Captum calls, two floors (a shared forward
followed by K backward calls, or by batched backwards) and the compiled
one-pass call.

Checks (before any timing):

* deterministic methods: every candidate vs Captum, ``max|a - b| <= TOL *
  max|captum|`` (``allclose`` with ``rtol=0``, ``atol=TOL * max|captum|``);
* sampled methods (gradient SHAP, neuron gradient SHAP) cannot be compared
  draw for draw (Captum draws from numpy's and torch's global RNGs, fnattr from
  a ``torch.Generator``), so the chain is: the floor on **Captum's own draws**
  (replayed from its seeds, :func:`benchmarks.floor.captum_paths`) vs Captum;
  fnattr eager vs the floor with the **same generator seed** (the floor draws
  in fnattr's documented order); fnattr compiled vs fnattr eager with the same
  seed. Every link uses the same tolerance.

Memory, CPU: the peak of bytes allocated by PyTorch's CPU allocator during one
call, net of frees (``torch.profiler`` with ``profile_memory=True``, the
allocation events' running total), i.e. working memory on top of what existed
before the call. With ``--rss`` a cross-check for internal influence on M and L:
the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
minus the resident set before the call, in a fresh subprocess per candidate
warmed up on a 1-example batch (Linux only). CUDA: ``torch.cuda.max_memory_allocated`` minus the
memory allocated before the call.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import fnattr

from .floor import Floor, captum_paths, seeded
from .models import MODELS, ModelSpec, build, run_to

METHODS = ("neuron_gradient", "internal_influence", "gradient_shap", "neuron_gradient_shap",
           "guided_backprop", "deconvolution")
LAYER_METHODS = {"neuron_gradient", "internal_influence", "neuron_gradient_shap"}
SAMPLED = {"gradient_shap", "neuron_gradient_shap"}
N_STEPS = 50
SHAP = {"n_samples": 5, "stdevs": 0.1}
SEED = 0
CAPTUM_SEEDS = (1, 2)  # numpy, torch
TOL = 1e-4
CHUNK_BUDGET = 16 * 2**20  # bytes of head activations per backward chunk (auto chunk_size)
CHUNK_MIN = 4

FLOOR, EAGER, COMPILED, CAPTUM = "floor", "fnattr eager", "fnattr compiled", "Captum 0.9"
FLOOR_FULL = "floor (full forward)"
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- candidates
@dataclass
class Cand:
    name: str
    fn: Callable[[], Any] | None
    gen: torch.Generator | None = None
    err: float | None = None
    check: str = ""
    ok: bool = True
    compile_s: float | None = None
    number: int = 1
    times: list[list[float]] = field(default_factory=list)  # per round, per call
    mem_mb: float | None = None
    rss_mb: float | None = None

    def summary(self) -> dict:
        """``median``/``min``: over every timed call; ``lo``/``hi``: the lowest and
        highest per-round median (the spread across rounds)."""
        pooled = [t for r in self.times for t in r]
        rounds = [statistics.median(r) for r in self.times if r]
        return {
            "name": self.name, "err": self.err, "check": self.check, "ok": self.ok,
            "compile_s": self.compile_s, "calls_per_round": self.number,
            "round_medians": rounds,
            "median": statistics.median(pooled) if pooled else None,
            "min": min(pooled) if pooled else None,
            "lo": min(rounds) if rounds else None, "hi": max(rounds) if rounds else None,
            "mem_mb": self.mem_mb, "rss_mb": self.rss_mb,
        }


def _captum(method: str, spec: ModelSpec) -> Callable[[], Any]:
    from captum.attr import (Deconvolution, GradientShap, GuidedBackprop, InternalInfluence,
                             NeuronGradient, NeuronGradientShap)

    m, layer, x, b = spec.model, spec.layer, spec.inputs, spec.shap_baselines
    if method == "neuron_gradient":
        a = NeuronGradient(m, layer)
        return lambda: a.attribute(x, spec.neuron)
    if method == "internal_influence":
        a = InternalInfluence(m, layer)
        return lambda: a.attribute(x, target=spec.target, n_steps=N_STEPS, method="gausslegendre")
    if method == "gradient_shap":
        a = GradientShap(m)
        return lambda: a.attribute(x, b, target=spec.target, **SHAP)
    if method == "neuron_gradient_shap":
        a = NeuronGradientShap(m, layer)
        return lambda: a.attribute(x, spec.neuron, b, **SHAP)
    if method == "guided_backprop":
        a = GuidedBackprop(m)
        return lambda: a.attribute(x, target=spec.target)
    if method == "deconvolution":
        a = Deconvolution(m)
        return lambda: a.attribute(x, target=spec.target)
    raise ValueError(method)


def _fnattr(method: str, spec: ModelSpec, fn: Callable, gen: torch.Generator | None,
            bound: bool) -> Callable[[], Any]:
    """fnattr's call; ``fn`` is the method (``bound=False``) or its compiled form."""
    m, layer, x, b = spec.model, spec.layer, spec.inputs, spec.shap_baselines
    pre = () if bound else ((m, layer) if method in LAYER_METHODS else (m,))
    if method == "neuron_gradient":
        return lambda: fn(*pre, x, spec.neuron)
    if method == "internal_influence":
        return lambda: fn(*pre, x, target=spec.target, n_steps=N_STEPS, method="gausslegendre")
    if method == "gradient_shap":
        return lambda: fn(*pre, x, b, target=spec.target, generator=gen, **SHAP)
    if method == "neuron_gradient_shap":
        return lambda: fn(*pre, x, spec.neuron, b, generator=gen, **SHAP)
    if method in ("guided_backprop", "deconvolution"):
        return lambda: fn(*pre, x, target=spec.target)
    raise ValueError(method)


def _floor(method: str, spec: ModelSpec, fl: Floor, gen: torch.Generator | None,
           full_forward: bool = False) -> Callable:
    x, b, t = spec.inputs, spec.shap_baselines, spec.target
    return {
        "neuron_gradient": lambda: fl.neuron_gradient(x, spec.neuron, full_forward),
        "internal_influence": lambda: fl.internal_influence(x, t),
        "gradient_shap": lambda: fl.gradient_shap(x, b, t, SHAP["n_samples"], SHAP["stdevs"], gen),
        "neuron_gradient_shap": lambda: fl.neuron_gradient_shap(
            x, b, spec.neuron, SHAP["n_samples"], SHAP["stdevs"], gen, full_forward),
        "guided_backprop": lambda: fl.guided_backprop(x, t),
        "deconvolution": lambda: fl.deconvolution(x, t),
    }[method]


def _generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(SEED)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|a - ref| / max|ref|`` (absolute error when ``ref`` is all zeros)."""
    if a.shape != ref.shape:
        return math.inf
    scale = ref.abs().max().item()
    diff = (a.detach() - ref.detach()).abs().max().item()
    return diff / scale if scale > 0 else diff


def _set_check(c: Cand, out: Any, ref: Any, against: str) -> None:
    c.err = rel_err(out, ref)
    c.check = against
    c.ok = c.err <= TOL


# --------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable, number: int, device: torch.device) -> list[float]:
    """Seconds of each of ``number`` back-to-back calls (synchronized on CUDA)."""
    gc.collect()
    out = []
    for _ in range(number):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _alloc_events(prof: Any) -> list:
    tree = prof.profiler.kineto_results.experimental_event_tree()
    alloc = torch._C._profiler._EventType.Allocation
    out, stack = [], list(tree)
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == alloc and e.extra_fields.device.type == "cpu":
            out.append((e.start_time_ns, e.extra_fields.alloc_size, e.extra_fields.total_allocated))
    return sorted(out)


def peak_memory_mb(fn: Callable, device: torch.device) -> float | None:
    """Peak working memory of one call (see the module docs), in MiB."""
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    events = _alloc_events(prof)
    if not events:
        return 0.0
    _, size0, total0 = events[0]
    base = total0 - size0
    return (max(total for _, _, total in events) - base) / 2**20


def run_interleaved(cands: list[Cand], repeats: int, sample_s: float,
                    device: torch.device) -> None:
    """Calibrates calls per sample (about ``sample_s`` seconds, at least one call),
    then ``repeats`` rounds with one sample of every candidate per round, the
    first candidate of a round rotating. Every call is timed on its own."""
    live = [c for c in cands if c.fn is not None]
    for c in live:
        c.fn()  # warm
        one = min(time_calls(c.fn, 2, device))
        c.number = max(1, min(200, int(sample_s / max(one, 1e-6))))
    for r in range(repeats):
        k = r % len(live)
        for c in live[k:] + live[:k]:
            c.times.append(time_calls(c.fn, c.number, device))


def _compile_candidate(method: str, spec: ModelSpec, device: torch.device) -> Cand:
    layer = spec.layer if method in LAYER_METHODS else None
    compiled = fnattr.compile(getattr(fnattr, method), spec.model, layer)
    gen = _generator(device) if method in SAMPLED else None
    c = Cand(COMPILED, _fnattr(method, spec, compiled, gen, bound=True), gen)
    sync(device)
    t0 = time.perf_counter()
    c.first_out = c.fn()  # compiles
    sync(device)
    c.compile_s = time.perf_counter() - t0
    return c


# --------------------------------------------------------------------------- blocks
def method_block(method: str, spec: ModelSpec, fl: Floor, args: argparse.Namespace,
                 device: torch.device, compile_it: bool) -> dict:
    torch._dynamo.reset()  # one compiled function per block (see RESULTS.md, "findings")
    sampled = method in SAMPLED
    gens = {n: (_generator(device) if sampled else None) for n in (FLOOR, FLOOR_FULL, EAGER)}
    cands = [
        Cand(FLOOR, _floor(method, spec, fl, gens[FLOOR]), gens[FLOOR]),
        Cand(EAGER, _fnattr(method, spec, getattr(fnattr, method), gens[EAGER], False),
             gens[EAGER]),
        Cand(CAPTUM, _captum(method, spec)),
    ]
    if method in ("neuron_gradient", "neuron_gradient_shap"):
        cands.insert(1, Cand(FLOOR_FULL, _floor(method, spec, fl, gens[FLOOR_FULL], True),
                             gens[FLOOR_FULL]))
    if compile_it:
        try:
            cands.insert(len(cands) - 1, _compile_candidate(method, spec, device))
        except Exception as e:  # report, do not stop the suite
            c = Cand(COMPILED, None, ok=False)
            c.check = f"compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            cands.insert(len(cands) - 1, c)
    by = {c.name: c for c in cands}

    # --- checks, before any timing
    if not sampled:
        ref = by[CAPTUM].fn()
        for c in cands:
            if c.fn is not None:
                out = getattr(c, "first_out", None)
                _set_check(c, out if out is not None else c.fn(), ref, "Captum")
    else:
        with seeded(*CAPTUM_SEEDS):
            ref = by[CAPTUM].fn()
        paths = captum_paths(spec.inputs, spec.shap_baselines, SHAP["n_samples"],
                             SHAP["stdevs"], *CAPTUM_SEEDS)
        if method == "gradient_shap":
            on_captum_draws = fl.gradient_shap_paths(*paths, spec.target)
        else:
            on_captum_draws = fl.neuron_gradient_shap_paths(*paths, spec.neuron)
        _set_check(by[FLOOR], on_captum_draws, ref, "Captum, on Captum's replayed draws")
        if FLOOR_FULL in by:
            _set_check(by[FLOOR_FULL], fl.neuron_gradient_shap_paths(*paths, spec.neuron, True),
                       ref, "Captum, on Captum's replayed draws")
        by[CAPTUM].err, by[CAPTUM].check = 0.0, "itself (reference)"
        for c in cands:
            if c.gen is not None:
                c.gen.manual_seed(SEED)
        floor_out = by[FLOOR].fn()
        _set_check(by[EAGER], by[EAGER].fn(), floor_out, "floor, same generator seed")
        if COMPILED in by and by[COMPILED].fn is not None:
            _set_check(by[COMPILED], by[COMPILED].first_out, _reseeded(by[EAGER]),
                       "fnattr eager, same generator seed")
    if not sampled:
        by[CAPTUM].check = "itself (reference)"
    for c in cands:
        if hasattr(c, "first_out"):
            del c.first_out

    run_interleaved(cands, args.repeats, args.sample_s, device)
    if args.memory:
        for c in cands:
            if c.ok:
                c.mem_mb = peak_memory_mb(c.fn, device)
    return {"kind": "method", "method": method, "model": spec.key,
            "cands": [c.summary() for c in cands]}


def _reseeded(c: Cand) -> Any:
    c.gen.manual_seed(SEED)
    return c.fn()


def auto_chunk(spec: ModelSpec, k: int, budget: int = CHUNK_BUDGET) -> int:
    """``chunk_size`` for K one-hot backwards: the largest power of two whose
    chunk of cotangent rows keeps the activations between the input and the
    layer (all rows of the batch, measured once) under ``budget`` bytes, but
    at least ``CHUNK_MIN`` (and at most K). Tuned on this suite's first CPU run:
    all K at once was best on the MLP; 4 was best on both conv nets (64 at once
    was 7x slower than 4 on M, 8 was 1.3x slower; 2 was 1.2x slower on L)."""
    sizes: list[int] = []
    leaves = [m for m in spec.model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel() * o.element_size()))
             for m in leaves]
    try:
        with torch.no_grad():
            run_to(spec.model, spec.layer, spec.inputs)
    finally:
        for h in hooks:
            h.remove()
    per_row = spec.inputs.numel() * spec.inputs.element_size() + sum(sizes)
    c = 2 ** int(math.log2(max(1, budget // per_row)))
    return int(min(k, max(CHUNK_MIN, c)))


def fnattr_chunk(spec: ModelSpec, k: int) -> int:
    """The ``chunk_size`` fnattr's default (``None``) picks for K neurons of this
    model (``fnattr._engine._auto_chunk``, from the bytes the forward saves)."""
    import fnattr._engine as engine

    picked: list[int] = []
    real = engine._auto_chunk
    engine._auto_chunk = lambda *a: picked.append(real(*a)) or picked[-1]
    try:
        fnattr.neuron_gradient(spec.model, spec.layer, spec.inputs, spec.neurons(k))
    finally:
        engine._auto_chunk = real
    return picked[0] if picked else k


def many_block(spec: ModelSpec, fl: Floor, k: int, args: argparse.Namespace,
               device: torch.device, compile_it: bool) -> dict:
    from captum.attr import NeuronGradient

    torch._dynamo.reset()
    m, layer, x = spec.model, spec.layer, spec.inputs
    neurons = spec.neurons(k)
    auto = auto_chunk(spec, k)
    cap = NeuronGradient(m, layer)
    chosen = fnattr_chunk(spec, k)
    chunks = list(dict.fromkeys([None, k] + [c for c in args.chunks if c < k]))
    cands = [
        Cand("floor loop", lambda: fl.neuron_gradient_many(x, neurons, 1)),
        Cand(f"floor batched (chunk {auto})", lambda: fl.neuron_gradient_many(x, neurons, auto)),
        Cand("fnattr loop (K calls)",
             lambda: torch.stack([fnattr.neuron_gradient(m, layer, x, n) for n in neurons])),
    ]
    for c in chunks:
        name = (f"fnattr one-pass (default: chunk {chosen}, auto)" if c is None
                else f"fnattr one-pass (chunk {'all' if c == k else c})")
        cands.append(Cand(name, (lambda c=c: fnattr.neuron_gradient(
            m, layer, x, neurons, chunk_size=c))))
    if compile_it:
        # vmap's chunks are unrolled in the graph: compile time grows with K / chunk
        # (640 s for 32 chunks on L), so at most 4 chunks here.
        cc = max(auto, -(-k // 4))
        compiled = fnattr.compile(fnattr.neuron_gradient, m, layer)
        c = Cand(f"fnattr compiled one-pass (chunk {cc})",
                 lambda: compiled(x, neurons, chunk_size=cc))
        try:
            sync(device)
            t0 = time.perf_counter()
            c.first_out = c.fn()
            sync(device)
            c.compile_s = time.perf_counter() - t0
        except Exception as e:
            c.ok, c.fn = False, None
            c.check = f"compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        cands.append(c)
    cands.append(Cand("Captum loop (K calls)",
                      lambda: torch.stack([cap.attribute(x, n) for n in neurons])))
    ref = cands[-1].fn()
    for c in cands:
        if c.fn is not None:
            out = c.__dict__.pop("first_out", None)
            _set_check(c, out if out is not None else c.fn(), ref, "Captum loop")
    cands[-1].check = "itself (reference)"
    run_interleaved(cands, args.repeats, args.sample_s, device)
    if args.memory:
        for c in cands:
            if c.ok:
                c.mem_mb = peak_memory_mb(c.fn, device)
    return {"kind": "many", "method": "neuron_gradient", "model": spec.key, "k": k,
            "auto_chunk": chosen, "floor_chunk": auto, "cands": [c.summary() for c in cands]}


# --------------------------------------------------------------------------- RSS cross-check
def _rss_child(method: str, key: str, cand: str, device: str) -> None:
    """Runs in a fresh process: ``ru_maxrss`` growth over one call (KiB -> MiB)."""
    dev = torch.device(device)
    full = build(key, dev)
    small = build(key, dev)
    small.model = full.model
    small.inputs = full.inputs[:1]
    fl = Floor(full, N_STEPS)

    def make(spec: ModelSpec) -> Callable:
        gen = _generator(dev)
        if cand == FLOOR:
            return _floor(method, spec, fl, gen)
        if cand == EAGER:
            return _fnattr(method, spec, getattr(fnattr, method), gen, False)
        return _captum(method, spec)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make(small)()  # lazy library initialisation on a 1-example batch
        fn = make(full)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM)
        r0 = _status_kib("VmRSS")
        out = fn()
        r1 = _status_kib("VmHWM")
    del out
    print(json.dumps({"rss_mb": (r1 - r0) / 1024}))


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def rss_mb(method: str, key: str, cand: str, device: str) -> float | None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--rss-child", method, key, cand,
         "--device", device], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)["rss_mb"]
    print(f"  rss child failed: {proc.stderr[-500:]}", file=sys.stderr)
    return None


# --------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "fnattr"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        commit += " (fnattr/ modified)" if dirty else ""
    except OSError:
        commit = "unknown"
    import captum

    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
        "captum": captum.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "device": str(device), "commit": commit,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3])
        if Path("/proc/loadavg").exists() else "n/a",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="S model only, 3 repeats, compile one method, K=16 only (< 2 min)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS))
    p.add_argument("--repeats", type=int, default=None, help="samples per candidate")
    p.add_argument("--k", nargs="*", type=int, default=None,
                   help="neuron counts for the many-neurons part (none: skip it)")
    p.add_argument("--chunks", nargs="*", type=int, default=[4],
                   help="extra chunk_size values for the one-pass call (besides all and auto)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-methods", nargs="*", default=None, choices=METHODS,
                   help="methods to compile (default: all; --quick: neuron_gradient)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="measure peak memory (default: on; off with --quick)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default)")
    p.add_argument("--rss", action="store_true",
                   help="cross-check internal influence memory on M/L by peak RSS (VmHWM) "
                        "growth in a fresh subprocess per candidate (Linux)")
    p.add_argument("--sample-s", type=float, default=None,
                   help="target seconds per timing sample (calls per sample are calibrated)")
    p.add_argument("--out", default=None,
                   help="RESULTS.md path (default benchmarks/RESULTS.md; with --quick a "
                        "temporary directory, so a smoke run never overwrites the full results)")
    p.add_argument("--png", default=None, help="ratios plot (default: next to --out)")
    p.add_argument("--rss-child", nargs=3, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.methods = a.methods or list(METHODS)
    a.models = a.models or (["S"] if a.quick else list(MODELS))
    a.repeats = a.repeats or (3 if a.quick else 5)
    a.sample_s = a.sample_s or (0.01 if a.quick else 0.05)
    if a.memory is None:
        a.memory = not a.quick
    if a.k is None:
        a.k = [16] if a.quick else [16, 64]
    if a.compile_methods is None:
        a.compile_methods = ["neuron_gradient"] if a.quick else list(METHODS)
    if a.no_compile:
        a.compile_methods = []
    if a.out:
        a.out = Path(a.out)
    elif a.quick:  # never overwrite the committed full results with a smoke run
        import tempfile

        a.out = Path(tempfile.mkdtemp(prefix="fnattr-bench-quick-")) / "RESULTS.md"
    else:
        a.out = Path(__file__).resolve().parent / "RESULTS.md"
    a.png = Path(a.png) if a.png else a.out.with_name("ratios.png")
    return a


def _cold_compile_setup(cache_dir: str) -> float:
    """Disables the on-disk compile caches (compile times are cold) and warms
    inductor's one-time process start-up on a trivial function; returns that time."""
    import torch._functorch.config as fconfig
    import torch._inductor.config as iconfig

    # A fresh inductor cache directory: compiled C++ kernels from earlier runs
    # (kept under /tmp/torchinductor_<user> by default) would make "cold" warm.
    # main() removes it when the run ends.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    iconfig.fx_graph_cache = False
    fconfig.enable_autograd_cache = False
    t0 = time.perf_counter()
    torch.compile(lambda t: (t * 2).sum(), fullgraph=True)(torch.ones(3))
    torch._dynamo.reset()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    import shutil
    import tempfile

    cache_dir = tempfile.mkdtemp(prefix="fnattr-bench-inductor-")
    try:
        return _main(argv, cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _main(argv: list[str] | None, cache_dir: str) -> dict:
    args = parse(argv)
    if args.rss_child:
        _rss_child(*args.rss_child, args.device)
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")  # Captum's own warnings (hooks on ReLU, etc.)
    t_start = time.perf_counter()
    info = machine_info(device)
    info["default_threads"] = default_threads
    info["command"] = "python -m benchmarks.run" + ("" if argv is None and len(sys.argv) <= 1
                                                    else " " + " ".join(sys.argv[1:] if argv is None else argv))
    info["startup_compile_s"] = _cold_compile_setup(cache_dir) if args.compile_methods else None
    print(f"# {info['command']}  ({info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"{info['threads']} threads, load {info['load']})", flush=True)
    blocks = []
    for key in args.models:
        spec = build(key, device)
        fl = Floor(spec, N_STEPS)
        for method in args.methods:
            t0 = time.perf_counter()
            b = method_block(method, spec, fl, args, device, method in args.compile_methods)
            blocks.append(b)
            _print_block(b, time.perf_counter() - t0)
        if "neuron_gradient" in args.methods:
            for k in args.k:
                t0 = time.perf_counter()
                b = many_block(spec, fl, k, args, device, "neuron_gradient" in args.compile_methods)
                blocks.append(b)
                _print_block(b, time.perf_counter() - t0)
    rss = {}
    if args.rss and "internal_influence" in args.methods:
        for key in [k for k in args.models if k in ("M", "L")]:
            for cand in (FLOOR, EAGER, CAPTUM):
                rss[f"{key}|{cand}"] = rss_mb("internal_influence", key, cand, args.device)
                print(f"  rss internal_influence {key} {cand}: {rss[f'{key}|{cand}']}", flush=True)
    info["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3]) \
        if Path("/proc/loadavg").exists() else "n/a"
    info["wall_s"] = time.perf_counter() - t_start
    results = {"info": info, "blocks": blocks, "rss": rss,
               "settings": {"n_steps": N_STEPS, "shap": SHAP, "tol": TOL, "repeats": args.repeats,
                            "sample_s": args.sample_s, "chunk_budget": CHUNK_BUDGET}}
    from .report import write_report

    write_report(results, args.out, args.png)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"# wrote {args.out}, {args.png} in {info['wall_s']:.0f} s", flush=True)
    return results


def _print_block(b: dict, wall: float) -> None:
    head = f"{b['method']} {b['model']}" + (f" K={b['k']}" if b["kind"] == "many" else "")
    print(f"{head}  ({wall:.1f} s)", flush=True)
    for c in b["cands"]:
        med = (f"{c['median'] * 1e3:9.3f} ms (min {c['min'] * 1e3:.3f})"
               if c["median"] is not None else "   (not timed)")
        comp = f" compile {c['compile_s']:.1f} s" if c["compile_s"] else ""
        mem = f" mem {c['mem_mb']:.1f} MiB" if c["mem_mb"] is not None else ""
        err = f" err {c['err']:.1e}" if c["err"] is not None else ""
        bad = "" if c["ok"] else f"  FAILED CHECK ({c['check']}), timed for information only"
        print(f"   {c['name']:<38} {med}{err}{mem}{comp}{bad}", flush=True)


if __name__ == "__main__":
    main()
