"""README.md's prose: the claims a quick script can check hold.

Tables name real signatures and classes, the benchmark numbers quoted are those
of benchmarks/RESULTS.md, every ``fnattr`` command line parses, the files and
tests it names exist, and the sanity-check table is what its script computes.
(The examples themselves run in tests/test_readme.py.)
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import warnings

import pytest
import torch

import fnattr

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._readme import (BLOCKS, README, ROOT, SHELL, _cli, _commands, _fnattr_argv, _prose,
                          _section, _table, one_thread)  # noqa: F401 (a fixture)
except ImportError:
    from _readme import (BLOCKS, README, ROOT, SHELL, _cli, _commands, _fnattr_argv, _prose,
                         _section, _table, one_thread)  # noqa: F401 (a fixture)


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
    table = _section("Evaluating attributions")
    for name, args in re.findall(r"^\| `(\w+)\(([^`]*)\)`", table, re.M):
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
    assert f"{speedups[0]:.1f}x (S;" in text
    assert f"{speedups[1]:.1f}x (M), {speedups[2]:.1f}x (L)" in text
    assert f"{many['S', '64', 'fnattr one-pass (chunk all)'][7]} in the same run" in text
    best_floor = [round(100 * (float(default[m][6].rstrip("x")) - 1)) for m in "ML"]
    high = re.search(r"at most (\d+)% slower than the best hand-written floor", text).group(1)
    assert max(best_floor) <= int(high)
    loops = sorted(default[m][8] for m in "SML")
    assert f"{loops[0].rstrip('x')}-{loops[-1]} the time of 64 separate fnattr calls" in text
    assert f"only {float(many['L', '64', 'floor loop'][7].rstrip('x')):.1f}x faster" in text
    peaks = _table(_section("Internal influence peak memory", results))
    memory = {(r[0], r[1]): r[3] for r in peaks}
    assert (f"{memory['M', 'fnattr eager']} Captum's on M and {memory['L', 'fnattr eager']} on L "
            f"(compiled: {memory['M', 'fnattr compiled']}, "
            f"{memory['L', 'fnattr compiled']})") in text
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
    readme = " ".join(README.split())
    assert f"is {float(matrix.rstrip('x')):.1f}x a loop of 32 Captum calls" in readme
    eager, compiled = ([_table(_section(s, lig))[i][4]
                        for s in ("LIG on a tiny BERT", "LIG on a 6-layer BERT")] for i in (0, 1))
    assert (f"eager is {eager[0]} Captum on a tiny BERT and {eager[1]} on a 6-layer one" in readme)
    assert f"compiled {compiled[0]} and {compiled[1]}" in readme


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
    for name, word in (("gradient", "gradient drops to"),
                       ("guided backprop", "guided backprop to")):
        values = [float(s.mean()) for s in absolute[name].values()]
        low, high = re.search(rf"{word} (\d\.\d+)-(\d\.\d+)", prose).groups()
        assert (float(low), float(high)) == (round(min(values), 2), round(max(values), 2)), name


def test_shared_argument_types_are_public_and_typed():
    """ "The argument types have public names in `fnattr.types` (...), and fnattr ships
    `py.typed`." """
    import fnattr.types

    prose = _section("Shared arguments").split("- `forward_func`")[0]
    names = re.findall(r"`(\w+)`", prose.split("fnattr.types")[1].split(")")[0])
    assert len(names) >= 6
    for name in names:
        assert hasattr(fnattr.types, name), name
    assert (ROOT / "fnattr" / "py.typed").exists()
    assert '"fnattr" = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_a_memory_budget_call_prints_nothing(capfd):
    from fnattr.data import load_digits_examples, load_digits_model

    model, (x, _) = load_digits_model(), load_digits_examples()
    capfd.readouterr()
    fnattr.integrated_gradients(model, x[:2], target=3, n_steps=8, memory_budget="64MiB")
    assert capfd.readouterr() == ("", "")


def test_numbers_quoted_from_other_documents():
    """The digits model's accuracy (fnattr/data/README.md) and the rule twin's cost (DESIGN)."""
    data = (ROOT / "fnattr" / "data" / "README.md").read_text()
    accuracy = float(re.search(r"Test accuracy: \*\*([\d.]+)\*\*", data).group(1))
    assert f"**{100 * accuracy:.1f} % test accuracy**" in README
    twin = r"twin runs: under half the per-call cost, (\d+) vs (\d+) us"
    new, old = re.search(twin, README).groups()
    assert f"({old} vs {new} us per call)" in (ROOT / "docs" / "DESIGN.md").read_text()
    assert int(new) < int(old) / 2
