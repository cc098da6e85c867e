"""Memory budgets: how many expanded rows one block of a call may hold.

Methods that expand the batch (``n_steps`` path points, ``n_samples`` draws,
K neurons or targets) run it in blocks of rows; a row is one (point, example)
pair fed to the model. Under a byte budget the planner here decides the block
size (and the K chunk of the vectorized backward) from a **probe**: the peak
working memory of one block of two rows, measured once with the allocator
events of ``torch.profiler`` and cached per (model, layer, method site,
input shapes, dtype, device). Splitting never changes the result (the blocks
are summed), only memory and time.

Budgets are bytes: an int, or a string with a binary (``KiB``, ``MiB``,
``GiB``, ``TiB``) or decimal (``kB``, ``MB``, ``GB``, ``TB``) unit, e.g.
``"512MiB"``, ``"1.5GB"``. ``None`` is automatic: on CUDA half the free
device memory at call time; on CPU a block of :data:`CPU_ROWS` rows, the
fastest size measured on this project's models (benchmarks/RESULTS.md,
"Memory budget"), without a probe; on CPU a budget never makes blocks larger
than that either (only slower). An explicit ``internal_batch_size`` or
``chunk_size`` wins over any budget.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import re
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ._functional import Functional
from ._objectives import Objective
from ._taps import Site

__all__ = ["memory_budget", "parse", "resolve", "Cost", "plan", "measure", "chunk_cap",
           "chunk_limit", "path_plan", "planned", "block_rows"]

# Rows per block on CPU with no budget: IG and internal influence on the S, M
# and L benchmark models were within 8% of their fastest internal batch size
# at 128 rows (the whole expanded batch was up to 2.2x slower on M).
CPU_ROWS = 128
# ... and, when a probe measured the rows, at most this many bytes per block:
# IG on L (8.7 MB a row) was fastest at 32-64 rows and 1.1-1.4x slower at 128.
CPU_BLOCK_BYTES = 512 * 2**20
# ... but an expanded batch whose inputs take at most this many bytes runs whole:
# splitting it only adds per-block overhead (IG/internal influence with 8 steps on
# the S MLP: 256 rows of 3 KiB, 3-13% slower in two blocks of 128).
CPU_SMALL_BYTES = 2**20
# Share of the free CUDA memory an automatic budget takes.
CUDA_FRACTION = 0.5
# Bytes per row assumed, per saved byte, when a probe cannot run (a profiler
# is already active): the largest ratio measured on the benchmark models.
SAVED_FACTOR = 40

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)


class _Local(threading.local):
    """Per-thread state: the context budgets, the K-chunk cap, planning mode."""

    def __init__(self) -> None:
        self.budgets: list = []
        self.chunk: int | None = None
        self.planning = False


_LOCAL = _Local()


def parse(budget: Any, name: str = "memory_budget") -> int | None:
    """A budget in bytes from an int, a size string or ``None`` (kept)."""
    if budget is None:
        return None
    if isinstance(budget, str):
        match = _SIZE.fullmatch(budget)
        if match is None:
            raise ValueError(
                f"`{name}` must be a number of bytes or a size such as '512MiB', "
                f"'2GiB' or '1.5GB', got {budget!r}")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    elif isinstance(budget, numbers.Integral) and not isinstance(budget, bool):
        value = int(budget)
    else:
        raise TypeError(f"`{name}` must be an int, a size string or None, "
                        f"got {type(budget).__name__}")
    if value <= 0:
        raise ValueError(f"`{name}` must be positive, got {budget!r}")
    return value


def _stack() -> list:
    return _LOCAL.budgets


class memory_budget:
    """Context manager: the default ``memory_budget`` of the calls inside it.

    Applies to every fnattr method that expands the batch (path points,
    samples, K neurons or targets) called in this thread inside the block;
    an explicit ``memory_budget=`` argument still wins. Blocks nest (the
    innermost wins) and the previous default comes back on exit, also when
    the body raises. Other threads are unaffected.

    Args:
        budget: bytes (an int) or a size string (``"512MiB"``, ``"2GiB"``,
            ``"1.5GB"``); ``None`` restores the automatic choice inside.

    Returns:
        The context manager.

    Example:
        {digits}
        >>> with fnattr.memory_budget("64MiB"):  # the default of the calls inside
        ...     attr = fnattr.integrated_gradients(model, x, target=labels, n_steps=16)
        >>> torch.allclose(attr, fnattr.integrated_gradients(model, x, target=labels,
        ...                                                  n_steps=16), atol=1e-5)
        True
    """

    def __init__(self, budget: int | str | None) -> None:
        self.budget = parse(budget)

    def __enter__(self) -> "memory_budget":
        _stack().append(self.budget)
        return self

    def __exit__(self, *exc: Any) -> None:
        _stack().pop()


def resolve(budget: Any) -> int | None:
    """The call's budget: its own argument, else the innermost context's, else None."""
    if budget is not None:
        return parse(budget)
    stack = _stack()
    return stack[-1] if stack else None


def automatic(device: torch.device) -> int | None:
    """The automatic budget: a share of the free CUDA memory; None elsewhere."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FRACTION)
    return None


