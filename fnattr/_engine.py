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
import threading
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from . import _budget, _normalize as N

__all__ = ["functional", "transforms_active", "gradients", "forward_at", "runs_once"]


def transforms_active() -> bool:
    """True inside ``torch.func`` transforms or while ``torch.compile`` traces.

    Methods use it to leave tensors attached when a transform decides what is
    differentiated (``torch.func.grad`` always builds the graph).

    Returns:
        A bool.

    Example:
        >>> import torch, fnattr
        >>> fnattr.transforms_active()
        False
        >>> torch.func.grad(lambda t: t.sum() * fnattr.transforms_active())(torch.ones(2))
        tensor([1., 1.])
    """
    return (
        torch.compiler.is_compiling()
        or torch._C._functorch.peek_interpreter_stack() is not None
    )


def functional(forward_func: Callable, *, detach: bool = True) -> Callable:
    """Returns ``forward_func`` as a pure function of its inputs.

    For an ``nn.Module`` the result calls it with detached parameters by
    default, so that no graph is recorded for them (less memory and time when
    only input or layer gradients are wanted): through
    ``torch.func.functional_call`` under ``torch.func`` transforms and
    ``torch.compile``, and in plain eager mode by swapping detached aliases
    into the modules for the duration of the call (restored when the call
    returns or raises). With ``detach=False`` the live parameters are used.
    Any other callable is returned unchanged. ``DataParallel`` wrappers are
    unwrapped.

    Args:
        forward_func: an ``nn.Module`` or any callable.
        detach: pass detached parameters.

    Returns:
        A callable with the signature of ``forward_func``.

    Example:
        {digits}
        >>> f = fnattr.functional(model)
        >>> out = f(x.requires_grad_())
        >>> torch.equal(out, model(x)), out.shape
        (True, torch.Size([50, 10]))
        >>> (g,) = torch.autograd.grad(out.sum(), x)  # input gradient, no parameter graph
        >>> g.shape
        torch.Size([50, 1, 8, 8])
    """
    N.check_forward_func(forward_func)  # at construction, not at the first call
    ruled = getattr(forward_func, "__fnattr_rule__", None)
    rule = None
    if ruled is not None:  # functionalize the model inside a ReLU rule
        from ._rules import with_rule

        forward_func, rule = ruled
        if hasattr(forward_func, "__fnattr_rule__"):  # nested rules: the inner one wins
            return with_rule(functional(forward_func, detach=detach), rule)
    model = N.unwrap_parallel(forward_func)
    run = model if rule is None else with_rule(model, rule)
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return run  # a plain callable, or TorchScript (no stateless call)

    def call(*args: Any) -> Any:
        if transforms_active():
            state = {k: v.detach() for k, v in model.named_parameters()
                     if v.requires_grad} if detach else {}
            if _training(model):  # train-mode buffers (BatchNorm) updated on copies
                state.update((k, b.clone()) for k, b in model.named_buffers())
            stateless = (lambda *a: functional_call(model, state, a)) if state else model
            return (stateless if rule is None else with_rule(stateless, rule))(*args)
        with _swapped_state(model, detach):  # swapped outside the rule's mode: no dispatch
            return run(*args)

    return call


def _training(model: nn.Module) -> bool:
    return any(m.training for m in model.modules())


# id(model) -> [calls in flight, detach, swapped entries]: one swap per model shared
# by the threads calling it at once, undone when the last of them returns.
_ACTIVE: dict[int, list] = {}
_ACTIVE_LOCK = threading.Lock()


