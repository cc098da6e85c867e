"""Safe loading of models, weights, tensors and images.

Files are loaded only from formats that do not unpickle arbitrary objects:
``torch.export`` programs (``.pt2``), TorchScript (``.pt``/``.ts``),
``torch.load(weights_only=True)`` and ``numpy.load(allow_pickle=False)``. An
import path ``package.module:factory`` is the exception by design: importing
it runs that module's code, and ``factory`` may be any zero-argument callable.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CLIError, one_line, user_code

MODEL_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit", ".pkl", ".pickle", ".bin", ".ckpt")
_TORCHSCRIPT = (".pt", ".pth", ".ts", ".jit")
_IMPORT_PATH = r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*"


@dataclass(frozen=True)
class Model:
    """A loaded model: what the methods call and what its layers are."""

    forward: Callable   # what the attribution methods call
    module: Any         # nn.Module whose submodules are hookable, or None
    kind: str           # "factory", "export" or "torchscript"
    name: str
    owner: Any = None   # the object holding parameters (moved by --device), or None

    def to(self, device: Any) -> None:
        if callable(getattr(self.owner, "to", None)):
            self.owner.to(device)

    def dtype(self) -> Any:
        """The dtype of the first floating-point parameter (float32 if none)."""
        import torch

        parameters = getattr(self.owner, "parameters", None)
        for parameter in parameters() if callable(parameters) else ():
            if parameter.is_floating_point():
                return parameter.dtype
        return torch.float32


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silences torch's deprecation warnings and logged tracebacks while loading files."""
    loggers = [logging.getLogger(name) for name in
               ("torch.export", "torch._export", "torch.export.pt2_archive._package")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} file not found: {path}")
    if not p.is_file():
        raise CLIError(f"{what} {path} is not a regular file")
    return p


def is_model_file(spec: str) -> bool:
    """Whether MODEL names a file (else it must be an import path)."""
    return Path(spec).exists() or Path(spec).suffix.lower() in MODEL_SUFFIXES


