"""Compiled attribution: ``fnattr.compile(method, model, layer)``.

The named methods are traced whole by ``torch.compile(fullgraph=True)``; inside
the compiled region the engine runs in its functional mode (``torch.func.vjp``
of a pure function of the probes, no ``torch.autograd.grad``). Three things
are kept *outside* the compiled region, eagerly, by the wrapper returned here:

* **hooks**: registering a hook while tracing breaks the graph, so a persistent
  slot hook is registered on the layer around each call and the traced code
  only points it at its tap;
* **random draws**: gradient SHAP's baselines, noise and path positions are
  drawn eagerly from the caller's ``torch.Generator`` and passed in as
  tensors, so a compiled call uses bit for bit the eager call's draws for the same
  seed (its attributions agree to float tolerance: inductor reorders arithmetic)
  (inductor's own RNG differs from eager's and is never used);
* **indices as tensors**: an int ``target`` or neuron index is turned into a
  0-d tensor before the call, so a new target or neuron of the same form reuses
  the graph instead of recompiling.

Shapes: the first call compiles for its shapes; the first call with a new
batch size recompiles once with dynamic shapes (``dynamic=None``, PyTorch's
automatic dynamic), after which other batch sizes reuse it. ``dynamic=False``
compiles one graph per batch size instead. Two places where ``torch.func``
specializes the batch size are worked around while compiling (so transformer
models and lists of neuron indices also recompile only once): ``F.linear`` of
a contiguous 3-D input is run on its 2-D view (:class:`fnattr._engine._FlatLinear`),
and K neuron indices are picked with a one-hot product instead of a gather
(:func:`fnattr._normalize.select_neurons`). A list holding slices or callables
still compiles per batch size.

Warnings: compiling raises two ``DeprecationWarning``s from torch itself (torch
2.13), never raised by eager fnattr: ``torch.jit.script_method`` (the first
compile in a process imports ``torch.utils.mkldnn``), and, for the ReLU-rule
methods, "``torch.autograd.Function`` should not be instantiated" (dynamo
instantiates it to trace a custom ``autograd.Function``, once per compilation).
Neither changes a result. Known upstream limit: ``vmap`` over
a custom ``autograd.Function`` does not compile (pytorch/pytorch#129845), so
under a ReLU rule several neurons/targets are backpropagated one by one inside
the graph instead of with ``vmap``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import numbers
from typing import Any, Callable

import torch
from torch import nn

from . import _methods, _neuron, _shap, _lig  # noqa: F401  (they fill the catalog)
from . import _budget, _normalize as N
from ._boundary import binder
from ._catalog import Method, lookup
from ._engine import Slots
from ._functional import Functional, functional, with_rule
from ._rules import deconv_relu, guided_relu
from ._paths import _arg_rows, _rows, quadrature

__all__ = ["compile"]

_COUNTER = itertools.count()


def _selector_as_tensors(selector: Any) -> Any:
    """Int neuron indices as 0-d long tensors (tuples with slices, callables kept)."""
    if isinstance(selector, list):
        return [_selector_as_tensors(s) for s in selector]
    if isinstance(selector, numbers.Integral) and not isinstance(selector, bool):
        return torch.tensor(int(selector))
    if isinstance(selector, tuple) and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in selector):
        return tuple(torch.tensor(int(i)) for i in selector)
    return selector


def _target_as_tensors(target: Any) -> Any:
    """An int target as a 0-d tensor, a per-example int list as a 1-D tensor."""
    if isinstance(target, N.Each):
        return target.map(_target_as_tensors)
    if isinstance(target, list) and target and all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target):
        return torch.tensor(target)
    if isinstance(target, (numbers.Integral, tuple)) and not isinstance(target, bool):
        return _selector_as_tensors(target)
    return target


def compile(
    method: Callable,
    forward_func: Callable,
    layer: nn.Module | str | None = None,
    *,
    dynamic: bool | None = None,
    mode: str | None = None,
    fullgraph: bool = True,
) -> Callable:
    """Returns ``method`` bound to a model (and layer), compiled with ``torch.compile``.

    The result takes the rest of ``method``'s arguments (everything after
    ``forward_func`` and ``layer``) and gives the same numbers as the eager
    method (to float tolerance: inductor may reorder reductions, ~1e-6
    relative in float32). Compilation happens on the first call and again
    when the shapes change (see :mod:`fnattr._compile`); keep one compiled
    function per model and reuse it. Pass ``target``/neuron indices freely:
    ints are turned into tensors so new values do not recompile.

    Args:
        method: one of fnattr's methods, e.g. ``fnattr.internal_influence``.
        {args: forward_func}
        layer: the layer (an ``nn.Module`` or its dotted name), for layer and
            neuron methods; ``None`` for the others.
        dynamic: passed to ``torch.compile`` (``None``: static first, dynamic
            after a shape change).
        mode: passed to ``torch.compile`` (e.g. ``"reduce-overhead"``).
        fullgraph: passed to ``torch.compile``.

    Returns:
        ``compiled(inputs, *args, **kwargs)`` with ``method``'s remaining
        signature and result.

    Example:
        {digits}
        >>> saliency = fnattr.compile(fnattr.gradient, model)
        >>> attr = saliency(x, target=labels)  # compiles (seconds)
        >>> torch.allclose(attr, fnattr.gradient(model, x, target=labels), atol=1e-5)
        True
    """
    entry = lookup(method)
    if entry is None:
        raise ValueError(f"`method` must be one of fnattr's attribution methods, got {method!r}")
    f = prepare(entry, forward_func, layer)
    ready = {False: f, True: functional(f, detach=False)}  # built outside the graph
    site = (f.slots.layer,) if entry.needs_layer else ()
    target = entry.core if entry.core is not None else method
    bound = lambda *a, **k: target(*a, **k)
    # One code object per compiled function: dynamo's recompile limit counts per
    # code object, and every bound lambda would otherwise share one.
    bound.__code__ = bound.__code__.replace(
        co_name=f"fnattr_{method.__name__}_{next(_COUNTER)}")
    compiled = torch.compile(bound, fullgraph=fullgraph, dynamic=dynamic, mode=mode)
    bind = binder(method, 1 + len(site), "compiled ")

    def call(*args: Any, **kwargs: Any) -> Any:
        a = bind(args, kwargs)
        if "target" in a:
            a["target"] = _target_as_tensors(a["target"])
        if "neuron_selector" in a:
            a["neuron_selector"] = _selector_as_tensors(a["neuron_selector"])
        if "n_steps" in a:  # quadrature is computed eagerly (numpy does not trace)
            quadrature(a["method"], a["n_steps"] + (entry.name == "layer_conductance"))
        fn = ready[bool(a.get("create_graph", False))]
        if entry.core is not None:  # sampled: the draws are made here, eagerly
            a = core_arguments(entry, a, fn)
        rows, k = _plan_outside(entry, a, lambda: target(fn, *site, **a))
        run = lambda b: compiled(fn, *site, **b)  # noqa: E731
        if rows is not None:
            run = functools.partial(_example_blocks, run, rows=rows)
        with (f.slots if site else contextlib.nullcontext()):
            return run(a) if k is None else _target_chunks(run, a, k)

    call.__name__ = f"compiled_{method.__name__}"
    call.__doc__ = method.__doc__
    return call


def prepare(entry: Method, forward_func: Callable, layer: Any) -> Functional:
    """The model of a compiled method as a :class:`Functional` built outside the
    graph: its rule applied, and (layer methods) the layer's :class:`Slots`."""
    f = functional(forward_func)
    if entry.needs_layer:
        if layer is None:
            raise ValueError(f"`layer` is required to compile {entry.name}")
        if isinstance(layer, (list, tuple)):
            raise TypeError("fnattr.compile takes one `layer`: attribute to a list of layers "
                            "in eager mode")
        f = dataclasses.replace(f, slots=Slots(N.resolve_layer(f.root, layer)))
    elif layer is not None:
        raise ValueError(f"`layer` is not an argument of {entry.name}")
    if entry.rule is not None:
        f = with_rule(f, guided_relu if entry.rule == "guided" else deconv_relu)
    return f


