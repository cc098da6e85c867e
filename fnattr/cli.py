"""Command line interface: ``fnattr demo``, ``fnattr explain`` and ``fnattr bench``.

``fnattr`` (or ``python -m fnattr``) with no arguments runs the demo. Every
problem with the request (missing or unsafe files, unknown layers or methods,
inputs the model rejects, bad targets) is reported as one line
``fnattr: error: <problem>`` on stderr with exit code 2, and nothing is
written: outputs go to temporary files next to their destination and replace
it only once everything has been computed. Set ``FNATTR_DEBUG=1`` to get the
Python traceback instead.

Models are only loaded from formats that do not unpickle arbitrary objects: a
``torch.export`` program (``.pt2``), TorchScript (``.pt``/``.ts``) or a
``package.module:factory`` import path (with optional ``--weights`` loaded by
``torch.load(weights_only=True)``). Tensors come from ``.pt`` files (loaded
with ``weights_only=True``), ``.npy`` files (``allow_pickle=False``) or images.

Heavy modules (matplotlib, tqdm) are imported inside the commands that use them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import re
import sys
import textwrap
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["main", "METHODS"]

EXIT_ERROR = 2

# method -> (needs a layer, attributes a neuron, takes a target, path kind, ReLU rule, delta)
# path kind: None (one gradient), "steps" (quadrature: baselines, --n-steps,
# --integration) or "samples" (gradient SHAP: baselines, --n-samples, --stdevs, --seed).


@dataclass(frozen=True)
class _Spec:
    layer: bool = False
    neuron: bool = False
    target: bool = True
    path: str | None = None
    rule: bool = False
    delta: bool = False


METHODS: dict[str, _Spec] = {
    "gradient": _Spec(),
    "integrated_gradients": _Spec(path="steps", delta=True),
    "gradient_shap": _Spec(path="samples", delta=True),
    "guided_backprop": _Spec(rule=True),
    "deconvolution": _Spec(rule=True),
    "internal_influence": _Spec(layer=True, path="steps"),
    "layer_conductance": _Spec(layer=True, path="steps", delta=True),
    "neuron_gradient": _Spec(layer=True, neuron=True, target=False),
    "neuron_integrated_gradients": _Spec(layer=True, neuron=True, target=False, path="steps"),
    "neuron_gradient_shap": _Spec(layer=True, neuron=True, target=False, path="samples"),
    "neuron_guided_backprop": _Spec(layer=True, neuron=True, target=False, rule=True),
    "neuron_deconvolution": _Spec(layer=True, neuron=True, target=False, rule=True),
}

_INTEGRATION = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
                "riemann_trapezoid")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_TENSOR_SUFFIXES = (".pt", ".pth", ".npy")
_DEMO_COLUMNS_MAX = 50


class CLIError(Exception):
    """A problem with the user's request: reported as one line, exit code 2."""


