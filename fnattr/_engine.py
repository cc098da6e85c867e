"""The functional engine: a functionalized model, layer taps, and one gradient driver.

Everything fnattr computes is "the gradient of one scalar per example (or K of
them) with respect to a *site*": the inputs, or the value at a layer's input or
output. A site at a layer is reached with a **tap**: a forward (pre-)hook that
adds a zero *probe* tensor to the layer's value; the gradient with respect to
the probe is the gradient with respect to the layer's value. This probe form
works under ``torch.func`` transforms and compiles with no graph breaks.

Two execution modes give the same numbers:

* **plain** (eager, no transform active): probes are created lazily inside the
  hook and gradients come from one ``torch.autograd.grad`` call. This is the
  lean hot path: no functorch wrapping, no shape-discovery pass.
* **functional** (inside ``torch.func.vmap``/``grad``/``jvp`` or
  ``torch.compile``): the probes are explicit arguments of a pure function
  differentiated with ``torch.func.vjp``; their shapes come from one
  discovery forward (dead code that the compiler removes).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ._functional import Functional, transforms_active
from ._objectives import Objective

__all__ = ["Site", "INPUTS", "Slots", "gradients", "forward_at", "runs_once"]


@dataclasses.dataclass(frozen=True)
class Site:
    """Where a gradient is taken or an objective reads: the inputs (``layer=None``)
    or a layer's output (its input with ``input_side``)."""

    layer: nn.Module | None = None
    input_side: bool = False


INPUTS = Site()


class _StopForward(BaseException):
    """Raised by a tap once it has read what it needs: the rest of the forward is
    skipped. A ``BaseException`` so that a model's own ``except Exception``
    cannot swallow it."""


def runs_once(model: Any, layer: nn.Module) -> bool:
    """True when every call of ``model`` provably calls ``layer`` exactly once.

    The proof is structural: ``model`` is a plain ``nn.Sequential`` (its
    ``forward`` not overridden), ``layer`` is reached from it through plain
    ``nn.Sequential`` containers only, and appears once in the whole module
    tree (a module reused elsewhere may run again later). Such a model has no
    control flow of its own, so stopping the forward at the layer's first call
    is exact. Anything else (custom ``forward`` methods, shared modules, hooks
    on the containers) is not proven and runs the whole forward: how many
    times a model calls a layer can depend on its inputs, and Captum's rule is
    the layer's *last* call.
    """
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return False
    # One walk over the tree (every occurrence, shared modules included), keeping
    # the containers above each occurrence of the layer.
    found: list[tuple[nn.Module, ...]] = []
    stack: list[tuple[nn.Module, tuple[nn.Module, ...]]] = [(model, ())]
    budget = 100_000  # module trees with cycles or explosive sharing: not proven
    while stack:
        node, above = stack.pop()
        budget -= 1
        if budget < 0:
            return False
        if node is layer:
            found.append(above)
            continue
        for child in node._modules.values():
            if child is not None:
                stack.append((child, above + (node,)))
    if len(found) != 1:
        return False
    return all(type(c).forward is nn.Sequential.forward
               and not c._forward_hooks and not c._forward_pre_hooks for c in found[0])


