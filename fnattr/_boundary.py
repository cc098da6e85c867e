"""The public boundary: every method's arguments normalized once, its result restored once.

:func:`attribution` wraps a method's body as ``torch/_functorch/apis.py`` wraps
its ``_impl`` functions: the wrapper binds the arguments (a binder precomputed
from the signature, no ``inspect`` per call), normalizes them by parameter
*name* (below), calls the body with values only, and restores the result's
form. It also registers the method in the catalog (:mod:`fnattr._catalog`).

What the body receives:

* ``forward_func``/``model``: a :class:`~fnattr._functional.Functional`
  (with the catalog's ReLU rule; detached parameters unless ``create_graph``);
* ``layer``: the ``nn.Module``; ``inputs``: a tuple of tensors;
* ``baselines``: one number or tensor per input (reference rows for sampled
  methods); ``additional_forward_args``: a tuple;
* ``target``/``neuron_selector``: an :class:`~fnattr._objectives.Objective`
  (always a leading K; a single target or selector is K = 1);
* ``n_steps``, ``n_samples``, ``internal_batch_size``, ``chunk_size``:
  checked ints; ``stdevs``: one float per input; ``generator``,
  ``grad_kwargs``: checked; ``memory_budget``: as given (``path_average``
  and ``at_inputs`` plan with it).

The body returns a tuple of ``(K, ...)`` attributions, and for methods with a
convergence delta ``(attributions, delta or None)``; the wrapper drops K for a
single target/selector, gives a tensor for a tensor input (input-shaped
methods) or for a one-tensor layer value (layer methods), and appends the
delta when ``return_convergence_delta`` is set.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from torch import Tensor

from . import _normalize as N
from ._catalog import register
from ._functional import functional, ruled, transforms_active
from ._objectives import neuron_objective, target_objective
from ._paths import sample_paths

__all__ = ["attribution", "boundary", "binder", "draw_paths"]

def attribution(site: str, **info: Any) -> Callable[[Callable], Callable]:
    """Decorator: the public method over ``body``, registered in the catalog.

    ``site`` and ``info`` (``path``, ``rule``, ``delta``, ``compat``, ``core``,
    ``draw``, ``integer_inputs``) are the catalog entry's fields.
    """
    def decorate(body: Callable) -> Callable:
        method = boundary(body, site, path=info.get("path", "none"), rule=info.get("rule"),
                          delta=info.get("delta", False), layers=info.get("layers", False))
        register(method, site, **info)
        return method

    return decorate


def boundary(body: Callable, site: str, *, path: str = "none", rule: str | None = None,
             delta: bool = False, layers: bool = False) -> Callable:
    """``body`` behind the normalizing wrapper (see the module docs). With ``layers``,
    a list of layers gives the body a tuple of modules, and the body returns one
    tuple of attributions per layer (a list comes back, one entry per layer)."""
    bind = binder(body, 0)
    layer_shaped = site == "layer"

    @functools.wraps(body)
    def method(*args: Any, **kwargs: Any) -> Any:
        a, was_tuple = normalize(bind(args, kwargs), site, path, rule, layers)
        objective = a["target"] if "target" in a else a["neuron_selector"]
        try:
            attrs, gap = body(**a) if delta else (body(**a), None)
        except AssertionError as error:
            if "Guard failed" not in str(error):
                raise
            raise ValueError(_EXPORT_GUARD.format(error)) from error
        grouped = isinstance(a.get("layer"), tuple)
        if objective.squeeze:
            attrs = tuple(tuple(t[0] for t in g) for g in attrs) if grouped \
                else tuple(t[0] for t in attrs)
            gap = None if gap is None else gap[0]
        if grouped:
            out = [g if len(g) > 1 else g[0] for g in attrs]
        elif layer_shaped:
            out = attrs if len(attrs) > 1 else attrs[0]
        else:
            out = N.restore(attrs, was_tuple)
        return (out, gap) if a.get("return_convergence_delta") else out

    return method


_EXPORT_GUARD = (
    "the forward function refused an input shape ({}): a torch.export program checks "
    "the shapes it was exported with, and fnattr feeds it expanded batches (path points "
    "x examples, K rows, noisy copies); export it with a dynamic batch dimension "
    "(`dynamic_shapes`, torch.export.Dim), or pass `internal_batch_size` equal to the "
    "exported batch when calling with that many examples")


def normalize(a: dict, site: str = "inputs", path: str = "none",
              rule: str | None = None, layers: bool = False) -> tuple[dict, bool]:
    """The bound arguments ``a`` in canonical form, by name (in place); and whether
    ``inputs`` was a tuple."""
    first = "model" if "model" in a else "forward_func"
    f = a[first]
    if not callable(f):
        raise TypeError(f"`{first}` must be callable, got {type(f).__name__}")
    detach = not a.get("create_graph", False)
    f = a[first] = ruled(f, rule, detach) if rule is not None else functional(f, detach=detach)
    if "layer" in a:
        layer = a["layer"]
        if layers and isinstance(layer, (list, tuple)):
            if not layer:
                raise ValueError("`layer` is an empty list")
            a["layer"] = tuple(N.resolve_layer(f.root, m) for m in layer)
            if len(set(map(id, a["layer"]))) != len(layer):
                raise ValueError("`layer` lists a layer twice")
        else:
            a["layer"] = N.resolve_layer(f.root, layer)
    raw = a["inputs"]
    xs, was_tuple = N.as_tuple(raw)
    if site != "layer":
        N.check_floating(xs)  # differentiated at (or noised, or interpolated)
    if "baselines" in a:
        a["baselines"] = _baselines(a["baselines"], xs, raw, path == "sampled")
    if "target" in a:
        N.check_target(a["target"], xs[0].shape[0])
        a["target"] = target_objective(a["target"])
    if "neuron_selector" in a:
        a["neuron_selector"] = neuron_objective(a["neuron_selector"])
    if "additional_forward_args" in a:
        a["additional_forward_args"] = N.format_args(a["additional_forward_args"])
    for key in ("internal_batch_size", "chunk_size"):
        if a.get(key) is not None:
            a[key] = N.check_positive_int(a[key], key)
    for key in ("n_steps", "n_samples"):
        if key in a:
            a[key] = N.check_positive_int(a[key], key)
    if "stdevs" in a:
        a["stdevs"] = N.format_stdevs(a["stdevs"], len(xs))
    if "generator" in a:
        N.check_generator(a["generator"])
    if "grad_kwargs" in a:
        N.check_grad_kwargs(a["grad_kwargs"])
    if path != "none" and not a.get("create_graph") and not transforms_active():
        xs = _detached(xs)  # path ends are constants unless the result must be differentiable
        if "baselines" in a:
            a["baselines"] = _detached(a["baselines"])
    a["inputs"] = xs
    return a, was_tuple


def _baselines(baselines: Any, xs: tuple, raw: Any, sampled: bool) -> tuple:
    if not sampled:
        return N.format_baselines(baselines, xs)
    if callable(baselines) and not isinstance(baselines, Tensor):
        baselines = baselines(raw) if inspect.signature(baselines).parameters else baselines()
    if baselines is None:
        raise ValueError(
            "`baselines` is required for gradient SHAP (a distribution of reference rows)")
    return N.format_baselines(baselines, xs, distribution=True)


def _detached(tensors: tuple) -> tuple:
    return tuple(t.detach() if isinstance(t, Tensor) else t for t in tensors)


def draw_paths(a: dict) -> tuple:
    """A sampled method's random paths from its bound arguments (``fnattr.compile``
    draws them eagerly, outside the graph, and passes them to the method's core)."""
    n, _ = normalize({k: a[k] for k in ("forward_func", "inputs", "baselines", "n_samples",
                                         "stdevs", "generator", "create_graph")},
                     path="sampled")
    return sample_paths(n["inputs"], n["baselines"], n["n_samples"], n["stdevs"],
                        n["generator"])


def binder(method: Callable, n_bound: int, label: str = "") -> Callable[[tuple, dict], dict]:
    """``inspect.Signature.bind`` + ``apply_defaults`` for ``method`` with its
    first ``n_bound`` parameters taken, precomputed once (binding through
    ``inspect`` costs ~15 us per call, a tenth of a compiled call on an MLP).
    Returns every remaining parameter by name; raises ``TypeError`` like Python."""
    params = list(inspect.signature(method).parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD][n_bound:]
    named = {p.name for p in params[n_bound:]}
    defaults = {p.name: p.default for p in params[n_bound:] if p.default is not p.empty}
    required = [p.name for p in params[n_bound:] if p.default is p.empty]
    name = label + method.__name__

    def bind(args: tuple, kwargs: dict) -> dict:
        if len(args) > len(positional):
            raise TypeError(f"{name}() takes {len(positional)} positional "
                            f"arguments but {len(args)} were given")
        a = dict(defaults)
        a.update(zip(positional, args))
        for key, value in kwargs.items():
            if key not in named:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if key in positional[:len(args)]:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            a[key] = value
        missing = [r for r in required if r not in a]
        if missing:
            raise TypeError(f"{name}() missing required argument(s): {missing}")
        return a

    return bind