def chunk_cap() -> int | None:
    """The K-chunk limit the planner set for the block running in this thread."""
    return _LOCAL.chunk


class chunk_limit:
    """Context manager: K chunks of at most ``cap`` rows in this thread
    (``None``: leaves the state alone, so compiled code never touches it)."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap

    def __enter__(self) -> None:
        if self.cap is not None:
            self.saved = _LOCAL.chunk
            _LOCAL.chunk = self.cap

    def __exit__(self, *exc: Any) -> None:
        if self.cap is not None:
            _LOCAL.chunk = self.saved


@dataclass(frozen=True)
class Cost:
    """Measured bytes per row: ``row`` working memory with one backward row at a
    time, ``k_row`` more for each further row of a K chunk, ``out`` of result."""

    row: int
    k_row: int = 0
    out: int = 0


def plan(budget: int, cost: Cost, rows: int, k: int = 1, outside: int = 0,
         after: int = 0) -> tuple[int, int]:
    """``(rows per block, K chunk)`` whose working memory fits ``budget``.

    ``outside`` is memory the call holds besides the block (its result, drawn
    paths); ``after`` what the method needs on top of it once the blocks are
    done (its final reduction). Raises ``ValueError`` when not even one row
    with one backward row fits.
    """
    avail = budget - outside
    if avail < max(cost.row, after):
        raise ValueError(
            f"`memory_budget` {_fmt(budget)} is too small: one row needs {_fmt(cost.row)}"
            + (f" besides {_fmt(outside + after)} for the result and paths"
               if outside + after else "")
            + f", so at least {_fmt(max(cost.row, after) + outside)}")
    r = max(1, min(rows, avail // cost.row))
    if k <= 1 or cost.k_row <= 0:
        return r, k
    c = min(k, 1 + (avail // r - cost.row) // cost.k_row)
    return r, max(1, c)


def _fmt(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n} bytes)"


# Probe cache: key -> (weak references to the objects the key names by id, Cost)
_CACHE: dict[tuple, tuple[tuple, Cost]] = {}
_CACHE_SIZE = 256


def measure(probe: Callable[[int], tuple[int, int]], key: tuple, refs: list, k: int,
            device: str = "cpu") -> Cost:
    """The :class:`Cost` of one small block, probed once per ``key``.

    ``probe(k_chunk)`` runs the block and returns ``(rows, result bytes per
    row)``. ``refs`` are the objects ``key`` holds by id (model, layer): an
    entry is reused only while they are alive and the same.
    """
    hit = _CACHE.get(key)
    if hit is not None and all(r() is o for r, o in zip(hit[0], refs)):
        return hit[1]
    box: list = []
    base = _peak(lambda: box.append(probe(1)), device)
    if base is None:
        cost = _estimate(probe, k)
    else:
        rows, out = box[0]
        k_row = 0
        if k > 1:
            k_row = max(0, (_peak(lambda: probe(2), device) - base) // rows)
        cost = Cost(row=max(1, -(-base // rows)), k_row=k_row, out=out)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (tuple(_weak(o) for o in refs), cost)
    return cost


def _weak(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:  # not weak-referenceable: held (the cache is bounded)
        return lambda: obj


@contextlib.contextmanager
def _without_profiler_log() -> Any:
    """Drops the two lines torch's profiler (kineto, torch 2.13) prints on the C++
    stderr at every start and stop (``USDT: ... profiler_start``/``profiler_stop``):
    file descriptor 2 goes to a temporary file while the probe runs, and what
    else was written there meanwhile is passed on when it ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = b"".join(line for line in tmp.read().splitlines(keepends=True)
                            if b"SyncActivityProfilerHandler" not in line)
            if rest:
                os.write(2, rest)


