"""The shipped examples run and show what they claim."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attribution_prior_lowers_the_penalty_and_removes_the_shortcut():
    prior = _load("attribution_prior")
    plain = prior.train(0.0, epochs=61)
    with_prior = prior.train(10.0, epochs=61)
    # (epoch, loss, penalty, test accuracy without the watermark)
    assert with_prior[-1][2] < with_prior[0][2] / 5, "the attribution penalty must go down"
    assert plain[-1][2] > 10 * with_prior[-1][2], "without the prior the model uses the watermark"
    assert with_prior[-1][3] > plain[-1][3] + 0.1, "the prior must help on unconfounded data"
