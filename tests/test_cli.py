"""The ``fnattr`` command line: demo, explain, and its one-line errors.

A few true subprocess runs (``sys.executable -m fnattr``) check the real
entry point, exit codes and stderr; the many error cases run in-process
through ``fnattr.cli.main`` (each subprocess pays ~2 s of ``import torch``).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import fnattr
from fnattr import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = "fnattr_cli_tiny"  # module written into a temporary directory on sys.path

TINY_SOURCE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


def make():
    torch.manual_seed(0)
    return Tiny()


def broken():
    raise RuntimeError("factory exploded")


def exits():
    raise SystemExit(0)


class Picky(Tiny):
    def forward(self, x):
        if x.shape[0] == 1:
            raise RuntimeError("picky: no batches of one")
        return super().forward(x)


def picky():
    torch.manual_seed(0)
    return Picky()


def text():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(30, 3)).eval()


def dataset():
    g = torch.Generator().manual_seed(2)
    return torch.utils.data.TensorDataset(torch.rand(10, 1, 8, 8, generator=g),
                                          torch.randint(0, 3, (10,), generator=g))
'''


class _Evil:
    """Pickles to a call of ``print``: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny model module and input/model files, written once."""
    d = tmp_path_factory.mktemp("cli_files")
    (d / f"{TINY}.py").write_text(TINY_SOURCE)
    sys.path.insert(0, str(d))
    try:
        tiny = importlib.import_module(TINY)
        model = tiny.make().eval()
        x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.save(x, d / "x.pt")
        np.save(d / "x.npy", x.numpy().astype(np.float64))
        from matplotlib import image as mpimg

        mpimg.imsave(d / "digit.png", x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)  # RGBA
        torch.save(model.state_dict(), d / "weights.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.13
            torch.jit.script(model).save(str(d / "model_ts.pt"))
        torch.save({"a": _Evil()}, d / "evil.pt")
        (d / "plain_pickle.pt").write_bytes(pickle.dumps(_Evil()))
        (d / "corrupt.pt").write_bytes(b"definitely not a tensor file")
        (d / "corrupt.npy").write_bytes(b"nope")
        (d / "corrupt.png").write_bytes(b"nope")
        (d / "corrupt.pt2").write_bytes(b"nope")
        np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        torch.save(torch.rand(2, 1, 16, 16), d / "big.pt")
        torch.save(torch.rand(2, 3, 8, 8), d / "rgb.pt")
        torch.save({"x": torch.zeros(2)}, d / "dict.pt")
        torch.save(torch.zeros(0, 1, 8, 8), d / "empty.pt")
        np.save(d / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
        (d / "zero_bytes.pt").write_bytes(b"")
        torch.save(torch.randint(1, 20, (4, 5), generator=torch.Generator().manual_seed(3)),
                   d / "ids.pt")
        torch.save(torch.zeros(1, 5, dtype=torch.long), d / "pad.pt")
        torch.save(torch.zeros(1, 5), d / "float_pad.pt")
        yield d, model, x
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(TINY, None)


def _env(files_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(files_dir),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("FNATTR_DEBUG", None)
    return env


def _run(args, cwd, files_dir, timeout=120):
    return subprocess.run([sys.executable, "-m", "fnattr", *map(str, args)], cwd=cwd,
                          env=_env(files_dir), capture_output=True, text=True, timeout=timeout)


def _listing(path: Path) -> set:
    return {p.relative_to(path) for p in path.rglob("*")}


def _assert_one_line_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fnattr: error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, stderr)


# ------------------------------------------------------------------ subprocess runs


def test_python_m_fnattr_without_arguments_runs_the_demo(tmp_path, files):
    result = _run([], tmp_path, files[0])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    png = tmp_path / "demo_out" / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in cli.METHODS:
        assert method in result.stdout
    # the table: time, shape and a completeness delta for the methods that have one
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for method in ("integrated_gradients", "gradient_shap", "layer_conductance"):
        delta = float(lines[method].split()[-1])
        assert 0 <= delta < 1.0
    assert lines["gradient"].split()[-1] == "-"
    assert "[8, 1, 8, 8]" in lines["integrated_gradients"]
    assert "[8, 16, 8, 8]" in lines["internal_influence"]


def test_explain_subprocess_factory_model_and_errors(tmp_path, files):
    d, model, x = files
    out = tmp_path / "ig.pt"
    ok = _run(["explain", f"{TINY}:make", d / "x.pt", "--method", "integrated_gradients",
               "--target", "1", "--n-steps", "20", "--out", out], tmp_path, d)
    assert ok.returncode == 0, ok.stderr
    attr = torch.load(out, weights_only=True)
    expected = fnattr.integrated_gradients(model, x, target=1, n_steps=20)
    torch.testing.assert_close(attr, expected)
    assert (tmp_path / "ig.png").is_file()
    assert "mean |delta|" in ok.stdout

    # A real error exit (the in-process tests below cover every case): a pickle
    # that is not weights_only-safe is refused, never executed, with one line.
    before = _listing(tmp_path)
    result = _run(["explain", f"{TINY}:make", d / "evil.pt", "--out", tmp_path / "o.pt"],
                  tmp_path, d)
    assert result.returncode == 2, result.stderr
    _assert_one_line_error(result.stderr, "pickled Python objects")
    assert "unpickled!" not in result.stdout + result.stderr
    assert _listing(tmp_path) == before


def test_explain_subprocess_torchscript_model(tmp_path, files):
    d, model, x = files
    out = tmp_path / "g.npy"
    result = _run(["explain", d / "model_ts.pt", d / "x.pt", "--method", "gradient",
                   "--out", out, "--no-png", "--quiet"], tmp_path, d)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    target = model(x).argmax(1)
    np.testing.assert_allclose(np.load(out), fnattr.gradient(model, x, target=target).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "g.png").exists()


# ------------------------------------------------------------------ in-process runs


def _main(args, capsys):
    """Runs ``fnattr.cli.main`` in-process; returns (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["explain", "--help"]])
