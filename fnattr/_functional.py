"""The functional model: one small frozen value carrying a model, its ReLU rule and its call.

:func:`functional` and :func:`with_rule` both return a :class:`Functional`; the
engine reads what it needs from that value (``.root`` for layer names and the
early stop, ``.rule`` for the compiled backward, ``.slots`` for taps under
``fnattr.compile``) instead of attributes stuck onto functions.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ._normalize import unwrap_parallel
from ._rules import _RULES, _ReluRuleMode, guided_relu

__all__ = ["Functional", "functional", "transforms_active", "with_rule"]


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


@dataclasses.dataclass(frozen=True, eq=False)
class Functional:
    """A model as a pure function of its inputs: ``f(*args) == model(*args)``.

    ``model`` is the ``nn.Module`` (``DataParallel`` unwrapped) or any callable;
    ``rule`` the ReLU rule's name (``"guided"``/``"deconv"``) or ``None``;
    ``detach``: run an ``nn.Module`` with detached parameters (no graph is
    recorded for them); ``slots``: the layer slots of a compiled call
    (:class:`fnattr._engine.Slots`, set by ``fnattr.compile``).
    """

    model: Callable
    rule: str | None = None
    detach: bool = True
    slots: Any = None

    @property
    def root(self) -> Any:
        """The module behind the function (for layer names and ``runs_once``)."""
        return self.model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        if not swappable(model):
            return self._run(model, args, kwargs)  # a plain callable, or TorchScript
        if transforms_active():
            state = {k: v.detach() for k, v in model.named_parameters()
                     if v.requires_grad and type(v) not in _LAZY} if self.detach else {}
            if _training(model):  # train-mode buffers (BatchNorm) updated on copies
                state.update((k, b.clone()) for k, b in model.named_buffers())
            run = (lambda *a, **k: functional_call(model, state, a, k)) if state else model
            return self._run(run, args, kwargs)
        with _swapped_state(model, self.detach):  # swapped outside the rule's mode
            return self._run(model, args, kwargs)

    def _run(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        if self.rule is None:
            return fn(*args, **kwargs)
        with _ReluRuleMode(self.rule):
            return fn(*args, **kwargs)


def functional(forward_func: Callable, *, detach: bool = True) -> Callable:
    """Returns ``forward_func`` as a pure function of its inputs.

    For an ``nn.Module`` the result calls it with detached parameters by
    default, so that no graph is recorded for them (less memory and time when
    only input or layer gradients are wanted): through
    ``torch.func.functional_call`` under ``torch.func`` transforms and
    ``torch.compile``, and in plain eager mode by switching the parameters'
    ``requires_grad`` off for the duration of the call (restored when the call
    returns or raises; the input-projection weights of
    ``nn.MultiheadAttention(batch_first=True)`` stay attached in plain mode, since
    ``at::matmul`` projects their transposed input with a slower ``bmm`` when they
    are detached). With ``detach=False`` the live parameters are used.
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
    if isinstance(forward_func, Functional):
        if forward_func.detach == detach:
            return forward_func
        return dataclasses.replace(forward_func, detach=detach)
    if not callable(forward_func):
        raise TypeError(f"`forward_func` must be callable, got {type(forward_func).__name__}")
    return Functional(unwrap_parallel(forward_func), None, detach)


def with_rule(forward_func: Callable, rule: Callable[[Tensor], Tensor] = guided_relu) -> Callable:
    """Returns ``forward_func`` with every ReLU it executes replaced by ``rule``.

    A transform of the forward function, composable with every gradient
    method: ``guided_backprop(model, x) == gradient(with_rule(model,
    guided_relu), x)``. Scoped to each call; nothing is left patched when it
    returns or raises. Works under ``torch.func.grad``/``vmap`` and
    ``torch.compile`` (see :mod:`fnattr._rules` for exactly which calls are
    reached).

    Args:
        forward_func: the model or any callable (not TorchScript).
        rule: :func:`guided_relu` or :func:`deconv_relu`.

    Returns:
        A callable with ``forward_func``'s signature.

    Example:
        {digits}
        >>> guided = fnattr.with_rule(model, fnattr.guided_relu)
        >>> attr = fnattr.neuron_gradient(guided, "features.2", x, (0, 3, 3))
        >>> torch.equal(attr, fnattr.neuron_guided_backprop(model, "features.2", x, (0, 3, 3)))
        True
    """
    if rule not in _RULES:
        raise ValueError(f"`rule` must be fnattr.guided_relu or fnattr.deconv_relu, got {rule!r}")
    if not callable(forward_func):
        raise TypeError(f"`forward_func` must be callable, got {type(forward_func).__name__}")
    return ruled(forward_func, _RULES[rule])


