"""Eager per-call time of small calls, where fnattr's own Python overhead shows.

A 784-256-256-10 MLP on a batch of 32, one thread. Each round runs every call
in a fresh process per source tree, alternating the trees (interleaved), and
the report gives per-call medians over rounds and the ratio to the first tree.

    python -m benchmarks.eager_overhead                      # this checkout only
    python -m benchmarks.eager_overhead --trees /path/a /path/b --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import timeit

CALLS = {
    "gradient": "fnattr.gradient(model, x, target=3)",
    "guided_backprop": "fnattr.guided_backprop(model, x, target=3)",
    "neuron_gradient": "fnattr.neuron_gradient(model, model[2], x, (5,))",
    "neuron_gradient_k8": "fnattr.neuron_gradient(model, model[2], x, [(i,) for i in range(8)])",
    "integrated_gradients_8": "fnattr.integrated_gradients(model, x, target=3, n_steps=8)",
    "internal_influence_8": "fnattr.internal_influence(model, model[2], x, target=3, n_steps=8)",
}


def measure() -> dict[str, float]:
    """Median microseconds per call of every entry of ``CALLS`` (in this process)."""
    import torch

    import fnattr

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
        torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    x = torch.randn(32, 784)
    scope = {"fnattr": fnattr, "model": model, "x": x}
    out = {}
    for name, code in CALLS.items():
        timer = timeit.Timer(code, globals=scope)
        timer.timeit(20)
        out[name] = statistics.median(timer.repeat(repeat=11, number=20)) / 20 * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[os.getcwd()])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return
    runs: dict[str, list[dict]] = {t: [] for t in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": tree}
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            done = subprocess.run([sys.executable, os.path.join(here, "benchmarks",
                                                                "eager_overhead.py"), "--child"],
                                  env=env, capture_output=True, text=True, check=True)
            runs[tree].append(json.loads(done.stdout))
    first = args.trees[0]
    for name in CALLS:
        base = statistics.median(r[name] for r in runs[first])
        cells = [f"{statistics.median(r[name] for r in runs[t]):9.0f} us "
                 f"(x{statistics.median(r[name] for r in runs[t]) / base:.3f})" for t in args.trees]
        print(f"{name:24s}", *cells)


if __name__ == "__main__":
    main()