def _one_line(message: Any, limit: int = 400) -> str:
    """The first non-empty line of ``message``, without terminal escapes, shortened."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(message))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(error: BaseException) -> str:
    message = _one_line(error)
    if message == "unknown error" or isinstance(error, (KeyError, AssertionError)):
        message = f"{type(error).__name__}: {message}"
    return message


def _debug() -> bool:
    return os.environ.get("FNATTR_DEBUG", "") not in ("", "0")


# ----------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``fnattr: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,3,3, got {text!r}") from None
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.5,0.5,0.5, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    values = _int_tuple(text.lower().replace("x", ","))
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 8 or 28,28, got {text!r}")
    return values  # type: ignore[return-value]


def _method_name(text: str) -> str:
    name = text.strip().lower().replace("-", "_")
    if name not in METHODS:
        raise argparse.ArgumentTypeError(
            f"unknown method {text!r}; choose from {', '.join(METHODS)}")
    return name


def _target(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("pred", "none"):
        return lowered
    try:
        values = _int_tuple(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an output index such as 7, an index tuple such as 0,3, 'pred' or "
            f"'none', got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``fnattr`` argument parser (subcommands ``demo``, ``explain``, ``bench``)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="fnattr",
        description="Functional attribution for PyTorch models.",
        epilog="With no command, `fnattr` runs `fnattr demo`.\n"
               "Run `fnattr COMMAND --help` for the options of each command.",
        formatter_class=raw,
    )
    from . import __version__  # light: the package init imports torch anyway

    parser.add_argument("--version", action="version", version=f"fnattr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo", formatter_class=raw,
        help="run every method on the embedded digits model; write a PNG grid",
        description="Runs every attribution method on the embedded DigitsNet and held-out "
                    "digits,\nwrites a grid of heatmaps (rows = methods, columns = examples) "
                    "to DIR/demo.png\nand prints a table of timings, shapes and "
                    "completeness deltas.",
        epilog="example:\n  fnattr demo --out demo_out --n 8")
    demo.add_argument("--out", metavar="DIR", default="demo_out",
                      help="output directory, created if missing (default: demo_out)")
    demo.add_argument("--n", metavar="N", type=_positive_int, default=8,
                      help=f"number of examples (columns), 1..{_DEMO_COLUMNS_MAX} (default: 8)")
    demo.add_argument("--layer", default="features.2",
                      help="layer of the layer and neuron methods (default: features.2)")
    demo.add_argument("--neuron", type=_int_tuple, default=(0, 3, 3), metavar="I,J,K",
                      help="neuron of the neuron methods (default: 0,3,3)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of gradient SHAP's torch.Generator (default: 0)")

    explain = commands.add_parser(
        "explain", formatter_class=raw,
        help="attribute a model's outputs (or a neuron) to its inputs",
        description="Computes attributions for MODEL on INPUT files and writes them to --out "
                    "(.pt or .npy)\nplus a heatmap PNG.\n\n"
                    "MODEL is a torch.export program (.pt2), a TorchScript file (.pt, .ts) or "
                    "an import path\npackage.module:factory (called with no arguments; "
                    "--weights loads a state_dict).\nArbitrary pickles are never loaded. "
                    "Layer methods need a module:factory model or a .pt2\nprogram; "
                    "guided_backprop/deconvolution (and their neuron forms) need a "
                    "module:factory model.\n\n"
                    "INPUT files are .pt (one tensor, loaded with weights_only=True), .npy or "
                    "images\n(.png, .jpg, ...: [1, C, H, W] with values in [0, 1]); all inputs "
                    "are concatenated along dim 0.",
        epilog="examples:\n"
               "  fnattr explain fnattr.data:load_digits_model digits.pt --method "
               "integrated_gradients --out ig.pt\n"
               "  fnattr explain mypkg.models:make_net --weights net.pt img.png --grayscale "
               "--size 8 \\\n"
               "      --method internal_influence --layer features.3 --target 7 "
               "--out ii.npy\n"
               "  fnattr explain model.pt2 x.npy --method neuron_gradient --layer "
               "features.2 --neuron 0,3,3 --out ng.pt\n\n"
               f"methods: {', '.join(METHODS)}")
    explain.add_argument("model", metavar="MODEL", help="model file (.pt2, .pt, .ts) or module:factory")
    explain.add_argument("inputs", metavar="INPUT", nargs="+", help="input files (.pt, .npy, images)")
    explain.add_argument("-m", "--method", type=_method_name, default="integrated_gradients",
                         help="attribution method (default: integrated_gradients)")
    explain.add_argument("-o", "--out", required=True, metavar="FILE",
                         help="attributions file; .pt or .npy by suffix")
    explain.add_argument("--png", metavar="FILE",
                         help="heatmap image (default: --out with suffix .png)")
    explain.add_argument("--no-png", action="store_true", help="do not write a heatmap")
    explain.add_argument("--weights", metavar="FILE",
                         help="state_dict for a module:factory model (loaded with weights_only=True)")
    group = explain.add_argument_group("method options")
    group.add_argument("--layer", metavar="NAME", help="layer by dotted module path, e.g. features.3")
    group.add_argument("--layer-input", action="store_true",
                       help="attribute to (select the neuron from) the layer's input, not its output")
    group.add_argument("--neuron", type=_int_tuple, metavar="I,J,...",
                       help="neuron index in the layer's value (without the batch dim)")
    group.add_argument("--target", type=_target, metavar="T",
                       help="output index (int or comma tuple), 'pred' (the predicted class, "
                            "default) or 'none' (outputs with one value per example)")
    group.add_argument("--baselines", metavar="zeros|FILE",
                       help="'zeros' (default) or a file of baselines (for gradient SHAP: "
                            "a distribution of reference rows)")
    group.add_argument("--n-steps", type=_positive_int, metavar="N",
                       help="integration steps (default: 50)")
    group.add_argument("--integration", choices=_INTEGRATION,
                       help="quadrature rule (Captum's `method`; default: gausslegendre)")
    group.add_argument("--n-samples", type=_positive_int, metavar="N",
                       help="gradient SHAP samples per example (default: 5)")
    group.add_argument("--stdevs", type=_non_negative_float, metavar="S",
                       help="gradient SHAP input noise standard deviation (default: 0)")
    group.add_argument("--seed", type=int, help="seed of the torch.Generator for gradient SHAP "
                                                "(default: 0)")
    group.add_argument("--internal-batch-size", type=_positive_int, metavar="N",
                       help="rows per forward inside path methods (bounds memory)")
    run = explain.add_argument_group("input and execution")
    run.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                     help="examples per attribution call (default: 32)")
    run.add_argument("--size", type=_size, metavar="H[,W]", help="resize images to H x W")
    run.add_argument("--grayscale", action="store_true", help="convert images to one channel")
    run.add_argument("--mean", type=_float_list, metavar="M[,M,M]",
                     help="subtract per-channel means from images")
    run.add_argument("--std", type=_float_list, metavar="S[,S,S]",
                     help="divide images by per-channel standard deviations")
    run.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    run.add_argument("--compile", action="store_true",
                     help="use fnattr.compile (torch.compile; slow first call)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no summary line")

    bench = commands.add_parser(
        "bench", help="run the benchmarks (python -m benchmarks.run)",
        description="Runs benchmarks.run.main from a source checkout; extra arguments are "
                    "passed on.")
    bench.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    return parser


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fnattr`` command; returns 0 or raises ``SystemExit``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except CLIError as error:
        if _debug():
            raise
        print(f"fnattr: error: {_one_line(error, 600)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        print("fnattr: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:
        argv = ["demo"]
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args = parser.parse_args(["demo"])
    if extra and args.command != "bench":
        raise CLIError(f"unrecognized arguments: {' '.join(extra)} "
                       f"(see 'fnattr {args.command} --help')")
    if args.command == "demo":
        return _demo(args)
    if args.command == "explain":
        return _explain(args)
    return _bench(args, extra)


# ----------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
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


def _existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} file not found: {path}")
    if not p.is_file():
        raise CLIError(f"{what} {path} is not a regular file")
    return p


def _torch_load_safe(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for unsafe or corrupt files."""
    import pickle

    import torch

    try:
        with _quiet_loading():
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
                       f"{_one_line(error, 160)}") from None


