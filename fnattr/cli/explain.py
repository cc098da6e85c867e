"""``fnattr explain``: check the request, load, run in batches, write.

Every check that needs no model (options, output paths, outputs that would
overwrite a source) runs before anything is loaded or imported; the outputs
are written only once every batch has been attributed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fnattr

from . import methods as M
from .args import OPTION_PARAMS, flag
from .errors import CLIError, describe, user_code
from .figure import column_titles, figure, shape_text
from .loading import (ImageOptions, Model, check_layer, data_kind, is_model_file, load_model,
                      load_tensor)
from .output import (WRITERS, STORE_SUFFIX, check_image_format, check_output, check_store,
                     is_store, refuse_overwrites, refuse_store_overlap, write_outputs,
                     writer_for)

_EXPORT_GUARD_HINT = (" (the exported program has a fixed input shape; export it with a "
                      "dynamic batch dim, torch.export.Dim, or use --batch-size 1 and a "
                      "method without a path)")


@dataclass(frozen=True)
class Plan:
    """A checked request: the method, where results go, how images are read."""

    entry: Any
    out: Path
    png: Path | None
    png_format: str | None
    images: ImageOptions
    store: bool = False  # --out is a Zarr store: the run goes through attribute_dataset


@dataclass
class Result:
    """Attributions of every example, per-batch deltas and targets, run time."""

    attributions: Any
    deltas: list
    targets: list
    seconds: float


def explain(args: argparse.Namespace) -> int:
    """Runs ``fnattr explain``: check, load, run, write; returns the exit code 0."""
    plan = check_request(args)
    if plan.store:
        raise CLIError("internal: a .zarr --out is run by fnattr.cli.store.explain_store")
    model, layer = _load_model(args, plan.entry)
    x, baselines = _load_inputs(args, plan, model)
    target = _resolve_target(args, plan.entry, _probe(model, x, args.batch_size))
    result = _run(args, plan.entry, model, layer, x, baselines, target)
    png = _write(args, plan, result, x, layer)
    if not args.quiet:
        _summary(plan, result, png)
    return 0


# ----------------------------------------------------------------------------- check


def check_request(args: argparse.Namespace) -> Plan:
    """Checks options and output paths; loads and imports nothing."""
    entry = M.METHODS[args.method]
    _check_options(args, entry)
    images = ImageOptions(args.size, args.grayscale, args.mean, args.std)
    if is_store(args.out):
        if args.png is not None:
            raise CLIError("--png: a .zarr run writes no heatmap (read the store and draw "
                           "the examples you want with fnattr.viz)")
        out = check_store(args.out, "--out")
        refuse_store_overlap("--out", out, _sources(args))
        return Plan(entry, out, None, None, images, store=True)
    _check_not_store_options(args)
    out = check_output(args.out, "--out", (*WRITERS, STORE_SUFFIX))
    png = None
    if not args.no_png:
        png = check_output(args.png or str(out.with_suffix(".png")), "--png", None)
    refuse_overwrites({"--out": out, **({"--png": png} if png else {})}, _sources(args))
    png_format = check_image_format(png, "--png") if png else None
    return Plan(entry, out, png, png_format, images)


def _sources(args: argparse.Namespace) -> list[tuple[str, str]]:
    sources = [("input", path) for path in args.inputs]
    if is_model_file(args.model):
        sources.append(("model", args.model))
    if args.weights is not None:
        sources.append(("weights", args.weights))
    if args.baselines not in (None, "zeros"):
        sources.append(("baselines", args.baselines))
    return sources


def _check_not_store_options(args: argparse.Namespace) -> None:
    """Refuses what only a .zarr run (a whole dataset) supports."""
    only = [name for name, given in (("--num-workers", args.num_workers is not None),
                                     ("--overwrite", args.overwrite),
                                     ("--no-resume", args.no_resume)) if given]
    if only:
        raise CLIError(f"{', '.join(only)} applies only to a Zarr store (--out NAME.zarr)")
    kind = data_kind(args.inputs)
    if kind != "files":
        raise CLIError(f"INPUT {args.inputs[0]} is a {kind}: whole datasets are streamed to a "
                       "Zarr store, use --out NAME.zarr")
    if args.target == "label":
        raise CLIError("--target label needs labelled data: a folder of images or a "
                       "package.module:factory dataset, with --out NAME.zarr")


def _check_options(args: argparse.Namespace, entry: Any) -> None:
    name = entry.name
    if entry.needs_layer and args.layer is None:
        raise CLIError(f"--layer is required for {name}")
    if M.requires(entry, "neuron_selector") and args.neuron is None:
        raise CLIError(f"--neuron is required for {name} (e.g. --neuron 0,3,3)")
    unused = ["--layer"] if args.layer is not None and not entry.needs_layer else []
    if args.layer_input and not M.accepts(entry, M.layer_input_param(entry)):
        unused.append("--layer-input")
    unused += [flag(dest) for dest, param in OPTION_PARAMS.items()
               if getattr(args, dest) is not None and not M.accepts(entry, param)]
    if unused:
        raise CLIError(f"{', '.join(unused)} not used by {name}")
    if args.no_png and args.png is not None:
        raise CLIError("--png and --no-png exclude each other")


def _check_model(entry: Any, model: Model) -> None:
    if model.kind == "torchscript" and entry.rule is not None:
        raise CLIError(
            f"{entry.name} needs a module:factory model or a torch.export program (.pt2): "
            "its ReLU rule cannot reach the ReLUs of a TorchScript program")
    if entry.needs_layer and model.module is None:
        raise CLIError(
            f"{entry.name} needs named layers, which a TorchScript model does not "
            "expose to hooks; use a module:factory model or a torch.export program (.pt2)")


# ----------------------------------------------------------------------------- load


def _load_model(args: argparse.Namespace, entry: Any) -> tuple[Model, str | None]:
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: CUDA is not available")
    if args.compile and getattr(fnattr, "compile", None) is None:
        raise CLIError("--compile needs fnattr.compile, which this fnattr version lacks")
    model = load_model(args.model, args.weights)
    _check_model(entry, model)
    if entry.needs_layer:
        check_layer(model.module, args.layer)
    model.to(device)
    return model, args.layer if entry.needs_layer else None


def _load_inputs(args: argparse.Namespace, plan: Plan, model: Model) -> tuple[Any, Any]:
    """Every input file joined along dim 0 in the model's dtype, and the baselines."""
    import torch

    ids = plan.entry.integer_inputs  # token ids stay integers
    tensors = [(path, load_tensor(path, "input", plan.images, integers=ids))
               for path in args.inputs]
    first_path, first = tensors[0]
    for path, tensor in tensors[1:]:
        if tensor.shape[1:] != first.shape[1:]:
            raise CLIError(f"inputs have different shapes: {first_path} is {shape_text(first)} "
                           f"but {path} is {shape_text(tensor)} (dim 0 may differ)")
    kinds = {t.is_floating_point() for _, t in tensors}
    if len(kinds) > 1:
        raise CLIError("inputs mix floating-point values and integer token ids")
    dtype = model.dtype() if kinds == {True} else torch.long
    x = torch.cat([t.to(dtype) for _, t in tensors]).to(args.device)
    return x, _load_baselines(args, plan, x)


