"""The memory probe: the peak working memory of one small block, measured once.

:func:`measure` runs a block of two rows under ``torch.profiler``'s allocator
events (:func:`_peak`) and caches its :class:`Cost` per key; the key is built
from :func:`fingerprint` (objects by id, tensors by shape, dtype and device)
and :func:`closure_key`. :mod:`fnattr._budget` plans the blocks from it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ._functional import Functional
from ._objectives import Objective
from ._taps import Site

__all__ = ["Cost", "measure", "fingerprint", "closure_key"]

# Bytes per row assumed, per saved byte, when a probe cannot run (a profiler
# is already active): the largest ratio measured on the benchmark models.
SAVED_FACTOR = 40


@dataclass(frozen=True)
class Cost:
    """Measured bytes per row: ``row`` working memory with one backward row at a
    time, ``k_row`` more for each further row of a K chunk, ``out`` of result."""

    row: int
    k_row: int = 0
    out: int = 0


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