@dataclass
class _Model:
    forward: Callable          # what the attribution methods call
    module: Any                # nn.Module whose submodules are hookable, or None
    kind: str                  # "factory", "export" or "torchscript"
    name: str


def _load_model(spec: str, weights: str | None) -> _Model:
    import torch
    from torch import nn

    path = Path(spec)
    suffix = path.suffix.lower()
    looks_like_file = path.exists() or suffix in (".pt2", ".pt", ".pth", ".ts", ".jit", ".pkl",
                                                  ".pickle", ".bin", ".ckpt")
    if looks_like_file:
        path = _existing_file(spec, "model")
        if weights is not None:
            raise CLIError("--weights applies only to a module:factory model, not to a model file")
        if suffix == ".pt2":
            return _load_export(path)
        if suffix in (".pt", ".pth", ".ts", ".jit"):
            try:
                with _quiet_loading():
                    scripted = torch.jit.load(str(path), map_location="cpu")
            except Exception as error:
                reason = _one_line(error, 120)
                if "zip archive" in reason or "constants.pkl" in reason:
                    reason = "not a TorchScript archive"
                raise CLIError(
                    f"cannot load model {spec} as TorchScript ({reason}); models "
                    "must be TorchScript (.pt, .ts), torch.export (.pt2) or module:factory, "
                    "never pickled modules") from None
            scripted.eval()
            # fnattr's functional engine cannot run a ScriptModule's parameters
            # statelessly; as a plain function its input gradients are exact.
            forward = functools.wraps(scripted.forward)(lambda *xs: scripted(*xs))
            forward.to = scripted.to  # type: ignore[attr-defined]
            return _Model(forward, None, "torchscript", path.name)
        raise CLIError(
            f"unsupported model file {spec}: use a torch.export program (.pt2), TorchScript "
            "(.pt, .ts) or a package.module:factory import path")
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", spec):
        raise CLIError(f"model not found: {spec!r} is neither a file nor a "
                       "package.module:factory import path")
    module_name, factory_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise CLIError(f"cannot import {module_name!r} for model {spec}: {_one_line(error)} "
                       "(is it on PYTHONPATH?)") from None
    except Exception as error:
        raise CLIError(f"importing {module_name!r} for model {spec} failed: "
                       f"{_describe(error)}") from None
    factory: Any = module
    for attribute in factory_name.split("."):
        if not hasattr(factory, attribute):
            raise CLIError(f"model {spec}: {module_name!r} has no attribute {factory_name!r}")
        factory = getattr(factory, attribute)
    if not callable(factory):
        raise CLIError(f"model {spec}: {factory_name!r} is not callable")
    try:
        model = factory()
    except Exception as error:
        raise CLIError(f"model {spec}: calling {factory_name}() failed: {_describe(error)}") from None
    if not callable(model):
        raise CLIError(f"model {spec}: {factory_name}() returned a {type(model).__name__}, "
                       "not a model")
    if weights is not None:
        if not isinstance(model, nn.Module):
            raise CLIError(f"--weights needs an nn.Module, but {factory_name}() returned a "
                           f"{type(model).__name__}")
        state = _torch_load_safe(_existing_file(weights, "weights"), "weights file")
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
                           f"{_one_line(detail, 300)}") from None
    if isinstance(model, nn.Module):
        model.eval()
        return _Model(model, model, "factory", spec)
    return _Model(model, None, "factory", spec)


def _load_export(path: Path) -> _Model:
    import zipfile

    import torch

    if not zipfile.is_zipfile(path):
        raise CLIError(f"model {path} is not a torch.export program (.pt2): not a zip archive")
    try:
        with _quiet_loading():
            program = torch.export.load(path)
    except Exception as error:
        raise CLIError(f"cannot load model {path} as a torch.export program: "
                       f"{_one_line(error, 160)}") from None
    try:
        # unflatten keeps the submodules as modules that run (hooks fire), so
        # layers can be named; fall back to the flat graph module.
        with _quiet_loading():
            module = torch.export.unflatten(program)
        layers = True
    except Exception:
        module, layers = program.module(), False
    return _Model(module, module if layers else None, "export", path.name)


