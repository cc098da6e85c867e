"""Layer taps: where a gradient is taken or an objective reads, and how it is reached.

A :class:`Site` is the inputs or a layer (its output, or its input with
``input_side``). A :class:`_Tap` is the forward (pre-)hook that reads a
layer's value, adds zero probes to it or replaces it; :func:`forward_at` runs
the model with a tap hooked for one call, or, while ``torch.compile`` traces,
points the :class:`Slots` carried by the :class:`~fnattr._functional.Functional`
at it. :func:`runs_once` proves when the forward may stop at the layer.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ._functional import Functional

__all__ = ["Site", "INPUTS", "Slots", "forward_at", "runs_once", "site_tap", "split"]


@dataclasses.dataclass(frozen=True)
class Site:
    """Where a gradient is taken or an objective reads: the inputs (``layer=None``)
    or a layer's output (its input with ``input_side``). ``layer`` may be a tuple
    of layers substituted together (layer integrated gradients over a list of
    layers, as Captum's); ``counts`` then gives each one's number of tensors."""

    layer: nn.Module | tuple[nn.Module, ...] | None = None
    input_side: bool = False
    counts: tuple[int, ...] | None = None


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
        if is_seq and any(_constant(t) for t in tensors):
            # e.g. (h, None), or a block called as block(h, mask) with a bool or
            # integer mask: the floating-point tensors count, the rest stays in place
            kept = tuple(t for t in tensors if not _constant(t))
            if not kept and any(t is not None for t in tensors):
                raise TypeError(
                    f"the layer {type(module).__name__}'s "
                    f"{'inputs' if self.input_side else 'outputs'} hold no floating-point "
                    "tensor to attribute to (integer or bool only, e.g. token ids into an "
                    "embedding)" + (": attribute to its output instead"
                                    if self.input_side else ""))
            tensors = kept
        if not tensors:
            raise TypeError(
                f"the layer {type(module).__name__} was called with no positional inputs "
                "(inputs passed by keyword, e.g. layer(hidden_states=h), do not reach a "
                "forward pre-hook): attribute to the output of the layer that computes "
                "them instead" if self.input_side else
                f"the layer {type(module).__name__} returned no tensors to attribute to"
            )
        if not all(isinstance(t, Tensor) for t in tensors):
            odd = next(t for t in tensors if not isinstance(t, Tensor))
            raise TypeError(
                f"the layer {type(module).__name__}'s "
                f"{'inputs' if self.input_side else 'outputs'} must be tensors to "
                f"attribute to them, got {type(odd).__name__}"
                + (" (a dict, e.g. a Hugging Face ModelOutput): choose a submodule that "
                   "returns tensors, e.g. the encoder's last block" if isinstance(odd, dict)
                   else "")
            )
        index = self.calls
        self.calls += 1
        self.shapes = [(t.shape, t.dtype, t.device) for t in tensors]
        if self.substitute is not None:
            # A copy: the rest of the forward may change the value in place (a conv
            # followed by ReLU(inplace=True), as in torchvision's VGG), which autograd
            # refuses on a leaf and which, on a non-leaf (create_graph), would move
            # the gradient taken at the substitute to after that op.
            tensors = tuple(t.clone() for t in
                            _check_substitute(self.substitute, tensors, module))
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

    def replay(self) -> None:
        """After the forward: the calls a backward makes again (``torch.utils.checkpoint``
        recomputes a checkpointed part of the forward there) get the same substitutes
        or probes and the same read (so that the same tensors require grad and are
        saved; what is read again is not used), no copy kept and no stop."""
        if self.probes == "lazy":
            self.probes = self.created
        self.stop = self.keep = False


def _constant(t: Any) -> bool:
    """An entry of a layer's value that is not attributed to: ``None``, or a tensor
    that is not floating point (a mask, position ids)."""
    return t is None or isinstance(t, Tensor) and not (t.is_floating_point() or t.is_complex())


def _as_value(tensors: tuple[Tensor, ...], value: Any, is_seq: bool, input_side: bool) -> Any:
    """``tensors`` in the form of the layer's ``value``, as a hook returns it (its
    constant entries, ``None`` or integer/bool tensors, kept in place)."""
    if is_seq and len(tensors) != len(value):
        new = iter(tensors)
        tensors = tuple(v if _constant(v) else next(new) for v in value)
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
               tap: _Tap | None, keep: list | None = None) -> Any:
    """Runs ``f(*inputs, *args)`` with ``tap`` hooked on ``site``'s layer.

    The hook is removed when the call returns or raises; with ``keep`` (a list)
    it stays registered when the call returns, its handle appended to ``keep``
    for the caller to remove (after the backward, which may rerun checkpointed
    parts of the forward: see :meth:`_Tap.replay`). Returns the output,
    or ``None`` when the tap stopped the forward at the layer. While
    ``torch.compile`` traces, the tap goes into ``f.slots`` (hooks registered
    outside the compiled region by ``fnattr.compile``).
    """
    layer = site.layer
    if layer is None or tap is None:
        return f(*inputs, *args)
    if torch.compiler.is_compiling():  # (fnattr.compile takes one layer)
        return _forward_at_slot(f, inputs, args, site, tap)
    layers, taps = (layer, tap.parts) if isinstance(tap, _Taps) else ((layer,), (tap,))
    handles = [m.register_forward_pre_hook(t) if site.input_side else m.register_forward_hook(t)
               for m, t in zip(layers, taps)]
    try:
        out = f(*inputs, *args)
    except _StopForward:
        out = None
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    for handle in handles:
        if keep is None:
            handle.remove()
        else:
            keep.append(handle)
    for m, t in zip(layers, taps):
        if t.calls == 0:
            raise ValueError(
                f"the `layer` {type(m).__name__} was not called by the forward "
                "function: is it a submodule of the model that runs?"
            )
    return out


class _Taps:
    """One :class:`_Tap` per layer of a site with several layers (``parts``, in the
    site's order)."""

    def __init__(self, parts: Sequence[_Tap]) -> None:
        self.parts = list(parts)
        self.read_out = self.value = None

    def replay(self) -> None:
        for part in self.parts:
            part.replay()


def split(flat: Sequence[Any], counts: Sequence[int]) -> list[tuple]:
    """``flat`` cut into consecutive tuples of ``counts`` entries (one per layer)."""
    bounds = [0, *itertools.accumulate(counts)]
    return [tuple(flat[a:b]) for a, b in zip(bounds, bounds[1:])]


def site_tap(site: Site, substitute: tuple[Tensor, ...] | None = None,
             **kw: Any) -> "_Tap | _Taps":
    """The tap of ``site``: one :class:`_Tap`, or for several layers a :class:`_Taps`
    of substituting taps, each given its share of the substitutes (``site.counts``)."""
    if not isinstance(site.layer, tuple):
        return _Tap(site.input_side, substitute=substitute, **kw)
    if substitute is None or site.counts is None:
        raise TypeError("a list of layers is taken by layer_integrated_gradients only")
    return _Taps(_Tap(site.input_side, substitute=part, **kw)
                 for part in split(substitute, site.counts))


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
