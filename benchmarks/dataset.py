"""Dataset-scale attribution: attribute_dataset against a bare loop and the Captum loop.

    python -m benchmarks.dataset [--n-m 2000] [--n-l 500] [--repeats 3] [--rss] [--scaling]

* **throughput**: integrated gradients (50 steps) over N examples of the M and
  L models (benchmarks/models.py), interleaved repeats, medians:
  ``fnattr.attribute_dataset`` to a fresh Zarr store vs (a) the bare method
  called batch by batch on tensors already in memory (no I/O) and (b) the loop a
  Captum user writes (DataLoader + ``IntegratedGradients.attribute`` +
  ``np.save`` per batch).
* **scaling**: attribute_dataset on 1 process vs 2 processes (``torchrun``),
  one thread each, M model; the time of the call measured inside rank 0.
* **rss**: peak RSS of a 2,000 vs a 20,000 example run (S model, a dataset that
  makes example i on demand, so the data takes no memory).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import fnattr
from benchmarks.models import build

N_STEPS = 50


class Made(Dataset):
    """Example ``i`` made from seed ``i`` (no data held in memory)."""

    def __init__(self, n: int, shape: tuple, classes: int = 10) -> None:
        self.n, self.shape, self.classes = n, shape, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.randn(self.shape, generator=g), i % self.classes


def _data(n: int, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g)


def bare(model, x, y, batch):
    for s in range(0, len(x), batch):
        fnattr.integrated_gradients(model, x[s:s + batch], target=y[s:s + batch], n_steps=N_STEPS)


def captum_loop(model, x, y, batch, folder):
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    for k, (xb, yb) in enumerate(DataLoader(TensorDataset(x, y), batch_size=batch)):
        a = ig.attribute(xb, target=yb, n_steps=N_STEPS)
        np.save(os.path.join(folder, f"attr_{k:06d}.npy"), a.detach().numpy())


def ours(model, x, y, batch, folder):
    fnattr.attribute_dataset(fnattr.integrated_gradients, model, (x, y),
                             os.path.join(folder, "attrs.zarr"), batch_size=batch,
                             n_steps=N_STEPS, progress=False, overwrite=True)


def throughput(key: str, n: int, repeats: int) -> dict:
    spec = build(key)
    batch = spec.inputs.shape[0]
    x, y = _data(n, tuple(spec.inputs.shape[1:]))
    runs = {"bare": lambda d: bare(spec.model, x, y, batch),
            "captum_loop": lambda d: captum_loop(spec.model, x, y, batch, d),
            "attribute_dataset": lambda d: ours(spec.model, x, y, batch, d)}
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                run(d)
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": key, "n": n, "batch": batch, **{f"{k}_ex_s": n / v for k, v in med.items()},
            "vs_bare": med["attribute_dataset"] / med["bare"],
            "vs_captum": med["attribute_dataset"] / med["captum_loop"]}


def _worker_scaling(n: int, out: str) -> None:
    """One process of the scaling run (alone or under torchrun)."""
    spec = build("M")
    data = Made(n, tuple(spec.inputs.shape[1:]))
    t = time.perf_counter()
    fnattr.attribute_dataset(fnattr.integrated_gradients, spec.model, data, out,
                             batch_size=spec.inputs.shape[0], n_steps=N_STEPS, progress=False,
                             overwrite=True)
    if os.environ.get("RANK", "0") == "0":
        print(f"SECONDS {time.perf_counter() - t:.3f}", flush=True)


def scaling(n: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = {}
    for k in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(k), "-m", "benchmarks.dataset", "--worker-scaling",
                   str(n), "--out", os.path.join(d, "s.zarr")]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[k] = float(r.stdout.split("SECONDS")[1].split()[0])
    return {"n": n, "seconds_1": out[1], "seconds_2": out[2], "speedup": out[1] / out[2]}


def _worker_rss(n: int, out: str) -> None:
    spec = build("S")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fnattr.attribute_dataset(fnattr.integrated_gradients, spec.model, Made(n, (784,)), out,
                             batch_size=64, n_steps=8, progress=False, overwrite=True)
    print(f"RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} BEFORE_KB {before}",
          flush=True)


def rss() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = {}
    for n in (2000, 20000):
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, "-m", "benchmarks.dataset", "--worker-rss", str(n),
                   "--out", os.path.join(d, "r.zarr")]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            words = r.stdout.split()
            out[n] = int(words[words.index("RSS_KB") + 1]) / 1024
            out[f"before_{n}"] = int(words[words.index("BEFORE_KB") + 1]) / 1024
    return {"peak_rss_mib_2000": out[2000], "peak_rss_mib_20000": out[20000],
            "peak_before_the_call_mib": out["before_2000"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-m", type=int, default=2000)
    p.add_argument("--n-l", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", type=int, default=0, help="examples of the scaling run")
    p.add_argument("--rss", action="store_true")
    p.add_argument("--worker-scaling", type=int, default=0)
    p.add_argument("--worker-rss", type=int, default=0)
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # Captum's own warnings
    if a.worker_scaling:
        return _worker_scaling(a.worker_scaling, a.out)
    if a.worker_rss:
        return _worker_rss(a.worker_rss, a.out)
    for key, n in (("M", a.n_m), ("L", a.n_l)):
        if n:
            print(throughput(key, n, a.repeats), flush=True)
    if a.scaling:
        print(scaling(a.scaling), flush=True)
    if a.rss:
        print(rss(), flush=True)


if __name__ == "__main__":
    main()
