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
with a loop. The other tests check prose: that README tables name real
signatures, that the benchmark numbers quoted are those in
benchmarks/RESULTS.md, and that every ``fnattr`` command line parses.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import fnattr

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(continue|not run:\s*(?P<reason>\S.*?))\s*-->")
SHELL = ("bash", "sh", "shell", "console")


@dataclass
class Block:
    line: int
    lang: str
    code: str
    mark: str  # "run", "continue" or "not run"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


def _blocks(text: str) -> list[Block]:
    blocks, end = [], 0
    for match in FENCE.finditer(text):
        before = text[end:match.start()].rstrip().splitlines()
        last = before[-1].strip() if before else ""
        line = text.count("\n", 0, match.start()) + 1
        mark, reason = "run", ""
        if last.startswith("<!--"):
            found = MARKER.fullmatch(last)
            assert found, f"README.md:{line}: unknown marker {last!r}"
            mark = "continue" if found.group(1) == "continue" else "not run"
            reason = found.group("reason") or ""
        blocks.append(Block(line, match.group(1), match.group(2), mark, reason))
        end = match.end()
    return blocks


BLOCKS = _blocks(README)


def _chains() -> list[list[Block]]:
    """Runnable python blocks, each with the blocks that continue it."""
    chains: list[list[Block]] = []
    for block in BLOCKS:
        if block.lang != "python" or block.mark == "not run":
            continue
        if block.mark == "continue":
            assert chains, f"{block.where}: nothing to continue"
            chains[-1].append(block)
        else:
            chains.append([block])
    return chains


def _params():
    params = []
    for chain in _chains():
        marks = [pytest.mark.compile] if any("fnattr.compile(" in b.code for b in chain) else []
        params.append(pytest.param(chain, id=f"python-L{chain[0].line}", marks=marks))
    for block in BLOCKS:
        if block.mark == "not run":
            params.append(pytest.param([block], id=f"{block.lang}-L{block.line}", marks=pytest.mark.skip(
                reason=f"{block.where} not run: {block.reason}")))
        elif block.lang in SHELL or (block.lang == "text" and block.code.startswith("$ ")):
            params.append(pytest.param([block], id=f"{block.lang}-L{block.line}"))
    return params


# ----------------------------------------------------------------------------- running blocks

def _cli(argv: list[str]) -> tuple[int, str]:
    from fnattr.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue()


def _commands(code: str) -> list[str]:
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def _fnattr_argv(command: str) -> list[str] | None:
    """The argv of an ``fnattr`` command (``fnattr``, ``python -m fnattr``, ``torchrun -m``)."""
    words = shlex.split(command)
    if words[:1] in (["fnattr"], [".venv/bin/fnattr"]):
        return words[1:]
    for i in range(len(words) - 1):
        if words[i:i + 2] == ["-m", "fnattr"]:
            return words[i + 2:]
    return None


def _run_shell(block: Block) -> None:
    from fnattr.cli import build_parser

    done = []
    for command in _commands(block.code):
        argv = _fnattr_argv(command)
        assert argv is not None and not command.startswith("torchrun"), (
            f"{block.where}: `{command}` is not an fnattr command this test can run; "
            "mark the block with <!-- not run: REASON -->")
        parsed = build_parser().parse_args(argv or ["demo"])
        if parsed in done:  # e.g. `python -m fnattr` and the same demo with its defaults spelled out
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


@pytest.fixture
def one_thread():
    """One torch thread: on a loaded 2-core CI machine oversubscribed threads cost up to 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    _close(ns["attr"], InternalInfluence(model, model.features[2]).attribute(x, target=y, n_steps=32))
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
    noise = 0.1 * torch.randn((x.shape[0], 10, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
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
}


def test_every_check_belongs_to_one_runnable_block():
    runnable = [b for chain in _chains() for b in chain]
    for key in CHECKS:
        hits = [b.where for b in runnable if key in b.code]
        assert len(hits) == 1, f"CHECKS key {key!r} matches {hits}"


# ----------------------------------------------------------------------------- prose claims

def _section(title: str, text: str = README) -> str:
    """The text of the section headed ``title`` (up to the next heading of its level or above)."""
    blank = FENCE.sub(lambda m: " " * len(m.group(0)), text)  # no headings inside code
    start = re.search(rf"^(#+) {re.escape(title)}.*$", blank, re.M)
    assert start, f"no section {title!r}"
    level = len(start.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(blank, start.end())
    return text[start.end():end.start() if end else len(text)]


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _table(text: str) -> list[list[str]]:
    """Rows (cells stripped) of the first markdown table in ``text``, header and rule dropped."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows[2:]]