def _load_baselines(args: argparse.Namespace, plan: Plan, x: Any, one_row: bool = False) -> Any:
    """The baselines (None, a zero row, or --baselines); ``one_row``: path methods take
    one row for every example (a .zarr run, whose batches are not the inputs' rows)."""
    import torch

    entry = plan.entry
    if not M.accepts(entry, "baselines"):
        return None
    if args.baselines is None or args.baselines == "zeros":
        # a sampled method draws from a distribution of rows: one zero row
        return torch.zeros_like(x[:1]) if M.requires(entry, "baselines") else None
    integer = not x.is_floating_point()
    b = load_tensor(args.baselines, "baselines", plan.images, integers=integer)
    if integer and b.is_floating_point():
        raise CLIError(f"--baselines {args.baselines} holds {b.dtype} values; token-id "
                       "inputs take token-id baselines (e.g. a pad id)")
    b = b.to(x.dtype).to(x.device)
    if b.shape[1:] != x.shape[1:]:
        raise CLIError(f"--baselines {args.baselines} has shape {shape_text(b)}, which does "
                       f"not match the inputs {shape_text(x)} (after dim 0)")
    if entry.path == "quadrature" and one_row and b.shape[0] != 1:
        raise CLIError(f"--baselines {args.baselines} needs 1 row for a .zarr run (one "
                       f"baseline for every example), got {b.shape[0]}")
    if entry.path == "quadrature" and b.shape[0] not in (1, x.shape[0]):
        raise CLIError(f"--baselines {args.baselines} needs 1 or {x.shape[0]} rows (one per "
                       f"input), got {b.shape[0]}")
    return b