@functools.lru_cache(maxsize=None)
def _core_names(entry: Method) -> tuple[str, ...]:
    names = list(inspect.signature(entry.core).parameters)
    return tuple(names[2 if entry.needs_layer else 1:])


def core_arguments(entry: Method, a: dict, f: Functional, draw: Callable | None = None) -> dict:
    """A sampled method's core arguments from its bound arguments ``a``: the random
    paths drawn here, eagerly (``draw``: the catalog's by default)."""
    paths = (draw or entry.draw)({**a, "forward_func": f})
    return {k: paths if k == "paths" else a[k] for k in _core_names(entry)}


def _plan_outside(entry: Method, a: dict,
                  eager: Callable[[], Any]) -> tuple[int | None, int | None]:
    """Resolves a memory budget (the call's, else the context's) to an
    ``internal_batch_size`` and a K chunk eagerly, before the compiled call: the
    split is a constant of the graph, so a new split recompiles once and the
    probe never runs inside it. With no budget, a path method on CPU takes
    eager's automatic blocks (the whole expanded batch was up to 1.6x slower
    compiled too: benchmarks/RESULTS.md); on CUDA it runs whole.

    Returns ``(rows, k)``, what is split outside the graph (``None``: nothing).
    A method at the inputs (``path == "none"``: gradient, the rule methods and
    their neuron forms) has no ``internal_batch_size``: its examples go in
    blocks of ``rows``, as eager splits them (:data:`fnattr._budget.CPU_ROWS`
    for a CPU batch that :func:`fnattr._budget.cpu_split` splits, or the
    budget's plan). A method with no ``chunk_size`` gets the planned K chunk as
    ``fnattr.each`` targets ``k`` at a time."""
    at_inputs = entry.path == "none"
    own = "memory_budget" in a  # the rule methods take none, but eager honors the context
    budget = _budget.resolve(a.get("memory_budget"))
    if own:
        a["memory_budget"] = None  # nothing to parse inside the graph
        if a.get("internal_batch_size") is not None:
            return None, None
    if budget is None:
        if at_inputs:
            return (_budget.CPU_ROWS if _cpu_inputs_split(a) else None), None
        if not own or not _may_split_on_cpu(a):
            return None, None
    if own:
        a["memory_budget"] = budget
    try:
        rows, chunk = _budget.planned(eager)
    finally:
        if own:
            a["memory_budget"] = None
    if "internal_batch_size" in a:
        a["internal_batch_size"] = rows
    k = None
    if chunk is not None:
        if "chunk_size" not in a:
            k = chunk if isinstance(a.get("target"), N.Each) else None
        elif a["chunk_size"] is None:
            a["chunk_size"] = chunk
    return (rows if at_inputs else None), k


