"""``fnattr explain ... --out NAME.zarr``: a whole dataset through ``fnattr.attribute_dataset``.

INPUT is the input files (read as for ``.pt``/``.npy`` outputs, no labels), one
folder of images (``fnattr.dataset.from_folder``: labels from sub-folder names,
images read with ``--size``/``--grayscale``/``--mean``/``--std``) or one
``package.module:factory`` dataset. What the arguments of ``attribute_dataset``
do not show (which data, how images were read, a TorchScript model's weights)
goes into the store's configuration too, so that a rerun with other inputs is
refused like one with other method options. Under ``torchrun`` every process
runs this command; the dataset engine shares the chunks and only rank 0 prints.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from . import methods as M
from .errors import CLIError, describe, one_line, user_code
from .explain import (Plan, _load_baselines, _load_inputs, _load_model, _probe,
                      _resolve_target, check_request, method_options, show_progress)
from .figure import shape_text
from .loading import ImageOptions, _convert_image, data_kind

# the store's configuration keys -> what the user typed
_CONFIG_FLAGS = {"method": "--method", "layer": "--layer", "target": "--target",
                 "seed": "--seed", "n_examples": "number of examples",
                 "model_weights": "model weights", "model_weights_torchscript": "model weights",
                 "data": "INPUT", "images": "image options"}


class Images:
    """A folder image ``(3, H, W)`` in [0, 1] read as explain reads image files, in the
    model's dtype (a class, so DataLoader workers can pickle it)."""

    def __init__(self, options: ImageOptions, dtype: Any, folder: str) -> None:
        self.options, self.dtype, self.folder = options, dtype, folder

    def __call__(self, x: Any) -> Any:
        return _convert_image(x[None], Path(self.folder), self.options)[0].to(self.dtype)


class Cast:
    """A dataset's items with ``x`` in the model's dtype (``y`` and the rest unchanged)."""

    def __init__(self, dataset: Any, dtype: Any) -> None:
        self.dataset, self.dtype = dataset, dtype

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        import torch

        item = self.dataset[i]
        if isinstance(item, (tuple, list)) and item:
            return (torch.as_tensor(item[0]).to(self.dtype), *item[1:])
        return torch.as_tensor(item).to(self.dtype)


def explain_store(args: argparse.Namespace) -> int:
    """Runs ``fnattr explain`` into a Zarr store; returns the exit code 0."""
    args = argparse.Namespace(**{**vars(args), "device": _device(args.device)})
    plan = check_request(args)
    entry = plan.entry
    model, layer = _load_model(args, entry)
    data, config = _load_data(args, plan, model)
    x0, y0 = _first_batch(data, args.batch_size)
    x0 = x0.to(args.device)
    target = _store_target(args, entry, _probe(model, x0, args.batch_size), y0)
    kwargs = M.fixed_kwargs(entry, method_options(args), args.layer_input)
    kwargs.pop("return_convergence_delta", None)
    baselines = _load_baselines(args, plan, x0, one_row=True)
    if baselines is not None:
        kwargs["baselines"] = baselines
    api_model, weights = _api_model(model)
    config.update(weights)
    seed = 0 if args.seed is None else args.seed
    if seed < 0:
        raise CLIError(f"--seed {seed}: a .zarr run needs a seed >= 0")
    done_before = _complete_chunks(plan.out)
    begin = time.perf_counter()
    group = _attribute(args, entry, api_model, layer, data, plan.out, config, target, seed,
                       kwargs)
    if not args.quiet and int(os.environ.get("RANK", "0")) == 0:
        _summary(entry, group, plan.out, done_before, time.perf_counter() - begin)
    return 0


def _device(device: str) -> str:
    """``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``, under torchrun."""
    if device == "cuda" and os.environ.get("LOCAL_RANK", "").isdigit():
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def _load_data(args: argparse.Namespace, plan: Plan, model: Any) -> tuple[Any, dict]:
    """The dataset and its part of the store's configuration."""
    kind = data_kind(args.inputs)
    if kind == "files":
        x, _ = _load_inputs(args, plan, model)
        x = x.cpu()
        from fnattr.dataset._store import describe as describe_value

        return x, {"data": f"files {describe_value(x)}"}
    from fnattr.dataset import from_folder, load_dataset_spec

    source = args.inputs[0]
    if kind == "folder":
        try:
            data = from_folder(source, Images(plan.images, model.dtype(), source))
        except ValueError as error:
            raise CLIError(f"INPUT {source}: {one_line(error)}") from None
        if len(data) == 0:
            raise CLIError(f"INPUT {source}: no images in its class sub-folders "
                           f"{', '.join(data.classes)}")
        return data, {"data": f"folder {_folder_digest(data)}", "images": _images(plan)}
    with user_code(lambda error: f"dataset {source}: {describe(error)}"):
        data = load_dataset_spec(source)
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise CLIError(f"dataset {source} returned a {type(data).__name__}, not a "
                           "map-style Dataset (with __getitem__ and __len__)")
        if len(data) == 0:
            raise CLIError(f"dataset {source} is empty")
    return Cast(data, model.dtype()), {"data": f"dataset {source}"}


