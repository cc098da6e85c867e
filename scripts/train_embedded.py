"""Trains the embedded default model (fnattr.data.DigitsNet) on sklearn's digits.

Writes ``fnattr/data/digits.pt`` (state dict + held-out examples, loadable with
``torch.load(..., weights_only=True)``) and ``fnattr/data/README.md`` (test
accuracy). Fixed seeds, deterministic algorithms and one thread make a rerun
on the same machine and torch build give the same weights; on another CPU or
torch build the floating-point kernels may round differently, so expect the
same accuracy (to about a digit of the held-out set), not bit-identical
weights. Needs scikit-learn (only for the dataset: ``pip install
'fnattr[train]'``). Runs in a few seconds on a CPU::

    python scripts/train_embedded.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from fnattr.data import DigitsNet

SEED = 0
EPOCHS = 40
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
TEST_FRACTION = 0.25
EXAMPLES_PER_CLASS = 5
DATA_DIR = Path(__file__).resolve().parents[1] / "fnattr" / "data"


def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns a stratified train/test split of images ``[N, 1, 8, 8]`` / 16 and labels."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images,
        digits.target,
        test_size=TEST_FRACTION,
        stratify=digits.target,
        random_state=SEED,
    )

    def images(x):
        return torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 16.0

    def labels(y):
        return torch.tensor(y, dtype=torch.int64)

    return images(x_train), labels(y_train), images(x_test), labels(y_test)


def shipped_indices(labels: torch.Tensor) -> torch.Tensor:
    """Picks the first test examples of each class, interleaved: labels 0, 1, ..., 9, 0, 1, ..."""
    per_class = [
        (labels == c).nonzero().flatten()[:EXAMPLES_PER_CLASS] for c in range(int(labels.max()) + 1)
    ]
    return torch.stack(per_class).T.flatten()


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Trains ``model`` in place with Adam and cross-entropy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Returns the fraction of correctly classified ``images``."""
    return (model(images).argmax(dim=1) == labels).double().mean().item()


def write_readme(path: Path, test_accuracy: float, num_test: int, artifact: Path) -> None:
    """Writes the artifact description, including the test accuracy, to ``path``."""
    path.write_text(
        "# Embedded default model\n\n"
        f"`{artifact.name}` ({artifact.stat().st_size} bytes) holds the `state_dict` of\n"
        "`fnattr.data.DigitsNet` and the first "
        f"{EXAMPLES_PER_CLASS} held-out test digits of each class (`images`, `labels`),\n"
        "interleaved so that `labels[i] == i % 10`. Load it with\n"
        "`torch.load(path, weights_only=True)`.\n\n"
        "Data: scikit-learn's bundled handwritten digits (`load_digits`, 8x8, 10 classes),\n"
        f"pixel values / 16, stratified split with {TEST_FRACTION:.0%} held out "
        f"(seed {SEED}).\n\n"
        f"Test accuracy: **{test_accuracy:.4f}** ({num_test} held-out images).\n\n"
        "Regenerate with `pip install 'fnattr[train]'` (scikit-learn) and\n"
        "`python scripts/train_embedded.py`: seeded and deterministic on one machine and torch\n"
        "build, so it reproduces this accuracy; the weights are bit-identical only on the same\n"
        "CPU and torch build.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output directory")
    out = parser.parse_args().out

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = load_split()
    model = DigitsNet()
    train(model, x_train, y_train)
    test_accuracy = accuracy(model, x_test, y_test)

    artifact = out / "digits.pt"
    shipped = shipped_indices(y_test)
    torch.save(
        {"state_dict": model.state_dict(), "images": x_test[shipped], "labels": y_test[shipped]},
        artifact,
    )
    write_readme(out / "README.md", test_accuracy, len(x_test), artifact)
    print(f"test accuracy {test_accuracy:.4f} on {len(x_test)} images; wrote {artifact}")


if __name__ == "__main__":
    main()