class _Tap:
    """A forward (pre-)hook that reads a layer's value and adds probes to it.

    ``probes``: ``None`` (read only), ``"lazy"`` (create zero probes that
    require grad, plain mode), or a tuple of tensors (functional mode).
    ``read``: called on the (probed) value at hook time, before any later
    in-place op can change it; its result is kept in ``self.read_out``.
    Only the layer's *last* call in a forward is probed and read (Captum's
    behaviour for reused modules), which ``at_call`` pins in functional mode.
    ``substitute``: a tuple of tensors that *replace* the layer's value at
    every call (Captum's layer integrated gradients), instead of probing it.
    """

    def __init__(self, input_side: bool, probes: Any = None,
                 read: Callable | None = None, at_call: int | None = None,
                 keep: bool = False, stop: bool = False,
                 substitute: tuple[Tensor, ...] | None = None) -> None:
        self.substitute = substitute
        self.stop = stop
        self.input_side = input_side
        self.probes = probes
        self.read = read
        self.at_call = at_call
        self.calls = 0
        self.shapes: list[tuple[torch.Size, torch.dtype, torch.device]] | None = None
        self.read_out: Any = None
        self.keep = keep
        self.value: tuple[Tensor, ...] | None = None
        self.created: tuple[Tensor, ...] | None = None

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> Any:
        value = args if self.input_side else output
        is_seq = isinstance(value, (tuple, list))
        tensors = tuple(value) if is_seq else (value,)
        if not all(isinstance(t, Tensor) for t in tensors):
            raise TypeError(
                f"the layer {type(module).__name__}'s "
                f"{'inputs' if self.input_side else 'outputs'} must be tensors to "
                "attribute to them"
            )
        index = self.calls
        self.calls += 1
        self.shapes = [(t.shape, t.dtype, t.device) for t in tensors]
        if self.substitute is not None:
            tensors = _check_substitute(self.substitute, tensors, module)
            return _as_value(tensors, value, is_seq, self.input_side)
        if self.at_call is not None and index != self.at_call:
            return None
        if self.probes == "lazy":
            # A 0-d zero broadcast to the value's shape: the gradient with respect
            # to the expanded view is the full-shape gradient, and no layer-sized
            # zero tensor is written (26 MB per call for internal influence on M).
            self.created = tuple(
                torch.zeros((), dtype=t.dtype, device=t.device).requires_grad_().expand(t.shape)
                for t in tensors
            )
            tensors = tuple(t + p for t, p in zip(tensors, self.created))
        elif self.probes is not None:
            tensors = tuple(t + p for t, p in zip(tensors, self.probes))
        if self.keep:  # a copy: later in-place ops must not change it
            self.value = tuple(t.clone() for t in tensors)
        if self.read is not None:
            # Read a copy: a later in-place op (ReLU(inplace=True)) must not
            # change what the reader saved for backward. When the forward stops
            # here no later op runs, and the value itself is read.
            seen = tensors if self.stop else tuple(t.clone() for t in tensors)
            self.read_out = self.read(seen if len(seen) > 1 else seen[0])
        if self.stop:
            raise _StopForward
        if self.probes is None:
            return None
        return _as_value(tensors, value, is_seq, self.input_side)


def _as_value(tensors: tuple[Tensor, ...], value: Any, is_seq: bool, input_side: bool) -> Any:
    """``tensors`` in the form of the layer's ``value``, as a hook returns it."""
    if input_side:
        return tensors
    if is_seq:
        return type(value)(tensors) if isinstance(value, list) else tensors
    return tensors[0]


def _check_substitute(new: tuple[Tensor, ...], old: tuple[Tensor, ...],
                      module: nn.Module) -> tuple[Tensor, ...]:
    if len(new) != len(old) or any(n.shape != o.shape for n, o in zip(new, old)):
        raise ValueError(
            f"the layer {type(module).__name__}'s value has shapes "
            f"{[tuple(o.shape) for o in old]} here but {[tuple(n.shape) for n in new]} "
            "where it was read: the layer's value must have the same shape at the "
            "inputs, the baselines and the path points"
        )
    return new


def forward_at(f: Functional, inputs: Sequence[Tensor], args: tuple, site: Site,
               tap: _Tap | None) -> Any:
    """Runs ``f(*inputs, *args)`` with ``tap`` hooked on ``site``'s layer.

    The hook is removed when the call returns or raises. Returns the output,
    or ``None`` when the tap stopped the forward at the layer. While
    ``torch.compile`` traces, the tap goes into ``f.slots`` (hooks registered
    outside the compiled region by ``fnattr.compile``).
    """
    layer = site.layer
    if layer is None or tap is None:
        return f(*inputs, *args)
    if torch.compiler.is_compiling():
        return _forward_at_slot(f, inputs, args, site, tap)
    if site.input_side:
        handle = layer.register_forward_pre_hook(tap)
    else:
        handle = layer.register_forward_hook(tap)
    try:
        out = f(*inputs, *args)
    except _StopForward:
        out = None
    finally:
        handle.remove()
    if tap.calls == 0:
        raise ValueError(
            f"the `layer` {type(layer).__name__} was not called by the forward "
            "function: is it a submodule of the model that runs?"
        )
    return out