def test_methods_table_gives_real_signatures_and_captum_classes():
    import captum.attr
    import fnattr.compat

    for name, args, captum_names in re.findall(
            r"^\| `(\w+)\(([^`]*)\)` \| ([^|]*) \|", _section("Methods"), re.M):
        listed = [a.strip() for a in args.split(",") if a.strip() != "..."]
        params = list(inspect.signature(getattr(fnattr, name)).parameters)
        assert params[:len(listed)] == listed, (name, params)
        for cls in re.findall(r"`(\w+)", captum_names):
            assert hasattr(captum.attr, cls) or cls == "compute_convergence_delta", cls
            assert hasattr(fnattr.compat, cls) or cls == "compute_convergence_delta", cls


def test_composable_core_and_metrics_tables_name_real_functions():
    from fnattr import metrics

    core = _section("The composable core").split("Methods Captum does not ship")[0]
    for name, args in re.findall(r"`(\w+)\(([^`]*)\)`", core):
        function = getattr(fnattr, name)
        params = inspect.signature(function).parameters
        for keyword in re.findall(r"(\w+)=", args):
            assert keyword in params, (name, keyword)
    for name, args in re.findall(r"^\| `(\w+)\(([^`]*)\)`", _section("Evaluating attributions"), re.M):
        params = list(inspect.signature(getattr(metrics, name)).parameters)
        positional = [a.strip() for a in args.split(",") if a.strip() != "..." and "=" not in a]
        assert params[:len(positional)] == positional, (name, params)
        for keyword in re.findall(r"(\w+)=", args):
            assert keyword in params, (name, keyword)


def test_migration_lists_every_compat_class_and_what_they_share():
    import captum.attr
    import fnattr.compat as compat
    from fnattr.data import load_digits_examples, load_digits_model

    text = _section("Migrating from Captum").split("Available:")[1]
    named = set(re.findall(r"`([A-Z]\w+)(?:\.\w+)?`", text.split(", each with")[0]))
    assert named == set(compat.__all__), named ^ set(compat.__all__)
    model, (x, y) = load_digits_model(), load_digits_examples()
    saliency = compat.Saliency(model)
    assert torch.equal(saliency.attribute(x, target=3), fnattr.gradient(model, x, 3).abs())
    for name in set(compat.__all__) - {"LayerAttribution", "NoiseTunnel"}:
        cls = getattr(compat, name)
        assert isinstance(cls.get_name(), str), name
        for attribute in ("has_convergence_delta", "multiplies_by_inputs",
                          "compute_convergence_delta", "attribute_future"):
            assert hasattr(cls, attribute), (name, attribute)
    with pytest.raises(NotImplementedError):
        saliency.attribute_future()
    assert saliency.has_convergence_delta() is False and saliency.multiplies_by_inputs is False
    # "Captum's own NoiseTunnel accepts these classes too"
    smooth = captum.attr.NoiseTunnel(compat.Saliency(model)).attribute(
        x[:2], nt_samples=2, stdevs=0.0, target=3, abs=False)
    torch.testing.assert_close(smooth, fnattr.gradient(model, x[:2], 3))


