"""Processes and chunks: rank and world from the launcher, the process group, ownership.

Under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``) a run joins the default process group when one exists, and
otherwise starts one (gloo on CPU, NCCL on CUDA) that it destroys at the end.
Every process takes whole chunks, ``missing[rank::world]``, so no two processes
ever write the same chunk. A process that fails leaves an abort mark in the
store that the others read between chunks, and every process ends with
:func:`agree` (an all-reduce of who failed), so all of them stop with an
error; a process killed outright makes the others' collectives fail (its
peer is gone) or time out.
"""

from __future__ import annotations

import itertools

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Shard", "join", "leave", "barrier", "agree", "owned"]

TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    device: torch.device
    started: bool  # whether this run started the process group (and so destroys it)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


_STARTS = itertools.count()


def join(device: Any = None) -> Shard:
    """This process's rank, world size and device; starts the process group if needed."""
    world = _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", 0)
    if device is None:
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size(), device, False)
    if world <= 1:
        return Shard(0, 1, device, False)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    # The launcher's store under a prefix of its own for every group this process
    # starts: a group started again after ``destroy_process_group`` would otherwise
    # read the first group's stale rendezvous keys (gloo: "connectFullMesh ...
    # Connection refused"). Every process starts its groups in the same order, so
    # the prefixes agree across ranks.
    store, rank, world = next(dist.rendezvous("env://", timeout=TIMEOUT))
    store = dist.PrefixStore(f"fnattr/{next(_STARTS)}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=TIMEOUT, **kwargs)
    return Shard(dist.get_rank(), dist.get_world_size(), device, True)


def barrier(shard: Shard) -> None:
    """Waits for every process (a no-op alone)."""
    if shard.world > 1:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=TIMEOUT)
        else:
            dist.barrier()


def agree(shard: Shard, failed: bool) -> int:
    """The end of a run on every process: the highest rank that failed, or -1."""
    if shard.world == 1:
        return shard.rank if failed else -1
    on = shard.device if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([shard.rank if failed else -1], device=on)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def leave(shard: Shard) -> None:
    """Destroys the process group if this run started it."""
    if shard.started and dist.is_initialized():
        dist.destroy_process_group()


def owned(missing: list[int], shard: Shard) -> list[int]:
    """The chunks this process computes: every ``world``-th missing chunk."""
    return missing[shard.rank::shard.world]