def torch_load_safe(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for unsafe or corrupt files."""
    import pickle

    import torch

    try:
        with quiet_loading():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        if found:
            raise CLIError(
                f"{what} {path} holds pickled Python objects ({found.group(1)}), not only "
                "tensors; refusing to load it (weights_only=True)") from None
        raise CLIError(
            f"{what} {path} is not a weights-only PyTorch file (corrupt, or a pickle that "
            "weights_only=True refuses to load)") from None
    except Exception as error:  # zip/EOF/format errors from a damaged file
        raise CLIError(f"{what} {path} is corrupt or not a PyTorch file: "
                       f"{one_line(error, 160)}") from None


# ----------------------------------------------------------------------------- models


def load_model(spec: str, weights: str | None) -> Model:
    """The model named by MODEL: a file (.pt2, TorchScript) or an import path."""
    if is_model_file(spec):
        path = existing_file(spec, "model")
        if weights is not None:
            raise CLIError("--weights applies only to a module:factory model, not to a model file")
        suffix = path.suffix.lower()
        if suffix == ".pt2":
            return _load_export(path)
        if suffix in _TORCHSCRIPT:
            return _load_torchscript(path)
        raise CLIError(
            f"unsupported model file {spec}: use a torch.export program (.pt2), TorchScript "
            "(.pt, .ts) or a package.module:factory import path")
    if not re.fullmatch(_IMPORT_PATH, spec):
        raise CLIError(f"model not found: {spec!r} is neither a file nor a "
                       "package.module:factory import path")
    model = _call_factory(spec)
    if weights is not None:
        _load_weights(model, weights, spec)
    return _factory_model(model, spec)


def _load_torchscript(path: Path) -> Model:
    import torch

    try:
        with quiet_loading():
            scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        reason = one_line(error, 120)
        if "zip archive" in reason or "constants.pkl" in reason:
            reason = "not a TorchScript archive"
        raise CLIError(
            f"cannot load model {path} as TorchScript ({reason}); models must be "
            "TorchScript (.pt, .ts), torch.export (.pt2) or module:factory, never pickled "
            "modules") from None
    scripted.eval()
    # fnattr's functional engine cannot run a ScriptModule's parameters
    # statelessly; as a plain function its input gradients are exact.
    forward = functools.wraps(scripted.forward)(lambda *xs: scripted(*xs))
    return Model(forward, None, "torchscript", path.name, owner=scripted)


def _load_export(path: Path) -> Model:
    import zipfile

    import torch

    if not zipfile.is_zipfile(path):
        raise CLIError(f"model {path} is not a torch.export program (.pt2): not a zip archive")
    try:
        with quiet_loading():
            program = torch.export.load(path)
    except Exception as error:
        raise CLIError(f"cannot load model {path} as a torch.export program: "
                       f"{one_line(error, 160)}") from None
    try:
        # unflatten keeps the submodules as modules that run (hooks fire), so
        # layers can be named; fall back to the flat graph module.
        with quiet_loading():
            module = torch.export.unflatten(program)
        layers = True
    except Exception:
        module, layers = program.module(), False
    return Model(module, module if layers else None, "export", path.name, owner=module)


def _import_module(spec: str, module_name: str) -> Any:
    """Imports ``module_name`` with the current directory on ``sys.path`` first, as
    ``python -m`` has it (the ``fnattr`` script's own directory comes first otherwise)."""
    cwd = os.getcwd()
    if not any(entry in ("", cwd) for entry in sys.path):
        sys.path.insert(0, cwd)
    try:
        with user_code(f"importing {module_name!r} for model {spec} failed"):
            return importlib.import_module(module_name)
    except CLIError:
        if _missing_module(module_name):
            raise CLIError(f"cannot import {module_name!r} for model {spec}: no module named "
                           f"{module_name!r} in the current directory or on PYTHONPATH") from None
        raise


def _missing_module(module_name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module_name) is None
    except (ImportError, ValueError):
        return True


def _call_factory(spec: str) -> Any:
    module_name, factory_name = spec.split(":")
    factory: Any = _import_module(spec, module_name)
    for attribute in factory_name.split("."):
        if not hasattr(factory, attribute):
            raise CLIError(f"model {spec}: {module_name!r} has no attribute {factory_name!r}")
        factory = getattr(factory, attribute)
    if not callable(factory):
        raise CLIError(f"model {spec}: {factory_name!r} is not callable")
    with user_code(f"model {spec}: calling {factory_name}() failed"):
        model = factory()
    if not callable(model):
        raise CLIError(f"model {spec}: {factory_name}() returned a {type(model).__name__}, "
                       "not a model")
    return model


def _load_weights(model: Any, weights: str, spec: str) -> None:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise CLIError(f"--weights needs an nn.Module, but {spec} gave a "
                       f"{type(model).__name__}")
    state = torch_load_safe(existing_file(weights, "weights"), "weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CLIError(f"weights file {weights} holds a {type(state).__name__}, "
                       "not a state_dict")
    try:
        model.load_state_dict(state)
    except Exception as error:
        detail = " ".join(str(error).split())
        raise CLIError(f"weights file {weights} does not fit the model: "
                       f"{one_line(detail, 300)}") from None


def _factory_model(model: Any, spec: str) -> Model:
    from torch import nn

    if isinstance(model, nn.Module):
        model.eval()
        return Model(model, model, "factory", spec, owner=model)
    return Model(model, None, "factory", spec)


def layer_names(module: Any, limit: int = 24) -> list[str]:
    names = [name for name, _ in module.named_modules() if name]
    return names[:limit] + (["..."] if len(names) > limit else [])


def check_layer(module: Any, layer: str) -> None:
    try:
        module.get_submodule(layer)
    except AttributeError:
        raise CLIError(f"unknown layer {layer!r}; layers: "
                       f"{', '.join(layer_names(module))}") from None


def data_kind(inputs: list[str]) -> str:
    """``"folder"`` (one directory), ``"dataset factory"`` (one import path that is
    not a file) or ``"files"``."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        return "folder"
    if len(inputs) == 1 and re.fullmatch(_IMPORT_PATH, inputs[0]) \
            and not Path(inputs[0]).exists():
        return "dataset factory"
    return "files"


# ----------------------------------------------------------------------------- tensors

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageOptions:
    """How images become tensors: ``--size``, ``--grayscale``, ``--mean``, ``--std``."""

    size: tuple[int, int] | None = None
    grayscale: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def load_tensor(path_text: str, what: str, images: ImageOptions,
                integers: bool = False) -> Any:
    """A tensor with at least one row from a .pt / .npy / image file (images become
    [1, C, H, W] in [0, 1], then converted by ``images``); ``integers``: integer
    tensors (token ids) are taken too."""
    path = existing_file(path_text, what)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        tensor = _load_pt_tensor(path, what)
    elif suffix == ".npy":
        tensor = _load_npy(path, what)
    elif suffix in IMAGE_SUFFIXES:
        return _convert_image(_read_image(path), path, images)
    else:
        raise CLIError(f"unsupported {what} file {path}: use .pt, .npy or an image "
                       f"({', '.join(IMAGE_SUFFIXES)})")
    import torch

    integer = tensor.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if not tensor.is_floating_point() and not (integers and integer):
        raise CLIError(f"{what} file {path} holds {tensor.dtype} values; attributions need "
                       "floating-point inputs (convert, and scale, them first"
                       + ("" if integers else "; token ids: --method layer_integrated_gradients "
                          "with the embedding as --layer") + ")")
    if tensor.dim() == 0:
        raise CLIError(f"{what} file {path} holds a 0-d tensor; inputs need a batch dim 0")
    if tensor.numel() == 0:
        raise CLIError(f"{what} file {path} is empty (shape "
                       f"{list(tensor.shape)}); it needs at least one example")
    return tensor


def _load_pt_tensor(path: Path, what: str) -> Any:
    import torch

    value = torch_load_safe(path, f"{what} file")
    if not isinstance(value, torch.Tensor):
        raise CLIError(f"{what} file {path} holds a {type(value).__name__}, not a tensor")
    return value


def _load_npy(path: Path, what: str) -> Any:
    import numpy as np
    import torch

    with open(path, "rb") as file:
        if file.read(6) != b"\x93NUMPY":
            raise CLIError(f"{what} file {path} is not a .npy file (bad header)")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        if isinstance(error, ValueError) and "pickle" in str(error).lower():
            raise CLIError(f"{what} file {path} holds pickled Python objects; refusing to "
                           "load it (allow_pickle=False)") from None
        raise CLIError(f"{what} file {path} is not a valid .npy file: "
                       f"{one_line(error, 160)}") from None
    if array.dtype.kind not in "fiub":
        raise CLIError(f"{what} file {path} holds {array.dtype} data, not real numbers")
    return torch.from_numpy(np.ascontiguousarray(array))


def _read_image(path: Path) -> Any:
    """The image as a float32 tensor [1, C, H, W] in [0, 1] (alpha dropped)."""
    import numpy as np
    import torch
    from matplotlib import image as mpimg

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.asarray(mpimg.imread(path))
    except Exception as error:
        raise CLIError(f"cannot read image {path}: {one_line(error, 160)}") from None
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    array = array.astype(np.float32) / scale
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # drop alpha
    if array.ndim == 2:
        return torch.from_numpy(array)[None, None]
    if array.ndim == 3 and array.shape[2] in (1, 3) and array.size:
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]
    raise CLIError(f"image {path} has unsupported shape {list(array.shape)}")


def _convert_image(tensor: Any, path: Path, images: ImageOptions) -> Any:
    import torch
    import torch.nn.functional as F

    if images.size is not None:
        try:
            tensor = F.interpolate(tensor, size=images.size, mode="bilinear",
                                   align_corners=False, antialias=True)
        except (RuntimeError, MemoryError) as error:
            raise CLIError(f"--size {images.size[0]},{images.size[1]}: cannot resize image "
                           f"{path}: {one_line(error, 160)}") from None
    if images.grayscale and tensor.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        tensor = (tensor * weights).sum(1, keepdim=True)
    channels = tensor.shape[1]
    for option, values in (("--mean", images.mean), ("--std", images.std)):
        if values is not None and len(values) not in (1, channels):
            raise CLIError(f"{option} has {len(values)} values but image {path} has "
                           f"{channels} channel(s)")
    if images.mean is not None:
        tensor = tensor - torch.tensor(images.mean).view(1, -1, 1, 1)
    if images.std is not None:
        tensor = tensor / torch.tensor(images.std).view(1, -1, 1, 1)
    return tensor.contiguous()