def _peak(fn: Callable[[], Any], device: str = "cpu") -> int | None:
    """Peak bytes allocated on ``device`` (net of frees) while ``fn`` runs, from the
    profiler's allocation events (their running allocator totals); None when a
    profiler is already active (profilers do not nest)."""
    if torch._C._autograd._profiler_enabled():
        return None
    from torch.profiler import ProfilerActivity, profile

    with _without_profiler_log(), \
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    alloc = torch._C._profiler._EventType.Allocation
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == alloc and e.extra_fields.device.type == device:
            f = e.extra_fields
            events.append((e.start_time_ns, f.alloc_size, f.total_allocated))
    if not events:
        return 0
    events.sort()
    base = events[0][2] - events[0][1]
    return max(total for _, _, total in events) - base


def _estimate(probe: Callable[[int], tuple[int, int]], k: int) -> Cost:
    """Fallback without the profiler: the forward's saved bytes times SAVED_FACTOR."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rows, out = probe(1)
    row = max(1, SAVED_FACTOR * sum(seen.values()) // rows)
    return Cost(row=row, k_row=row if k > 1 else 0, out=out)


def fingerprint(obj: Any, refs: list) -> Any:
    """A hashable summary of a value for the probe cache key: objects by id
    (appended to ``refs``), tensors by shape/dtype/device, containers by length."""
    if isinstance(obj, Tensor):
        return ("T", tuple(obj.shape), obj.dtype, obj.device.type)
    if isinstance(obj, Functional):  # a new value per call: its model, rule and detach
        return ("F", fingerprint(obj.model, refs), obj.rule, obj.detach)
    if isinstance(obj, Objective):
        return ("O", obj.k, obj.squeeze, obj.reads_layer, fingerprint(obj.targets, refs))
    if isinstance(obj, Site):
        return ("S", fingerprint(obj.layer, refs), obj.input_side)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, len(obj))
    if callable(obj):
        refs.append(obj)
        return ("id", id(obj))
    if hasattr(obj, "__len__"):  # fnattr.each(...): its K
        return (type(obj).__name__, len(obj))
    return type(obj).__name__


def closure_key(fn: Callable, refs: list) -> tuple:
    """``fn``'s code and a fingerprint of what its closure holds (its model, layer,
    selectors): two calls of one method on one model share a key."""
    cells = tuple(fingerprint(c.cell_contents, refs) for c in fn.__closure__ or ()
                  if _filled(c))
    return (fn.__code__, cells)


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def path_plan(run: Callable, grad_fn: Callable, budget: Any, inputs: tuple, baselines: tuple,
              alphas: Tensor, target: Any, args: tuple,
              flags: tuple) -> tuple[int | None, int | None]:
    """``(internal_batch_size, K chunk)`` for :func:`fnattr.path_average` (None: unsplit /
    the engine's choice). ``run(block)`` computes one ``(s0, s1, n0, n1)`` block."""
    from ._engine import transforms_active  # the engine imports this module

    if transforms_active():  # decided outside the graph (fnattr.compile resolves it)
        return None, None
    budget = resolve(budget)
    s, per_point = alphas.shape[0], alphas.dim() == 2
    ref = next(t for t in inputs if isinstance(t, Tensor))
    n = ref.shape[int(per_point)]
    if budget is None:
        budget = automatic(ref.device)
        if budget is None:
            big = s * n > CPU_ROWS and s * n * _row_bytes(inputs, per_point) > CPU_SMALL_BYTES
            return (CPU_ROWS if big else None), None
    stacked, _, reduce = flags
    if isinstance(target, Objective):  # fnattr's objectives carry their K
        stacked = not target.squeeze
        flags = (stacked, *flags[1:])
        k = 1 if target.squeeze else (len(target.targets) if target.targets else 1 << 30)
    else:
        k = len(target) if hasattr(target, "__len__") and stacked else (1 << 30 if stacked else 1)
    refs: list = []
    row_shape = lambda t: fingerprint(t[(0,) * (1 + per_point)], refs) \
        if isinstance(t, Tensor) and t.dim() > per_point else fingerprint(t, refs)
    key = (closure_key(grad_fn, refs), flags, per_point, fingerprint(target, refs),
           tuple(row_shape(t) for t in (*inputs, *baselines, *args)))
    block = (0, 1, 0, 2) if n >= 2 else (0, min(s, 2), 0, 1)

    def probe(chunk: int) -> tuple[int, int]:
        with chunk_limit(chunk):
            part = run(block)
        units = (block[3] - block[2]) * (1 if reduce else block[1] - block[0])
        return (block[1] - block[0]) * (block[3] - block[2]), \
            sum(p.numel() * p.element_size() for p in part) // units

    cost = measure(probe, key, refs, k, ref.device.type)
    # The result; a second copy when it is accumulated out of place (it stays
    # differentiable). Kept per point, the method reduces it after the blocks
    # with up to half its size more (layer conductance's differences).
    result = cost.out * n * (1 if reduce else s)
    kept = any(isinstance(t, Tensor) and t.requires_grad for t in inputs)
    outside = result * (2 if kept else 1)
    if per_point:  # drawn paths the call materialized
        outside += sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                        for t in (*inputs, *baselines) if isinstance(t, Tensor)}.values())
    r, c = plan(budget, cost, s * n, k, outside, 0 if reduce else result // 2)
    r = _fast(r, ref.device, cost.row)
    split = (None if r >= s * n else r), (None if c >= k else c)
    if _LOCAL.planning:
        raise _Planned(split)
    return split


class _Planned(BaseException):
    """Raised by :func:`path_plan` in planning mode, carrying the split."""

    def __init__(self, split: tuple[int | None, int | None]) -> None:
        self.split = split


def planned(call: Callable[[], Any]) -> tuple[int | None, int | None]:
    """The ``(internal_batch_size, K chunk)`` an eager ``call`` would use, found by
    running it up to its plan (after the probe, before any block): how
    :func:`fnattr.compile` decides the split outside the graph."""
    _LOCAL.planning = True
    try:
        call()
    except _Planned as done:
        return done.split
    finally:
        _LOCAL.planning = False
    return None, None


def block_rows(budget: Any, run: Callable[[int], Any], key: tuple, refs: list, rows: int,
               device: torch.device, outside: int = 0) -> int | None:
    """Rows per block for an expansion of ``rows`` rows under ``budget`` (the
    argument, else the context's, else automatic); ``None``: all at once.

    For expansions outside :func:`fnattr.path_average` (noise tunnel): ``run(r)``
    computes a block of ``r`` rows and returns its result (a tensor or a tuple
    of tensors); the probe runs it once with two rows (cached per ``key``,
    whose objects held by id are ``refs``). The results of all blocks count
    against the budget, as does ``outside``.
    """
    budget = resolve(budget)
    if budget is None:
        budget = automatic(device)
        if budget is None:
            return CPU_ROWS if rows > CPU_ROWS else None
    two = min(rows, 2)

    def probe(_chunk: int) -> tuple[int, int]:
        out = run(two)
        out = out if isinstance(out, tuple) else (out,)
        return two, sum(t.numel() * t.element_size() for t in out if isinstance(t, Tensor)) // two

    cost = measure(probe, key, refs, 1, device.type)
    r, _ = plan(budget, cost, rows, 1, outside + cost.out * rows)
    r = _fast(r, device, cost.row)
    return None if r >= rows else r


def _row_bytes(inputs: tuple, per_point: bool) -> int:
    """Bytes of one row of the (expanded) inputs."""
    return sum(t[(0,) * (1 + per_point)].numel() * t.element_size()
               for t in inputs if isinstance(t, Tensor) and t.dim() > per_point)


def _fast(rows: int, device: torch.device, row_bytes: int) -> int:
    """On CPU, blocks beyond :data:`CPU_ROWS` rows or :data:`CPU_BLOCK_BYTES`
    only cost time (cache misses): a budget bounds the block, the speed rule caps it."""
    if device.type != "cpu":
        return rows
    return max(1, min(rows, CPU_ROWS, CPU_BLOCK_BYTES // max(1, row_bytes)))