def _load_tensor(path_text: str, what: str, args: argparse.Namespace) -> "torch.Tensor":
    """A tensor from a .pt / .npy / image file (images become [1, C, H, W] in [0, 1])."""
    import numpy as np
    import torch

    path = _existing_file(path_text, what)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        value = _torch_load_safe(path, f"{what} file")
        if not isinstance(value, torch.Tensor):
            raise CLIError(f"{what} file {path} holds a {type(value).__name__}, not a tensor")
        tensor = value
    elif suffix == ".npy":
        with open(path, "rb") as file:
            if file.read(6) != b"\x93NUMPY":
                raise CLIError(f"{what} file {path} is not a .npy file (bad header)")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            if "pickle" in str(error).lower():
                raise CLIError(f"{what} file {path} holds pickled Python objects; refusing to "
                               "load it (allow_pickle=False)") from None
            raise CLIError(f"{what} file {path} is not a valid .npy file: "
                           f"{_one_line(error, 160)}") from None
        except Exception as error:
            raise CLIError(f"{what} file {path} is not a valid .npy file: "
                           f"{_one_line(error, 160)}") from None
        if array.dtype.kind not in "fiub":
            raise CLIError(f"{what} file {path} holds {array.dtype} data, not real numbers")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif suffix in _IMAGE_SUFFIXES:
        return _load_image(path, what, args)
    else:
        raise CLIError(f"unsupported {what} file {path}: use .pt, .npy or an image "
                       f"({', '.join(_IMAGE_SUFFIXES)})")
    if not tensor.is_floating_point():
        raise CLIError(f"{what} file {path} holds {tensor.dtype} values; attributions need "
                       "floating-point inputs (convert, and scale, them first)")
    if tensor.dim() == 0:
        raise CLIError(f"{what} file {path} holds a 0-d tensor; inputs need a batch dim 0")
    return tensor


def _load_image(path: Path, what: str, args: argparse.Namespace) -> "torch.Tensor":
    import numpy as np
    import torch
    import torch.nn.functional as F
    from matplotlib import image as mpimg

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.asarray(mpimg.imread(path))
    except Exception as error:
        raise CLIError(f"cannot read image {path}: {_one_line(error, 160)}") from None
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = array.astype(np.float32)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # drop alpha
    if array.ndim == 2:
        tensor = torch.from_numpy(array)[None, None]
    elif array.ndim == 3 and array.shape[2] in (1, 3):
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]
    else:
        raise CLIError(f"image {path} has unsupported shape {list(array.shape)}")
    if args.size is not None:
        tensor = F.interpolate(tensor, size=args.size, mode="bilinear", align_corners=False,
                               antialias=True)
    if args.grayscale and tensor.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        tensor = (tensor * weights).sum(1, keepdim=True)
    channels = tensor.shape[1]
    for option, values in (("--mean", args.mean), ("--std", args.std)):
        if values is not None and len(values) not in (1, channels):
            raise CLIError(f"{option} has {len(values)} values but image {path} has "
                           f"{channels} channel(s)")
    if args.mean is not None:
        tensor = tensor - torch.tensor(args.mean).view(1, -1, 1, 1)
    if args.std is not None:
        std = torch.tensor(args.std).view(1, -1, 1, 1)
        if (std == 0).any():
            raise CLIError("--std values must be non-zero")
        tensor = tensor / std
    return tensor.contiguous()


# ----------------------------------------------------------------------------- writing