def test_captum_guided_backprop_misses_functional_relus_and_fnattr_does_not():
    """ "Captum hooks nn.ReLU modules only: on a model written with F.relu it silently
    returns plain gradients." """
    import captum.attr

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(torch.nn.functional.relu(self.fc1(x)))

    torch.manual_seed(0)
    net, x = Net(), torch.randn(5, 4)
    plain = fnattr.gradient(net, x, 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU activations")
        captum_gb = captum.attr.GuidedBackprop(net).attribute(x.clone().requires_grad_(), target=1)
    torch.testing.assert_close(captum_gb, plain)
    assert not torch.allclose(fnattr.guided_backprop(net, x, 1), plain)


def test_benchmark_table_is_the_one_in_results_md():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    ratios = {}
    for model in "SML":
        for row in _table(_section(f"Model {model}:", results)):
            ratios[row[0], row[1], model] = row[5].rstrip("x")
    readme = _table(_section("Benchmarks").split("**Results on")[1])
    assert len(readme) == 6
    for method, *cells in readme:
        for model, cell in zip("SML", cells):
            expected = " / ".join(ratios[method, c, model] for c in (
                "fnattr eager", "fnattr compiled", "Captum 0.9"))
            assert cell == expected, (method, model, cell, expected)


def test_benchmark_prose_quotes_results_md():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    text = " ".join(_section("Benchmarks").split())
    many = {(r[0], r[1], r[2]): r for r in _table(_section("Many neurons", results))}
    default = {m: next(v for k, v in many.items() if k[:2] == (m, "64") and "default" in k[2])
               for m in "SML"}
    speedups = [float(default[m][7].rstrip("x")) for m in "SML"]
    assert f"{speedups[0]:.1f}x (S;" in text and f"{speedups[1]:.1f}x (M), {speedups[2]:.1f}x (L)" in text
    assert f"{many['S', '64', 'fnattr one-pass (chunk all)'][7]} in the same run" in text
    best_floor = [round(100 * (float(default[m][6].rstrip("x")) - 1)) for m in "ML"]
    low, high = re.search(r"within (\d+)-(\d+)% of the best hand-written floor", text).groups()
    assert int(low) <= min(best_floor) and max(best_floor) <= int(high)
    loops = sorted(default[m][8] for m in "SML")
    assert f"{loops[0].rstrip('x')}-{loops[-1]} the time of 64 separate fnattr calls" in text
    assert f"only {float(many['L', '64', 'floor loop'][7].rstrip('x')):.1f}x faster" in text
    memory = {(r[0], r[1]): r[3] for r in _table(_section("Internal influence peak memory", results))}
    assert (f"{memory['M', 'fnattr eager']} Captum's on M and {memory['L', 'fnattr eager']} on L "
            f"(compiled: {memory['M', 'fnattr compiled']}, {memory['L', 'fnattr compiled']})") in text
    wall = float(re.search(r"wall time ([\d.]+) min", results).group(1))
    assert f"everything (~{round(wall)} min on 2 CPU cores)" in _section("Benchmarks")
    compile_s = _table(_section("Compile time", results))[:6]
    for i, model in enumerate("SML", start=1):
        seconds = [float(r[i]) for r in compile_s]
        low, high = re.search(rf"(\d+(?:\.\d+)?)-(\d+) s \({model}\)", text).groups()
        digits = len(low.split(".")[1]) if "." in low else 0
        assert float(low) == round(min(seconds), digits) and int(high) == round(max(seconds))


def test_throughput_and_language_model_numbers_quote_results_md():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    dataset = _section("Dataset-scale attribution", results)
    rows = _table(dataset)
    throughput = " ".join(README.split("**Throughput**")[1].split("## Benchmarks")[0].split())
    assert f"runs at {rows[0][5]} (model M) and {rows[1][5]} (model L)" in throughput
    vs_captum = sorted(r[6] for r in rows)
    assert f"{vs_captum[0].rstrip('x')}-{vs_captum[1]} the time of" in throughput
    scaling = re.search(r"\*\*(\d\.\d+x)\*\*", dataset).group(1)
    assert f"{scaling} faster on 2 processes" in throughput
    for mib in re.findall(r"(\d+ MiB) for (2,000|20,000) examples?", throughput):
        assert f"{mib[0]} for {mib[1]}" in " ".join(dataset.split())
    lig = _section("Layer integrated gradients on language models", results)
    matrix = _table(_section("K x T matrix", lig))[0][4]
    assert f"is {float(matrix.rstrip('x')):.1f}x a loop of 32 Captum calls" in " ".join(README.split())
    compiled = sorted(float(_table(_section(s, lig))[1][4].rstrip("x"))
                      for s in ("LIG on a tiny BERT", "LIG on a 6-layer BERT"))
    low, high = re.search(r"compiled (\d\.\d)-(\d\.\d)x", " ".join(README.split())).groups()
    assert float(low) == round(compiled[0], 1) and float(high) == round(compiled[1], 1)


def test_every_fnattr_command_line_parses():
    """Also those in blocks that are not run: options and values the CLI accepts."""
    from fnattr.cli import build_parser

    commands = [c for b in BLOCKS if b.lang in (*SHELL, "text")
                for c in _commands(b.code.replace("$ ", ""))]
    argvs = [argv for argv in map(_fnattr_argv, commands) if argv is not None]
    assert len(argvs) >= 8
    for argv in argvs:
        build_parser().parse_args(argv or ["demo"])


def test_command_line_options_in_the_prose_exist():
    from fnattr.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "explain" in a.choices).choices
    options = {o for p in subparsers.values() for a in p._actions for o in a.option_strings}
    prose = _prose(_section("Command line") + _section("Whole datasets"))
    for flag in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", prose)):
        assert flag in options, flag
    from benchmarks.run import parse

    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        parse(["--help"])
    for flag in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", _section("Benchmarks"))):
        assert re.search(rf"{flag}\b", help_text.getvalue()), flag


