"""Eager per-call time of small calls, where fnattr's own Python overhead shows.

A 784-256-256-10 MLP on a batch of 32 (or, with ``--model B|V|R``, a benchmark
model of :mod:`benchmarks.models`, input-side calls only), one thread. The ``fnattr`` packages of
two source trees are copied under other names (``fnattr_0``, ``fnattr_1``) and
imported into one process; every round times each call on both, alternating
which goes first (interleaved), and the report gives per-call medians and the
ratio of the second tree to the first: of the medians, and the median of the
per-round ratios with its 95% confidence interval.

    python -m benchmarks.eager_overhead --trees /path/to/main /path/to/branch --rounds 40
    PYTHONPATH=. python -m benchmarks.eager_overhead --trees A B --model B --rounds 200
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time

from .rules_speed import paired_ratio

CALLS = {
    "gradient": lambda f, m, x: f.gradient(m, x, target=3),
    "guided_backprop": lambda f, m, x: f.guided_backprop(m, x, target=3),
    "neuron_gradient": lambda f, m, x: f.neuron_gradient(m, m[2], x, (5,)),
    "neuron_gradient_k8": lambda f, m, x: f.neuron_gradient(m, m[2], x,
                                                            [(i,) for i in range(8)]),
    "integrated_gradients_8": lambda f, m, x: f.integrated_gradients(m, x, target=3, n_steps=8),
    "internal_influence_8": lambda f, m, x: f.internal_influence(m, m[2], x, target=3,
                                                                 n_steps=8),
}

MODEL_CALLS = {
    "gradient": lambda f, m, x, t: f.gradient(m, x, target=t),
    "guided_backprop": lambda f, m, x, t: f.guided_backprop(m, x, target=t),
    "deconvolution": lambda f, m, x, t: f.deconvolution(m, x, target=t),
    "integrated_gradients_8": lambda f, m, x, t: f.integrated_gradients(m, x, target=t,
                                                                        n_steps=8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, required=True)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--model", default="mlp", choices=["mlp", "B", "V", "R"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="fnattr_overhead_")
    try:
        for i, tree in enumerate(args.trees):
            shutil.copytree(os.path.join(tree, "fnattr"), os.path.join(tmp, f"fnattr_{i}"))
        sys.path.insert(0, tmp)
        pkgs = [importlib.import_module(f"fnattr_{i}") for i in range(2)]
        calls = CALLS
        if args.model == "mlp":
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
            x = torch.randn(32, 784)
        else:
            from .models import build

            spec = build(args.model)
            model, x = spec.model, spec.inputs
            calls = {name: (lambda f, m, x, c=call: c(f, m, x, spec.target))
                     for name, call in MODEL_CALLS.items()}
        for name, call in calls.items():
            times: list[list[float]] = [[], []]
            for pkg in pkgs:
                for _ in range(5):
                    call(pkg, model, x)
            for r in range(args.rounds):
                for i in ((0, 1) if r % 2 else (1, 0)):
                    start = time.perf_counter()
                    for _ in range(5):
                        call(pkgs[i], model, x)
                    times[i].append((time.perf_counter() - start) / 5 * 1e6)
            a, b = (statistics.median(t) for t in times)
            r, lo, hi = paired_ratio(times[1], times[0])
            print(f"{name:24s} {a:9.0f} us {b:9.0f} us  ratio {b / a:.3f}  "
                  f"per round {r:.3f} ({lo:.3f}-{hi:.3f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