class _Outputs:
    """Files written to hidden temporaries next to their destinations, moved into place
    together by :meth:`commit`; :meth:`discard` (or an exception) removes them."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def temporary(self, destination: Path) -> Path:
        tmp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
        self._pending.append((tmp, destination))
        return tmp

    def commit(self) -> None:
        for tmp, destination in self._pending:
            os.replace(tmp, destination)
        self._pending = []

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []


def _check_output(path_text: str, option: str, suffixes: Sequence[str] | None) -> Path:
    path = Path(path_text)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise CLIError(f"{option} {path_text} must end in {' or '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"{option}: directory {parent} does not exist")
    if path.is_dir():
        raise CLIError(f"{option} {path_text} is a directory")
    return path


# ----------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    import fnattr
    from fnattr import viz
    from fnattr.data import load_digits_examples, load_digits_model

    if args.n > _DEMO_COLUMNS_MAX:
        raise CLIError(f"--n must be at most {_DEMO_COLUMNS_MAX} (the embedded examples), "
                       f"got {args.n}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")

    model = load_digits_model()
    images, labels = load_digits_examples()
    x = images[: args.n]
    with torch.no_grad():
        pred = model(x).argmax(1)          # 1-D target: the predicted class of each example
    try:
        model.get_submodule(args.layer)
    except AttributeError:
        raise CLIError(f"unknown layer {args.layer!r}; layers: "
                       f"{', '.join(_layer_names(model))}") from None
    layer, neuron = args.layer, tuple(args.neuron)
    # Gradient SHAP baselines: a black image and blurred copies of a few examples.
    blurred = F.avg_pool2d(images[-3:], 3, stride=1, padding=1, count_include_pad=False)
    baselines = torch.cat([torch.zeros(1, *x.shape[1:]), blurred])
    generator = torch.Generator().manual_seed(args.seed)
    n_samples = 20

    def shap_delta(delta: torch.Tensor) -> torch.Tensor:  # per-example mean over samples
        return delta.reshape(x.shape[0], n_samples).mean(1)

    runs: list[tuple[str, str, Callable[[], Any], Callable[[Any], Any] | None]] = [
        ("gradient", "", lambda: fnattr.gradient(model, x, target=pred), None),
        ("integrated_gradients", "",
         lambda: fnattr.integrated_gradients(model, x, target=pred, n_steps=50,
                                             return_convergence_delta=True), None),
        ("gradient_shap", "",
         lambda: fnattr.gradient_shap(model, x, baselines, n_samples=n_samples, stdevs=0.05,
                                      target=pred, return_convergence_delta=True,
                                      generator=generator), shap_delta),
        ("guided_backprop", "", lambda: fnattr.guided_backprop(model, x, target=pred), None),
        ("deconvolution", "", lambda: fnattr.deconvolution(model, x, target=pred), None),
        ("internal_influence", layer,
         lambda: fnattr.internal_influence(model, layer, x, target=pred, n_steps=50), None),
        ("layer_conductance", layer,
         lambda: fnattr.layer_conductance(model, layer, x, target=pred, n_steps=50,
                                          return_convergence_delta=True), None),
        ("neuron_gradient", f"{layer} {neuron}",
         lambda: fnattr.neuron_gradient(model, layer, x, neuron), None),
        ("neuron_integrated_gradients", f"{layer} {neuron}",
         lambda: fnattr.neuron_integrated_gradients(model, layer, x, neuron, n_steps=50), None),
        ("neuron_gradient_shap", f"{layer} {neuron}",
         lambda: fnattr.neuron_gradient_shap(model, layer, x, neuron, baselines,
                                             n_samples=n_samples, stdevs=0.05,
                                             generator=generator), None),
        ("neuron_guided_backprop", f"{layer} {neuron}",
         lambda: fnattr.neuron_guided_backprop(model, layer, x, neuron), None),
        ("neuron_deconvolution", f"{layer} {neuron}",
         lambda: fnattr.neuron_deconvolution(model, layer, x, neuron), None),
    ]

    print(f"fnattr demo: DigitsNet on {x.shape[0]} held-out digits; target = predicted class; "
          f"layer {layer}, neuron {neuron}; gradient SHAP seed {args.seed}")
    header = f"{'method':<28} {'layer / neuron':<22} {'time (ms)':>9}  {'shape':<16} {'|delta|':>9}"
    print(header)
    print("-" * len(header))
    rows: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    for name, where, run, reduce_delta in runs:
        begin = time.perf_counter()
        try:
            result = run()
        except (ValueError, TypeError, IndexError) as error:
            raise CLIError(f"{name}: {_flag_names(_describe(error))}") from None
        elapsed = (time.perf_counter() - begin) * 1e3
        delta_text = "-"
        if isinstance(result, tuple):
            result, delta = result
            delta = reduce_delta(delta) if reduce_delta else delta
            delta_text = f"{delta.abs().mean().item():.2e}"
        shape = "[" + ", ".join(map(str, result.shape)) + "]"
        print(f"{name:<28} {where or '-':<22} {elapsed:>9.1f}  {shape:<16} {delta_text:>9}")
        picture = result.detach()
        if picture.dim() == 4 and picture.shape[-2:] != x.shape[-2:]:
            picture = fnattr.interpolate(picture, tuple(x.shape[-2:]))
        rows[name] = picture
    total = time.perf_counter() - start
    print("-" * len(header))
    print(f"|delta|: mean over examples of |sum(attributions) - (f(x) - f(baseline))|\n"
          f"         (gradient_shap: of each example's mean over its {n_samples} samples)\n"
          f"methods total: {total:.2f} s")

    titles = [f"y={int(l)} pred={int(p)}" for l, p in zip(labels[: x.shape[0]], pred)]
    row_titles = [textwrap.fill(name.replace("_", " "), 14)
                  + (f"\nneuron {neuron}" if name.startswith("neuron_") else "") for name in rows]
    figure = viz.grid(rows, images=x, titles=titles, row_titles=row_titles, sign="all")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = viz.save(figure, out_dir / "demo.png", dpi=80)
    except OSError as error:
        raise CLIError(f"cannot write {out_dir / 'demo.png'}: {_one_line(error)}") from None
    print(f"wrote {path}")
    return 0


def _layer_names(module: Any, limit: int = 24) -> list[str]:
    names = [name for name, _ in module.named_modules() if name]
    return names[:limit] + (["..."] if len(names) > limit else [])


# ----------------------------------------------------------------------------- explain

_ARGUMENT_FLAGS = {
    "`neuron_selector`": "--neuron", "`target`": "--target", "`baselines`": "--baselines",
    "`n_steps`": "--n-steps", "`n_samples`": "--n-samples", "`stdevs`": "--stdevs",
    "`layer`": "--layer", "`internal_batch_size`": "--internal-batch-size",
}


def _flag_names(message: str) -> str:
    """fnattr's messages name the Python argument; the CLI user knows the flag."""
    for argument, flag in _ARGUMENT_FLAGS.items():
        message = message.replace(argument, flag)
    return re.sub(r"`baselines\[\d+\]`", "--baselines", message)


