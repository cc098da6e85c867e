"""The gradient driver: one function for every gradient fnattr takes.

Everything fnattr computes is "the gradient of one scalar per example (or K of
them) with respect to a *site*": the inputs, or the value at a layer's input or
output. A site at a layer is reached with a **tap** (:mod:`fnattr._taps`): a
forward (pre-)hook that adds a zero *probe* tensor to the layer's value; the
gradient with respect to the probe is the gradient with respect to the layer's
value. This probe form works under ``torch.func`` transforms and compiles with
no graph breaks.

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
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import _budget
from ._functional import Functional, _swapped_state, swappable, transforms_active
from ._rules import graph_rule_ok, hook_relus, sequence_nr
from ._objectives import Objective
from ._taps import (INPUTS, Site, Slots, _Tap, _Taps, forward_at, runs_once,  # noqa: F401
                    site_tap, split)

__all__ = ["Site", "INPUTS", "Slots", "gradients", "forward_at", "runs_once"]


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


def _read_fn(fn: Callable, read: bool) -> Callable | None:
    return (lambda value: fn(None, value)) if read else None


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


def _plain(f, inputs, args, objective, site, read, wrt_site, create_graph, chunk_size,
           return_value, stop, substitute, on_graph=True):
    # A ReLU rule in plain mode: the forward runs without the rule's mode and the
    # rule is hooked on the graph it recorded (fnattr._rules.hook_relus).
    ruled = f if on_graph and f.rule is not None and graph_rule_ok(f.model) else None
    if ruled is not None:
        f = Functional(f.model, None, f.detach, f.slots)
        since = sequence_nr()
    evaluate = objective.fn if objective.row is None else objective.row  # (K, N) or (N,)
    # The parameter swap and the tap last through the backward: a part of the
    # forward under torch.utils.checkpoint is run again there, and must see the
    # same parameters (else: "recomputed values ... have different metadata") and
    # the same substitutes.
    swap = _swapped_state(f.model, f.detach) if swappable(f.model) else None
    kept: list = []
    if swap is not None:
        swap.__enter__()
    try:
        return _plain_call(f, ruled, inputs, args, objective, site, read, wrt_site,
                           create_graph, chunk_size, return_value, stop, substitute,
                           evaluate, since if ruled is not None else 0, kept)
    finally:
        for handle in kept:
            handle.remove()
        if swap is not None:
            swap.__exit__(None, None, None)


def _plain_call(f, ruled, inputs, args, objective, site, read, wrt_site, create_graph,
                chunk_size, return_value, stop, substitute, evaluate, since, kept):
    with torch.enable_grad() if not torch.is_grad_enabled() else contextlib.nullcontext():
        xs = tuple(inputs) if wrt_site else tuple(_variable(x) for x in inputs)
        if substitute is not None:
            substitute = tuple(_variable(t) for t in substitute)
        tap = None
        if site.layer is not None:
            tap = site_tap(site, probes="lazy" if wrt_site and substitute is None else None,
                           read=_read_fn(evaluate, read), keep=return_value,
                           stop=stop, substitute=substitute)
        counter = None
        if chunk_size is None and objective.auto_chunk and objective.k != 1:
            counter = _SavedBytes()
        with (torch.autograd.graph.saved_tensors_hooks(counter.pack, _unpack)
              if counter is not None else contextlib.nullcontext()):
            out = forward_at(f, xs, args, site, tap, kept)
        values = tap.read_out if read else evaluate(out, None)
        if tap is not None:
            tap.replay()
        if ruled is not None and not hook_relus(values, ruled.rule, since, ruled.model):
            # an in-place op on a view may hide a ReLU: this call (and the model's
            # later ones) run under the mode
            for handle in kept:
                handle.remove()
            kept.clear()
            return _plain(ruled, inputs, args, objective, site, read, wrt_site, create_graph,
                          chunk_size, return_value, stop, substitute, on_graph=False)
        wrt = (substitute if substitute is not None else tap.created) if wrt_site else xs
        if counter is not None and values.dim() == 2:
            chunk_size = _auto_chunk(values.shape[0], counter.total, values.device)
        if substitute is None:
            grads = _backward(values, wrt, create_graph, chunk_size)
        else:  # a recomputed part of the forward must meet this thread's tap
            with torch.autograd.set_multithreading_enabled(False):
                grads = _backward(values, wrt, create_graph, chunk_size)
        if objective.row is not None:  # the K = 1 axis, as a view
            grads = tuple(g.unsqueeze(0) for g in grads)
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
            tap = site_tap(site, probes=primals if wrt_site and replace is None else None,
                           read=_read_fn(objective.fn, read), at_call=at_call,
                           keep=return_value, substitute=replace)
        with _FlatLinear() if torch.compiler.is_compiling() else contextlib.nullcontext():
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