# ----------------------------------------------------------------------------- run


def _probe(model: Model, x: Any, batch_size: int) -> Any:
    """One forward on the first batch: catches inputs the model rejects; the
    output's shape validates the target."""
    import torch

    rows = x[:batch_size]
    with user_code(lambda error: f"the model rejected inputs of shape {shape_text(rows)}: "
                                 f"{describe(error)}"), torch.no_grad():
        probe = model.forward(rows)
    if not isinstance(probe, torch.Tensor):
        raise CLIError(f"the model returned a {type(probe).__name__}, not a tensor")
    return probe


def _resolve_target(args: argparse.Namespace, entry: Any, probe: Any) -> Any:
    """What ``target`` each batch gets: None, ``"pred"`` or a checked index."""
    if not M.accepts(entry, "target"):
        return None
    target = args.target if args.target is not None else "pred"
    shape = list(probe.shape)
    if target == "none":
        if probe.dim() > 1 and probe[0].numel() > 1:
            raise CLIError(f"--target none needs one output per example, but the model's "
                           f"output has shape {shape}; give an output index")
        return None
    if target in ("pred", "label"):
        if probe.dim() == 2:
            return target
        if probe.dim() == 1 and target == "pred":
            return None  # one value per example: nothing to pick
        raise CLIError(f"--target {target} needs outputs of shape [N, classes], got {shape}; "
                       "give an index tuple such as --target 0,1")
    index = (target,) if isinstance(target, int) else tuple(target)
    text = ",".join(map(str, index))
    if probe.dim() - 1 != len(index):
        raise CLIError(f"--target {text} has {len(index)} index(es) but the model's output "
                       f"{shape} has {probe.dim() - 1} non-batch dim(s)")
    if not all(-size <= i < size for i, size in zip(index, shape[1:])):
        raise CLIError(f"--target {text} is out of range for the model's output of shape "
                       f"{shape}")
    return target


def _run(args: argparse.Namespace, entry: Any, model: Model, layer: str | None, x: Any,
         baselines: Any, target: Any) -> Result:
    """Attributes ``x`` batch by batch; any failure is one CLIError."""
    import torch
    from tqdm import tqdm

    call, kwargs = _prepare(args, entry, model, layer)
    n, size = x.shape[0], args.batch_size
    starts = range(0, n, size)
    bar = tqdm(starts, total=len(starts), desc=entry.name, unit="batch", file=sys.stderr,
               disable=not show_progress(args), leave=False)
    parts, deltas, targets = [], [], []
    begin = time.perf_counter()
    for start in bar:
        rows = slice(start, start + size)
        with user_code(lambda error: _failure(entry, model, error)):
            batch_target = _batch_target(target, model.forward, x[rows])
            attributions, delta = _attribute(call, entry, x[rows], batch_target,
                                             _baseline_rows(baselines, entry, rows, n), kwargs)
        parts.append(attributions)
        deltas += [] if delta is None else [delta.cpu()]
        targets += [(batch_target, x[rows].shape[0])] if M.accepts(entry, "target") else []
    bar.close()
    return Result(torch.cat(parts), deltas, targets, time.perf_counter() - begin)


