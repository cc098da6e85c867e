"""fnattr.dataset: attribute_dataset over processes, streamed to Zarr, resumable.

Reference values come from the per-batch API (the whole tensor in one call, or
per example with the example's own generator for sampled methods). Real
processes: a 2-process ``torchrun`` (gloo), a run killed with SIGKILL, and a
reader that never imports fnattr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import fnattr
from fnattr.dataset import attribute_dataset, from_folder, load_dataset_spec, open_attributions
from fnattr.dataset._engine import example_generator
from tests import _dataset_worker as W

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "_dataset_worker.py")
METHODS = ["integrated_gradients", "gradient_shap"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", WORKER, str(out), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _run(out: Path, name: str, batch_size: int = 5, model=None, data=None, **kw):
    return attribute_dataset(getattr(fnattr, name), model or W.model(), data or W.data(),
                             out / f"{name}.zarr", batch_size=batch_size,
                             **{"progress": False, **W.kwargs(name), **kw})


def _reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Attributions and deltas from the per-batch API."""
    net, (x, y) = W.model(), W.data()
    if name == "integrated_gradients":
        a, d = fnattr.integrated_gradients(net, x, target=y, return_convergence_delta=True,
                                           **W.kwargs(name))
        return a.detach().numpy(), d.detach().numpy()
    rows = [fnattr.gradient_shap(net, x[i:i + 1], target=y[i:i + 1],
                                 return_convergence_delta=True,
                                 generator=example_generator(0, i), **W.kwargs(name))
            for i in range(len(x))]
    return (torch.cat([a for a, _ in rows]).detach().numpy(),
            torch.stack([d for _, d in rows]).detach().numpy())