def test_help(args, capsys):
    code, out, _ = _main(args, capsys)
    assert code == 0
    assert "usage: fnattr" in out
    if args == ["--help"]:
        assert all(command in out for command in ("demo", "explain"))
    if args[0] == "explain":
        assert "--method" in out and "module:factory" in out and "integrated_gradients" in out


def test_demo_options(tmp_path, capsys):
    code, out, err = _main(["demo", "--out", tmp_path / "nested" / "d", "--n", "2"], capsys)
    assert code == 0, err
    assert (tmp_path / "nested" / "d" / "demo.png").is_file()
    assert "[2, 1, 8, 8]" in out and "methods total" in out


def test_explain_layer_method_npy_input(tmp_path, files, capsys):
    d, model, x = files
    out = tmp_path / "ii.npy"
    code, stdout, err = _main(["explain", f"{TINY}:make", d / "x.npy", "--method",
                               "internal-influence", "--layer", "features.2", "--target", "2",
                               "--n-steps", "16", "--batch-size", "2", "--out", out], capsys)
    assert code == 0, err
    expected = fnattr.internal_influence(model, "features.2", x, target=2, n_steps=16)
    np.testing.assert_allclose(np.load(out), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.load(out).shape == (5, 4, 4, 4)
    assert (tmp_path / "ii.png").is_file()
    assert "internal_influence: 5 example(s)" in stdout


def test_explain_token_ids_with_layer_integrated_gradients(tmp_path, files, capsys):
    # Integer inputs reach the methods that take token ids (they were refused
    # for every method); the others refuse them naming the way out.
    d, _, _ = files
    model = importlib.import_module(TINY).text()
    ids = torch.load(d / "ids.pt")
    out = tmp_path / "lig.pt"
    code, stdout, err = _main(["explain", f"{TINY}:text", d / "ids.pt", "--method",
                               "layer_integrated_gradients", "--layer", "0", "--target", "1",
                               "--baselines", d / "pad.pt", "--n-steps", "8", "--out", out],
                              capsys)
    assert code == 0, err
    expected = fnattr.layer_integrated_gradients(model, model[0], ids, baselines=0, target=1,
                                                 n_steps=8)
    torch.testing.assert_close(torch.load(out), expected, rtol=1e-5, atol=1e-7)
    assert (tmp_path / "lig.png").is_file() and "[4, 5, 6]" in stdout
    store = tmp_path / "lig.zarr"  # the dataset engine takes token ids too
    code, _, err = _main(["explain", f"{TINY}:text", d / "ids.pt", "--method",
                          "layer_integrated_gradients", "--layer", "0", "--target", "1",
                          "--baselines", d / "pad.pt", "--n-steps", "8", "--out", store,
                          "--no-progress"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(_arrays(store)["attributions"], expected.numpy(), rtol=1e-5,
                               atol=1e-7)
    code, _, err = _main(["explain", f"{TINY}:text", d / "ids.pt", "--method",
                          "layer_integrated_gradients", "--layer", "0", "--baselines",
                          d / "float_pad.pt", "--out", tmp_path / "x.pt"], capsys)
    assert code == 2
    _assert_one_line_error(err, "float_pad.pt", "token-id baselines")
    code, _, err = _main(["explain", f"{TINY}:text", d / "ids.pt", "--method",
                          "integrated_gradients", "--out", tmp_path / "y.pt"], capsys)
    assert code == 2
    _assert_one_line_error(err, "ids.pt", "torch.int64", "layer_integrated_gradients")


def test_explain_png_input_neuron_method_with_weights(tmp_path, files, capsys):
    d, model, x = files
    out = tmp_path / "ngs.pt"
    png = tmp_path / "heat.png"
    code, _, err = _main(["explain", f"{TINY}:make", d / "digit.png", "--grayscale",
                          "--weights", d / "weights.pt", "--method", "neuron_gradient_shap",
                          "--layer", "features.0", "--neuron", "1,3,3", "--n-samples", "4",
                          "--stdevs", "0.1", "--seed", "7", "--out", out, "--png", png],
                         capsys)
    assert code == 0, err
    attr = torch.load(out, weights_only=True)
    assert attr.shape == (1, 1, 8, 8)
    # The PNG round trip is lossy (8-bit gray), so compare against the decoded image.
    from matplotlib import image as mpimg

    image = torch.from_numpy(mpimg.imread(d / "digit.png")[..., :3].copy())
    gray = (image * torch.tensor([0.299, 0.587, 0.114])).sum(-1)[None, None]
    torch.testing.assert_close(gray, x[:1], atol=0.01, rtol=0)
    expected = fnattr.neuron_gradient_shap(
        model, "features.0", gray, (1, 3, 3), torch.zeros(1, 1, 8, 8), n_samples=4, stdevs=0.1,
        generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(attr, expected)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "ngs.png").exists()


def test_explain_gradient_shap_many_inputs_and_file_baselines(tmp_path, files, capsys):
    d, model, x = files
    out = tmp_path / "gs.pt"
    code, _, err = _main(["explain", f"{TINY}:make", d / "x.pt", d / "x.npy", "--method",
                          "gradient_shap", "--baselines", d / "x.pt", "--batch-size", "3",
                          "--out", out, "--no-png"], capsys)
    assert code == 0, err
    attr = torch.load(out, weights_only=True)
    assert attr.shape == (10, 1, 8, 8) and torch.isfinite(attr).all()
    # same seed, same command, same numbers
    again = tmp_path / "gs2.pt"
    assert _main(["explain", f"{TINY}:make", d / "x.pt", d / "x.npy", "--method",
                  "gradient_shap", "--baselines", d / "x.pt", "--batch-size", "3",
                  "--out", again, "--no-png"], capsys)[0] == 0
    assert torch.equal(attr, torch.load(again, weights_only=True))


def test_explain_compile_missing(tmp_path, files, capsys, monkeypatch):
    d, _, _ = files
    monkeypatch.delattr(fnattr, "compile", raising=False)
    code, _, err = _main(["explain", f"{TINY}:make", d / "x.pt", "--compile", "--out",
                          tmp_path / "o.pt"], capsys)
    assert code == 2
    _assert_one_line_error(err, "--compile")
    assert list(tmp_path.iterdir()) == []


def test_bench_is_not_in_the_installed_cli(capsys):
    # The benchmarks live in a source checkout; the installed CLI points there
    # instead of importing a `benchmarks` package from wherever it runs.
    for args in (["bench"], ["bench", "--quick"], ["bench", "--help"]):
        code, out, err = _main(args, capsys)
        assert code == 2 and out == ""
        _assert_one_line_error(err, "python -m benchmarks.run")


def _error_cases(d: Path):
    tiny = f"{TINY}:make"
    x = d / "x.pt"
    return {
        "missing input": ([tiny, d / "missing.pt"], "input file not found"),
        "missing model file": ([d / "missing.pt2", x], "model file not found"),
        "corrupt .pt input": ([tiny, d / "corrupt.pt"], "not a weights-only PyTorch file"),
        "corrupt .npy input": ([tiny, d / "corrupt.npy"], "not a .npy file"),
        "corrupt image": ([tiny, d / "corrupt.png"], "cannot read image"),
        "corrupt .pt2 model": ([d / "corrupt.pt2", x], "not a torch.export program"),
        "unsafe pickle input": ([tiny, d / "evil.pt"], "pickled Python objects"),
        "plain pickle input": ([tiny, d / "plain_pickle.pt"], "not a weights-only"),
        "object .npy input": ([tiny, d / "objects.npy"], "pickled Python objects"),
        "non-tensor .pt input": ([tiny, d / "dict.pt"], "holds a dict, not a tensor"),
        "pickle as model": ([d / "evil.pt", x], "cannot load model"),
        "unsafe weights": ([tiny, x, "--weights", d / "evil.pt"], "pickled Python objects"),
        "weights that do not fit": ([tiny, x, "--weights", x], "holds a Tensor, not a state_dict"),
        "unknown factory": ([f"{TINY}:nope", x], "has no attribute 'nope'"),
        "unknown module": (["no_such_module_xyz:make", x], "cannot import 'no_such_module_xyz'"),
        "failing factory": ([f"{TINY}:broken", x], "factory exploded"),
        "not a model": (["nonsense", x], "neither a file nor"),
        "unknown layer": ([tiny, x, "--method", "internal_influence", "--layer", "features.9"],
                          "unknown layer 'features.9'"),
        "unknown method": ([tiny, x, "--method", "smoothgrad"], "unknown method 'smoothgrad'"),
        "wrong spatial shape": ([tiny, d / "big.pt"], "rejected inputs of shape [2, 1, 16, 16]"),
        "wrong channels": ([tiny, d / "rgb.pt"], "rejected inputs of shape [2, 3, 8, 8]"),
        "mismatched inputs": ([tiny, x, d / "big.pt"], "inputs have different shapes"),
        "target out of range": ([tiny, x, "--target", "7"], "--target 7 is out of range"),
        "target not a number": ([tiny, x, "--target", "seven"], "argument --target"),
        "target with too many dims": ([tiny, x, "--target", "0,1"], "--target 0,1 has 2"),
        "neuron out of range": ([tiny, x, "--method", "neuron_gradient", "--layer", "features.0",
                                 "--neuron", "9,0,0"],
                                "neuron_gradient rejected --neuron: `neuron_selector` index 9"),
        "neuron missing": ([tiny, x, "--method", "neuron_gradient", "--layer", "features.0"],
                           "--neuron is required"),
        "layer missing": ([tiny, x, "--method", "layer_conductance"], "--layer is required"),
        "option not used": ([tiny, x, "--method", "gradient", "--n-steps", "5"],
                            "--n-steps not used by gradient"),
        "baselines shape": ([tiny, x, "--baselines", d / "big.pt"], "--baselines"),
        "rule on TorchScript": ([d / "model_ts.pt", x, "--method", "guided_backprop"],
                                "needs a module:factory model"),
        "layer on TorchScript": ([d / "model_ts.pt", x, "--method", "internal_influence",
                                  "--layer", "features.0"], "needs named layers"),
        "unknown option": ([tiny, x, "--bogus"], "unrecognized arguments: --bogus"),
        # issue 13.7: non-finite options are refused when parsed
        "stdevs inf": ([tiny, x, "--method", "gradient_shap", "--stdevs", "inf"],
                       "argument --stdevs: expected a finite non-negative number"),
        "stdevs nan": ([tiny, x, "--method", "gradient_shap", "--stdevs", "nan"],
                       "argument --stdevs"),
        "std nan": ([tiny, d / "digit.png", "--grayscale", "--std", "nan"], "argument --std"),
        "std zero": ([tiny, d / "digit.png", "--grayscale", "--std", "0"], "argument --std"),
        "mean nan": ([tiny, d / "digit.png", "--grayscale", "--mean", "nan"],
                     "argument --mean"),
        "mean inf": ([tiny, d / "digit.png", "--grayscale", "--mean=-inf"], "argument --mean"),
        # issue 13.9: each of these was a traceback (exit 1) or a silent exit 0
        "empty input": ([tiny, d / "empty.pt"], "is empty (shape [0, 1, 8, 8])"),
        "empty .npy input": ([tiny, d / "empty.npy"], "is empty"),
        "zero-byte input": ([tiny, d / "zero_bytes.pt"], "input file"),
        "huge seed": ([tiny, x, "--method", "gradient_shap", "--seed",
                       "99999999999999999999999"], "argument --seed: expected an integer seed"),
        "seed too small": ([tiny, x, "--method", "gradient_shap", f"--seed={-2**63 - 1}"],
                           "argument --seed"),
        "huge size": ([tiny, d / "digit.png", "--size", "100000"], "argument --size"),
        "factory raises SystemExit": ([f"{TINY}:exits", x], "calling exits() failed: SystemExit"),
        "pred on a later batch": ([f"{TINY}:picky", x, "--method", "gradient",
                                   "--batch-size", "2"], "gradient failed: picky: no batches"),
    }


_CASES = list(_error_cases(Path("/unused")))


@pytest.mark.parametrize("case", _CASES)
def test_explain_errors(case, tmp_path, files, capsys):
    d, _, _ = files
    args, needle = _error_cases(d)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = _main(["explain", *args, "--out", out_dir / "attr.pt"], capsys)
    assert code == 2, (out, err)
    _assert_one_line_error(err, needle)
    assert "unpickled!" not in out + err
    assert list(out_dir.iterdir()) == [], "nothing may be written on failure"


@pytest.mark.parametrize("out, needle", [("attr.txt", "must end in .pt or .npy"),
                                         ("no_dir/attr.pt", "does not exist")])
def test_explain_bad_output_paths(out, needle, tmp_path, files, capsys):
    d, _, _ = files
    code, _, err = _main(["explain", f"{TINY}:make", d / "x.pt", "--out", tmp_path / out],
                         capsys)
    assert code == 2
    _assert_one_line_error(err, needle)
    assert list(tmp_path.iterdir()) == []


def test_explain_cuda_unavailable(tmp_path, files, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    d, _, _ = files
    code, _, err = _main(["explain", f"{TINY}:make", d / "x.pt", "--device", "cuda", "--out",
                          tmp_path / "o.pt"], capsys)
    assert code == 2
    _assert_one_line_error(err, "CUDA is not available")


def test_demo_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for args, needle in [(["--n", "51"], "--n must be at most 50"),
                         (["--n", "0"], "expected a positive integer"),
                         (["--layer", "features.7"], "unknown layer 'features.7'"),
                         (["--out", tmp_path / "file"], "is not a directory")]:
        code, _, err = _main(["demo", *args], capsys)
        assert code == 2
        _assert_one_line_error(err, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_existing_output_is_kept_on_failure(tmp_path, files, capsys):
    d, _, _ = files
    out = tmp_path / "attr.pt"
    out.write_bytes(b"previous")
    code, _, _ = _main(["explain", f"{TINY}:make", d / "big.pt", "--out", out], capsys)
    assert code == 2
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attr.pt"]


def test_explain_figure_says_how_many_examples_it_shows_and_names_the_neuron():
    from fnattr.cli.figure import figure as draw

    attributions, x = torch.randn(10, 1, 8, 8), torch.rand(10, 1, 8, 8)
    titles = [f"#{i}" for i in range(10)]
    figure = draw(attributions, x, "neuron_gradient (features.2)", True, titles, explicit=True,
                  neuron=(0, 3, 3))
    heatmaps = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(heatmaps) == 8 and figure.get_supxlabel() == "showing 8 of 10 examples"
    assert heatmaps[0].get_ylabel() == "neuron (0, 3, 3)"

# ------------------------------------------------------------------ issue 13.1: no overwrites


def _overwrite_cases(d: Path, work: Path):
    """(arguments after MODEL, needle); ``work`` holds copies that must survive."""
    tiny = f"{TINY}:make"
    image, x, weights = work / "digit.png", work / "x.pt", work / "weights.pt"
    (work / "link.png").symlink_to(image)
    os.link(x, work / "hard.pt")
    return {
        # the default --png (--out with .png) is the input image
        "default png is the input image": ([tiny, image, "--grayscale", "--out", work / "digit.pt"],
                                           "--png"),
        "out is the input": ([tiny, x, "--out", x], "--out"),
        "out is a hard link to the input": ([tiny, x, "--out", work / "hard.pt"], "--out"),
        "png is a symlink to the input": ([tiny, image, "--grayscale", "--out", work / "a.pt",
                                           "--png", work / "link.png"], "--png"),
        "png through a symlinked directory": ([tiny, image, "--grayscale", "--out", work / "a.pt",
                                               "--png", work / "alias" / "digit.png"], "--png"),
        "out is the weights": ([tiny, x, "--weights", weights, "--out", weights], "--out"),
        "out is the baselines": ([tiny, x, "--baselines", x, "--out", x], "--out"),
        "out is the model file": ([work / "model_ts.pt", x, "--out", work / "model_ts.pt"],
                                  "--out"),
        "png is the other output": ([tiny, x, "--out", work / "a.pt", "--png",
                                     work / "alias" / "a.pt"], "--out and --png"),
    }


_OVERWRITES = ["default png is the input image", "out is the input",
               "out is a hard link to the input", "png is a symlink to the input",
               "png through a symlinked directory", "out is the weights", "out is the baselines",
               "out is the model file", "png is the other output"]


@pytest.mark.parametrize("case", _OVERWRITES)
def test_explain_refuses_outputs_that_overwrite_a_source(case, tmp_path, files, capsys):
    d, _, _ = files
    work = tmp_path / "work"
    work.mkdir()
    for name in ("digit.png", "x.pt", "weights.pt", "model_ts.pt"):
        (work / name).write_bytes((d / name).read_bytes())
    (work / "alias").symlink_to(work, target_is_directory=True)
    args, needle = _overwrite_cases(d, work)[case]
    before = {p: p.read_bytes() for p in work.iterdir() if p.is_file() and not p.is_symlink()}
    listing = _listing(tmp_path)
    code, out, err = _main(["explain", *args], capsys)
    assert code == 2, (out, err)
    _assert_one_line_error(err, needle, "same file" if " and " in needle else "would overwrite")
    assert {p: p.read_bytes() for p in before} == before
    assert _listing(tmp_path) == listing


# ------------------------------------------------------------------ issue 13.2: one commit


@pytest.mark.parametrize("fault", [OSError("disk full"), KeyboardInterrupt()])
def test_explain_commits_pt_and_png_together(fault, tmp_path, files, capsys, monkeypatch):
    d, _, _ = files
    out, png = tmp_path / "a.pt", tmp_path / "a.png"
    out.write_bytes(b"old pt")
    png.write_bytes(b"old png")
    real_replace = os.replace

    def replace(src, dst):  # the png's move into place fails, after the .pt's
        if Path(dst) == png and str(src).endswith(".tmp"):
            raise fault
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    code, _, err = _main(["explain", f"{TINY}:make", d / "x.pt", "--method", "gradient",
                          "--out", out], capsys)
    assert code == (2 if isinstance(fault, OSError) else 130), err
    assert out.read_bytes() == b"old pt" and png.read_bytes() == b"old png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.pt"]
    monkeypatch.setattr(os, "replace", real_replace)
    assert _main(["explain", f"{TINY}:make", d / "x.pt", "--method", "gradient", "--out", out],
                 capsys)[0] == 0
    assert torch.load(out, weights_only=True).shape == (5, 1, 8, 8)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.pt"]


def test_explain_unsupported_png_format_is_refused_before_running(tmp_path, files, capsys):
    d, _, _ = files
    code, out, err = _main(["explain", f"{TINY}:make", d / "x.pt", "--out", tmp_path / "a.pt",
                            "--png", tmp_path / "a.xyz"], capsys)
    assert code == 2 and out == ""
    _assert_one_line_error(err, "unsupported image format 'xyz'")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ import paths, help, extras


def test_import_path_resolves_against_the_current_directory(tmp_path, files, capsys,
                                                            monkeypatch):
    # issue 12.15: the `fnattr` script's sys.path[0] is its own bin directory,
    # not the current one; an import path must still find ./cwdpkg/models.py.
    d, model, x = files
    package = tmp_path / "fnattr_cli_cwdpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(f"from {TINY} import make as make_net\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in [m for m in sys.modules if m.startswith("fnattr_cli_cwdpkg")]:
        monkeypatch.delitem(sys.modules, name)
    code, _, err = _main(["explain", "fnattr_cli_cwdpkg.models:make_net", d / "x.pt",
                          "--method", "gradient", "--target", "1", "--out", "g.pt", "--no-png"],
                         capsys)
    assert code == 0, err
    torch.testing.assert_close(torch.load(tmp_path / "g.pt", weights_only=True),
                               fnattr.gradient(model, x, target=1))


def test_explain_help_documents_import_paths_and_pt2_rules(capsys):
    code, out, _ = _main(["explain", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    # issue 13.15: an import path is not a safe format: it runs code
    assert "imports (runs) that module's code" in text
    assert "any zero-argument callable" in text
    # issue 12.17: rule methods work on a .pt2 program, not only an import path
    assert "guided_backprop/deconvolution (and their neuron forms) need an import path or a " \
           ".pt2 program" in text
    assert "resolves against the current directory" in text


def test_explain_rule_method_on_an_exported_program(tmp_path, files, capsys):
    # issue 12.17: what the help now says holds: guided backprop on a .pt2.
    d, model, x = files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(model, (x,)), tmp_path / "tiny.pt2")
    out = tmp_path / "gb.pt"
    code, _, err = _main(["explain", tmp_path / "tiny.pt2", d / "x.pt", "--method",
                          "guided_backprop", "--target", "2", "--out", out, "--no-png"], capsys)
    assert code == 0, err
    torch.testing.assert_close(torch.load(out, weights_only=True),
                               fnattr.guided_backprop(model, x, target=2))


def test_train_extra_has_scikit_learn():
    # issue 12.18: scripts/train_embedded.py imports sklearn
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(dep.startswith("scikit-learn") for dep in extras["train"])
    assert "from sklearn" in (ROOT / "scripts" / "train_embedded.py").read_text()


def test_errors_name_flags_from_the_argument_attribute():
    from fnattr.cli.errors import argument_of

    error = ValueError("`target` is mentioned, but the argument is another")
    assert argument_of(error) == "target"
    error.argument = "n_steps"
    assert argument_of(error) == "n_steps"
    assert argument_of(ValueError("`baselines[1]` has the wrong shape")) == "baselines"
    assert argument_of(RuntimeError("no name here")) is None


# ------------------------------------------------------------------ Zarr stores (--out .zarr)

# image -> class folder (nested sub-folders are searched, paths sorted)
_FOLDER = ["cat/0.png", "cat/1.png", "cat/x/2.png", "dog/3.png", "dog/deep/er/4.png",
           "dog/deep/5.png", "emu/6.png", "emu/7.png", "emu/8.png"]
_ZARR_IG = ["-m", "integrated_gradients", "--n-steps", "8", "--grayscale", "--target", "label",
            "-q"]


@pytest.fixture(scope="module")
def folder(files):
    """A folder of class sub-folders of 8x8 PNGs, and a one-process store of it."""
    from matplotlib import image as mpimg

    d = files[0] / "images"
    g = torch.Generator().manual_seed(3)
    for name in _FOLDER:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        mpimg.imsave(d / name, torch.rand(8, 8, generator=g).numpy(), cmap="gray")
    store = files[0] / "one.zarr"
    assert cli.main(["explain", f"{TINY}:make", str(d), *_ZARR_IG, "--batch-size", "2",
                     "--out", str(store)]) == 0
    return d, store


def _arrays(path: Path) -> dict:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in ("attributions", "target", "delta", "complete")}


def _assert_same_store(a: Path, b: Path) -> None:
    a, b = _arrays(a), _arrays(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_explain_zarr_folder_equals_the_per_batch_api(folder, files):
    d, store = folder
    _, model, _ = files
    paths = sorted(_FOLDER, key=lambda p: (p.split("/")[0], p))  # by class, then path
    from fnattr.cli.loading import ImageOptions, load_tensor

    x = torch.cat([load_tensor(str(d / p), "input", ImageOptions(grayscale=True))
                   for p in paths])
    labels = torch.tensor([{"cat": 0, "dog": 1, "emu": 2}[p.split("/")[0]] for p in paths])
    expected, delta = fnattr.integrated_gradients(model, x, target=labels, n_steps=8,
                                                  return_convergence_delta=True)
    got = _arrays(store)
    np.testing.assert_array_equal(got["target"], labels.numpy())
    np.testing.assert_allclose(got["attributions"], expected.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got["delta"], delta.detach().numpy(), atol=1e-6)
    assert got["complete"].all()


def test_torchrun_explain_equals_the_one_process_run(folder, files, tmp_path):
    d, store = folder
    out = tmp_path / "two.zarr"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "fnattr", "explain", f"{TINY}:make", str(d), *_ZARR_IG[:-1],
           "--batch-size", "3", "--out", str(out)]
    env = {**_env(files[0]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote") == 1, result.stdout  # rank 0 alone prints
    _assert_same_store(out, store)


def test_explain_zarr_resumes_and_refuses_changed_options(folder, files, tmp_path, capsys):
    import zarr

    d, reference = folder
    out = tmp_path / "run.zarr"
    args = ["explain", f"{TINY}:make", d, *_ZARR_IG, "--out", out]
    assert _main(args, capsys)[0] == 0
    group = zarr.open_group(str(out), mode="r+")
    group["attributions"][0] = 7.0          # chunk 0: complete, must be skipped
    group["attributions"][4] = 0.0          # chunk 4: marked missing, must be recomputed
    group["complete"][4] = False
    code, stdout, err = _main(args[:-3] + ["--out", out], capsys)  # without -q
    assert code == 0, err
    assert "8 of 9 chunks already complete" in stdout
    got, want = _arrays(out), _arrays(reference)
    assert (got["attributions"][0] == 7.0).all()
    np.testing.assert_allclose(got["attributions"][1:], want["attributions"][1:], rtol=1e-6)
    for changed, needle in [(["--n-steps", "9"], "--n-steps (stored 8, now 9)"),
                            (["--mean", "0.5"], "image options"),
                            (["--no-resume"], "drop --no-resume")]:
        code, _, err = _main([*args, *changed], capsys)
        assert code == 2
        _assert_one_line_error(err, needle)
    assert (_arrays(out)["attributions"][0] == 7.0).all()  # refusals change nothing
    assert _main([*args, "--overwrite"], capsys)[0] == 0
    _assert_same_store(out, reference)


def test_explain_zarr_factory_dataset_gradient_shap_equals_the_api(files, tmp_path, capsys):
    _, model, _ = files
    options = {"n_samples": 4, "stdevs": 0.1}
    code, _, err = _main(["explain", f"{TINY}:make", f"{TINY}:dataset", "-m", "gradient_shap",
                          "--seed", "3", "--n-samples", "4", "--stdevs", "0.1", "--target",
                          "label", "--batch-size", "3", "--progress", "--out",
                          tmp_path / "cli.zarr"], capsys)
    assert code == 0, err
    assert "10/10" in err  # --progress: a bar even though stderr is not a terminal
    data = importlib.import_module(TINY).dataset()
    fnattr.attribute_dataset(fnattr.gradient_shap, model, data, str(tmp_path / "api.zarr"),
                             seed=3, batch_size=5, baselines=torch.zeros(1, 1, 8, 8),
                             progress=False, **options)
    _assert_same_store(tmp_path / "cli.zarr", tmp_path / "api.zarr")
    np.testing.assert_array_equal(_arrays(tmp_path / "cli.zarr")["target"],
                                  data.tensors[1].numpy())


def _zarr_error_cases(d: Path, out: Path) -> dict:
    model = f"{TINY}:make"
    images = str(d / "images")
    return {
        "folder into .pt": ([model, images, "--out", out.with_suffix(".pt")],
                            "use --out NAME.zarr"),
        "png": ([model, d / "x.pt", "--out", out, "--png", out.with_suffix(".png")],
                "writes no heatmap"),
        "inside input": ([model, images, "--grayscale", "--out", f"{images}/a.zarr"],
                         "write inside the input"),
        "no labels": ([model, d / "x.pt", "--target", "label", "--out", out], "no labels"),
        "overwrite for .pt": ([model, d / "x.pt", "--overwrite", "--out",
                               out.with_suffix(".pt")], "applies only to a Zarr store"),
        "tuple target": ([model, d / "x.pt", "--target", "0,1", "--out", out],
                         "one output index"),
        "broken factory": ([model, f"{TINY}:broken", "--out", out], "factory exploded"),
        "wrong channels": ([model, images, "--out", out], "the model rejected inputs"),
    }


@pytest.mark.parametrize("case", list(_zarr_error_cases(Path("/u"), Path("/u/o.zarr"))))
def test_explain_zarr_errors(case, folder, files, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    args, needle = _zarr_error_cases(files[0], out)[case]
    code, _, err = _main(["explain", *args], capsys)
    assert code == 2
    _assert_one_line_error(err, needle)
    assert list(tmp_path.iterdir()) == []
    assert not (files[0] / "images" / "a.zarr").exists()


def test_explain_help_documents_zarr_runs(capsys):
    _, out, _ = _main(["explain", "--help"], capsys)
    for needle in ("NAME.zarr", "package.module:factory dataset", "torchrun", "--overwrite",
                   "--no-resume", "--num-workers", "no heatmap"):
        assert needle in " ".join(out.split()), needle
