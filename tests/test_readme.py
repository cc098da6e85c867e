"""README.md: every example runs as written, and the claims a script can check hold.

Every fenced block of README.md is collected. A ```python block runs in a fresh
namespace, in a temporary working directory (the files it writes land there),
with the global RNG forked and seeded; a block preceded by ``<!-- continue -->``
runs in the namespace of the python block before it. Shell blocks (```bash) run
their ``fnattr ...`` / ``python -m fnattr ...`` commands in-process through
``fnattr.cli.main``; a ```text block holding a ``$ fnattr ...`` transcript runs
the command and compares the output (``...`` matches anything). A block that
cannot run here (it needs a GPU, torchrun, the network, files of your own or
minutes) is preceded by ``<!-- not run: REASON -->``: it is reported as a skip
with that reason (``-ra`` lists them), never skipped silently. A shell block
with any other command, or a block in another language, fails until marked.

After a block runs, ``CHECKS`` (keyed by a line of the block) asserts what its
comments and the prose around it claim: shapes, "Captum's numbers", equality
with a loop. The prose is checked in tests/test_readme_claims.py.
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch

import fnattr

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._readme import (BLOCKS, ROOT, SHELL, Block, _chains, _cli, _commands, _fnattr_argv,
                          one_thread)  # noqa: F401 (a fixture)
except ImportError:
    from _readme import (BLOCKS, ROOT, SHELL, Block, _chains, _cli, _commands, _fnattr_argv,
                         one_thread)  # noqa: F401 (a fixture)


def _params():
    params = []
    for chain in _chains():
        marks = [pytest.mark.compile] if any("fnattr.compile(" in b.code for b in chain) else []
        params.append(pytest.param(chain, id=f"python-L{chain[0].line}", marks=marks))
    for block in BLOCKS:
        if block.mark == "not run":
            skip = pytest.mark.skip(reason=f"{block.where} not run: {block.reason}")
            params.append(pytest.param([block], id=f"{block.lang}-L{block.line}", marks=skip))
        elif block.lang in SHELL or (block.lang == "text" and block.code.startswith("$ ")):
            params.append(pytest.param([block], id=f"{block.lang}-L{block.line}"))
    return params


# ----------------------------------------------------------------------------- running blocks
def _run_shell(block: Block) -> None:
    from fnattr.cli import build_parser

    done = []
    for command in _commands(block.code):
        argv = _fnattr_argv(command)
        assert argv is not None and not command.startswith("torchrun"), (
            f"{block.where}: `{command}` is not an fnattr command this test can run; "
            "mark the block with <!-- not run: REASON -->")
        parsed = build_parser().parse_args(argv or ["demo"])
        if parsed in done:  # `python -m fnattr` and the same demo with its defaults spelled out
            continue
        done.append(parsed)
        code, output = _cli(argv)
        assert code == 0, f"{block.where}: `{command}` exited {code}:\n{output}"
        if parsed.command in (None, "demo"):
            _check_demo(parsed, output)


def _check_demo(parsed, output: str) -> None:
    """What "### `fnattr demo`" says the demo prints and writes."""
    assert (Path(parsed.out) / "demo.png").stat().st_size > 0
    rows = [line.split() for line in output.splitlines() if re.match(r"[a-z_]+ ", line)]
    methods = {row[0] for row in rows if re.fullmatch(r"[\d.]+e[-+]\d+", row[-1])}
    assert methods == {"integrated_gradients", "gradient_shap", "layer_conductance",
                       "layer_integrated_gradients"}, methods  # "the completeness gap" rows


def _run_transcript(block: Block) -> None:
    lines = block.code.rstrip("\n").splitlines()
    command, expected = lines[0][2:], "\n".join(lines[1:])
    argv = _fnattr_argv(command)
    assert argv is not None, f"{block.where}: not an fnattr command: {command}"
    code, output = _cli(argv)
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    assert re.fullmatch(pattern, output.strip(), re.S), (
        f"{block.where}: `{command}` printed\n{output}\nnot\n{expected}")
    assert code == 2 if "error:" in expected else code == 0


@pytest.mark.parametrize("chain", _params())
def test_readme_block_runs_as_written(chain, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    first = chain[0]
    if first.lang in SHELL:
        return _run_shell(first)
    if first.lang == "text":
        return _run_transcript(first)
    namespace: dict = {"__name__": "__readme__"}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for block in chain:
            exec(compile(block.code, block.where, "exec"), namespace)
    for block in chain:
        for key, check in CHECKS.items():
            if key in block.code:
                check(namespace)


def test_every_block_is_run_or_marked():
    for block in BLOCKS:
        runnable = block.lang in ("python", *SHELL) or (
            block.lang == "text" and block.code.startswith("$ "))
        assert runnable or block.mark == "not run", (
            f"{block.where}: a ```{block.lang} block; run it or mark it <!-- not run: REASON -->")



# ----------------------------------------------------------------------------- per-block checks

def _captum(check):
    """``check`` with Captum's "did not already require gradients" warning ignored."""
    @functools.wraps(check)
    def quiet(ns):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Input Tensor .* did not already require gradients")
            check(ns)
    return quiet


