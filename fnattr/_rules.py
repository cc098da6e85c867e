"""Modified-ReLU gradient rules as ``torch.autograd.Function``s, applied by a scoped mode.

A rule keeps ReLU's forward and replaces its backward:

* **guided** (Springenberg et al., https://arxiv.org/abs/1412.6806): pass the
  incoming gradient only where it is positive *and* the input was positive,
  ``g -> relu(g) * 1[x > 0]``.
* **deconvolution** (Zeiler & Fergus, https://arxiv.org/abs/1311.2901): pass
  the positive part of the incoming gradient whatever the input's sign,
  ``g -> relu(g)``.

:func:`fnattr.with_rule` (in :mod:`fnattr._functional`) returns a new function that runs the original with every
ReLU it executes replaced by the rule. It uses a ``TorchFunctionMode`` active
only during the call, so it reaches every spelling that goes through PyTorch's
``__torch_function__`` dispatch:

* reached: ``nn.ReLU`` (also ``inplace=True``, also one module reused many
  times), ``F.relu`` (also ``inplace=True`` and aliases such as
  ``from torch.nn.functional import relu``), ``F.relu_``, ``torch.relu``,
  ``torch.relu_``, ``Tensor.relu``, ``Tensor.relu_``, and the aten ops called
  from Python, as overload packets (``torch.ops.aten.relu(h)``,
  ``torch.ops.aten.relu_(h)``) or overloads (``torch.ops.aten.relu.default``,
  ``relu_.default``), so ``torch.export`` programs run as modules, e.g.
  ``ep.module()``, are reached (``torch.ops.aten.relu.out`` writes into an
  ``out=`` tensor, which autograd refuses to differentiate: it raises, it
  never gives a plain gradient);
* not reached: other activations (``ReLU6``, ``LeakyReLU``, ``clamp(min=0)``,
  ``torch.maximum(x, 0)``) and ops run outside Python (C++ extensions);
  TorchScript is rejected with a ``TypeError`` since its interpreter runs
  every op in C++, where no rule can reach.

Nothing global is patched: the mode is popped when the call returns or
raises. Modes are per thread, so concurrent threads are unaffected.

**Plain eager calls of the methods** (no ``torch.func`` transform, not
compiling) apply the same rule without the mode, which costs about 1 us per
torch call of the forward: the forward runs as it is and the rule is hooked on
the autograd graph it recorded (:func:`hook_relus`): every spelling above
records a ``ReluBackward0`` node, whose input gradient a node hook replaces
with the rule's (guided: ``relu`` of ReLU's own gated gradient, which is
``relu(g) * 1[x > 0]``; deconvolution: ``relu(g)``). Each ReLU stays the native
kernel, in place where the model asked. Only nodes recorded by the call's own
forward are hooked (autograd sequence numbers, per thread), so a graph the
caller built before the call is untouched. Two differences, both tested:

* a ReLU run *in place on a view* (``h[:, :4].relu_()``) is recorded inside a
  ``CopySlices`` node that hides it: a graph holding such a node is not
  hooked; the call reruns its forward under the mode, and so do the model's
  later calls;
* hooked on the graph, the rule also reaches ReLUs that a C++ composite op
  records, today ``nn.RNN(nonlinearity="relu")`` on CPU, which the mode (and
  so transforms and ``torch.compile``) does not see.

**Second derivatives** (``create_graph=True``): the rule's backward is
``relu(g) * mask`` (guided) or ``relu(g)`` (deconvolution), written in
differentiable ops. Differentiating it again treats the ReLU gate ``mask`` as a
constant (its derivative with respect to the input is zero almost everywhere,
as for plain ReLU) and differentiates ``relu(g)`` in the incoming gradient
``g``: double backprop through a rule is exact for the rule as a function of
the incoming gradient. **Forward mode** (``jvp``) sees the plain ReLU
derivative ``t * 1[x > 0]``: the rules only redefine reverse mode.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["GuidedReLU", "DeconvReLU", "guided_relu", "deconv_relu", "hook_relus",
           "sequence_nr"]


def _forward(x: Tensor) -> Tensor:
    return x.clamp(min=0)


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    # Save the gate, not the output: a later in-place op may modify the output.
    mask = output > 0
    ctx.save_for_backward(mask)
    ctx.save_for_forward(mask)


def _guided_backward(ctx: Any, grad: Tensor) -> Tensor:
    (mask,) = ctx.saved_tensors
    return grad.clamp(min=0) * mask


def _deconv_backward(ctx: Any, grad: Tensor) -> Tensor:
    return grad.clamp(min=0)


def _jvp(ctx: Any, tangent: Tensor) -> Tensor:
    (mask,) = ctx.saved_tensors
    return tangent * mask


def _rule_class(name: str, backward: Callable, with_jvp: bool) -> type:
    body = {
        "generate_vmap_rule": True,
        "forward": staticmethod(_forward),
        "setup_context": staticmethod(_setup_context),
        "backward": staticmethod(backward),
        "__doc__": f"ReLU with the {name} backward rule (see :mod:`fnattr._rules`).",
    }
    if with_jvp:
        body["jvp"] = staticmethod(_jvp)
    return type(name, (torch.autograd.Function,), body)


def _plain_guided_forward(ctx: Any, x: Tensor) -> Tensor:
    out = x.clamp(min=0)
    _setup_context(ctx, (x,), out)
    return out


def _plain_deconv_forward(ctx: Any, x: Tensor) -> Tensor:
    # The deconvolution backward needs no gate: compute it only for forward mode,
    # whose jvp runs inside this same ``apply``, before any later op can change x.
    if forward_ad._current_level >= 0:
        ctx.save_for_forward(x > 0)
    return x.clamp(min=0)


def _plain_class(name: str, forward: Callable, backward: Callable) -> type:
    """The same rule as an old-style Function (``forward(ctx, x)``): about 2x
    cheaper per ``apply`` in plain eager mode, where torch otherwise binds the
    new style's arguments with ``inspect.signature`` on every call. It has no
    vmap rule, so it is used only when no ``torch.func`` transform is active."""
    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(backward),
        "jvp": staticmethod(_jvp),
        "__doc__": f"ReLU with the {name} backward rule, old-style (plain eager mode).",
    })


GuidedReLU = _rule_class("GuidedReLU", _guided_backward, with_jvp=True)
DeconvReLU = _rule_class("DeconvReLU", _deconv_backward, with_jvp=True)
# name -> (rule under torch.func transforms, rule for torch.compile, rule in
# plain eager mode). Dynamo cannot trace a custom ``jvp`` ("Unsupported custom
# jvp"): while compiling, the same rules without forward mode are used.
_CLASSES = {
    "guided": (GuidedReLU, _rule_class("GuidedReLU", _guided_backward, with_jvp=False),
               _plain_class("GuidedReLU", _plain_guided_forward, _guided_backward)),
    "deconv": (DeconvReLU, _rule_class("DeconvReLU", _deconv_backward, with_jvp=False),
               _plain_class("DeconvReLU", _plain_deconv_forward, _deconv_backward)),
}
_peek = torch._C._functorch.peek_interpreter_stack


def _apply(name: str, x: Tensor) -> Tensor:
    transformed, compiled, plain = _CLASSES[name]
    if torch.compiler.is_compiling():
        return compiled.apply(x)
    return (plain if _peek() is None else transformed).apply(x)


def guided_relu(x: Tensor) -> Tensor:
    """ReLU whose backward passes ``relu(grad)`` where ``x > 0`` (guided backprop).

    The forward is ``relu(x)``; the backward gates the incoming gradient by the
    input's sign *and* its own sign. Pass it to :func:`with_rule` to apply it to
    every ReLU of a model, or call it directly in your own forward.

    References:
        Springenberg et al., "Striving for Simplicity", https://arxiv.org/abs/1412.6806

    Args:
        x: a tensor of any shape.

    Returns:
        ``relu(x)``, with the guided backward.

    Example:
        >>> import torch, fnattr
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> (g,) = torch.autograd.grad(fnattr.guided_relu(x), x, torch.tensor([5.0, 5.0, -5.0]))
        >>> g  # kept only where x > 0 and the incoming gradient > 0
        tensor([0., 5., 0.])
    """
    return _apply("guided", x)


def deconv_relu(x: Tensor) -> Tensor:
    """ReLU whose backward passes ``relu(grad)`` whatever ``x`` (deconvolution).

    The forward is ``relu(x)``; the backward keeps the positive part of the
    incoming gradient and ignores the input's sign. Pass it to
    :func:`with_rule` to apply it to every ReLU of a model.

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional
        Networks", https://arxiv.org/abs/1311.2901

    Args:
        x: a tensor of any shape.

    Returns:
        ``relu(x)``, with the deconvolution backward.

    Example:
        >>> import torch, fnattr
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> (g,) = torch.autograd.grad(fnattr.deconv_relu(x), x, torch.tensor([5.0, 5.0, -5.0]))
        >>> g  # the positive part of the incoming gradient, whatever x
        tensor([5., 5., 0.])
    """
    return _apply("deconv", x)


# every ReLU spelling the mode reaches -> whether it is in place
# (a call of an overload packet such as ``torch.ops.aten.relu(h)`` reaches the
# mode as the packet, not as its ``.default`` overload)
_RELUS = {
    **dict.fromkeys((F.relu, torch.relu, Tensor.relu, torch.ops.aten.relu,
                     torch.ops.aten.relu.default), False),
    **dict.fromkeys((F.relu_, torch.relu_, Tensor.relu_, torch.ops.aten.relu_,
                     torch.ops.aten.relu_.default), True),
}
_RULES = {guided_relu: "guided", deconv_relu: "deconv"}


class _ReluRuleMode(TorchFunctionMode):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        inplace = _RELUS.get(func)
        if inplace is None:  # every other op of the forward: as fast a path as possible
            return func(*args, **kwargs) if kwargs else func(*args)
        x = args[0]
        out = _apply(self.rule, x)
        if inplace or (kwargs and kwargs.get("inplace", False)):
            return x.copy_(out)
        return out


# ---------------------------------------------------------------------------
# Plain eager mode: the rule as hooks on the recorded graph, no mode.
#
# In plain eager mode (no torch.func transform, not compiling) the engine runs
# the forward with no mode at all and then applies the rule to the graph it
# recorded: every ReLU spelling the mode reaches records the same autograd node
# (``ReluBackward0``), and a hook on that node replaces its input gradient by the
# rule's. The forward pays nothing per op (the mode costs ~1 us per top-level
# torch call, 2-9% of a forward + backward on transformer blocks) and each ReLU
# stays the native kernel (in place where the model asked for it), as Captum's
# hooks do. Only nodes recorded by this call's forward are hooked (autograd
# sequence numbers, which grow per thread): a graph the caller built before the
# call is left as it is, as with the mode.

def _node_type(make: Callable[[Tensor], Tensor]) -> type:
    return type(make(torch.ones(2, requires_grad=True).clone()).grad_fn)


_RELU_NODE = _node_type(lambda t: t.relu())
# An in-place op on a view is recorded inside a ``CopySlices`` node, which does
# not expose the op's own node: a ReLU run in place on a view cannot be hooked.
def _in_place_on_view(t: Tensor) -> Tensor:
    t[:1].mul_(2)
    return t


_COPY_SLICES = _node_type(_in_place_on_view)
# this thread's next autograd sequence number: pass it to hook_relus as ``since``
sequence_nr = torch._C._autograd._get_sequence_nr


def _guided_hook(grad_inputs: tuple, grad_outputs: tuple) -> tuple:
    # ReLU's own backward already gated by 1[x > 0]: relu(g * 1[x > 0]) = relu(g) * 1[x > 0]
    g = grad_inputs[0]
    return grad_inputs if g is None else (g.clamp(min=0),)


def _deconv_hook(grad_inputs: tuple, grad_outputs: tuple) -> tuple:
    g = grad_outputs[0]
    return grad_inputs if g is None or grad_inputs[0] is None else (g.clamp(min=0),)


_NODE_HOOKS = {"guided": _guided_hook, "deconv": _deconv_hook}
# node type -> 0 (hides no ReLU), 1 (a ReLU), 2 (an in-place op on a view); each
# type is classified once (a compiled graph's CompiledFunctionBackward, a class
# made per compiled function, is refused instead)
_KINDS: dict = {}
# models whose graph once held an in-place op on a view: their rule calls run
# under the mode from then on (a second forward only on the first such call)
_MODE_ONLY: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _kind(node_type: type) -> int:
    if node_type.__name__ == "CompiledFunctionBackward":
        raise TypeError(
            "the forward runs a graph compiled by torch.compile, whose ReLUs a rule "
            "cannot reach: pass the model itself (a torch.compile'd nn.Module is "
            "unwrapped), or compile the method with fnattr.compile")
    kind = _KINDS[node_type] = 1 if node_type is _RELU_NODE else \
        2 if node_type is _COPY_SLICES else 0
    return kind


def graph_rule_ok(model: Any) -> bool:
    """Whether a plain eager call of ``model`` may apply its rule with :func:`hook_relus`."""
    try:
        return model not in _MODE_ONLY
    except TypeError:  # not hashable
        return True


def hook_relus(root: Tensor, rule: str, since: int, model: Any) -> bool:
    """Hooks ``rule`` on every ReLU node recorded since sequence number ``since``
    on the graph of ``root``. Returns ``False`` (and hooks nothing that matters:
    the caller reruns the forward under the mode) when that part of the graph
    holds an in-place op on a view, which may hide a ReLU; ``model`` is then
    remembered so that its later calls use the mode directly."""
    node = root.grad_fn
    if node is None:
        return True
    # Every node's Python object is made here (``next_functions``): the walk
    # costs ~1.4 us per node on a graph just recorded, so it does little else.
    found = []
    seen = {node, None}
    stack = [node]
    pop, push, mark, kinds = stack.pop, stack.append, seen.add, _KINDS
    while stack:
        node = pop()
        kind = kinds.get(type(node))
        if kind is None:
            kind = _kind(type(node))
        if kind:
            if kind == 2:
                try:
                    _MODE_ONLY.add(model)
                except TypeError:
                    pass
                return False
            found.append(node)
        for nxt, _ in node.next_functions:
            if nxt not in seen:
                mark(nxt)
                if nxt._sequence_nr() >= since:  # recorded by this call
                    push(nxt)
    hook = _NODE_HOOKS[rule]
    for node in found:
        node.register_hook(hook)
    return True