def _cpu_inputs_split(a: dict) -> bool:
    xs = a.get("inputs")
    xs = tuple(xs) if isinstance(xs, (tuple, list)) else (xs,)
    ref = next((t for t in xs if isinstance(t, torch.Tensor)), None)
    return (ref is not None and ref.dim() > 0 and ref.device.type == "cpu"
            and _budget.cpu_split(xs))


def _example_blocks(run: Callable[[dict], Any], a: dict, rows: int) -> Any:
    """``run`` (the compiled method) on blocks of ``rows`` examples of the bound
    arguments ``a``: the inputs, a per-example target and the per-example
    additional arguments sliced as eager slices them; the results concatenated
    along the examples (dim 1 under a leading ``K``)."""
    inputs = a["inputs"]
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    n = next(t for t in xs if isinstance(t, torch.Tensor)).shape[0]
    if rows >= n:
        return run(a)
    target = a.get("target")
    k_axis = isinstance(target, N.Each) or isinstance(a.get("neuron_selector"), list)
    parts = []
    for n0 in range(0, n, rows):
        n1 = min(n0 + rows, n)
        b = dict(a, inputs=_example_rows(inputs, n0, n1, n))
        if "target" in b:
            b["target"] = _rows(target, n0, n1, 1, n)
        if b.get("additional_forward_args") is not None:
            b["additional_forward_args"] = _example_rows(b["additional_forward_args"], n0, n1, n)
        parts.append(run(b))
    return _concat(parts, 1 if k_axis else 0)


def _target_chunks(run: Callable[[dict], Any], a: dict, k: int) -> Any:
    """``run`` on the ``fnattr.each`` targets of ``a`` ``k`` at a time (the K chunk
    of a method with no ``chunk_size``), the results concatenated along K."""
    targets = a["target"].targets
    return _concat([run(dict(a, target=N.Each(targets[i:i + k])))
                    for i in range(0, len(targets), k)], 0)


def _concat(parts: list, dim: int) -> Any:
    """The results of several calls joined along ``dim``, tuple by tuple (multi-input
    attributions, ``(attributions, delta)``)."""
    if isinstance(parts[0], tuple):
        return tuple(_concat(list(p), dim) for p in zip(*parts))
    return torch.cat(parts, dim)


def _example_rows(value: Any, n0: int, n1: int, n: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_arg_rows(t, n0, n1, 1, n) for t in value)
    return _arg_rows(value, n0, n1, 1, n)


def _may_split_on_cpu(a: dict) -> bool:
    """Whether eager's automatic plan may split this call with no budget: a path
    method (it takes ``internal_batch_size``) on CPU inputs with more than
    :data:`fnattr._budget.CPU_ROWS` expanded rows, bounded by (``n_steps`` + 1) x
    examples (layer conductance takes one point more); where the count is not
    known before the plan, it may. Other calls skip the eager planning run
    (about 90 us, half of a small compiled call)."""
    if "internal_batch_size" not in a:
        return False
    x = a.get("inputs")
    x = x[0] if isinstance(x, (tuple, list)) and x else x
    if not isinstance(x, torch.Tensor):
        return True
    if x.device.type != "cpu":
        return False
    steps = a.get("n_steps")
    return x.dim() == 0 or not isinstance(steps, int) or (steps + 1) * x.shape[0] > _budget.CPU_ROWS
