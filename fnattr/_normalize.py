"""Argument normalization: the one place where Captum's argument meanings live.

Every public function turns its loosely typed arguments (a tensor or a tuple of
tensors, scalar or tensor baselines, the five forms of ``target``, neuron
selectors, ``additional_forward_args``) into canonical forms here, and every
validation error is raised here, naming the offending argument.

The meanings are Captum 0.9's; they are written once, in
:data:`fnattr._docs.ARGS`, and rendered into every public docstring's
``Args:`` (``help(fnattr.integrated_gradients)``). The public names of the
argument types are in :mod:`fnattr.types`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor, nn

from ._select import (  # noqa: F401  (Captum's target and neuron meanings)
    Each,
    each,
    check_target,
    repeat_interleave_target,
    select_target,
    take,
    check_index_tensor,
    check_selector,
    format_selectors,
    select_neuron,
    select_neurons,
)

TensorOrTuple = Union[Tensor, tuple[Tensor, ...]]
BaselineType = Union[None, Tensor, int, float, tuple[Union[Tensor, int, float], ...]]
TargetType = Union[None, int, tuple, Tensor, list]
SelectorType = Union[int, tuple, Callable[..., Tensor]]

METHODS = (
    "riemann_right",
    "riemann_left",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)


def as_tuple(inputs: Any, name: str = "inputs") -> tuple[tuple[Tensor, ...], bool]:
    """Returns ``(inputs_as_tuple, was_tuple)`` after validating the batch dims."""
    was_tuple = isinstance(inputs, tuple)
    tup = inputs if was_tuple else (inputs,)
    if len(tup) == 0:
        raise ValueError(f"`{name}` must hold at least one tensor, got an empty tuple")
    eager = not torch.compiler.is_compiling()  # (dynamo cannot trace these checks)
    if eager and torch.is_inference_mode_enabled():
        raise RuntimeError(
            "fnattr computes gradients, which torch.inference_mode() disables: call it "
            "outside inference mode (inference tensors as `inputs` are fine: they are "
            "copied)")
    for i, t in enumerate(tup):
        if not isinstance(t, Tensor):
            where = f"`{name}[{i}]`" if was_tuple else f"`{name}`"
            raise TypeError(
                f"{where} must be a torch.Tensor (or `{name}` a tuple of them), "
                f"got {type(t).__name__}"
            )
        if t.dim() == 0:
            raise ValueError(f"`{name}` tensors need a batch dim 0, got a 0-d tensor")
    if eager and any(t.is_inference() for t in tup):  # made under inference_mode: not differentiable
        tup = tuple(t.clone() if t.is_inference() else t for t in tup)
    n = tup[0].shape[0]
    if any(t.shape[0] != n for t in tup):
        raise ValueError(
            f"all `{name}` tensors must have the same batch size (dim 0), got "
            f"{[t.shape[0] for t in tup]}"
        )
    return tup, was_tuple


_TOKEN_IDS = ("for token ids, attribute at the embedding layer instead (e.g. "
              "fnattr.layer_integrated_gradients, or a layer method with the embedding as "
              "`layer`)")


def check_floating(inputs: Sequence[Tensor], name: str = "inputs",
                   purpose: str = "to attribute to them", hint: str = _TOKEN_IDS) -> None:
    """Inputs differentiated at (or interpolated along a path, or noised) must be
    floating point; the error says ``purpose`` and what to do with token ids."""
    for t in inputs:
        if isinstance(t, Tensor) and not (t.dtype.is_floating_point or t.dtype.is_complex):
            raise TypeError(f"`{name}` must be floating point {purpose}, got {t.dtype}: {hint}")


def restore(values: Sequence[Tensor], was_tuple: bool) -> TensorOrTuple:
    """Inverse of :func:`as_tuple`: a tuple for a tuple, a tensor for a tensor."""
    return tuple(values) if was_tuple else values[0]


def format_args(additional_forward_args: Any) -> tuple:
    """``None`` -> ``()``; a non-tuple -> a 1-tuple; a tuple unchanged."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def format_baselines(
    baselines: Any,
    inputs: tuple[Tensor, ...],
    *,
    distribution: bool = False,
    name: str = "baselines",
) -> tuple[Tensor | float, ...]:
    """Canonical baselines: a tuple with one number or tensor per input.

    With ``distribution=True`` (gradient SHAP) tensor baselines are a set of
    reference rows: any number of rows, each shaped like one example.
    """
    if baselines is None:
        return tuple(0.0 for _ in inputs)
    tup = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(tup) != len(inputs):
        raise ValueError(
            f"`{name}` must give one baseline per input: got {len(tup)} for "
            f"{len(inputs)} input tensor(s)"
        )
    out: list[Tensor | float] = []
    for i, (b, x) in enumerate(zip(tup, inputs)):
        if isinstance(b, bool) or not isinstance(b, (Tensor, numbers.Number)):
            raise TypeError(
                f"`{name}` entries must be tensors or numbers, got "
                f"{type(b).__name__} at position {i}"
            )
        if isinstance(b, numbers.Number):
            out.append(float(b))
            continue
        if distribution:
            if b.dim() != x.dim() or b.shape[1:] != x.shape[1:] or b.shape[0] < 1:
                raise ValueError(
                    f"`{name}[{i}]` must be a batch of reference rows shaped like the "
                    f"input's examples {tuple(x.shape[1:])}, got {tuple(b.shape)}"
                )
        elif not (b.shape == x.shape or (b.dim() == x.dim() and b.shape[0] == 1
                                         and b.shape[1:] == x.shape[1:])):
            raise ValueError(
                f"`{name}[{i}]` must have the input's shape {tuple(x.shape)} or a batch "
                f"dim of 1, got {tuple(b.shape)}"
            )
        out.append(b)
    return tuple(out)