def _check_options(args: argparse.Namespace, spec: _Spec) -> None:
    method = args.method
    given = lambda option: getattr(args, option) is not None  # noqa: E731
    if spec.layer and args.layer is None:
        raise CLIError(f"--layer is required for {method}")
    if spec.neuron and args.neuron is None:
        raise CLIError(f"--neuron is required for {method} (e.g. --neuron 0,3,3)")
    unused = []
    if not spec.layer:
        unused += [flag for flag, on in (("--layer", given("layer")),
                                         ("--layer-input", args.layer_input)) if on]
    if not spec.neuron and given("neuron"):
        unused.append("--neuron")
    if not spec.target and given("target"):
        unused.append("--target")
    if spec.path is None:
        unused += [f for f, o in (("--baselines", "baselines"), ("--internal-batch-size",
                                                                 "internal_batch_size"))
                   if given(o)]
    if spec.path != "steps":
        unused += [f for f, o in (("--n-steps", "n_steps"), ("--integration", "integration"))
                   if given(o)]
    if spec.path != "samples":
        unused += [f for f, o in (("--n-samples", "n_samples"), ("--stdevs", "stdevs"),
                                  ("--seed", "seed")) if given(o)]
    if unused:
        raise CLIError(f"{', '.join(unused)} not used by {method}")
    if args.no_png and args.png is not None:
        raise CLIError("--png and --no-png exclude each other")


