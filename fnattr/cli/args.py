"""The ``fnattr`` argument parser and the converters of its option values.

Converters reject what could only fail later: non-finite numbers, seeds a
``torch.Generator`` cannot take, image sizes no resize should attempt.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, Callable, NoReturn

from .errors import CLIError

INTEGRATION = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
               "riemann_trapezoid")
DEMO_COLUMNS_MAX = 50
MAX_IMAGE_SIDE = 8192
SEED_RANGE = (-2**63, 2**64 - 1)  # what torch.Generator.manual_seed accepts

# method option (argparse dest) -> the keyword argument of fnattr's methods it sets
OPTION_PARAMS = {
    "neuron": "neuron_selector", "target": "target", "baselines": "baselines",
    "n_steps": "n_steps", "integration": "method", "n_samples": "n_samples",
    "stdevs": "stdevs", "seed": "generator", "internal_batch_size": "internal_batch_size",
}


def flag(dest: str) -> str:
    """The flag of an argparse destination: ``n_steps`` -> ``--n-steps``."""
    return "--" + dest.replace("_", "-")


def flag_of_param(param: str | None) -> str | None:
    """The flag that sets fnattr's keyword argument ``param`` (None if no flag does)."""
    if param in ("layer", "attribute_to_layer_input", "attribute_to_neuron_input"):
        return "--layer" if param == "layer" else "--layer-input"
    if param == "inputs":
        return "INPUT"
    dests = [dest for dest, name in OPTION_PARAMS.items() if name == param]
    return flag(dests[0]) if dests else None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``fnattr: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _parsed(convert: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """``convert`` with its ValueError turned into argparse's "expected ..." message."""
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    return parse


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.replace(" ", "").split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(_finite(part) for part in text.replace(" ", "").split(","))


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = convert(text)
        if not ok(value):
            raise ValueError(text)
        return value
    return parse


int_tuple = _parsed(_ints, "comma-separated integers such as 0,3,3")
positive_int = _parsed(_checked(int, lambda v: v >= 1), "a positive integer")
non_negative_int = _parsed(_checked(int, lambda v: v >= 0), "a non-negative integer")
non_negative_float = _parsed(_checked(_finite, lambda v: v >= 0), "a finite non-negative number")
finite_floats = _parsed(_floats, "comma-separated finite numbers such as 0.5,0.5,0.5")
non_zero_floats = _parsed(_checked(_floats, lambda v: all(v)),
                          "comma-separated finite non-zero numbers such as 0.25,0.25,0.25")
seed = _parsed(_checked(int, lambda v: SEED_RANGE[0] <= v <= SEED_RANGE[1]),
               "an integer seed from -2**63 to 2**64-1")


def _size_values(text: str) -> tuple[int, int]:
    values = _ints(text.lower().replace("x", ","))
    values = values * 2 if len(values) == 1 else values
    if len(values) != 2 or not all(1 <= v <= MAX_IMAGE_SIDE for v in values):
        raise ValueError(text)
    return values  # type: ignore[return-value]


size = _parsed(_size_values, f"a size such as 8 or 28,28 (sides 1..{MAX_IMAGE_SIDE})")


def target(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("pred", "none", "label"):
        return lowered
    try:
        values = _ints(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an output index such as 7, an index tuple such as 0,3, 'pred', "
            f"'label' or 'none', got {text!r}") from None
    return values[0] if len(values) == 1 else values


def device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def method_name(methods: dict) -> Callable[[str], str]:
    def parse(text: str) -> str:
        name = text.strip().lower().replace("-", "_")
        if name not in methods:
            raise argparse.ArgumentTypeError(
                f"unknown method {text!r}; choose from {', '.join(methods)}")
        return name
    return parse


# ----------------------------------------------------------------------------- parser

_RAW = argparse.RawDescriptionHelpFormatter

EXPLAIN_DESCRIPTION = """\
Computes attributions for MODEL on INPUT files and writes them to --out (.pt or .npy)
plus a heatmap PNG, or streams a whole dataset to a Zarr store (--out NAME.zarr).

MODEL is a torch.export program (.pt2), a TorchScript file (.pt, .ts) or an import path
package.module:factory. The files are safe formats that never unpickle arbitrary objects;
an import path is not: it imports (runs) that module's code and calls factory, which may
be any zero-argument callable. It resolves against the current directory first, as
`python -m` does. --weights loads a state_dict for it with torch.load(weights_only=True).
Layer and neuron methods need named layers: an import path or a .pt2 program.
guided_backprop/deconvolution (and their neuron forms) need an import path or a .pt2
program: their ReLU rule cannot reach the ReLUs of a TorchScript program.

INPUT files are .pt (one tensor, loaded with weights_only=True), .npy or images
(.png, .jpg, ...: [1, C, H, W] with values in [0, 1]); all inputs are concatenated
along dim 0. Integer tensors (token ids) are taken by layer_integrated_gradients,
with the embedding as --layer and token-id --baselines (default: id 0).

Outputs are refused if they would overwrite an input, the baselines, the model, the
weights or each other. Both are written to temporary files first and moved into place
together.

With --out NAME.zarr the run goes through fnattr.attribute_dataset: the attributions,
targets and deltas are streamed chunk by chunk to a Zarr v3 store (no heatmap is
written; --png is refused), and INPUT may also be ONE folder of images (searched
recursively, sorted; labels from the sorted sub-folder names, as torchvision's
ImageFolder; images read with --size/--grayscale/--mean/--std) or ONE
package.module:factory that returns a map-style Dataset of x or (x, y) items. Like a
model import path, a dataset factory imports (runs) that module's code. --target label
uses the labels. A rerun with the same options computes only the chunks that are not
complete (also after a crash or kill -9); different options are refused naming what
differs, unless --overwrite; --no-resume refuses any existing store. Under
`torchrun --nproc-per-node K -m fnattr explain ...` the K processes share the chunks
(gloo on CPU, NCCL with --device cuda, each process on cuda:LOCAL_RANK) and the store
equals a one-process run. Gradient SHAP draws example i's samples from (--seed, i).
"""

EXPLAIN_EPILOG = """\
examples:
  fnattr explain fnattr.data:load_digits_model digits.pt --method integrated_gradients \\
      --out ig.pt
  fnattr explain mypkg.models:make_net --weights net.pt img.png --grayscale --size 8 \\
      --method internal_influence --layer features.3 --target 7 --out ii.npy
  fnattr explain model.pt2 x.npy --method neuron_gradient --layer features.2 \\
      --neuron 0,3,3 --out ng.pt
  fnattr explain mypkg.models:make_net val_images/ --size 32 --target label \\
      --out val_ig.zarr
  torchrun --nproc-per-node 2 -m fnattr explain mypkg.models:make_net \\
      mypkg.data:validation_set --target label --out val_ig.zarr
"""


def build_parser(methods: dict) -> Parser:
    """The ``fnattr`` argument parser (subcommands ``demo`` and ``explain``)."""
    from .. import __version__

    parser = Parser(
        prog="fnattr", description="Functional attribution for PyTorch models.",
        epilog="With no command, `fnattr` runs `fnattr demo`.\n"
               "Run `fnattr COMMAND --help` for the options of each command.\n"
               "Benchmarks run from a source checkout: python -m benchmarks.run --quick",
        formatter_class=_RAW)
    parser.add_argument("--version", action="version", version=f"fnattr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add_demo(commands)
    explain = commands.add_parser(
        "explain", formatter_class=_RAW, description=EXPLAIN_DESCRIPTION,
        help="attribute a model's outputs (or a neuron) to its inputs",
        epilog=EXPLAIN_EPILOG + f"\nmethods: {', '.join(methods)}")
    _add_explain_files(explain, methods)
    _add_explain_method_options(explain.add_argument_group("method options"))
    _add_explain_execution(explain.add_argument_group("input and execution"))
    _add_explain_store(explain.add_argument_group("Zarr store (--out NAME.zarr)"))
    return parser


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", formatter_class=_RAW,
        help="run every method on the embedded digits model; write a PNG grid",
        description="Runs every attribution method on the embedded DigitsNet and held-out "
                    "digits,\nwrites a grid of heatmaps (rows = methods, columns = examples) "
                    "to DIR/demo.png\nand prints a table of timings, shapes and "
                    "completeness deltas.",
        epilog="example:\n  fnattr demo --out demo_out --n 8")
    demo.add_argument("--out", metavar="DIR", default="demo_out",
                      help="output directory, created if missing (default: demo_out)")
    demo.add_argument("--n", metavar="N", type=positive_int, default=8,
                      help=f"number of examples (columns), 1..{DEMO_COLUMNS_MAX} (default: 8)")
    demo.add_argument("--layer", default="features.2",
                      help="layer of the layer and neuron methods (default: features.2)")
    demo.add_argument("--neuron", type=int_tuple, default=(0, 3, 3), metavar="I,J,K",
                      help="neuron of the neuron methods (default: 0,3,3)")
    demo.add_argument("--seed", type=seed, default=0,
                      help="seed of gradient SHAP's torch.Generator (default: 0)")


def _add_explain_files(explain: argparse.ArgumentParser, methods: dict) -> None:
    explain.add_argument("model", metavar="MODEL",
                         help="model file (.pt2, .pt, .ts) or package.module:factory "
                              "(imports and runs that module)")
    explain.add_argument("inputs", metavar="INPUT", nargs="+",
                         help="input files (.pt, .npy, images); with --out NAME.zarr also "
                              "one folder of images or one package.module:factory "
                              "dataset (imports and runs that module)")
    explain.add_argument("-m", "--method", type=method_name(methods),
                         default="integrated_gradients",
                         help="attribution method (default: integrated_gradients)")
    explain.add_argument("-o", "--out", required=True, metavar="FILE",
                         help="attributions file (.pt or .npy by suffix) or a Zarr store "
                              "(.zarr: streamed and resumable)")
    explain.add_argument("--png", metavar="FILE",
                         help="heatmap image (default: --out with suffix .png)")
    explain.add_argument("--no-png", action="store_true", help="do not write a heatmap")
    explain.add_argument("--weights", metavar="FILE",
                         help="state_dict for a module:factory model (loaded with "
                              "weights_only=True)")


def _add_explain_method_options(group: Any) -> None:
    group.add_argument("--layer", metavar="NAME",
                       help="layer by dotted module path, e.g. features.3")
    group.add_argument("--layer-input", action="store_true",
                       help="attribute to (select the neuron from) the layer's input, "
                            "not its output")
    group.add_argument("--neuron", type=int_tuple, metavar="I,J,...",
                       help="neuron index in the layer's value (without the batch dim)")
    group.add_argument("--target", type=target, metavar="T",
                       help="output index (int or comma tuple), 'pred' (the predicted class, "
                            "default), 'label' (the dataset's labels; .zarr runs) or 'none' "
                            "(outputs with one value per example)")
    group.add_argument("--baselines", metavar="zeros|FILE",
                       help="'zeros' (default) or a file of baselines (for gradient SHAP: "
                            "a distribution of reference rows)")
    group.add_argument("--n-steps", type=positive_int, metavar="N",
                       help="integration steps (default: 50)")
    group.add_argument("--integration", choices=INTEGRATION,
                       help="quadrature rule (Captum's `method`; default: gausslegendre)")
    group.add_argument("--n-samples", type=positive_int, metavar="N",
                       help="gradient SHAP samples per example (default: 5)")
    group.add_argument("--stdevs", type=non_negative_float, metavar="S",
                       help="gradient SHAP input noise standard deviation (default: 0)")
    group.add_argument("--seed", type=seed,
                       help="seed of the torch.Generator for gradient SHAP (default: 0)")
    group.add_argument("--internal-batch-size", type=positive_int, metavar="N",
                       help="rows per forward inside path methods (bounds memory)")


def _add_explain_execution(run: Any) -> None:
    run.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                     help="examples per attribution call (default: 32)")
    run.add_argument("--size", type=size, metavar="H[,W]", help="resize images to H x W")
    run.add_argument("--grayscale", action="store_true", help="convert images to one channel")
    run.add_argument("--mean", type=finite_floats, metavar="M[,M,M]",
                     help="subtract per-channel means from images")
    run.add_argument("--std", type=non_zero_floats, metavar="S[,S,S]",
                     help="divide images by per-channel standard deviations")
    run.add_argument("--device", type=device, default="cpu",
                     help="cpu (default), cuda or cuda:N")
    run.add_argument("--compile", action="store_true",
                     help="use fnattr.compile (torch.compile; slow first call)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no summary line")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show a progress bar (default: when stderr is a terminal)")


def _add_explain_store(store: Any) -> None:
    store.add_argument("--num-workers", type=non_negative_int, metavar="N",
                       help="DataLoader worker processes reading the data (default: 0)")
    store.add_argument("--overwrite", action="store_true",
                       help="replace a store holding another run (or any Zarr group)")
    store.add_argument("--no-resume", action="store_true",
                       help="refuse to continue a run already in the store")