class _Slot:
    """A hook registered around a compiled call; the traced code sets its ``tap``."""

    def __init__(self) -> None:
        self.tap: _Tap | None = None

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> Any:
        return None if self.tap is None else self.tap(module, args, output)


class Slots:
    """The slot hooks of one layer (both sides) for the calls of one compiled function.

    Registering a hook inside a compiled region breaks the graph, so
    :func:`fnattr.compile` makes one ``Slots`` value, carries it in the
    :class:`Functional` it passes to the method (``f.slots``), and registers
    the hooks around each call (``with slots:``); the compiled code only
    points the slot at its tap.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.by_side = {False: _Slot(), True: _Slot()}
        self.handles: list[Any] = []

    def __enter__(self) -> "Slots":
        self.handles = [self.layer.register_forward_hook(self.by_side[False]),
                        self.layer.register_forward_pre_hook(self.by_side[True])]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _forward_at_slot(f: Functional, inputs: Sequence[Tensor], args: tuple, site: Site,
                     tap: _Tap) -> Any:
    slots = f.slots
    if slots is None or slots.layer is not site.layer:
        raise RuntimeError(
            "layer taps inside torch.compile need their hooks registered outside the "
            "compiled region: use fnattr.compile(method, model, layer) instead of "
            "torch.compile on a layer method"
        )
    slot = slots.by_side[site.input_side]
    slot.tap = tap
    try:
        out = f(*inputs, *args)
    finally:
        slot.tap = None
    return out


def _variable(t: Tensor) -> Tensor:
    """A tensor to differentiate with respect to, without touching the caller's flags."""
    return t if t.requires_grad else t.detach().requires_grad_()


def _batched_eye(k: int, n: int, like: Tensor) -> Tensor:
    return torch.eye(k, dtype=like.dtype, device=like.device)[:, :, None].expand(k, k, n)


def gradients(
    f: Functional,
    inputs: Sequence[Tensor],
    args: tuple,
    objective: Objective,
    site: Site = INPUTS,
    *,
    wrt_site: bool = False,
    create_graph: bool = False,
    chunk_size: int | None = None,
    return_value: bool = False,
    substitute: tuple[Tensor, ...] | None = None,
) -> Any:
    """Gradient of ``objective`` (summed over examples) at the inputs or at ``site``.

    ``objective.fn(output, layer_value)`` returns ``(K, N)`` values (or
    ``(N,)`` for a user's callable); the result is the gradient of their sum
    over examples, one per row ``k``, with respect to each input
    (``wrt_site=False``) or each tensor of the site's layer value
    (``wrt_site=True``): tensors shaped like the inputs or the layer value,
    with the objective's leading ``K``. An objective that ``reads_layer`` is
    evaluated inside the tap on ``site``, at the layer's last call (Captum's
    rule for reused modules); the rest of the forward is skipped in eager mode
    when ``f.root`` provably calls the layer once (:func:`runs_once`). Under
    compile the unused tail is dead code that inductor removes anyway.

    The ``K`` rows share one forward; their backward passes are vectorized
    (``is_grads_batched`` / ``vmap`` over one-hot cotangents) in chunks of
    ``chunk_size`` rows. ``None``: in eager mode, for ``objective.auto_chunk``,
    the largest power of two whose copies of the saved activations fit a
    per-device budget (:func:`_auto_chunk`); otherwise all K at once. With
    ``return_value`` the layer's value is returned too: ``(grads, value)``. With
    ``substitute`` (and ``wrt_site``) the layer's value is *replaced* by those
    tensors at every call and the gradient is taken with respect to them (the
    inputs may then be integers: nothing is differentiated at them).
    """
    read = objective.reads_layer and site.layer is not None
    if not transforms_active():
        stop = read and runs_once(f.root, site.layer)
        grads, value = _plain(f, inputs, args, objective, site, read, wrt_site, create_graph,
                              chunk_size, return_value, stop, substitute)
    else:
        grads, value = _functional(f, inputs, args, objective, site, read, wrt_site,
                                   create_graph, chunk_size, return_value, substitute)
    return (grads, value) if return_value else grads


