"""Smoke test of the benchmark suite: the hand-written floor equals Captum.

The benchmarks' "floor" (``benchmarks/floor.py``) is what every timing is
compared with, so it is verified here on tiny inputs: internal influence and
guided backprop on the conv net (M), neuron gradient SHAP on Captum's own
replayed draws on the MLP (S), and the K-neuron floors against a loop of
Captum calls. Fast (a few seconds); nothing is compiled.
"""

from __future__ import annotations

from pathlib import Path
import warnings

import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from benchmarks.floor import Floor, captum_paths, seeded  # noqa: E402
from benchmarks.models import MODELS, build, run_to  # noqa: E402


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * float(b.abs().max()) + 1e-12)


def _small(key: str, n: int = 2):
    spec = build(key)
    spec.inputs = spec.inputs[:n]
    return spec, Floor(spec, n_steps=8)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_models_build_and_layers():
    for key in MODELS:
        spec = build(key)
        h = run_to(spec.model, spec.layer, spec.inputs[:1])
        assert tuple(h.shape[1:]) == spec.extra["layer_shape"]
        assert spec.model(spec.inputs[:1]).shape == (1, 10)
        assert not spec.model.training
        assert len(set(spec.neurons(64))) == 64


def test_floor_internal_influence_matches_captum():
    spec, fl = _small("M")
    ref = captum_attr.InternalInfluence(spec.model, spec.layer).attribute(
        spec.inputs, target=spec.target, n_steps=8, method="gausslegendre")
    _close(fl.internal_influence(spec.inputs, spec.target), ref)


@pytest.mark.parametrize("key", ["M", "R"])  # R: torchvision's in-place, reused ReLU
@pytest.mark.parametrize("name", ["guided_backprop", "deconvolution"])
def test_floor_relu_rules_match_captum(name, key):
    spec, fl = _small(key)
    cls = captum_attr.GuidedBackprop if name == "guided_backprop" else captum_attr.Deconvolution
    ref = cls(spec.model).attribute(spec.inputs, target=spec.target)
    _close(getattr(fl, name)(spec.inputs, spec.target), ref)


def test_floor_neuron_gradient_shap_on_captum_draws():
    spec, fl = _small("S")
    with seeded(1, 2):
        ref = captum_attr.NeuronGradientShap(spec.model, spec.layer).attribute(
            spec.inputs, spec.neuron, spec.shap_baselines, n_samples=3, stdevs=0.1)
    paths = captum_paths(spec.inputs, spec.shap_baselines, 3, 0.1, 1, 2)
    _close(fl.neuron_gradient_shap_paths(*paths, spec.neuron), ref)


def test_floor_many_neurons_match_captum_loop():
    spec, fl = _small("S")
    neurons = spec.neurons(4)
    cap = captum_attr.NeuronGradient(spec.model, spec.layer)
    ref = torch.stack([cap.attribute(spec.inputs, n) for n in neurons])
    for chunk in (1, 3, None):
        _close(fl.neuron_gradient_many(spec.inputs, neurons, chunk), ref)


def test_quick_runs_write_to_a_fresh_directory_and_remove_their_inductor_cache(monkeypatch):
    from benchmarks import run

    a, b = run.parse(["--quick"]), run.parse(["--quick"])
    assert a.out.parent != b.out.parent and a.out.parent.exists()
    a.out.parent.rmdir(), b.out.parent.rmdir()
    seen = []
    monkeypatch.setattr(run, "_main", lambda argv, cache_dir: seen.append(cache_dir) or {})
    run.main(["--quick"])
    assert seen and not Path(seen[0]).exists()


def test_regenerating_results_keeps_the_other_modules_sections(tmp_path, monkeypatch):
    from benchmarks import report

    md = tmp_path / "RESULTS.md"
    md.write_text("old tables\n\n" + report.KEEP_MARKER + "\n\n## Dataset-scale attribution\nrow\n")
    monkeypatch.setattr(report, "render", lambda results: "new tables\n")
    monkeypatch.setattr(report, "plot", lambda results, png: None)
    report.write_report({}, md, tmp_path / "r.png")
    text = md.read_text()
    assert text.startswith("new tables") and "old tables" not in text
    assert text.endswith(report.KEEP_MARKER + "\n\n## Dataset-scale attribution\nrow\n")


def test_paired_ratio_is_the_median_round_ratio_with_an_order_statistic_interval():
    from benchmarks.rules_speed import paired_ratio

    a = [float(i) for i in range(1, 101)]
    b = [1.0] * 100
    mid, lo, hi = paired_ratio(a, b)
    assert mid == 50.5
    # n = 100: order statistics 50 -+ 9.8 -> indices 40 and 60 of the sorted ratios
    assert (lo, hi) == (41.0, 61.0)
    # pairing: a uniform slow spell that hits both calls of a round cancels out
    mid, lo, hi = paired_ratio([2.0, 20.0, 200.0], [1.0, 10.0, 100.0])
    assert mid == lo == hi == 2.0