class _swapped_state:
    """Context manager: for the duration of the call, every parameter of ``model``
    that requires grad is replaced by a detached alias (when ``detach``) and, in
    train mode, every buffer by a copy, so that BatchNorm's running statistics
    are updated on the copies; all are put back on exit (also when the forward
    raises), and the model is bit-identical afterwards.

    The same swap ``torch.func.functional_call`` makes (with ``tie_weights=False``:
    a tied parameter gets one detached alias per slot, which records no graph
    either), without its name-based bookkeeping: about 30 us less per call on an
    MLP. Threads calling the same model at once share one swap (a count under a
    lock): the first swaps, the last restores, and none ever sees another's
    restore half-way. Concurrent calls that need different swaps (one with
    ``create_graph=True``, one without) raise a ``RuntimeError``.
    """

    __slots__ = ("model", "detach")

    def __init__(self, model: nn.Module, detach: bool) -> None:
        self.model, self.detach = model, detach

    def __enter__(self) -> None:
        key = id(self.model)
        with _ACTIVE_LOCK:
            entry = _ACTIVE.get(key)
            if entry is not None:
                if entry[1] != self.detach:
                    raise RuntimeError(
                        "fnattr: concurrent calls on one model with and without "
                        "`create_graph` cannot share it; run them one after the other "
                        "or give each thread its own copy of the model")
                entry[0] += 1
                return
            swapped = _swap(self.model, self.detach)
            _ACTIVE[key] = [1, self.detach, swapped]

    def __exit__(self, *exc: Any) -> None:
        key = id(self.model)
        with _ACTIVE_LOCK:
            entry = _ACTIVE[key]
            entry[0] -= 1
            if entry[0] == 0:
                del _ACTIVE[key]
                _unswap(entry[2])


def _swap(model: nn.Module, detach: bool) -> list[tuple[dict, str, Tensor]]:
    swapped: list[tuple[dict, str, Tensor]] = []
    stack, seen = [model], set()
    try:
        while stack:
            module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            if detach:
                params = module._parameters
                for name, p in params.items():
                    if p is not None and p.requires_grad:
                        swapped.append((params, name, p))
                        params[name] = p.detach()
            if module.training and module._buffers:
                buffers = module._buffers
                for name, b in buffers.items():
                    if b is not None:
                        swapped.append((buffers, name, b))
                        buffers[name] = b.clone()
            stack.extend(m for m in module._modules.values() if m is not None)
    except BaseException:
        _unswap(swapped)
        raise
    return swapped


def _unswap(swapped: list[tuple[dict, str, Tensor]]) -> None:
    for slots_, name, t in reversed(swapped):
        slots_[name] = t


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
    A tap belongs to the thread that made it: when another thread's forward
    runs through the same module, the hook lets it pass untouched.
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
        # (dynamo cannot trace get_ident; compiled calls are not made thread-safe)
        self.thread = None if torch.compiler.is_compiling() else threading.get_ident()

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> Any:
        if self.thread is not None and threading.get_ident() != self.thread:
            return None  # another thread's forward through a shared module: untouched
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


def forward_at(forward_func: Callable, inputs: Sequence[Tensor], args: tuple,
               layer: nn.Module | None, tap: _Tap | None) -> Any:
    """Runs ``forward_func(*inputs, *args)`` with ``tap`` hooked on ``layer``.

    The hook is removed when the call returns or raises. Returns the output,
    or ``None`` when the tap stopped the forward at the layer.
    """
    if layer is None or tap is None:
        return forward_func(*inputs, *args)
    if torch.compiler.is_compiling():
        return _forward_at_slot(forward_func, inputs, args, layer, tap)
    if tap.input_side:
        handle = layer.register_forward_pre_hook(tap)
    else:
        handle = layer.register_forward_hook(tap)
    try:
        out = forward_func(*inputs, *args)
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
    """A hook registered around a compiled call; the traced code sets its ``tap``.

    Registering a hook inside a compiled region breaks the graph, so
    :func:`fnattr.compile` registers one slot per (layer, side) before each
    call and removes it after; the compiled code only assigns ``slot.tap``.
    """

    def __init__(self) -> None:
        self.tap: _Tap | None = None

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> Any:
        return None if self.tap is None else self.tap(module, args, output)


# (id(layer), input_side) -> slot, for the calls in flight
_SLOTS: dict[tuple[int, bool], _Slot] = {}


class slots:
    """Context manager: slot hooks on ``layers`` (both sides) for a compiled call."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.layers = [l for l in layers if l is not None]
        self.handles: list[Any] = []

    def __enter__(self) -> "slots":
        for layer in self.layers:
            for side in (False, True):
                slot = _SLOTS.setdefault((id(layer), side), _Slot())
                register = layer.register_forward_pre_hook if side else layer.register_forward_hook
                self.handles.append(register(slot))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        for layer in self.layers:
            for side in (False, True):
                _SLOTS.pop((id(layer), side), None)


def _forward_at_slot(forward_func, inputs, args, layer, tap):
    slot = _SLOTS.get((id(layer), tap.input_side))
    if slot is None:
        raise RuntimeError(
            "layer taps inside torch.compile need their hooks registered outside the "
            "compiled region: use fnattr.compile(method, model, layer) instead of "
            "torch.compile on a layer method"
        )
    slot.tap = tap
    try:
        out = forward_func(*inputs, *args)
    finally:
        slot.tap = None
    return out


def _variable(t: Tensor) -> Tensor:
    """A tensor to differentiate with respect to, without touching the caller's flags."""
    return t if t.requires_grad else t.detach().requires_grad_()