def format_stdevs(stdevs: Any, n_inputs: int) -> tuple[float, ...]:
    """``stdevs``: one float for every input, or a tuple with one per input."""
    tup = stdevs if isinstance(stdevs, tuple) else (stdevs,) * n_inputs
    if len(tup) != n_inputs:
        raise ValueError(
            f"`stdevs` must be a float or a tuple with one float per input: got "
            f"{len(tup)} values for {n_inputs} input tensor(s)"
        )
    for s in tup:
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise TypeError(f"`stdevs` entries must be floats, got {type(s).__name__}")
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"`stdevs` must be finite and non-negative, got {s}")
    return tuple(float(s) for s in tup)


def check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")


# ``grad_kwargs`` keys (Captum passes them to ``torch.autograd.grad``) whose meaning
# fnattr keeps: it always materializes the gradients of unused inputs as zeros.
GRAD_KWARGS_HONOURED = ("materialize_grads",)


def check_grad_kwargs(grad_kwargs: Any) -> None:
    """``grad_kwargs``: ``None`` or a dict of keys fnattr honours; any other key is
    refused by name (fnattr does not call ``torch.autograd.grad`` with them)."""
    if grad_kwargs is None:
        return
    if not isinstance(grad_kwargs, dict):
        raise TypeError(f"`grad_kwargs` must be a dict or None, got {type(grad_kwargs).__name__}")
    for key in grad_kwargs:
        if key not in GRAD_KWARGS_HONOURED:
            raise ValueError(
                f"`grad_kwargs` key {key!r} is not supported by fnattr (supported: "
                f"{', '.join(GRAD_KWARGS_HONOURED)}; use create_graph=True for a "
                "differentiable result)")


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_method(method: Any, n_steps: Any) -> tuple[str, int]:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    n_steps = check_positive_int(n_steps, "n_steps", 1 if method == "gausslegendre" else 2)
    return method, n_steps


def repeat_interleave_args(args: tuple, times: int, n_examples: int) -> tuple:
    """Per-example tensor args for ``times`` consecutive copies of each example."""
    return tuple(
        a.repeat_interleave(times, dim=0)
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n_examples else a
        for a in args
    )


def resolve_layer(root: Any, layer: Any, name: str = "layer") -> nn.Module:
    """A layer is an ``nn.Module`` or a dotted name of a submodule of ``root`` (the
    model behind the forward function, ``Functional.root``)."""
    if isinstance(layer, torch.jit.ScriptModule):
        raise TypeError(
            f"`{name}` is a TorchScript module, which cannot be hooked: pass the eager "
            "model (or a torch.export program's .module())"
        )
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        root = unwrap_parallel(root)
        if isinstance(root, torch.jit.ScriptModule):
            raise TypeError(
                f"`{name}` {layer!r} names a submodule of a TorchScript model, which "
                "cannot be hooked: pass the eager model (or a torch.export program's "
                ".module())"
            )
        if not isinstance(root, nn.Module):
            raise TypeError(
                f"`{name}` is given by name ({layer!r}) but the forward function is "
                "not an nn.Module to look it up in: pass the module itself (e.g. "
                "`model.bert.embeddings` for `lambda ids: model(ids).logits`)"
            )
        try:
            return root.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"`{name}` {layer!r} is not a submodule of the model") from None
    if isinstance(layer, (list, tuple)) and layer and all(isinstance(m, nn.Module)
                                                          for m in layer):
        raise TypeError(
            f"`{name}` must be one nn.Module or dotted name, got a {type(layer).__name__} of "
            f"{len(layer)} modules: only layer_integrated_gradients takes a list of layers "
            "(attributed together, as Captum's LayerIntegratedGradients does)")
    raise TypeError(f"`{name}` must be an nn.Module or a dotted name, got {type(layer).__name__}")


def unwrap_parallel(model: Any) -> Any:
    """The model behind a forward function: ``DataParallel`` and
    ``DistributedDataParallel`` run their ``.module`` here (one device)."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def check_forward_func(forward_func: Any, name: str = "forward_func") -> None:
    if not callable(forward_func):
        raise TypeError(f"`{name}` must be callable, got {type(forward_func).__name__}")
