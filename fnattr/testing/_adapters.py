"""What an attribution explains, and the adapters to the checkers' calling convention.

Part of :mod:`fnattr.testing.axioms` (re-exported there): :func:`output_at`
and :func:`neuron_value` (the quantity the attributions decompose),
:class:`Attribution`, :func:`from_fnattr` and :func:`from_captum`.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Attribution", "from_captum", "from_fnattr", "neuron_value", "output_at"]

TensorOrTuple = Tensor | tuple[Tensor, ...]


# ---------------------------------------------------------------- what is explained


def output_at(forward_func: Callable, inputs: TensorOrTuple, target: Any = None,
              additional_forward_args: Any = None) -> Tensor:
    """The model output at ``target``, one scalar per example (summed over other dims).

    ``target`` has Captum's meanings: ``None`` (the whole output), an int or a
    tuple indexing the non-batch dims, or a list / 1-D tensor with one index
    per example. This is what target methods (integrated gradients, gradient
    SHAP, conductance, ...) explain.

    Returns:
        ``Tensor[N]``.

    >>> output_at(model, x, target=1)        # == model(x)[:, 1]
    """
    out = forward_func(*_as_tuple(inputs), *_args(additional_forward_args))
    if target is None:
        picked = out
    elif isinstance(target, (numbers.Integral, tuple)) or (
            isinstance(target, Tensor) and target.dim() == 0):
        picked = out[(slice(None), *(target if isinstance(target, tuple) else (target,)))]
    else:
        picked = torch.stack([out[(i, *(t if isinstance(t, tuple) else (t,)))]
                              for i, t in enumerate(target)])
    return picked.reshape(out.shape[0], -1).sum(1)


def neuron_value(layer: nn.Module | str, neuron_selector: Any,
                 attribute_to_neuron_input: bool = False) -> Callable[..., Tensor]:
    """What neuron methods explain: the value of one neuron of ``layer``, per example.

    Args:
        layer: a module of the model, or its name (resolved with the model's
            ``get_submodule``).
        neuron_selector: an int, a tuple of ints/slices (slices are summed),
            or a callable on the layer value returning ``Tensor[N]``.
        attribute_to_neuron_input: read the layer's input instead of its output.

    Returns:
        ``explains(forward_func, inputs, target=None, additional_forward_args=None)
        -> Tensor[N]``, for :class:`Attribution`. The layer's last call in a
        forward is read (Captum's convention).

    >>> nig = Attribution(my_neuron_ig, explains=neuron_value("fc0", (2,)))
    """

    def explains(forward_func: Callable, inputs: TensorOrTuple, target: Any = None,
                 additional_forward_args: Any = None) -> Tensor:
        module = forward_func.get_submodule(layer) if isinstance(layer, str) else layer
        seen: list[Tensor] = []

        def hook(_module: nn.Module, args: tuple, output: Any = None) -> None:
            seen.append(args[0] if attribute_to_neuron_input else output)

        handle = (module.register_forward_pre_hook(hook) if attribute_to_neuron_input
                  else module.register_forward_hook(hook))
        try:
            forward_func(*_as_tuple(inputs), *_args(additional_forward_args))
        finally:
            handle.remove()
        value = seen[-1]
        if callable(neuron_selector):
            return neuron_selector(value)
        index = neuron_selector if isinstance(neuron_selector, tuple) else (neuron_selector,)
        return value[(slice(None), *index)].reshape(value.shape[0], -1).sum(1)

    return explains


# ---------------------------------------------------------------- adapters


class Attribution:
    """An attribution method under the checkers' calling convention.

    Wraps ``fn(forward_func, inputs, baselines, target) -> attributions``
    (``additional_forward_args=`` is passed as a keyword only when given)
    together with what its attributions explain. Checkers accept a bare
    callable too: it is wrapped with ``explains=output_at``.

    Args:
        fn: the attribution function.
        explains: ``explains(forward_func, inputs, target, additional_forward_args)
            -> Tensor[N]``, the per-example quantity the attributions
            decompose (default :func:`output_at`; :func:`neuron_value` for
            neuron methods).
        name: used in assertion messages (default ``fn.__name__``).

    >>> def saliency(f, x, b, target):
    ...     x = x.detach().requires_grad_()
    ...     return torch.autograd.grad(f(x)[:, target].sum(), x)[0]
    >>> completeness(Attribution(saliency), model, x, None, target=0)
    """

    def __init__(self, fn: Callable, *, explains: Callable[..., Tensor] | None = None,
                 name: str | None = None) -> None:
        self.fn = fn
        self.explains = output_at if explains is None else explains
        self.name = name if name is not None else getattr(fn, "__name__", repr(fn))

    def __call__(self, forward_func: Callable, inputs: TensorOrTuple, baselines: Any = None,
                 target: Any = None, additional_forward_args: Any = None) -> TensorOrTuple:
        extra = {} if additional_forward_args is None else {
            "additional_forward_args": additional_forward_args}
        return self.fn(forward_func, inputs, baselines, target, **extra)

    def __repr__(self) -> str:
        return f"Attribution({self.name})"


def _describe(name: str, kwargs: dict) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if not isinstance(v, nn.Module))
    return f"{name}({shown})"


def _explains_for(kwargs: dict) -> Callable[..., Tensor] | None:
    if "neuron_selector" not in kwargs:
        return None
    if kwargs.get("layer") is None:
        raise ValueError("a neuron method needs `layer` along with `neuron_selector`")
    return neuron_value(kwargs["layer"], kwargs["neuron_selector"],
                        kwargs.get("attribute_to_neuron_input", False))


def _keywords(params: Any, kw: dict, **passed: Any) -> dict:
    """``kw`` with each of ``passed`` (baselines, target) that ``params`` names."""
    return {**kw, **{k: v for k, v in passed.items() if k in params}}


def from_fnattr(method: Callable, *, seed: int | None = None, **kwargs: Any) -> Attribution:
    """Adapts an fnattr function (or any function with fnattr's argument names).

    ``kwargs`` are bound (``n_steps``, ``layer``, ``neuron_selector``,
    ``n_samples``, ...); ``baselines`` and ``target`` are passed only if the
    method takes them (plain gradient ignores the baseline; neuron methods
    have no target). With ``neuron_selector`` the attributions explain that
    neuron (:func:`neuron_value`), else the target output.

    Args:
        method: e.g. ``fnattr.integrated_gradients``, ``fnattr.layer_conductance``.
        seed: for methods that take a ``generator``: every call draws from a
            fresh ``torch.Generator`` seeded with ``seed``, so all calls of a
            checker see the same samples.
        **kwargs: bound keyword arguments of ``method``.

    Returns:
        An :class:`Attribution`.

    >>> cond = from_fnattr(fnattr.layer_conductance, layer="fc0", n_steps=128)
    >>> gs = from_fnattr(fnattr.gradient_shap, n_samples=200, seed=0)
    """
    params = inspect.signature(method).parameters
    if seed is not None and "generator" not in params:
        raise ValueError(f"`seed` given but {method.__name__} takes no `generator`")

    def fn(forward_func: Callable, inputs: TensorOrTuple, baselines: Any, target: Any,
           **extra: Any) -> TensorOrTuple:
        kw = _keywords(params, {**kwargs, **extra}, baselines=baselines, target=target)
        if seed is not None:
            kw["generator"] = torch.Generator().manual_seed(seed)
        return method(forward_func, inputs=inputs, **kw)

    return Attribution(fn, explains=_explains_for(kwargs),
                       name=_describe(getattr(method, "__name__", "method"), kwargs))


def from_captum(cls: type, *, layer: nn.Module | str | None = None, seed: int | None = None,
                **kwargs: Any) -> Attribution:
    """Adapts a Captum attribution class (``cls(forward_func[, layer]).attribute(...)``).

    The class is instantiated for each call (the checkers pass models they
    build), with ``layer`` when given (a name is resolved with the model's
    ``get_submodule``). ``baselines``, ``target`` and
    ``additional_forward_args`` are passed only if ``attribute`` takes them.
    Captum's warnings are silenced.

    Args:
        cls: e.g. ``captum.attr.IntegratedGradients``, ``LayerConductance``.
        layer: the layer, for layer and neuron classes.
        seed: seeds torch's and numpy's global RNGs for each call (Captum's
            sampled methods draw from them), restoring both afterwards.
        **kwargs: bound keyword arguments of ``attribute`` (``n_steps``,
            ``neuron_selector``, ...).

    Returns:
        An :class:`Attribution`.

    >>> from captum.attr import IntegratedGradients
    >>> assert_completeness(from_captum(IntegratedGradients, n_steps=64), model, x, None,
    ...                     target=0, atol=1e-4, rtol=1e-3)
    """
    params = inspect.signature(cls.attribute).parameters

    def fn(forward_func: Callable, inputs: TensorOrTuple, baselines: Any, target: Any,
           **extra: Any) -> TensorOrTuple:
        kw = _keywords(params, {**kwargs, **extra}, baselines=baselines, target=target)
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            np_state = np.random.get_state()
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                    np.random.seed(seed)
                site = forward_func.get_submodule(layer) if isinstance(layer, str) else layer
                obj = cls(forward_func) if site is None else cls(forward_func, site)
                return obj.attribute(inputs, **kw)
            finally:
                np.random.set_state(np_state)

    return Attribution(fn, explains=_explains_for({**kwargs, "layer": layer}),
                       name=_describe(cls.__name__, kwargs))


# ---------------------------------------------------------------- helpers


def _as_tuple(inputs: TensorOrTuple) -> tuple[Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _args(additional_forward_args: Any) -> tuple:
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) \
        else (additional_forward_args,)


def _as_attribution(attribute: Callable) -> Attribution:
    return attribute if isinstance(attribute, Attribution) else Attribution(attribute)

