"""Compiled vs eager rule methods on resnet18's layout at full width (issue 12.12).

``PYTHONPATH=. python -m benchmarks.rules_fullwidth [--repeats 8] [--batch 4] [--size 224]
[--torchvision]``

``ResNet18ish(64)`` (:mod:`benchmarks.models`) is torchvision's resnet18 layout
written out (torchvision is not installed in the test environment), with
a 10-way head, in eval mode with seeded weights. With ``--torchvision`` the
model is torchvision's own ``resnet18(num_classes=10)`` (seeded random
weights), imported with :func:`benchmarks.models.import_torchvision` from
wherever it is installed (e.g. ``pip install --no-deps --target /tmp/tvsite
torchvision`` and ``PYTHONPATH=/tmp/tvsite:.``). For guided backprop and
deconvolution: compiles ``fnattr.compile(method, model)`` (the first call's time
is the compile time), checks compiled against eager, then times eager and
compiled interleaved (one thread, the starting candidate alternating;
:func:`benchmarks.rules_speed._time`) and
prints medians, minima and the per-round paired ratio compiled / eager with a
95% confidence interval (:func:`benchmarks.rules_speed.paired_ratio`).
"""

from __future__ import annotations

import argparse
import time

import torch

import fnattr

from .models import ResNet18ish, import_torchvision
from .rules_speed import _time, paired_ratio


def run(repeats: int, batch: int, size: int, real: bool = False) -> list[str]:
    torch.manual_seed(0)
    model = (import_torchvision().models.resnet18(num_classes=10) if real
             else ResNet18ish(64)).eval()
    x = torch.randn(batch, 3, size, size)
    rows = ["| method | eager ms | compiled ms | compiled / eager per round (95% CI) | "
            "(min) | compile s | max abs diff / max |",
            "|---|---:|---:|---|---:|---:|---:|"]
    for name in ("guided_backprop", "deconvolution"):
        fn = getattr(fnattr, name)
        torch._dynamo.reset()
        compiled = fnattr.compile(fn, model)
        t0 = time.perf_counter()
        got = compiled(x, target=3)
        compile_s = time.perf_counter() - t0
        ref = fn(model, x, target=3)
        diff = float((got - ref).abs().max() / ref.abs().max())
        fns = {"eager": lambda: fn(model, x, target=3), "compiled": lambda: compiled(x, target=3)}
        med, low, times = _time(fns, repeats)
        mid, lo, hi = paired_ratio(times["compiled"], times["eager"])
        rows.append(f"| {name} | {med['eager'] * 1e3:.1f} | {med['compiled'] * 1e3:.1f} | "
                    f"{mid:.3f}x ({lo:.3f}-{hi:.3f}) | "
                    f"{low['compiled'] / low['eager']:.2f}x | {compile_s:.1f} | {diff:.1e} |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rules_fullwidth",
                                description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--torchvision", action="store_true",
                   help="torchvision's own resnet18 instead of the written-out layout")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(run(a.repeats, a.batch, a.size, a.torchvision)[:2]))


if __name__ == "__main__":
    main()