def test_files_and_tests_the_readme_names_exist():
    for path in set(re.findall(r"`((?:tests|examples|scripts|benchmarks|docs|fnattr)/[\w./]+?)"
                               r"(?:::(\w+))?`", README)):
        assert (ROOT / path[0]).exists(), path[0]
        if path[1]:
            assert f"def {path[1]}(" in (ROOT / path[0]).read_text(), path
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / image).exists(), image
    size = (ROOT / "fnattr" / "data" / "digits.pt").stat().st_size
    assert f"({round(size / 1000)} KB)" in README  # "weights and 50 example images ... (56 KB)"


def test_fnattr_bench_says_where_the_benchmarks_are():
    code, output = _cli(["bench"])
    assert code == 2 and "python -m benchmarks.run" in output


def _check_memory_budget(ns):
    model, x = ns["model"], ns["x"]
    # "the result does not depend on the split"
    _close(ns["attr"], fnattr.layer_conductance(model, "features.2", x, target=3, n_steps=200,
                                                internal_batch_size=len(x) * 200))
    with pytest.raises(ValueError, match="`memory_budget` .* one row needs"):  # "saying how much"
        fnattr.integrated_gradients(model, x, target=3, memory_budget=1)


CHECKS['with fnattr.memory_budget("2GiB")'] = _check_memory_budget


def test_digits_sanity_check_table_is_what_the_script_computes(one_thread):
    """The "Digits CNN" table (and the ssim / spearman_abs sentence) of fnattr.metrics."""
    import runpy

    from fnattr.data import load_digits_examples, load_digits_model

    script = runpy.run_path(str(ROOT / "scripts" / "sanity_check.py"))
    model, (x, y) = load_digits_model(), load_digits_examples()
    text = _section("Evaluating attributions").split("Digits CNN")[1]
    rows = _table(text)[:3]
    spearman = script["sanity"](model, x, y, "spearman")
    for (name, *cells), sims in zip(rows, spearman.values()):
        assert cells == [f"{s.mean():+.2f}" for s in sims.values()], name
    ssim = script["sanity"](model, x, y, "ssim")
    for name in spearman:
        for a, b in zip(spearman[name].values(), ssim[name].values()):
            assert abs(a.mean() - b.mean()) <= 0.05, (name, "ssim")  # "the same to +-0.05"
    absolute = script["sanity"](model, x, y, "spearman_abs")
    prose = " ".join(text.split())
    ig = [f"{s.mean():.2f}" for s in absolute["integrated gradients"].values()]
    assert f"integrated gradients stays at {ig[-1]}" in prose and len(set(ig)) == 1, ig
    for name, word in (("gradient", "gradient drops to"), ("guided backprop", "guided backprop to")):
        values = [float(s.mean()) for s in absolute[name].values()]
        low, high = re.search(rf"{word} (\d\.\d+)-(\d\.\d+)", prose).groups()
        assert (float(low), float(high)) == (round(min(values), 2), round(max(values), 2)), name