def _batched_eye(k: int, n: int, like: Tensor) -> Tensor:
    return torch.eye(k, dtype=like.dtype, device=like.device)[:, :, None].expand(k, k, n)


def gradients(
    forward_func: Callable,
    inputs: Sequence[Tensor],
    args: tuple,
    objective: Callable[[Any, Any], Tensor],
    *,
    layer: nn.Module | None = None,
    input_side: bool = False,
    wrt_layer: bool = False,
    read_at_layer: bool = False,
    create_graph: bool = False,
    chunk_size: int | None = None,
    return_value: bool = False,
    model: Any = None,
    substitute: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, ...] | tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Gradient of a per-example objective with respect to the inputs or a layer.

    ``objective(output, layer_value)`` returns ``(N,)`` or ``(K, N)`` values;
    the result is the gradient of their sum over examples, one per row ``k``,
    with respect to each input (``wrt_layer=False``) or each tensor of the
    layer's value (``wrt_layer=True``): tensors shaped like the site, with a
    leading ``K`` when the objective is ``(K, N)``. With ``read_at_layer``
    the objective depends on the layer value only and is evaluated inside the
    hook, on the layer's last call (Captum's rule for reused modules). The rest
    of the forward is skipped in eager mode only when ``model`` (the module
    behind ``forward_func``) provably calls the layer once (:func:`runs_once`):
    how often a model calls a layer can depend on its inputs. Under compile
    the unused tail is dead code that inductor removes anyway.

    The ``K`` rows share one forward; their backward passes are vectorized
    (``is_grads_batched`` / ``vmap`` over one-hot cotangents) in chunks of
    ``chunk_size`` rows. ``None``: in eager mode, for objectives marked
    ``stacked`` (fnattr's neuron and target objectives), the largest power of
    two whose copies of the saved activations fit a per-device budget
    (:func:`_auto_chunk`); otherwise all K at once. With ``return_value``
    the layer's value is returned too: ``(grads, value)``. With ``substitute``
    (and ``wrt_layer``) the layer's value is *replaced* by those tensors at
    every call and the gradient is taken with respect to them (the inputs may
    then be integers: nothing is differentiated at them).
    """
    if not transforms_active():
        stop = read_at_layer and layer is not None and runs_once(model, layer)
        grads, value = _plain(forward_func, inputs, args, objective, layer, input_side,
                              wrt_layer, read_at_layer, create_graph, chunk_size,
                              return_value, stop, substitute)
    else:
        grads, value = _functional(forward_func, inputs, args, objective, layer,
                                   input_side, wrt_layer, read_at_layer, create_graph,
                                   chunk_size, return_value, substitute)
    return (grads, value) if return_value else grads


def _read_fn(objective: Callable, read_at_layer: bool) -> Callable | None:
    if not read_at_layer:
        return None
    return lambda value: objective(None, value)


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
    rows = k if saved_bytes <= 0 else budget // saved_bytes
    step = k if rows >= k else max(1, 1 << max(0, int(rows).bit_length() - 1))
    cap = _budget.chunk_cap()  # a memory budget's K chunk (fnattr._budget)
    return step if cap is None else max(1, min(step, cap))


def _plain(forward_func, inputs, args, objective, layer, input_side, wrt_layer,
           read_at_layer, create_graph, chunk_size, return_value, stop=False,
           substitute=None):
    with torch.enable_grad():
        xs = tuple(inputs) if wrt_layer else tuple(_variable(x) for x in inputs)
        if substitute is not None:
            substitute = tuple(_variable(t) for t in substitute)
        tap = None
        if layer is not None:
            tap = _Tap(input_side, probes="lazy" if wrt_layer and substitute is None else None,
                       read=_read_fn(objective, read_at_layer), keep=return_value,
                       stop=stop, substitute=substitute)
        counter = None
        if chunk_size is None and getattr(objective, "stacked", False):
            counter = _SavedBytes()
        with (torch.autograd.graph.saved_tensors_hooks(counter.pack, _unpack)
              if counter is not None else contextlib.nullcontext()):
            out = forward_at(forward_func, xs, args, layer, tap)
        values = tap.read_out if read_at_layer else objective(out, None)
        wrt = (substitute if substitute is not None else tap.created) if wrt_layer else xs
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
    if values.dim() == 1:
        return torch.autograd.grad(values.sum(), wrt, create_graph=create_graph,
                                   allow_unused=True, materialize_grads=True)
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


class _FlatLinear(TorchFunctionMode):
    """While compiling: ``F.linear`` of a contiguous 3-D input runs as linear of
    its 2-D view, reshaped back.

    ``at::linear`` does exactly this itself (``_flatten_nd_linear``), but traced
    under ``torch.func.vjp`` its contiguity check specializes the batch size: every
    new batch size recompiled (issue 12.13; ``torch.func.vjp`` of ``F.linear`` on a
    ``(n, t, d)`` input, 3 batch sizes, 3 graphs). Written out in Python, the
    reshape keeps the batch size symbolic; the numbers are the same (one
    ``addmm`` on the 2-D view)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and not kwargs and args[0].dim() == 3 and args[0].is_contiguous():
            x = args[0]
            return func(x.reshape(-1, x.shape[-1]), *args[1:]).reshape(*x.shape[:-1], -1)
        return func(*args, **kwargs)


def _functional(forward_func, inputs, args, objective, layer, input_side, wrt_layer,
                read_at_layer, create_graph, chunk_size, return_value, substitute=None):
    n_inputs = len(inputs)
    at_call = None
    probes: tuple[Tensor, ...] = ()
    if substitute is not None:  # the substitutes are the primals: no discovery forward
        probes = tuple(substitute)
    elif wrt_layer:
        # One discovery forward for the probes' shapes (dead code under compile).
        scout = _Tap(input_side)
        with torch.no_grad():
            forward_at(forward_func, tuple(inputs), args, layer, scout)
        at_call = scout.calls - 1
        probes = tuple(torch.zeros(s, dtype=d, device=dev) for s, d, dev in scout.shapes)
    def pure(*primals: Tensor) -> Tensor:
        xs = primals[:n_inputs] if not wrt_layer else tuple(inputs)
        tap = None
        if layer is not None:
            replace = primals if substitute is not None else None
            tap = _Tap(input_side, probes=primals if wrt_layer and replace is None else None,
                       read=_read_fn(objective, read_at_layer), at_call=at_call,
                       keep=return_value, substitute=replace)
        with _FlatLinear() if torch.compiler.is_compiling() else contextlib.nullcontext():
            out = forward_at(forward_func, xs, args, layer, tap)
        values = tap.read_out if read_at_layer else objective(out, None)
        return values, (tap.value if return_value else ())

    primals = probes if wrt_layer else tuple(inputs)
    # Compiled, without create_graph: nothing outside the vjp is differentiated.
    # Without this, parameters a plain callable closes over (not detached by
    # ``functional``) make the compiled outputs differentiable: AOTAutograd then
    # traces a double backward (none exists for CPU flash attention) and saves
    # activations for it. ``torch.func.vjp`` ignores an outer ``no_grad``.
    outer = torch.no_grad() if torch.compiler.is_compiling() and not create_graph \
        else contextlib.nullcontext()
    with outer:
        values, vjp_fn, value = torch.func.vjp(pure, *primals, has_aux=True)
        if values.dim() == 1:
            grads = vjp_fn(torch.ones_like(values))
        else:
            k, n = values.shape
            eye = _batched_eye(k, n, values)
            if torch.compiler.is_compiling() and hasattr(forward_func, "__fnattr_rule__"):
                # vmap over a custom autograd.Function does not compile
                # (pytorch/pytorch#129845): one backward per row instead.
                rows = [vjp_fn(eye[i]) for i in range(k)]
                grads = tuple(torch.stack(g) for g in zip(*rows))
            else:
                grads = torch.func.vmap(vjp_fn, chunk_size=chunk_size)(eye)
    return grads, (value if return_value else None)