def ruled(forward_func: Callable, rule: str, detach: bool | None = None) -> Functional:
    """``with_rule`` by the rule's name; ``detach`` set in the same step unless
    ``None`` (the methods' boundary: one value built, not two)."""
    if isinstance(forward_func, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise TypeError(
            "`forward_func` is TorchScript: its ops run in C++, where a ReLU rule cannot "
            "reach them; pass the eager model (or a torch.export program's .module())"
        )
    if isinstance(forward_func, Functional):
        if forward_func.rule is None:  # nested rules: the inner one wins
            forward_func = dataclasses.replace(forward_func, rule=rule)
        return forward_func if detach is None else functional(forward_func, detach=detach)
    return Functional(unwrap_parallel(_uncompiled(forward_func)), rule, bool(detach))


def swappable(model: Any) -> bool:
    """Whether ``model``'s parameters can be swapped for the call: an ``nn.Module``
    that is not TorchScript."""
    return isinstance(model, nn.Module) and not isinstance(model, torch.jit.ScriptModule)


def _uncompiled(model: Any) -> Any:
    """A ``torch.compile``'d module's original module: a rule cannot reach the ReLUs
    inside a compiled graph (``fnattr.compile`` compiles a rule method instead)."""
    original = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(original, nn.Module):
        return original
    return model


def _training(model: nn.Module) -> bool:
    return any(m.training for m in model.modules())


# id(model) -> [calls in flight, detach, swapped entries]: one swap per model shared
# by the threads calling it at once, undone when the last of them returns.
_ACTIVE: dict[int, list] = {}
_ACTIVE_LOCK = threading.Lock()


class _swapped_state:
    """Context manager: for the duration of the call, every parameter of ``model``
    that requires grad stops requiring it (when ``detach``) and, in train mode,
    every buffer is replaced by a copy, so that BatchNorm's running statistics
    are updated on the copies; all is put back on exit (also when the forward
    raises), and the model is bit-identical afterwards.

    A parameter (a leaf) has its ``requires_grad`` flag switched off and on
    again; anything else that sits in a parameter slot (a non-leaf, as
    ``torch.func.functional_call`` puts there) is replaced by a detached alias.
    Either way the forward records no graph for it, as ``functional_call`` with
    detached tensors would, without its name-based bookkeeping. Switching the
    flag costs a third of making and assigning an alias (17 / 25 / 40 us against
    49 / 74 / 116 us for the B / V / R benchmark models), and the modules keep
    their ``nn.Parameter`` objects. Threads calling the same model at once share
    one swap (a count under a lock): the first swaps, the last restores, and
    none ever sees another's restore half-way. Concurrent calls that need
    different swaps (one with ``create_graph=True``, one without) raise a
    ``RuntimeError``.
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


# ``nn.MultiheadAttention(batch_first=True)`` projects a transposed, non-contiguous
# 3-D input. ``at::matmul`` folds that into one ``mm`` only when the weight
# requires grad; for a detached weight it runs an expanded ``bmm`` instead,
# forward and backward: 2.8% of a ViT block's gradient on CPU
# (benchmarks/RESULTS.md). These weights stay attached; they record the
# projection's input for a weight gradient that is never computed.
_MHA_KEEP = frozenset({"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"})


# A lazy module's parameters and buffers before its first forward (which initializes them).
_LAZY = (nn.parameter.UninitializedParameter, nn.parameter.UninitializedBuffer)


def _swap(model: nn.Module, detach: bool) -> list[tuple[dict | None, str, Tensor]]:
    swapped: list[tuple[dict | None, str, Tensor]] = []
    stack, seen = [model], set()
    try:
        while stack:
            module = stack.pop()
            key = id(module)
            if module is None or key in seen:
                continue
            seen.add(key)
            params = module._parameters
            if detach and params:
                keep = _MHA_KEEP if isinstance(module, nn.MultiheadAttention) \
                    and module.batch_first else ()
                for name, p in params.items():
                    if p is None or not p.requires_grad or name in keep \
                            or type(p) in _LAZY:  # initialized by this forward: left as is
                        continue
                    if p.is_leaf:  # (a tied parameter is met once: it no longer requires grad)
                        p.requires_grad_(False)
                        swapped.append((None, name, p))
                    else:  # a non-leaf put into the slot (functional_call's way): an alias
                        swapped.append((params, name, p))
                        params[name] = p.detach()
            if module.training and module._buffers:
                buffers = module._buffers
                for name, b in buffers.items():
                    if b is not None and type(b) not in _LAZY:
                        swapped.append((buffers, name, b))
                        buffers[name] = b.clone()
            children = module._modules
            if children:
                stack.extend(children.values())
    except BaseException:
        _unswap(swapped)
        raise
    return swapped


def _unswap(swapped: list[tuple[dict | None, str, Tensor]]) -> None:
    for slots_, name, t in reversed(swapped):
        if slots_ is None:
            t.requires_grad_(True)
        else:
            slots_[name] = t