def _read_fn(objective: Objective, read: bool) -> Callable | None:
    return (lambda value: objective.fn(None, value)) if read else None


# Saved-activation bytes per vectorized backward chunk, by device type (see
# ``_auto_chunk``). CPU: tuned on this project's benchmarks (cache-sized; one
# row at a time was fastest on both conv nets, all 64 rows on the MLP). CUDA:
# a memory bound only, not tuned (batching pays more there).
CHUNK_BUDGET_BYTES = {"cpu": 4 * 2**20, "cuda": 512 * 2**20}


class _SavedBytes:
    """Counts the bytes of the differentiable tensors a forward saves for backward:
    the activations one backward row reads and, roughly, writes gradients for."""

    def __init__(self) -> None:
        self.total = 0

    def pack(self, t: Tensor) -> Tensor:
        if t.requires_grad:
            self.total += t.numel() * t.element_size()
        return t


def _auto_chunk(k: int, saved_bytes: int, device: torch.device) -> int:
    """Rows per vectorized backward when ``chunk_size`` is None: the largest power
    of two such that that many copies of the saved activations fit the device's
    budget (all ``k`` rows for small models, one at a time for large ones).
    Measured on CPU (benchmarks/RESULTS.md): the whole of K at once is fastest on
    an MLP, but 2-7x slower than small chunks on conv nets, whose vmapped
    backward spills out of cache."""
    budget = CHUNK_BUDGET_BYTES.get(device.type, CHUNK_BUDGET_BYTES["cuda"])
    if saved_bytes <= 0:
        return k
    rows = budget // saved_bytes
    return k if rows >= k else max(1, 1 << max(0, int(rows).bit_length() - 1))


def _plain(f, inputs, args, objective, site, read, wrt_site, create_graph, chunk_size,
           return_value, stop, substitute):
    with torch.enable_grad():
        xs = tuple(inputs) if wrt_site else tuple(_variable(x) for x in inputs)
        if substitute is not None:
            substitute = tuple(_variable(t) for t in substitute)
        tap = None
        if site.layer is not None:
            tap = _Tap(site.input_side,
                       probes="lazy" if wrt_site and substitute is None else None,
                       read=_read_fn(objective, read), keep=return_value, stop=stop,
                       substitute=substitute)
        counter = None
        if chunk_size is None and objective.auto_chunk and objective.k != 1:
            counter = _SavedBytes()
        with (torch.autograd.graph.saved_tensors_hooks(counter.pack, _unpack)
              if counter is not None else contextlib.nullcontext()):
            out = forward_at(f, xs, args, site, tap)
        values = tap.read_out if read else objective.fn(out, None)
        wrt = (substitute if substitute is not None else tap.created) if wrt_site else xs
        if counter is not None and values.dim() == 2:
            chunk_size = _auto_chunk(values.shape[0], counter.total, values.device)
        grads = _backward(values, wrt, create_graph, chunk_size)
        value = None
        if return_value:
            value = tap.value if create_graph else tuple(v.detach() for v in tap.value)
        return grads, value


def _unpack(t: Tensor) -> Tensor:
    return t