def _explain(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import fnattr

    spec = METHODS[args.method]
    _check_options(args, spec)
    out_path = _check_output(args.out, "--out", (".pt", ".npy"))
    png_path = None
    if not args.no_png:
        png_path = _check_output(args.png or str(out_path.with_suffix(".png")), "--png", None)
        if png_path.resolve() == out_path.resolve():
            raise CLIError("--png and --out name the same file")
    compile_fn = None
    if args.compile:
        compile_fn = getattr(fnattr, "compile", None)
        if compile_fn is None:
            raise CLIError("--compile needs fnattr.compile, which this fnattr version lacks")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: CUDA is not available")

    model = _load_model(args.model, args.weights)
    if model.kind == "torchscript" and spec.rule:
        raise CLIError(
            f"{args.method} needs a module:factory model or a torch.export program (.pt2): "
            "its ReLU rule cannot reach the ReLUs of a TorchScript program")
    layer = None
    if spec.layer:
        if model.module is None:
            raise CLIError(
                f"{args.method} needs named layers, which a TorchScript model does not "
                "expose to hooks; use a module:factory model or a torch.export program (.pt2)")
        try:
            model.module.get_submodule(args.layer)
        except AttributeError:
            raise CLIError(f"unknown layer {args.layer!r}; layers: "
                           f"{', '.join(_layer_names(model.module))}") from None
        layer = args.layer

    # Inputs: every file concatenated along dim 0, cast to the model's dtype.
    tensors = [(path, _load_tensor(path, "input", args)) for path in args.inputs]
    first_path, first = tensors[0]
    for path, tensor in tensors[1:]:
        if tensor.shape[1:] != first.shape[1:]:
            raise CLIError(f"inputs have different shapes: {first_path} is {_shape(first)} "
                           f"but {path} is {_shape(tensor)} (dim 0 may differ)")
    dtype = _model_dtype(model.forward)
    x = torch.cat([t.to(dtype) for _, t in tensors]).to(device)
    n = x.shape[0]
    forward = model.forward
    if hasattr(forward, "to"):
        forward.to(device)

    baselines = _baselines(args, spec, x, dtype, device)

    # One forward on the first batch: catches inputs the model rejects, and the
    # output's shape validates the target.
    try:
        with torch.no_grad():
            probe = forward(x[: args.batch_size])
    except Exception as error:
        if _debug():
            raise
        raise CLIError(f"the model rejected inputs of shape {_shape(x[:args.batch_size])}: "
                       f"{_describe(error)}") from None
    if not isinstance(probe, torch.Tensor):
        raise CLIError(f"the model returned a {type(probe).__name__}, not a tensor")
    target_mode = _resolve_target(args, spec, probe)

    kwargs = _method_kwargs(args, spec)
    generator = None
    if spec.path == "samples":
        generator = torch.Generator(device=device).manual_seed(0 if args.seed is None
                                                               else args.seed)
        kwargs["generator"] = generator
    method = getattr(fnattr, args.method)
    if compile_fn is not None:
        try:
            call = compile_fn(method, forward, layer) if spec.layer else compile_fn(method, forward)
        except Exception as error:
            if _debug():
                raise
            raise CLIError(f"--compile: {_describe(error)}") from None
    elif spec.layer:
        call = functools.partial(method, forward, layer)
    else:
        call = functools.partial(method, forward)

    from tqdm import tqdm

    starts = range(0, n, args.batch_size)
    bar = tqdm(starts, total=len(starts), desc=args.method, unit="batch", file=sys.stderr,
               disable=args.quiet or not sys.stderr.isatty(), leave=False)
    results, deltas, targets = [], [], []
    begin = time.perf_counter()
    for start in bar:
        rows = slice(start, start + args.batch_size)
        xb = x[rows]
        extra = dict(kwargs)
        if spec.target:
            extra["target"] = _target_rows(target_mode, forward, xb)
            targets.append((extra["target"], xb.shape[0]))
        if spec.path is not None:
            extra["baselines"] = _baseline_rows(baselines, spec, rows, n)
        try:
            result = call(xb, **extra)
        except Exception as error:
            if _debug():
                raise
            raise CLIError(f"{args.method} failed: {_explain_error(error, model)}") from None
        if spec.delta:
            result, delta = result
            if args.method == "gradient_shap":
                delta = delta.reshape(xb.shape[0], -1).mean(1)
            deltas.append(delta.detach().cpu())
        if isinstance(result, tuple):
            raise CLIError(f"layer {layer!r} has a tuple value; pick a layer with one tensor")
        results.append(result.detach().cpu())
    bar.close()
    elapsed = time.perf_counter() - begin
    attributions = torch.cat(results)

    figure = None
    if png_path is not None:
        figure = _figure(attributions, x.detach().cpu(), args, layer is not None,
                         _column_titles(targets, n), explicit=args.png is not None)
        if figure is None:
            png_path = None

    outputs = _Outputs()
    try:
        tmp = outputs.temporary(out_path)
        with open(tmp, "xb") as file:
            if out_path.suffix.lower() == ".npy":
                np.save(file, attributions.numpy(), allow_pickle=False)
            else:
                torch.save(attributions, file)
        if figure is not None:
            tmp_png = outputs.temporary(png_path)
            fmt = png_path.suffix[1:].lower() or "png"
            if fmt not in figure.canvas.get_supported_filetypes():
                raise CLIError(f"--png {png_path}: unsupported image format {fmt!r}")
            with open(tmp_png, "xb") as file:
                figure.savefig(file, format=fmt, dpi=100)
        outputs.commit()
    except OSError as error:
        raise CLIError(f"cannot write outputs: {_one_line(error)}") from None
    finally:
        outputs.discard()

    if not args.quiet:
        delta_text = ""
        if deltas:
            delta_text = f"; mean |delta| {torch.cat(deltas).abs().mean().item():.2e}"
        written = f"{out_path}" + (f" and {png_path}" if png_path is not None else "")
        print(f"{args.method}: {n} example(s), attributions {_shape(attributions)} "
              f"in {elapsed * 1e3:.0f} ms{delta_text}; wrote {written}")
    return 0


def _shape(tensor: Any) -> str:
    return "[" + ", ".join(map(str, tensor.shape)) + "]"


def _model_dtype(forward: Any) -> Any:
    import torch

    parameters = getattr(forward, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            if parameter.is_floating_point():
                return parameter.dtype
    return torch.float32


def _baselines(args: argparse.Namespace, spec: _Spec, x: Any, dtype: Any, device: Any) -> Any:
    import torch

    if spec.path is None:
        return None
    if args.baselines is None or args.baselines == "zeros":
        return torch.zeros(1, *x.shape[1:], dtype=dtype, device=device) \
            if spec.path == "samples" else None
    b = _load_tensor(args.baselines, "baselines", args).to(dtype).to(device)
    if b.shape[1:] != x.shape[1:]:
        raise CLIError(f"--baselines {args.baselines} has shape {_shape(b)}, which does not "
                       f"match the inputs {_shape(x)} (after dim 0)")
    if spec.path == "steps" and b.shape[0] not in (1, x.shape[0]):
        raise CLIError(f"--baselines {args.baselines} needs 1 or {x.shape[0]} rows (one per "
                       f"input), got {b.shape[0]}")
    return b


def _baseline_rows(baselines: Any, spec: _Spec, rows: slice, n: int) -> Any:
    if baselines is None or spec.path == "samples" or baselines.shape[0] == 1 or n == 1:
        return baselines
    return baselines[rows]


def _resolve_target(args: argparse.Namespace, spec: _Spec, probe: Any) -> Any:
    if not spec.target:
        return None
    target = args.target if args.target is not None else "pred"
    shape = tuple(probe.shape)
    if target == "none":
        if probe.dim() > 1 and probe[0].numel() > 1:
            raise CLIError(f"--target none needs one output per example, but the model's "
                           f"output has shape {list(shape)}; give an output index")
        return None
    if target == "pred":
        if probe.dim() == 1:
            return None  # one value per example: nothing to pick
        if probe.dim() != 2:
            raise CLIError(f"--target pred needs outputs of shape [N, classes], got "
                           f"{list(shape)}; give an index tuple such as --target 0,1")
        return "pred"
    index = (target,) if isinstance(target, int) else tuple(target)
    if probe.dim() - 1 != len(index):
        raise CLIError(f"--target {','.join(map(str, index))} has {len(index)} index(es) but "
                       f"the model's output {list(shape)} has {probe.dim() - 1} non-batch dim(s)")
    for i, size in zip(index, shape[1:]):
        if not -size <= i < size:
            raise CLIError(f"--target {','.join(map(str, index))} is out of range for the "
                           f"model's output of shape {list(shape)}")
    return target


def _target_rows(mode: Any, forward: Callable, xb: Any) -> Any:
    import torch

    if mode != "pred":
        return mode
    with torch.no_grad():
        return forward(xb).argmax(1)


def _method_kwargs(args: argparse.Namespace, spec: _Spec) -> dict:
    kwargs: dict[str, Any] = {}
    if spec.neuron:
        kwargs["neuron_selector"] = tuple(args.neuron)
    if spec.layer and args.layer_input:
        kwargs["attribute_to_neuron_input" if spec.neuron else "attribute_to_layer_input"] = True
    if spec.path == "steps":
        kwargs["n_steps"] = args.n_steps if args.n_steps is not None else 50
        kwargs["method"] = args.integration or "gausslegendre"
    if spec.path == "samples":
        kwargs["n_samples"] = args.n_samples if args.n_samples is not None else 5
        kwargs["stdevs"] = args.stdevs if args.stdevs is not None else 0.0
    if spec.path is not None and args.internal_batch_size is not None:
        kwargs["internal_batch_size"] = args.internal_batch_size
    if spec.delta:
        kwargs["return_convergence_delta"] = True
    return kwargs


def _explain_error(error: BaseException, model: _Model) -> str:
    message = _flag_names(_describe(error))
    if model.kind == "export" and "Guard failed" in str(error):
        message += (" (the exported program has a fixed input shape; export it with a dynamic "
                    "batch dim, torch.export.Dim, or use --batch-size 1 and a method "
                    "without a path)")
    return message


def _column_titles(targets: list, n: int) -> list[str]:
    """``#i`` plus the target of example ``i`` (``targets``: (target, rows) per batch)."""
    import torch

    labels: list[str] = []
    for target, rows in targets:
        if isinstance(target, torch.Tensor) and target.dim() == 1:
            labels += [f"t={int(v)}" for v in target]
        else:
            labels += [f"t={target}" if target is not None else ""] * rows
    labels += [""] * (n - len(labels))
    return [f"#{i} {label}".strip() for i, label in enumerate(labels[:n])]


def _figure(attributions: Any, x: Any, args: argparse.Namespace, layer_method: bool,
            titles: list[str], explicit: bool) -> Any:
    """A heatmap grid (image-like attributions) or bar chart (1-D features), or None."""
    import fnattr
    from fnattr import viz

    show, images = attributions, x
    title = args.method + (f" ({args.layer})" if layer_method else "")
    shown = dict(titles=titles[: show.shape[0]], max_examples=8,
                 neuron=tuple(args.neuron) if getattr(args, "neuron", None) else None)
    try:
        if show.dim() == 4:
            if layer_method and show.shape[-2:] != images.shape[-2:] and images.dim() == 4:
                show = fnattr.interpolate(show, tuple(images.shape[-2:]))
            under = images if images.dim() == 4 and images.shape[1] in (1, 3) \
                and images.shape[-2:] == show.shape[-2:] else None
            figure = viz.grid([show], images=under, **shown)
            figure.suptitle(title)
            return figure
        if show.dim() == 3:
            figure = viz.grid([show], **shown)
            figure.suptitle(title)
            return figure
        if show.dim() == 2:
            if attributions.shape[0] == 1:
                return viz.bar(attributions[0], top_k=min(20, attributions.shape[1]), title=title)
            return viz.bar(attributions.mean(0), top_k=min(20, attributions.shape[1]),
                           title=f"{title}: mean over {attributions.shape[0]} examples")
    except (TypeError, ValueError) as error:
        if explicit:
            raise CLIError(f"cannot draw --png: {_one_line(error)}") from None
        print(f"fnattr: note: no heatmap written ({_one_line(error)})", file=sys.stderr)
        return None
    if explicit:
        raise CLIError(f"cannot draw --png for attributions of shape {_shape(attributions)}")
    print(f"fnattr: note: no heatmap for attributions of shape {_shape(attributions)}",
          file=sys.stderr)
    return None


# ----------------------------------------------------------------------------- bench


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    run = _import_benchmarks()
    argv = (["--quick"] if args.quick else []) + list(extra)
    try:
        code = run.main(argv)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # raise SystemExit("message"): report it as ours
            raise CLIError(f"bench: {exit_.code}") from None
        raise
    # main may return results (a dict) or an exit status
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _import_benchmarks() -> Any:
    """``benchmarks.run`` from the current directory or the source checkout fnattr runs from."""
    source_root = Path(__file__).resolve().parent.parent
    for attempt in range(2):
        try:
            module = importlib.import_module("benchmarks.run")
        except ModuleNotFoundError as error:
            if error.name not in ("benchmarks", "benchmarks.run"):
                raise CLIError(f"the benchmarks need the module {error.name!r}: "
                               "pip install 'fnattr[bench]'") from None
            if attempt == 0 and (source_root / "benchmarks" / "run.py").is_file():
                sys.modules.pop("benchmarks", None)
                sys.path.insert(0, str(source_root))
                continue
            raise CLIError("benchmarks not found: `fnattr bench` runs benchmarks/run.py of a "
                           "source checkout (python -m benchmarks.run)") from None
        if not callable(getattr(module, "main", None)):
            raise CLIError("benchmarks.run has no main(argv) function")
        return module
    raise AssertionError("unreachable")  # pragma: no cover