def show_progress(args: argparse.Namespace) -> bool:
    """--progress/--no-progress, else a bar when stderr is a terminal; never with -q."""
    shown = sys.stderr.isatty() if args.progress is None else args.progress
    return shown and not args.quiet


def method_options(args: argparse.Namespace) -> dict:
    """fnattr's keyword arguments set by the method options (not the generator)."""
    options = {OPTION_PARAMS[dest]: getattr(args, dest) for dest in
               ("n_steps", "integration", "n_samples", "stdevs", "internal_batch_size")
               if getattr(args, dest) is not None}
    if args.neuron is not None:
        options["neuron_selector"] = tuple(args.neuron)
    return options


def _prepare(args: argparse.Namespace, entry: Any, model: Model,
             layer: str | None) -> tuple[Callable, dict]:
    import torch

    options = method_options(args)
    if M.accepts(entry, "generator"):
        options["generator"] = torch.Generator(device=args.device).manual_seed(
            0 if args.seed is None else args.seed)
    compile_fn = fnattr.compile if args.compile else None
    with user_code("--compile"):
        call = M.bind(entry, model.forward, layer, compile_fn)
    return call, M.fixed_kwargs(entry, options, args.layer_input)


def _batch_target(mode: Any, forward: Callable, xb: Any) -> Any:
    import torch

    if mode != "pred":
        return mode
    with torch.no_grad():
        return forward(xb).argmax(1)


def _baseline_rows(baselines: Any, entry: Any, rows: slice, n: int) -> Any:
    if baselines is None or entry.path == "sampled" or baselines.shape[0] == 1 or n == 1:
        return baselines
    return baselines[rows]


def _attribute(call: Callable, entry: Any, xb: Any, target: Any, baselines: Any,
               kwargs: dict) -> tuple[Any, Any]:
    extra = dict(kwargs)
    if M.accepts(entry, "target"):
        extra["target"] = target
    if baselines is not None:
        extra["baselines"] = baselines
    attributions, delta = M.split_delta(entry, call(xb, **extra), xb.shape[0])
    if isinstance(attributions, tuple):
        raise CLIError("--layer has a tuple value; pick a layer with one tensor")
    return attributions.detach().cpu(), delta


def _failure(entry: Any, model: Model, error: BaseException) -> str:
    """The one line for a failed call: the flag it names, if fnattr named an argument."""
    message = M.failure(entry, error)
    if model.kind == "export" and "Guard failed" in str(error):
        message += _EXPORT_GUARD_HINT
    return message


# ----------------------------------------------------------------------------- write


def _write(args: argparse.Namespace, plan: Plan, result: Result, x: Any,
           layer: str | None) -> Path | None:
    """Writes --out and the heatmap together; returns the heatmap path (or None)."""
    attributions = result.attributions
    files = [(plan.out, lambda tmp: writer_for(plan.out)(tmp, attributions))]
    drawn = None
    if plan.png is not None:
        title = plan.entry.name + (f" ({layer})" if layer is not None else "")
        drawn = figure(attributions, x.detach().cpu(), title, layer is not None,
                       column_titles(result.targets, x.shape[0]), explicit=args.png is not None,
                       neuron=tuple(args.neuron) if plan.entry.site == "neuron" else None)
    if drawn is not None:
        files.append((plan.png, lambda tmp: _save_figure(drawn, tmp, plan.png_format)))
    write_outputs(files)
    return plan.png if drawn is not None else None


def _save_figure(drawn: Any, path: Path, fmt: str | None) -> None:
    with open(path, "xb") as file:
        drawn.savefig(file, format=fmt, dpi=100)


def _summary(plan: Plan, result: Result, png: Path | None) -> None:
    import torch

    delta_text = ""
    if result.deltas:
        delta_text = f"; mean |delta| {torch.cat(result.deltas).abs().mean().item():.2e}"
    written = f"{plan.out}" + (f" and {png}" if png is not None else "")
    n = result.attributions.shape[0]
    print(f"{plan.entry.name}: {n} example(s), attributions "
          f"{shape_text(result.attributions)} in {result.seconds * 1e3:.0f} ms{delta_text}; "
          f"wrote {written}")
