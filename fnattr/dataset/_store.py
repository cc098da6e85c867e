"""The Zarr v3 layout of a dataset run: arrays, completeness marks, configuration.

A store holds ``attributions`` (N, ...) chunked along the example axis,
``target`` (N,) and ``delta`` (N,) or (N, n_samples) when the method has a
convergence delta, all with the same example chunking, plus ``complete``
(n_chunks,) booleans, one per zarr chunk, so that no two processes ever write
the same file. Chunk ``k`` of the data is written first and ``complete[k]``
after it: a chunk marked complete is whole, whatever moment a run was killed.
The group's attributes hold ``fnattr``: the configuration (compared on resume),
the chunk length and the versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CHUNK_BYTES", "chunk_length", "fingerprint", "closed_modules", "describe", "create",
           "open_run",
           "check_config", "missing_chunks", "write_chunk"]

if TYPE_CHECKING:  # zarr is imported by the functions that use it (not at `import fnattr`)
    import zarr

CHUNK_BYTES = 4 << 20  # target size of one uncompressed chunk of attributions
MAX_CHUNK = 1024


def chunk_length(n: int, example_bytes: int) -> int:
    """Examples per chunk: about :data:`CHUNK_BYTES`, and at least 16 chunks when N
    allows it (so that processes share the work); independent of world and batch size."""
    by_size = max(1, CHUNK_BYTES // max(1, example_bytes))
    return max(1, min(by_size, MAX_CHUNK, math.ceil(n / 16)))


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    h.update(t.numpy().tobytes())


def fingerprint(model: Any) -> str:
    """sha256 of a model's named parameters and buffers (values, dtypes, shapes); for
    a forward function, its name and the weights of the modules it reaches
    (:func:`closed_modules`: ``lambda ids: model(ids).logits`` hashes ``model``)."""
    h = hashlib.sha256()
    modules = [model] if isinstance(model, nn.Module) else closed_modules(model)
    if not isinstance(model, nn.Module):
        h.update(getattr(model, "__qualname__", type(model).__qualname__).encode())
    for module in modules:
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            h.update(name.encode())
            _hash_tensor(h, t)
    return h.hexdigest()[:32]


def closed_modules(fn: Any, depth: int = 3) -> list[nn.Module]:
    """The ``nn.Module`` objects a forward function reaches: through its closure,
    the globals its code names, a bound method's ``__self__`` and a
    ``functools.partial``'s function and arguments (``depth`` levels deep), in
    the order found, each once."""
    found: list[nn.Module] = []
    seen: set[int] = set()

    def visit(obj: Any, left: int) -> None:
        if id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.append(obj)
            return
        if isinstance(obj, functools.partial):
            for part in (obj.func, *obj.args, *obj.keywords.values()):
                visit(part, left - 1)
            return
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(obj, type):
            visit(owner, left - 1)
        code = getattr(obj, "__code__", None)
        if code is None:
            return
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                visit(cell.cell_contents, left - 1)
            except ValueError:  # an empty cell
                pass
        names = getattr(obj, "__globals__", {})
        for name in code.co_names:
            if name in names:
                visit(names[name], left - 1)

    visit(fn, depth)
    return found


def describe(value: Any) -> Any:
    """A JSON value standing for an argument (tensors by shape, dtype and hash)."""
    if isinstance(value, Tensor):
        h = hashlib.sha256()
        _hash_tensor(h, value)
        return f"tensor{tuple(value.shape)}:{str(value.dtype)[6:]}:{h.hexdigest()[:16]}"
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items())}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):
        return f"callable:{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    return repr(value)


def create(out: Any, config: dict, shapes: dict, n: int, chunk: int, overwrite: bool,
           meta: dict) -> zarr.Group:
    """Creates the group and its arrays (rank 0 only). ``shapes`` maps an array name to
    ``(shape per example, numpy dtype)``."""
    import zarr

    group = zarr.open_group(out, mode="w" if overwrite else "a", zarr_format=3)
    group.attrs["fnattr"] = {"config": config, "chunk": chunk, **meta}
    for name, (shape, dtype) in shapes.items():
        dims = ("example", *(f"{name}_{d}" for d in range(1, len(shape) + 1)))
        group.create_array(name, shape=(n, *shape), chunks=(chunk, *shape), dtype=dtype,
                           fill_value=0, dimension_names=dims, overwrite=True)
    n_chunks = math.ceil(n / chunk)
    group.create_array("abort", shape=(1,), chunks=(1,), dtype="int32", fill_value=-1,
                       dimension_names=("abort",),
                       overwrite=True)  # the rank that failed, -1 while none has
    # last: a store without `complete` is one whose creation was cut short
    group.create_array("complete", shape=(n_chunks,), chunks=(1,), dtype=bool,
                       fill_value=False, dimension_names=("chunk",), overwrite=True)
    return group


def open_run(out: Any) -> zarr.Group | None:
    """The existing run at ``out``, or ``None`` when there is none."""
    import zarr

    try:
        group = zarr.open_group(out, mode="r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    if "fnattr" in group.attrs:  # without `complete`: created in part, nothing computed
        return group if "complete" in group else None
    if any(True for _ in group.keys()):
        raise ValueError(f"`out` {out!r} holds a Zarr group not written by fnattr; pass "
                         "overwrite=True to replace it")
    return None


def check_config(stored: dict, config: dict) -> None:
    """Raises a ValueError naming every entry where ``config`` differs from ``stored``."""
    stored = json.loads(json.dumps(stored))
    config = json.loads(json.dumps(config))
    keys = sorted(set(stored) | set(config))
    diff = [f"{k} (stored {stored.get(k)!r}, now {config.get(k)!r})"
            for k in keys if stored.get(k) != config.get(k)]
    if diff:
        raise ValueError("`out` holds a run with a different configuration: "
                         + "; ".join(diff) + "; pass overwrite=True to replace it or "
                         "write to another store")


def missing_chunks(group: zarr.Group) -> list[int]:
    """Indices of the chunks not marked complete."""
    return [int(k) for k in np.flatnonzero(~group["complete"][:])]


def write_chunk(group: zarr.Group, k: int, chunk: int, arrays: dict[str, np.ndarray]) -> None:
    """Writes chunk ``k`` of every array, then marks it complete (in that order)."""
    start = k * chunk
    for name, values in arrays.items():
        group[name][start:start + len(values)] = values
    group["complete"][k] = True
