"""Memory budgets: how many expanded rows one block of a call may hold.

Methods that expand the batch (``n_steps`` path points, ``n_samples`` draws,
K neurons or targets) run it in blocks of rows; a row is one (point, example)
pair fed to the model. Under a byte budget the planner here decides the block
size (and the K chunk of the vectorized backward) from a **probe**
(:mod:`fnattr._probe`): the peak working memory of one block of two rows,
measured once with the allocator events of ``torch.profiler`` and cached per
(model, layer, method site, input shapes, dtype, device). Splitting never changes the result (the blocks
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

import numbers
import re
import threading
from typing import Any, Callable

import torch
from torch import Tensor

from ._objectives import Objective
from ._probe import Cost, closure_key, fingerprint, measure

__all__ = ["memory_budget", "parse", "resolve", "plan", "chunk_cap", "chunk_limit",
           "path_plan", "planned", "block_rows", "cpu_split"]

# Rows per block on CPU with no budget: IG and internal influence on the S, M
# and L benchmark models were within 8% of their fastest internal batch size
# at 128 rows (the whole expanded batch was up to 2.2x slower on M).
CPU_ROWS = 128
# ... and, when a probe measured the rows, at most this many bytes per block:
# IG on L (8.7 MB a row) was fastest at 32-64 rows and 1.1-1.4x slower at 128.
CPU_BLOCK_BYTES = 512 * 2**20
# ... but an expanded batch whose inputs take at most this many bytes runs whole:
# splitting it only adds per-block overhead. Measured (internal influence, 50 steps,
# 1 thread, medians / minima): S MLP (1,600 rows of 3 KiB, 5 MB) whole 13.7 ms min vs
# 15.5 in blocks of 128, 1.0x vs 1.4-1.6x the one-batch floor in benchmarks.run; M
# (800 rows of 12 KiB, 9.8 MB) and L (400 of 48 KiB, 19.6 MB) stay split (whole:
# 1.6x and 1.2x slower than 128-row blocks).
CPU_SMALL_BYTES = 8 * 2**20
# The methods evaluated at the inputs themselves (gradient, neuron gradient, the
# rule methods) follow the same rule for a large batch (`cpu_split`): fnattr.gradient
# on 3,200 rows of M took 1.05 s in 128-row blocks vs 2.21 s whole (Captum 2.21 s),
# 1,600 rows of L 2.08 s vs 5.08 s (Captum 4.90 s); blocks of 32-256 rows within 10%.
# Share of the free CUDA memory an automatic budget takes.
CUDA_FRACTION = 0.5

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
            big = cpu_split(inputs, s * n, per_point)
            return _split((CPU_ROWS if big else None), None)
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
    return _split((None if r >= s * n else r), (None if c >= k else c))


def _split(rows: int | None, chunk: int | None) -> tuple[int | None, int | None]:
    """The plan's exit: in planning mode (:func:`planned`) it is raised to the caller."""
    if _LOCAL.planning:
        raise _Planned((rows, chunk))
    return rows, chunk


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


def cpu_split(inputs: tuple, rows: int | None = None, per_point: bool = False) -> bool:
    """Whether the automatic CPU plan splits ``rows`` expanded rows of ``inputs``
    (default: the inputs' own batch) into :data:`CPU_ROWS`-row blocks: more rows
    than that, taking more than :data:`CPU_SMALL_BYTES`."""
    if rows is None:
        rows = next(t for t in inputs if isinstance(t, Tensor)).shape[0]
    return rows > CPU_ROWS and rows * _row_bytes(inputs, per_point) > CPU_SMALL_BYTES


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
