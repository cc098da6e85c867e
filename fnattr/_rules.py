"""Modified-ReLU gradient rules as ``torch.autograd.Function``s, applied by a scoped mode.

A rule keeps ReLU's forward and replaces its backward:

* **guided** (Springenberg et al., https://arxiv.org/abs/1412.6806): pass the
  incoming gradient only where it is positive *and* the input was positive,
  ``g -> relu(g) * 1[x > 0]``.
* **deconvolution** (Zeiler & Fergus, https://arxiv.org/abs/1311.2901): pass
  the positive part of the incoming gradient whatever the input's sign,
  ``g -> relu(g)``.

:func:`with_rule` returns a new function that runs the original with every
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

from typing import Any, Callable

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["GuidedReLU", "DeconvReLU", "guided_relu", "deconv_relu", "with_rule"]


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
    if isinstance(forward_func, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise TypeError(
            "`forward_func` is TorchScript: its ops run in C++, where a ReLU rule cannot "
            "reach them; pass the eager model (or a torch.export program's .module())"
        )
    rule_name = _RULES[rule]

    def ruled(*args: Any, **kwargs: Any) -> Any:
        with _ReluRuleMode(rule_name):
            return forward_func(*args, **kwargs)

    ruled.__fnattr_rule__ = (forward_func, rule)  # lets `functional` see the model
    return ruled
