"""A dataset run in its own process, for tests/test_dataset.py (run under torchrun or alone).

    python tests/_dataset_worker.py OUT METHOD [--batch-size B] [--delay S] [--fail-at I]

The model and data are built from fixed seeds here and imported by the tests,
so a run in this process and a run in the test's process see the same ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

N_EXAMPLES = 96


class Net(nn.Module):
    """A tiny MLP that can sleep (to be killed mid-run) or raise on one example."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)
        self.delay, self.fail_at = 0.0, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_at is not None and bool((x == self.fail_at).any()):
            raise FloatingPointError("the model met a poisoned example")
        return self.fc2(self.act(self.fc1(x)))


def model() -> Net:
    torch.manual_seed(0)
    return Net()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N_EXAMPLES, 6, generator=g), torch.randint(0, 3, (N_EXAMPLES,), generator=g)


def kwargs(method: str) -> dict:
    if method == "gradient_shap":
        return {"baselines": torch.linspace(-1, 1, 24).reshape(4, 6), "n_samples": 3, "stdevs": 0.1}
    return {"n_steps": 16}


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fnattr
    from fnattr.dataset import attribute_dataset

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("methods", nargs="+")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--fail-at", type=int, default=None)
    p.add_argument("--join", action="store_true",
                   help="start the process group here, so that the runs join it")
    a = p.parse_args()
    torch.set_num_threads(1)
    net, (x, y) = model(), data()
    net.delay = a.delay
    if a.fail_at is not None:
        x[a.fail_at, 0] = 123.0
        net.fail_at = 123.0
    if a.join and "RANK" in os.environ:
        torch.distributed.init_process_group("gloo")  # the runs join it (and leave it)
    for name in a.methods:
        attribute_dataset(getattr(fnattr, name), net, (x, y), os.path.join(a.out, f"{name}.zarr"),
                          batch_size=a.batch_size, progress=False, **kwargs(name))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print("done", os.environ.get("RANK", "0"), flush=True)


if __name__ == "__main__":
    main()