def _backward(values: Tensor, wrt: tuple[Tensor, ...], create_graph: bool,
              chunk_size: int | None) -> tuple[Tensor, ...]:
    if values.dim() == 1 or values.shape[0] == 1:  # one row: a plain backward
        grads = torch.autograd.grad(values.sum(), wrt, create_graph=create_graph,
                                    allow_unused=True, materialize_grads=True)
        return grads if values.dim() == 1 else tuple(g.unsqueeze(0) for g in grads)
    k, n = values.shape
    step = k if chunk_size is None else max(1, min(chunk_size, k))
    if step == 1:  # one row at a time: plain backwards, no batching rules
        rows = [torch.autograd.grad(
            values[i].sum(), wrt, retain_graph=i < k - 1 or create_graph,
            create_graph=create_graph, allow_unused=True, materialize_grads=True)
            for i in range(k)]
        return tuple(torch.stack(g) for g in zip(*rows))
    eye = _batched_eye(k, n, values)
    parts = []
    for start in range(0, k, step):
        end = min(start + step, k)
        parts.append(torch.autograd.grad(
            values, wrt, grad_outputs=eye[start:end], is_grads_batched=True,
            retain_graph=end < k or create_graph, create_graph=create_graph,
            allow_unused=True, materialize_grads=True,
        ))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(chunks) for chunks in zip(*parts))


def _functional(f, inputs, args, objective, site, read, wrt_site, create_graph, chunk_size,
                return_value, substitute):
    n_inputs = len(inputs)
    at_call = None
    probes: tuple[Tensor, ...] = ()
    if substitute is not None:  # the substitutes are the primals: no discovery forward
        probes = tuple(substitute)
    elif wrt_site:
        # One discovery forward for the probes' shapes (dead code under compile).
        scout = _Tap(site.input_side)
        with torch.no_grad():
            forward_at(f, tuple(inputs), args, site, scout)
        at_call = scout.calls - 1
        probes = tuple(torch.zeros(s, dtype=d, device=dev) for s, d, dev in scout.shapes)

    def pure(*primals: Tensor) -> Tensor:
        xs = primals[:n_inputs] if not wrt_site else tuple(inputs)
        tap = None
        if site.layer is not None:
            replace = primals if substitute is not None else None
            tap = _Tap(site.input_side,
                       probes=primals if wrt_site and replace is None else None,
                       read=_read_fn(objective, read), at_call=at_call, keep=return_value,
                       substitute=replace)
        out = forward_at(f, xs, args, site, tap)
        values = tap.read_out if read else objective.fn(out, None)
        return values, (tap.value if return_value else ())

    primals = probes if wrt_site else tuple(inputs)
    # Compiled, without create_graph: nothing outside the vjp is differentiated.
    # Without this, parameters a plain callable closes over (not detached by
    # ``functional``) make the compiled outputs differentiable: AOTAutograd then
    # traces a double backward (none exists for CPU flash attention) and saves
    # activations for it. ``torch.func.vjp`` ignores an outer ``no_grad``.
    outer = torch.no_grad() if torch.compiler.is_compiling() and not create_graph \
        else contextlib.nullcontext()
    with outer:
        values, vjp_fn, value = torch.func.vjp(pure, *primals, has_aux=True)
        grads = _vjp_rows(vjp_fn, values, f, chunk_size)
    return grads, (value if return_value else None)


def _vjp_rows(vjp_fn: Callable, values: Tensor, f: Functional,
              chunk_size: int | None) -> tuple[Tensor, ...]:
    """The vjp of every row of ``values`` (``(N,)``: one; ``(K, N)``: a leading K)."""
    if values.dim() == 1 or values.shape[0] == 1:
        grads = vjp_fn(torch.ones_like(values))
        return grads if values.dim() == 1 else tuple(g.unsqueeze(0) for g in grads)
    k, n = values.shape
    eye = _batched_eye(k, n, values)
    if torch.compiler.is_compiling() and f.rule is not None:
        # vmap over a custom autograd.Function does not compile
        # (pytorch/pytorch#129845): one backward per row instead.
        rows = [vjp_fn(eye[i]) for i in range(k)]
        return tuple(torch.stack(g) for g in zip(*rows))
    return torch.func.vmap(vjp_fn, chunk_size=chunk_size)(eye)