def _close(a, b, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@_captum
def _check_ten_lines(ns):
    from captum.attr import IntegratedGradients, InternalInfluence, NeuronGradient, Saliency

    model, x, y = ns["model"], ns["x"], ns["y"]
    assert x.shape == (50, 1, 8, 8) and y.shape == (50,)
    assert ns["attr"].shape == (50, 16, 8, 8)  # "layer-shaped": features.2's output
    assert ns["many"].shape == (16, 50, 1, 8, 8)
    assert ns["per_class"].shape == (10, 50, 1, 8, 8)
    # "Captum 0.9's numbers for the same calls"
    expected = InternalInfluence(model, model.features[2]).attribute(x, target=y, n_steps=32)
    _close(ns["attr"], expected)
    ig, delta = IntegratedGradients(model).attribute(x, target=y, return_convergence_delta=True)
    _close(ns["ig"], ig)
    _close(ns["delta"], delta, atol=1e-4, rtol=1e-3)
    for k in (0, 15):
        _close(ns["many"][k], NeuronGradient(model, model.classifier[1]).attribute(x, (k,)))
    for c in (0, 9):
        _close(ns["per_class"][c], Saliency(model).attribute(x, target=c, abs=False))
    # "every draw from your torch.Generator, bit-identical per seed"
    again = fnattr.gradient_shap(model, x, torch.zeros(4, 1, 8, 8), target=y, n_samples=20,
                                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(ns["shap"], again)


@_captum
def _check_composable_core(ns):
    from captum.attr import NeuronIntegratedGradients

    model, x, y = ns["model"], ns["x"], ns["y"]
    expected = NeuronIntegratedGradients(model, model.classifier[1]).attribute(
        x, (3,), n_steps=32, method="gausslegendre")
    _close(ns["nig"], expected)
    noise = ns["noise"]
    rows = fnattr.guided_backprop(model, (x + noise).flatten(0, 1), target=y.repeat(len(noise)))
    _close(ns["smooth_guided"], rows.view(noise.shape).mean(0))
    plain = fnattr.internal_influence(model, "features.2", x, target=y)
    assert ns["ii_guided"].shape == plain.shape and not torch.allclose(ns["ii_guided"], plain)


def _check_noise_tunnel(ns):
    model, x = ns["model"], ns["x"]
    assert ns["sg"].shape == x.shape and ns["attr"].shape == x.shape
    assert ns["delta"].shape == (x.shape[0] * 10,)
    # "the noise is stdevs * randn((N, nt_samples, ...), generator=generator)"
    noise = 0.1 * torch.randn((x.shape[0], 10, *x.shape[1:]),
                              generator=torch.Generator().manual_seed(0))
    noisy = (x.unsqueeze(1) + noise).flatten(0, 1)
    smooth = fnattr.integrated_gradients(model, noisy, target=3).view(noise.shape).mean(1)
    _close(ns["sg"], smooth)
    with pytest.raises(ValueError):  # "a list of targets ... is not supported inside the tunnel"
        fnattr.noise_tunnel(ns["ig"], x, nt_samples=2, target=fnattr.each([1, 2]))


def _check_compile(ns):
    from torch._dynamo.utils import counters

    _close(ns["attr"], fnattr.internal_influence(ns["model"], "features.2", ns["x"], target=7))
    graphs = counters["stats"]["unique_graphs"]
    ns["ii"](ns["x"], target=5, n_steps=50)  # "same graph: int targets/neurons become tensors"
    assert counters["stats"]["unique_graphs"] == graphs


@_captum
def _check_migration(ns):
    from captum.attr import InternalInfluence

    model, x = ns["model"], ns["x"]
    _close(ns["ii"], InternalInfluence(model, model.features[2]).attribute(x, target=3, n_steps=50))
    assert ns["shap"].shape == x.shape


def _check_property_test(ns):
    # "(`python examples/property_test_your_method.py`)": the block is that script's code
    # (blank lines aside), whose 25 hypothesis examples tests/test_testing_axioms.py runs
    def lines(text):
        return "\n".join(line for line in text.splitlines() if line.strip())

    example = (ROOT / "examples" / "property_test_your_method.py").read_text()
    block = next(b for b in BLOCKS if "def my_integrated_gradients(" in b.code)
    assert lines(block.code) in lines(example)
    assert callable(ns["test_my_integrated_gradients"])


def _check_viz(ns):
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    assert isinstance(ns["fig"], Figure) and Path("grid.png").stat().st_size > 0
    texts = [t.get_text() for t in ns["fig"].findobj(Text)]
    assert any("showing 8 of 50 examples" in t for t in texts)


def _check_metrics(ns):
    n = ns["x"].shape[0]
    assert ns["sens"].shape == (n,)
    for sims in ns["sims"].values():
        assert list(sims) == ["classifier.3", "classifier.1", "features.2", "features.0"]
        assert all(v.shape == (n,) for v in sims.values())
    assert ns["scores"].shape == (n, 21) and ns["fractions"].shape == (21,)


@_captum
def _check_bert(ns):
    from captum.attr import LayerIntegratedGradients

    model, ids, mask = ns["model"], ns["ids"], ns["mask"]
    assert ns["attr"].shape == (1, 5, 16)
    assert ns["scores"].shape == (1, 5)
    _close(ns["scores"].norm(dim=1), torch.ones(1))
    expected = LayerIntegratedGradients(ns["forward"], model.bert.embeddings).attribute(
        ids, baselines=0, target=1, additional_forward_args=mask)
    _close(ns["attr"], expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(TypeError, match=r"must return a Tensor, got SequenceClassifierOutput; .*"
                       r"forward_func=lambda ids, mask: model\(ids, attention_mask=mask\).logits"):
        fnattr.layer_integrated_gradients(model, model.bert.embeddings, ids, baselines=0,
                                          target=1, additional_forward_args=mask)


def _check_gpt2(ns):
    gpt2, ids, t, K = ns["gpt2"], ns["ids"], ns["t"], ns["K"]
    assert ns["matrix"].shape == (K, t)
    loop = torch.stack([fnattr.token_scores(fnattr.layer_integrated_gradients(
        lambda i: gpt2(i).logits, gpt2.transformer.wte, ids, baselines=0, target=tg),
        normalize=False)[0, :t] for tg in ns["targets"]])
    _close(ns["matrix"], loop)  # "it equals the loop of K single-target calls"


def _check_dataset(ns):
    x, y = ns["val_set"]
    store = ns["store"]
    assert store["attributions"].shape == (50, 1, 8, 8)
    assert store["delta"].shape == (50,) and store["target"].shape == (50,)
    assert torch.equal(torch.as_tensor(store["target"][:]), y)
    assert store["attributions"].chunks[1:] == (1, 8, 8)  # chunked along the example axis only
    assert "zstd" in repr(store["attributions"].compressors).lower()
    expected = fnattr.integrated_gradients(ns["model"], x, target=y, n_steps=50)
    _close(torch.as_tensor(store["attributions"][:]), expected)
    # "A call with a different configuration ... is refused with a ValueError naming what differs"
    with pytest.raises(ValueError, match="n_steps"):
        fnattr.attribute_dataset(fnattr.integrated_gradients, ns["model"], ns["val_set"],
                                 "val_ig.zarr", target="label", batch_size=64, n_steps=20)


def _check_zarr_reading(ns):
    assert ns["g"]["attributions"][:100].shape == (50, 1, 8, 8)
    assert ns["g"].attrs["fnattr"]["config"]


def _check_memory_budget(ns):
    model, x = ns["model"], ns["x"]
    # "the result does not depend on the split"
    _close(ns["attr"], fnattr.layer_conductance(model, "features.2", x, target=3, n_steps=200,
                                                internal_batch_size=len(x) * 200))
    with pytest.raises(ValueError, match="`memory_budget` .* one row needs"):  # "saying how much"
        fnattr.integrated_gradients(model, x, target=3, memory_budget=1)



CHECKS: dict[str, Callable[[dict], None]] = {
    "many = fnattr.neuron_gradient(": _check_ten_lines,
    "# Integrated gradients of a neuron, from the parts": _check_composable_core,
    "sg = fnattr.noise_tunnel(": _check_noise_tunnel,
    "ii = fnattr.compile(": _check_compile,
    "from fnattr.compat import NeuronGradient": _check_migration,
    "def my_integrated_gradients(": _check_property_test,
    "viz.save(fig, \"grid.png\")": _check_viz,
    "sens = metrics.sensitivity_max(": _check_metrics,
    "model.bert.embeddings, ids": _check_bert,
    "target=fnattr.each(targets)": _check_gpt2,
    "store = fnattr.attribute_dataset(": _check_dataset,
    "g = zarr.open_group(\"val_ig.zarr\"": _check_zarr_reading,
    'with fnattr.memory_budget("2GiB")': _check_memory_budget,
}


def test_every_check_belongs_to_one_runnable_block():
    runnable = [b for chain in _chains() for b in chain]
    for key in CHECKS:
        hits = [b.where for b in runnable if key in b.code]
        assert len(hits) == 1, f"CHECKS key {key!r} matches {hits}"


