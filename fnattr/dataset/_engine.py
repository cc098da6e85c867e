"""The loop of a dataset run: batches of owned chunks in, chunks out through a writer thread."""

from __future__ import annotations

import copy
import dataclasses
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import _engine as _fn_engine
from . import _store
from ._data import Items, collate

if TYPE_CHECKING:  # zarr is imported by the functions that use it (not at `import fnattr`)
    import zarr

__all__ = ["example_generator", "per_example_draw", "batches", "Writer", "run_chunks"]


def example_generator(seed: int, i: int) -> torch.Generator:
    """The generator of example ``i``: its state depends only on ``(seed, i)``."""
    state = np.random.SeedSequence([seed, i]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def per_example_draw(draw: Callable, seed: int, indices: list[int]) -> Callable:
    """A catalog ``draw`` that draws every example alone from :func:`example_generator`
    and concatenates the paths along the example axis, so that example ``i``'s draws
    are the same in any batch."""

    def drawn(a: dict) -> tuple:
        x = a["inputs"]
        parts = [draw({**a, "inputs": x[j:j + 1], "generator": example_generator(seed, i)})
                 for j, i in enumerate(indices)]
        ends = tuple(torch.cat(e, 1) for e in zip(*(p[2][0] for p in parts)))
        starts = tuple(torch.cat(s, 1) for s in zip(*(p[2][1] for p in parts)))
        alphas = torch.cat([p[2][2] for p in parts], 1)
        return (x,), parts[0][1], (ends, starts, alphas)

    return drawn


def batches(owned: list[int], chunk: int, n: int, batch_size: int) -> list[tuple[int, list]]:
    """``(chunk, indices)`` per batch; a batch never spans two chunks."""
    out = []
    for k in owned:
        idx = list(range(k * chunk, min(n, (k + 1) * chunk)))
        out += [(k, idx[s:s + batch_size]) for s in range(0, len(idx), batch_size)]
    return out


class Writer:
    """A background thread writing finished chunks (bounded queue: the loop waits when
    the writer is ``depth`` chunks behind, so memory stays bounded)."""

    def __init__(self, group: zarr.Group, chunk: int, depth: int = 2) -> None:
        self.group, self.chunk, self.error = group, chunk, None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._loop, name="fnattr-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    _store.write_chunk(self.group, item[0], self.chunk, item[1])
                except BaseException as e:  # re-raised in the loop's thread
                    self.error = e

    def put(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        self._raise()
        self.queue.put((k, arrays))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing to the store failed: {self.error}") from self.error


def targets(spec: Any, model: Callable, x: Tensor, y: Tensor | None) -> Tensor | None:
    if spec is None:
        return None
    if spec == "label":
        if y is None:
            raise ValueError("`target`='label' but the items of `data` have no labels "
                             "(pass target='pred', an int or None)")
        return y.to(x.device)
    if spec == "pred":
        with torch.no_grad():
            return model(x).reshape(x.shape[0], -1).argmax(1)
    return torch.full((x.shape[0],), int(spec), dtype=torch.long, device=x.device)


def _stored_target(t: Tensor | None, n: int) -> np.ndarray:
    return np.full(n, -1, np.int64) if t is None else t.detach().cpu().numpy().astype(np.int64)


def _aborted(group: zarr.Group) -> int:
    try:
        return int(group["abort"][0])
    except Exception:  # a mark being written right now: read again at the next chunk
        return -1


def run_chunks(call: Callable, group: zarr.Group, items: Items, todo: list, shard: Any,
               spec: Any, model: Callable, num_workers: int, bar: Any) -> None:
    """Computes and writes this process's chunks; ``call(x, target, indices)`` returns
    ``{array name: numpy values}`` for one batch."""
    chunk, n = group.attrs["fnattr"]["chunk"], len(items)
    loader = DataLoader(items, batch_sampler=[idx for _, idx in todo], collate_fn=collate,
                        num_workers=num_workers, pin_memory=shard.device.type == "cuda")
    loaded = iter(loader)  # workers start (fork) before the writer thread does
    writer, parts, current = Writer(group, chunk), [], None
    try:
        for (k, idx), (x, y) in zip(todo, loaded):
            if k != current:
                current = k
                if (who := _aborted(group)) != -1:
                    raise RuntimeError(f"rank {who} failed, so rank {shard.rank} stopped "
                                       "(its error says why)")
            try:
                x = x.to(shard.device, non_blocking=True)
                parts.append(call(x, targets(spec, model, x, y), idx))
            except Exception as e:
                group["abort"][0] = shard.rank
                first = (str(e).strip().splitlines() or [""])[0]
                raise RuntimeError(f"chunk {k} (examples {idx[0]}-{idx[-1]}) failed on rank "
                                   f"{shard.rank}: {type(e).__name__}: {first}") from e
            if idx[-1] + 1 == min(n, (k + 1) * chunk):
                writer.put(k, {a: np.concatenate([p[a] for p in parts]) for a in parts[0]})
                parts = []
            bar.update(min(len(idx) * shard.world, bar.total - bar.n))
    finally:
        writer.close()


def on_device(model: Any, device: torch.device) -> Any:
    """``model`` with its parameters and buffers on ``device`` (a copy when they are not
    already there: the caller's model is never moved)."""
    if not isinstance(model, nn.Module):
        return model
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device for t in tensors):
        return model
    return copy.deepcopy(model).to(device)


def method_call(entry: Any, model: Callable, layer: Any, seed: int, kwargs: dict,
                compile: bool) -> Callable:
    """``call(x, target, indices) -> {name: numpy}`` for one batch of a catalog method."""
    from .._compile import _binder, _draw_outside

    head = (model, layer) if entry.needs_layer else (model,)
    if entry.core is not None:
        bind = _binder(entry.fn, len(head))
        core = torch.compile(entry.core) if compile else entry.core

        def attribute(x: Tensor, extra: dict, idx: list) -> Any:
            a = bind((x,), {**kwargs, **extra})
            local = dataclasses.replace(entry, draw=per_example_draw(entry.draw, seed, idx))
            if not compile:
                return core(*head, *_draw_outside(local, a))
            with _fn_engine.slots([layer] if entry.needs_layer else []):
                return core(*head, *_draw_outside(local, a))
    elif compile:
        from .._compile import compile as fnattr_compile

        compiled = fnattr_compile(entry.fn, model, layer if entry.needs_layer else None)
        attribute = lambda x, extra, idx: compiled(x, **kwargs, **extra)
    else:
        attribute = lambda x, extra, idx: entry.fn(*head, x, **kwargs, **extra)

    def call(x: Tensor, target: Tensor | None, idx: list) -> dict[str, np.ndarray]:
        extra = {"target": target} if entry.target else {}
        if entry.delta:
            extra["return_convergence_delta"] = True
        result = attribute(x, extra, idx)
        attr, delta = result if entry.delta else (result, None)
        if not isinstance(attr, Tensor):
            raise TypeError(f"{entry.name} returned {type(attr).__name__}; dataset runs "
                            "need one attribution tensor per batch (a single input)")
        out = {"attributions": attr.detach().cpu().numpy()}
        if entry.target:
            out["target"] = _stored_target(target, x.shape[0])
        if delta is not None:
            d = delta.detach().cpu().reshape(x.shape[0], -1)
            out["delta"] = (d if entry.path == "sampled" else d[:, 0]).numpy()
        return out

    return call


def progress_bar(show: Any, shard: Any, total: int) -> Any:
    """A tqdm bar on rank 0 (when ``show``, or by default on a terminal), else a stub."""
    from tqdm.auto import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, unit="ex", disable=not show or shard.rank != 0,
                desc="fnattr", smoothing=0.1, dynamic_ncols=True)