def _folder_digest(data: Any) -> str:
    """The folder's classes and image paths (not their bytes): sha256, 16 hex digits."""
    h = hashlib.sha256()
    for path, label in data.samples:
        h.update(f"{os.path.relpath(path, data.root)}\0{label}\n".encode())
    return f"{len(data.samples)} images in {len(data.classes)} classes, {h.hexdigest()[:16]}"


def _images(plan: Plan) -> dict:
    images = plan.images
    return {"size": images.size, "grayscale": images.grayscale, "mean": images.mean,
            "std": images.std}


def _first_batch(data: Any, batch_size: int) -> tuple[Any, Any]:
    """The first batch as the engine collates it (the probe; labels or None)."""
    from fnattr.dataset._data import as_items, collate

    with user_code(lambda error: f"reading the first examples of INPUT failed: "
                                 f"{describe(error)}"):
        items = as_items(data)
        return collate([items[i] for i in range(min(batch_size, len(items)))])


def _store_target(args: argparse.Namespace, entry: Any, probe: Any, labels: Any) -> Any:
    """``target`` for attribute_dataset: "label", "pred", an int or None."""
    if isinstance(args.target, tuple):
        raise CLIError(f"--target {','.join(map(str, args.target))}: a .zarr run takes one "
                       "output index, 'pred', 'label' or 'none'")
    target = _resolve_target(args, entry, probe)
    if target == "label" and labels is None:
        raise CLIError("--target label: INPUT has no labels (files have none; use a folder "
                       "of class sub-folders or a dataset of (x, y) items)")
    return target


def _api_model(model: Any) -> tuple[Any, dict]:
    """What attribute_dataset calls (a module when there is one: its weights are in the
    configuration), and the weights of a TorchScript model, which is called as a function."""
    from torch import nn

    from fnattr.dataset._store import fingerprint

    if model.module is not None:
        return model.module, {}
    if isinstance(model.forward, nn.Module):
        return model.forward, {}
    if isinstance(model.owner, nn.Module):
        return model.forward, {"model_weights_torchscript": fingerprint(model.owner)}
    return model.forward, {}


def _complete_chunks(out: Path) -> int:
    """How many chunks a store at ``out`` already has complete (0 when none)."""
    if not (out / "zarr.json").is_file():
        return 0
    try:
        import zarr

        return int(zarr.open_group(str(out), mode="r", zarr_format=3)["complete"][:].sum())
    except Exception:  # not a (complete) fnattr store: attribute_dataset says so
        return 0


def _attribute(args: argparse.Namespace, entry: Any, model: Any, layer: str | None, data: Any,
               out: Path, config: dict, target: Any, seed: int, kwargs: dict) -> Any:
    from fnattr.dataset import run

    try:
        return run(entry.fn, model, data, str(out), config, layer=layer, target=target,
                   batch_size=args.batch_size, seed=seed, device=args.device,
                   num_workers=args.num_workers or 0, resume=not args.no_resume,
                   overwrite=args.overwrite, progress=show_progress(args),
                   compile=args.compile, **kwargs)
    except CLIError:
        raise
    except (ValueError, TypeError, RuntimeError) as error:
        raise CLIError(_flags(one_line(error, 600), entry, error)) from None


def _flags(message: str, entry: Any, error: BaseException) -> str:
    """attribute_dataset's message in the command's words (flags, not arguments)."""
    if not message.startswith("`out`"):
        return M.failure(entry, error) if message.startswith("`") else message
    message = "--out" + message[len("`out`"):]
    message = message.replace("pass resume=True to continue it or overwrite=True",
                              "drop --no-resume to continue it or pass --overwrite")
    message = message.replace("pass overwrite=True", "pass --overwrite")
    message = re.sub(r"argument `(\w+)`", lambda m: _flag(m.group(1)), message)
    for key, flag in _CONFIG_FLAGS.items():
        message = re.sub(rf"(: |; ){re.escape(key)} \(", rf"\g<1>{flag} (", message)
    return message


def _flag(param: str) -> str:
    from .args import flag_of_param

    return flag_of_param(param) or f"argument {param}"


def _summary(entry: Any, group: Any, out: Path, done_before: int, seconds: float) -> None:
    import numpy as np

    attributions = group["attributions"]
    chunks = group["complete"].shape[0]
    delta = ""
    if "delta" in group:
        delta = f"; mean |delta| {float(np.abs(group['delta'][:]).mean()):.2e}"
    resumed = f", {done_before} of {chunks} chunks already complete" if done_before else ""
    print(f"{entry.name}: {attributions.shape[0]} example(s), attributions "
          f"{shape_text(attributions)} in {seconds * 1e3:.0f} ms{resumed}{delta}; "
          f"wrote {out}")
