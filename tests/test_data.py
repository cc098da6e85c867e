"""Tests for the embedded default model and examples (fnattr.data)."""

import subprocess
import sys
from importlib import resources

import torch
from torch import nn

from fnattr.data import DigitsNet, load_digits_examples, load_digits_model


def test_examples_shapes_dtypes_and_range():
    images, labels = load_digits_examples()
    assert images.shape == (50, 1, 8, 8)
    assert images.dtype == torch.float32
    assert labels.shape == (50,)
    assert labels.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    torch.testing.assert_close(labels, torch.arange(50) % 10)


def test_model_is_accurate_on_shipped_examples():
    model = load_digits_model()
    images, labels = load_digits_examples()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (50, 10)
    accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
    assert accuracy >= 0.9


def test_model_structure():
    model = load_digits_model()
    assert isinstance(model, DigitsNet)
    assert not model.training
    modules = dict(model.named_modules())
    assert isinstance(modules["features.0"], nn.Conv2d)
    assert isinstance(modules["features.2"], nn.Conv2d)
    assert isinstance(modules["classifier.3"], nn.Linear)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3
    assert not any(relu.inplace for relu in relus)


def test_each_call_returns_a_fresh_model():
    first, second = load_digits_model(), load_digits_model()
    with torch.no_grad():
        first.classifier[3].bias.add_(1.0)
    assert not torch.equal(first.classifier[3].bias, second.classifier[3].bias)


def test_artifact_is_small_and_weights_only_loadable():
    artifact = resources.files("fnattr.data") / "digits.pt"
    with resources.as_file(artifact) as path:
        assert path.stat().st_size < 2 * 1024 * 1024
        contents = torch.load(path, weights_only=True)
    assert set(contents) == {"state_dict", "images", "labels"}


def test_loading_does_not_need_sklearn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from fnattr.data import load_digits_model, load_digits_examples\n"
        "load_digits_model(); load_digits_examples()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