def _same(a: zarr.Group, b: zarr.Group) -> None:
    for name in ("attributions", "target", "complete"):
        np.testing.assert_allclose(a[name][:], b[name][:], rtol=1e-6, atol=1e-7, err_msg=name)
    # deltas are differences of nearly equal numbers: float32 rounding, absolute
    np.testing.assert_allclose(a["delta"][:], b["delta"][:], atol=1e-6)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One-process runs of both methods, batch size 7."""
    out = tmp_path_factory.mktemp("single")
    for name in METHODS:
        _run(out, name, batch_size=7)
    return out


@pytest.mark.parametrize("name", METHODS)
def test_one_process_equals_per_batch_api(single, name):
    store = open_attributions(single / f"{name}.zarr")
    attrs, delta = _reference(name)
    np.testing.assert_allclose(store["attributions"][:], attrs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store["delta"][:], delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(store["target"][:], W.data()[1].numpy())
    assert store["complete"][:].all()
    assert store["delta"].shape == ((96,) if name == "integrated_gradients" else (96, 3))
    assert store["attributions"].metadata.dimension_names == ("example", "attributions_1")


@pytest.mark.parametrize("group", ["joined", "started by each run"])
def test_torchrun_two_processes_equal_one_process(single, tmp_path, group):
    # "started by each run": two runs in one process, each starting and destroying
    # its own group (the second start once failed on the first one's stale keys).
    r = _torchrun(tmp_path, *METHODS, *(["--join"] if group == "joined" else []))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done") == 2, r.stdout
    for name in METHODS:
        _same(zarr.open_group(tmp_path / f"{name}.zarr", mode="r"),
              open_attributions(single / f"{name}.zarr"))


def test_torchrun_failure_stops_every_rank(single, tmp_path):
    # Example 50 is in chunk 8 (6 examples a chunk), rank 0's; rank 1 stops too (at
    # its next chunk, so how many of its chunks are complete depends on timing).
    r = _torchrun(tmp_path, "integrated_gradients", "--fail-at", "50")
    assert r.returncode != 0
    assert ("chunk 8 (examples 48-52) failed on rank 0: FloatingPointError: the model met "
            "a poisoned example") in r.stderr
    assert "rank 0 failed, so rank 1 stopped" in r.stderr
    store = zarr.open_group(tmp_path / "integrated_gradients.zarr", mode="r")
    done = store["complete"][:]
    assert not done[8] and done[0:8:2].all() and done.sum() < 16
    rows = np.repeat(done, 6)
    ref = open_attributions(single / "integrated_gradients.zarr")["attributions"][:]
    np.testing.assert_allclose(store["attributions"][:][rows], ref[rows], rtol=1e-6, atol=1e-7)


def _chunk_files(store: Path, done: np.ndarray) -> dict:
    return {k: (store / "attributions" / "c" / str(k) / "0").stat().st_mtime_ns
            for k in np.flatnonzero(done)}


def test_kill_9_then_resume_equals_an_uninterrupted_run(single, tmp_path):
    cmd = [sys.executable, WORKER, str(tmp_path), "gradient_shap", "--delay", "0.05"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = tmp_path / "gradient_shap.zarr"
    deadline = time.monotonic() + 120
    done = np.zeros(0, bool)
    while done.sum() < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            done = zarr.open_group(path, mode="r")["complete"][:]
        except Exception:  # not created yet
            pass
    os.kill(proc.pid, signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert 4 <= done.sum() < len(done), err[-2000:]
    done = zarr.open_group(path, mode="r")["complete"][:]
    before = _chunk_files(path, done)
    resumed = _run(tmp_path, "gradient_shap", batch_size=32)
    _same(resumed, open_attributions(single / "gradient_shap.zarr"))
    assert {k: v for k, v in _chunk_files(path, resumed["complete"][:]).items()
            if k in before} == before  # complete chunks were not rewritten


@pytest.mark.parametrize("name", METHODS)
def test_batch_size_7_and_32_agree(single, tmp_path, name):
    _same(_run(tmp_path, name, batch_size=32), open_attributions(single / f"{name}.zarr"))


@pytest.mark.parametrize("name", METHODS)
def test_memory_budget_passes_through_and_changes_nothing(single, tmp_path, name):
    # a small budget splits every batch's paths/samples into blocks of a few rows
    _same(_run(tmp_path, name, batch_size=32, memory_budget="64KiB"),
          open_attributions(single / f"{name}.zarr"))


def test_resume_after_an_error_keeps_complete_chunks(single, tmp_path):
    net, (x, y) = W.model(), W.data()
    net.fail_at = 123.0
    x[40, 0] = 123.0
    with pytest.raises(RuntimeError, match=r"^chunk 6 \(examples 36-40\) failed on rank 0: "
                                           r"FloatingPointError: the model met"):
        _run(tmp_path, "integrated_gradients", model=net, data=(x, y))
    path = tmp_path / "integrated_gradients.zarr"
    assert zarr.open_group(path, mode="r")["complete"][:].tolist() == [True] * 6 + [False] * 10
    x[40, 0] = W.data()[0][40, 0]
    net.fail_at = None
    _same(_run(tmp_path, "integrated_gradients", model=net, data=(x, y)),
          open_attributions(single / "integrated_gradients.zarr"))


def _other_weights():
    net = W.model()
    with torch.no_grad():
        net.fc2.bias[0] += 1e-3
    return net


@pytest.mark.parametrize("change, named", [
    ({"n_steps": 8}, "argument `n_steps`"),
    ({"seed": 1}, "seed"),
    ({"target": "pred"}, "target"),
    ({"model": "other"}, "model_weights"),
    ({"data": "shorter"}, "n_examples"),
    ({"baselines": torch.ones(1, 6)}, "argument `baselines`"),
])
def test_a_different_configuration_is_refused(single, tmp_path, change, named):
    name = "gradient_shap" if "baselines" in change else "integrated_gradients"
    _run(tmp_path, name)
    kw = dict(change)
    if kw.get("model") == "other":
        kw["model"] = _other_weights()
    if kw.get("data") == "shorter":
        kw["data"] = tuple(t[:90] for t in W.data())
    with pytest.raises(ValueError, match=named):
        _run(tmp_path, name, **kw)
    _run(tmp_path, name, overwrite=True, **kw)  # replaced when asked
    assert open_attributions(tmp_path / f"{name}.zarr")["complete"][:].all()


def test_another_method_and_resume_false_are_refused(tmp_path):
    net, (x, y) = W.model(), W.data()
    attribute_dataset(fnattr.gradient, net, (x, y), tmp_path / "g.zarr", progress=False)
    with pytest.raises(ValueError, match="method.*'gradient'.*'guided_backprop'"):
        attribute_dataset(fnattr.guided_backprop, net, (x, y), tmp_path / "g.zarr")
    with pytest.raises(ValueError, match="resume=True"):
        attribute_dataset(fnattr.gradient, net, (x, y), tmp_path / "g.zarr", resume=False)
    zarr.open_group(tmp_path / "other.zarr", mode="w").create_array("a", shape=(1,), dtype="f4")
    with pytest.raises(ValueError, match="not written by fnattr"):
        attribute_dataset(fnattr.gradient, net, (x, y), tmp_path / "other.zarr")


def test_plain_zarr_reads_the_store_without_fnattr(single, tmp_path):
    code = ("import sys, numpy, zarr\n"
            f"g = zarr.open_group({str(single / 'gradient_shap.zarr')!r}, mode='r')\n"
            f"numpy.save({str(tmp_path / 'a.npy')!r}, g['attributions'][:])\n"
            "print(g.attrs['fnattr']['config']['method'], 'fnattr' in sys.modules, "
            "'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                       cwd=tmp_path, timeout=120)
    assert r.stdout.split() == ["gradient_shap", "False", "False"], r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"),
                                  open_attributions(single / "gradient_shap.zarr")["attributions"][:])
    assert open_attributions(single / "gradient_shap.zarr")["attributions"].compressors


def test_layer_and_neuron_methods(tmp_path):
    net, (x, y) = W.model(), W.data()
    store = attribute_dataset(fnattr.layer_conductance, net, x, tmp_path / "lc.zarr",
                              layer=net.fc1, target=2, n_steps=8, batch_size=9)
    attr, delta = fnattr.layer_conductance(net, net.fc1, x, target=2, n_steps=8,
                                           return_convergence_delta=True)
    np.testing.assert_allclose(store["attributions"][:], attr.detach(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store["delta"][:], delta.detach(), rtol=1e-5, atol=1e-6)
    assert (store["target"][:] == 2).all() and store.attrs["fnattr"]["config"]["layer"] == "fc1"
    store = attribute_dataset(fnattr.neuron_gradient, net, x, tmp_path / "ng.zarr",
                              layer="fc1", neuron_selector=(3,), batch_size=10)
    ref = fnattr.neuron_gradient(net, "fc1", x, (3,)).detach()
    np.testing.assert_allclose(store["attributions"][:], ref, rtol=1e-6)
    assert "target" not in store and "delta" not in store


def test_a_forward_function_with_its_layer_module(tmp_path):
    # A Hugging Face model goes in as a function (its forward returns a
    # ModelOutput; the padding mask computed from the ids), the layer as the
    # module: the store equals the per-batch call, the layer is named by its path
    # in the model the function closes over, and the fingerprint covers that
    # model's weights, so a changed model is refused on resume.
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        vocab_size=50, num_labels=3)).eval()
    ids = torch.randint(1, 50, (10, 8))
    ids[4:, 6:] = 0  # padding
    y = torch.randint(0, 3, (10,))
    forward = lambda i: model(i, attention_mask=(i != 0).long()).logits  # noqa: E731
    kw = dict(layer=model.bert.embeddings, n_steps=4, batch_size=4, progress=False)
    store = attribute_dataset(fnattr.layer_integrated_gradients, forward, (ids, y),
                              tmp_path / "lm.zarr", **kw)
    ref = fnattr.layer_integrated_gradients(forward, model.bert.embeddings, ids, target=y,
                                            n_steps=4)
    np.testing.assert_allclose(store["attributions"][:], ref.detach(), rtol=1e-5, atol=1e-6)
    assert store.attrs["fnattr"]["config"]["layer"] == "bert.embeddings"
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    with pytest.raises(ValueError, match="model_weights"):
        attribute_dataset(fnattr.layer_integrated_gradients, forward, (ids, y),
                          tmp_path / "lm.zarr", **kw)


_GLOBAL_NET = torch.nn.Linear(2, 2)


def test_the_modules_a_forward_function_reaches():
    import functools

    from fnattr.dataset._store import closed_modules, fingerprint

    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert closed_modules(lambda x: a(x) + b(x)) == [a, b]  # closure, in order
    assert closed_modules(lambda x: _GLOBAL_NET(x)) == [_GLOBAL_NET]  # a global
    assert closed_modules(functools.partial(torch.add, other=a.weight)) == []
    assert closed_modules(functools.partial(lambda m, x: m(x), b)) == [b]
    assert closed_modules(a.forward) == [a]  # a bound method
    same = fingerprint(lambda x: a(x))
    assert same == fingerprint(lambda x: a(x)) != fingerprint(lambda x: b(x))


def test_pred_target_and_dataset_items(tmp_path):
    net, (x, y) = W.model(), W.data()
    items = [(x[i], int(y[i]), "rest") for i in range(len(x))]
    store = attribute_dataset(fnattr.gradient, net, items, tmp_path / "p.zarr", target="pred")
    pred = net(x).argmax(1)
    np.testing.assert_array_equal(store["target"][:], pred.numpy())
    ref = fnattr.gradient(net, x, target=pred).detach()
    np.testing.assert_allclose(store["attributions"][:], ref, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": print}, "`method`"),
    ({"layer": "fc1"}, "`layer` is not an argument"),
    ({"method": fnattr.layer_conductance}, "`layer` is required"),
    ({"target": "max"}, "`target`"),
    ({"data": W.data()[0]}, "`target`='label'.*no labels"),
    ({"generator": torch.Generator()}, "`generator` is set by"),
    ({"batch_size": 0}, "`batch_size`"),
    ({"data": W.data()[0][:0]}, "`data` is empty"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    call = {"method": fnattr.gradient, "model": W.model(), "data": W.data(),
            "out": tmp_path / "x.zarr", **kwargs}
    with pytest.raises(ValueError, match=match):
        attribute_dataset(**call)


def test_a_list_of_layers_is_one_store_per_layer(tmp_path):
    model = W.model()
    with pytest.raises(TypeError, match="`layer` must be one layer"):
        attribute_dataset(fnattr.layer_integrated_gradients, model, W.data(),
                          tmp_path / "x.zarr", layer=["fc1", "fc2"])


def test_bad_data_type_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="`data`"):
        attribute_dataset(fnattr.gradient, W.model(), 3, tmp_path / "x.zarr")


class _Items(torch.utils.data.Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.item


@pytest.mark.parametrize("item, error, match", [
    (((torch.zeros(2), torch.zeros(3)), 1), TypeError, "item 0: its x is a tuple of tensors"),
    ((object(), 1), TypeError, "item 0: its x must be a tensor"),
    ((torch.zeros(3), torch.zeros(2)), ValueError, r"item 0: its y must be one integer label, "
                                                   r"got Tensor of shape \(2,\)"),
])
def test_bad_items_are_named(tmp_path, item, error, match):
    with pytest.raises(error, match=match):
        attribute_dataset(fnattr.gradient, torch.nn.Linear(3, 2), _Items(item), tmp_path / "x.zarr")


def test_progress_bar_on_request(tmp_path, capsys):
    _run(tmp_path, "integrated_gradients", progress=True)
    assert "96/96" in capsys.readouterr().err


def test_from_folder_is_recursive_sorted_and_labelled(tmp_path):
    from PIL import Image

    for rel, value in [("dog/b.png", 30), ("cat/z/a.png", 20), ("cat/b.png", 10),
                       ("dog/a.png", 40), ("cat/notes.txt", None)]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if value is None:
            (tmp_path / rel).write_text("not an image")
        else:
            Image.new("RGB", (4, 3), (value, 0, 255)).save(tmp_path / rel)
    ds = from_folder(str(tmp_path))
    assert ds.classes == ["cat", "dog"]
    assert [(Path(p).relative_to(tmp_path).as_posix(), y) for p, y in ds.samples] == [
        ("cat/b.png", 0), ("cat/z/a.png", 0), ("dog/a.png", 1), ("dog/b.png", 1)]
    x, y = ds[1]
    assert x.shape == (3, 3, 4) and y == 0
    assert torch.allclose(x[:, 0, 0], torch.tensor([20 / 255, 0.0, 1.0]))
    with pytest.raises(ValueError, match="`path`"):
        from_folder(str(tmp_path / "cat" / "b.png"))


def test_load_dataset_spec():
    x, y = load_dataset_spec("tests._dataset_worker:data")
    assert torch.equal(x, W.data()[0])
    with pytest.raises(ValueError, match="`spec`"):
        load_dataset_spec("tests._dataset_worker")
    with pytest.raises(ValueError, match="`spec`.*cannot be loaded"):
        load_dataset_spec("tests._dataset_worker:nothing")


@pytest.mark.compile
def test_compiled_sampled_core_agrees(single, tmp_path):
    store = _run(tmp_path, "gradient_shap", batch_size=32, compile=True)
    _same(store, open_attributions(single / "gradient_shap.zarr"))


def test_data_loader_workers_agree(single, tmp_path):
    _same(_run(tmp_path, "gradient_shap", batch_size=4, num_workers=2),
          open_attributions(single / "gradient_shap.zarr"))


def test_a_store_cut_short_while_being_created_is_created_again(single, tmp_path):
    g = zarr.open_group(tmp_path / "integrated_gradients.zarr", mode="w")
    g.attrs["fnattr"] = {"config": {"method": "something else"}, "chunk": 1}
    g.create_array("attributions", shape=(3,), dtype="f4")  # killed before `complete`
    _same(_run(tmp_path, "integrated_gradients"),
          open_attributions(single / "integrated_gradients.zarr"))


def test_neuron_gradient_shap_draws_per_example(tmp_path):
    net, (x, _) = W.model(), W.data()
    kw = {"neuron_selector": (2,), "baselines": torch.zeros(3, 6), "n_samples": 4, "stdevs": 0.2}
    store = attribute_dataset(fnattr.neuron_gradient_shap, net, x, tmp_path / "n.zarr",
                              layer="fc1", seed=5, batch_size=16, **kw)
    ref = torch.cat([fnattr.neuron_gradient_shap(net, "fc1", x[i:i + 1], generator=
                                                 example_generator(5, i), **kw)
                     for i in range(len(x))]).detach()
    np.testing.assert_allclose(store["attributions"][:], ref, rtol=1e-6, atol=1e-7)


def test_import_fnattr_does_not_import_zarr():
    """zarr costs ~0.26 s to import: only dataset runs load it."""
    code = "import sys, fnattr; print(sorted(m for m in sys.modules if m.split('.')[0] == 'zarr'))"
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
