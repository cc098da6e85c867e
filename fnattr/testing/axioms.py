"""Axiom checkers for any attribution method: fnattr functions, Captum classes or your own.

**Calling convention.** An attribution is any callable

    ``attribute(forward_func, inputs, baselines, target) -> attributions``

(``additional_forward_args=`` is added as a keyword when a checker is given
some). Checkers call it on models they build themselves (a masked model for
:func:`dummy`, a symmetrized one for :func:`symmetry`, a combination for
:func:`linearity`), so it must take the model as an argument rather than
close over it. :func:`from_fnattr` and :func:`from_captum` adapt fnattr
functions and Captum classes to this convention; :class:`Attribution`
adapts a user function and says what it explains (the target output, or a
neuron: :func:`neuron_value`).

**Results.** Every checker returns the measured violation, one value per
example (a ``Tensor[N]``, detached): the signed completeness gap, or a
non-negative distance for the other axioms. Every ``assert_*`` helper raises
``AssertionError`` naming the method, the axiom and the worst example when
``|violation| > atol + rtol * scale`` for some example, where ``scale`` is
the natural size of the compared quantity (stated per checker). ``atol`` and
``rtol`` are required: the right tolerance depends on the method
(quadrature error, sampling error) and the dtype.

Models built by the checkers are ``nn.Module`` wrappers whose
``get_submodule`` resolves layer names against the wrapped model (except
the two-model combination of :func:`linearity`), so layers given by name or
as modules keep working for fnattr's and Captum's neuron methods.

>>> import fnattr
>>> ig = from_fnattr(fnattr.integrated_gradients, n_steps=64)
>>> assert_completeness(ig, model, x, torch.zeros_like(x), target=0, atol=1e-4, rtol=1e-3)
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Attribution",
    "assert_completeness",
    "assert_dummy",
    "assert_implementation_invariance",
    "assert_layer_completeness",
    "assert_linearity",
    "assert_sensitivity",
    "assert_symmetry",
    "completeness",
    "dummy",
    "from_captum",
    "from_fnattr",
    "implementation_invariance",
    "layer_completeness",
    "linearity",
    "neuron_value",
    "output_at",
    "sensitivity",
    "symmetry",
]

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
        kw = {**kwargs, **extra}
        if "baselines" in params:
            kw["baselines"] = baselines
        if "target" in params:
            kw["target"] = target
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
        kw = {**kwargs, **extra}
        if "baselines" in params:
            kw["baselines"] = baselines
        if "target" in params:
            kw["target"] = target
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


# ---------------------------------------------------------------- models the checkers build


class _Around(nn.Module):
    """A model built around ``model``; layer names resolve against ``model``."""

    def __init__(self, model: Callable) -> None:
        super().__init__()
        self.model = model

    def get_submodule(self, target: str) -> nn.Module:
        return self.model.get_submodule(target) if target else self


class _Masked(_Around):
    """``model`` with one input feature replaced by zero: the model ignores it."""

    def __init__(self, model: Callable, keep: Tensor) -> None:
        super().__init__(model)
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        return self.model(x * self.keep, *args)


class _Symmetrized(_Around):
    """``f(x) + f(swap(x))``: symmetric in the two swapped features."""

    def __init__(self, model: Callable, perm: Tensor) -> None:
        super().__init__(model)
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        swapped = x.flatten(1)[:, self.perm].reshape(x.shape)
        return self.model(x, *args) + self.model(swapped, *args)


class _Combined(nn.Module):
    """``a * f + b * g``."""

    def __init__(self, f: Callable, g: Callable, a: float, b: float) -> None:
        super().__init__()
        self.f, self.g, self.a, self.b = f, g, a, b

    def forward(self, *args: Any) -> Tensor:
        return self.a * self.f(*args) + self.b * self.g(*args)


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


def _start_points(baselines: Any, inputs: TensorOrTuple) -> TensorOrTuple:
    """Baselines as full tensors shaped like ``inputs`` (None -> zeros)."""
    xs = _as_tuple(inputs)
    bs = baselines if isinstance(baselines, tuple) else (baselines,) * len(xs)
    starts = tuple(
        torch.zeros_like(x) if b is None
        else torch.full_like(x, b) if not isinstance(b, Tensor)
        else b.to(x.dtype).expand_as(x)
        for x, b in zip(xs, bs))
    return starts if isinstance(inputs, (tuple, list)) else starts[0]


def _flat(attrs: TensorOrTuple) -> Tensor:
    """All attributions of an example in one row: ``(N, total features)``."""
    return torch.cat([a.detach().reshape(a.shape[0], -1) for a in _as_tuple(attrs)], 1)


def _feature(inputs: Any, feature: Any) -> tuple[int, ...]:
    if not isinstance(inputs, Tensor):
        raise TypeError("feature checks need `inputs` as one Tensor, "
                        f"got {type(inputs).__name__}")
    index = feature if isinstance(feature, tuple) else (feature,)
    shape = inputs.shape[1:]
    if len(index) != len(shape) or any(not -s <= i < s for i, s in zip(index, shape)):
        raise ValueError(f"feature {feature!r} does not index one element of an example of "
                         f"shape {tuple(shape)}")
    return index


def _check(axiom: str, attribute: Attribution, measured: tuple[Tensor, Tensor], atol: float,
           rtol: float, scale_name: str) -> None:
    violation, scale = measured
    allowed = atol + rtol * scale
    ok = violation.abs() <= allowed  # NaN fails
    if not bool(ok.all()):
        k = int(torch.where(ok, -torch.inf, violation.abs() - allowed).argmax())
        raise AssertionError(
            f"{axiom} violated by {attribute.name}: violation {float(violation[k]):.4g} at "
            f"example {k} exceeds atol + rtol * {scale_name} = {float(allowed[k]):.4g} "
            f"({int((~ok).sum())} of {ok.numel()} examples fail)")


# ---------------------------------------------------------------- completeness


def _completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                  baselines: Any, target: Any, additional_forward_args: Any
                  ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    attrs = attribute(forward_func, inputs, baselines, target, additional_forward_args)
    with torch.no_grad():
        change = (attribute.explains(forward_func, inputs, target, additional_forward_args)
                  - attribute.explains(forward_func, _start_points(baselines, inputs), target,
                                       additional_forward_args))
    return _flat(attrs).sum(1) - change, change.abs()


def completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                 baselines: Any = None, target: Any = None,
                 additional_forward_args: Any = None) -> Tensor:
    """Completeness gap: ``sum(attributions) - (F(inputs) - F(baselines))`` per example.

    **Axiom** (completeness; SHAP's *local accuracy*): the attributions of an
    example add up to the difference between the explained output at the
    input and at the baseline. ``F`` is ``attribute.explains``: the target
    output, or the neuron's value for neuron methods (so neuron integrated
    gradients is checked against the neuron).

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Proposition 1); Lundberg & Lee,
        "A Unified Approach to Interpreting Model Predictions",
        https://arxiv.org/abs/1705.07874 (Property 1).

    Satisfied by integrated gradients and neuron integrated gradients (up to
    the quadrature error), by gradient SHAP only in expectation over its
    samples; not by gradient, guided backprop or deconvolution.

    Args:
        attribute: an :class:`Attribution` or ``attribute(f, inputs, baselines, target)``.
        forward_func, inputs, target, additional_forward_args: as in Captum.
        baselines: ``None`` (zeros), a number, or a tensor broadcastable to
            ``inputs`` (e.g. one reference row), or a tuple of those.

    Returns:
        The signed gap, ``Tensor[N]`` (Captum's convergence delta); the
        assert's scale is ``|F(inputs) - F(baselines)|``.

    >>> completeness(from_fnattr(fnattr.integrated_gradients), model, x, target=0).abs().max()
    """
    return _completeness(attribute, forward_func, inputs, baselines, target,
                         additional_forward_args)[0]


def assert_completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                        baselines: Any = None, target: Any = None,
                        additional_forward_args: Any = None, *, atol: float,
                        rtol: float) -> None:
    """Raises ``AssertionError`` where ``|completeness| > atol + rtol * |F(x) - F(b)|``.

    See :func:`completeness`.
    """
    _check("completeness", _as_attribution(attribute),
           _completeness(attribute, forward_func, inputs, baselines, target,
                         additional_forward_args), atol, rtol, "|F(x) - F(b)|")


def layer_completeness(attribute: Callable, forward_func: Callable, inputs: TensorOrTuple,
                       baselines: Any = None, target: Any = None,
                       additional_forward_args: Any = None) -> Tensor:
    """Layer completeness gap: ``sum(layer attributions) - (F(inputs) - F(baselines))``.

    **Axiom** (conductance's completeness): the attributions of the neurons
    of one layer add up to the change of the target output between baseline
    and input, because the conductances of a layer partition the integrated
    gradients of the inputs. ``attribute`` returns layer-shaped attributions
    (e.g. ``from_fnattr(fnattr.layer_conductance, layer="fc0")``); the
    measurement is :func:`completeness`'s.

    References:
        Dhamdhere et al., "How Important Is a Neuron?",
        https://arxiv.org/abs/1805.12233 (Section 3, completeness).

    Satisfied by layer conductance (up to the discretization error of its
    ``n_steps``); not by internal influence (an averaged gradient, not
    multiplied by the layer's change).

    Returns:
        The signed gap, ``Tensor[N]``; the assert's scale is ``|F(x) - F(b)|``.

    >>> layer_completeness(from_fnattr(fnattr.layer_conductance, layer="fc0"), model, x,
    ...                    target=0)
    """
    return completeness(attribute, forward_func, inputs, baselines, target,
                        additional_forward_args)


def assert_layer_completeness(attribute: Callable, forward_func: Callable,
                              inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
                              additional_forward_args: Any = None, *, atol: float,
                              rtol: float) -> None:
    """Raises ``AssertionError`` where ``|layer_completeness| > atol + rtol * |F(x) - F(b)|``.

    See :func:`layer_completeness`.
    """
    _check("layer completeness", _as_attribution(attribute),
           _completeness(attribute, forward_func, inputs, baselines, target,
                         additional_forward_args), atol, rtol, "|F(x) - F(b)|")


# ---------------------------------------------------------------- sensitivity and dummy


def sensitivity(attribute: Callable, forward_func: Callable, inputs: Tensor,
                baselines: Any = None, target: Any = None,
                additional_forward_args: Any = None, *, feature: int | tuple[int, ...],
                zero_tol: float = 0.0) -> Tensor:
    """The output change left unattributed when only ``feature`` differs from the baseline.

    **Axiom** (sensitivity (a)): for every input and baseline that differ in
    one feature but have different outputs, the differing feature gets a
    non-zero attribution. The checker builds that input: the baseline with
    ``feature`` taken from ``inputs``, and attributes it against the baseline.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.1).

    Satisfied by every method satisfying completeness (the feature then gets
    the whole change): integrated gradients, neuron integrated gradients.
    Violated by gradient, guided backprop and deconvolution where the output
    is flat at the input (a ReLU off at ``x`` but on between ``b`` and ``x``).

    Args:
        attribute, forward_func, inputs, baselines, target,
        additional_forward_args: see :func:`completeness`; ``inputs`` is one Tensor.
        feature: the index of one element of an example (an int for a vector
            input, a tuple of ints for ``(C, H, W)``).
        zero_tol: attributions with ``|a| <= zero_tol`` count as zero.

    Returns:
        ``|F(x') - F(b)|`` for examples whose feature attribution is zero,
        else ``0``: ``Tensor[N]``; the assert uses no scale (``rtol`` is 0).

    >>> sensitivity(from_fnattr(fnattr.gradient), model, x, feature=0, target=0)
    """
    return _sensitivity(attribute, forward_func, inputs, baselines, target,
                        additional_forward_args, feature, zero_tol)[0]


def _sensitivity(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any,
                 target: Any, additional_forward_args: Any, feature: Any,
                 zero_tol: float) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    index = (slice(None), *_feature(inputs, feature))
    start = _start_points(baselines, inputs)
    one_differs = start.clone()
    one_differs[index] = inputs[index]
    a = attribute(forward_func, one_differs, baselines, target, additional_forward_args)
    with torch.no_grad():
        change = (attribute.explains(forward_func, one_differs, target, additional_forward_args)
                  - attribute.explains(forward_func, start, target, additional_forward_args))
    unattributed = torch.where(a.detach()[index].abs() <= zero_tol, change.abs(),
                               torch.zeros_like(change))
    return unattributed, torch.zeros_like(change)


def assert_sensitivity(attribute: Callable, forward_func: Callable, inputs: Tensor,
                       baselines: Any = None, target: Any = None,
                       additional_forward_args: Any = None, *, feature: int | tuple[int, ...],
                       atol: float, zero_tol: float = 0.0) -> None:
    """Raises ``AssertionError`` where a change ``> atol`` gets a zero attribution.

    See :func:`sensitivity`.
    """
    _check("sensitivity", _as_attribution(attribute),
           _sensitivity(attribute, forward_func, inputs, baselines, target,
                        additional_forward_args, feature, zero_tol), atol, 0.0, "0")


def _dummy(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any,
           target: Any, additional_forward_args: Any, feature: Any) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    index = (slice(None), *_feature(inputs, feature))
    keep = torch.ones_like(inputs[:1])
    keep[index] = 0
    a = attribute(_Masked(forward_func, keep), inputs, baselines, target,
                  additional_forward_args).detach()
    return a[index].abs(), a.reshape(a.shape[0], -1).abs().sum(1)


def dummy(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any = None,
          target: Any = None, additional_forward_args: Any = None, *,
          feature: int | tuple[int, ...]) -> Tensor:
    """The attribution of a feature the model ignores (should be zero).

    **Axiom** (dummy / null player; sensitivity (b)): if the function does not
    depend on a variable, the variable's attribution is zero. The checker
    builds such a model from ``forward_func``: ``feature`` is multiplied by
    zero before the model sees it; ``inputs`` and ``baselines`` are used as
    given (so the ignored feature may differ between them).

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.1, "Sensitivity(b)");
        Lundberg & Lee, https://arxiv.org/abs/1705.07874 (Property 2, missingness).

    Satisfied by every gradient-based method here (integrated gradients,
    gradient SHAP, gradient, guided backprop, deconvolution and their neuron
    forms): the feature's gradient is exactly zero. Violated by a method that
    spreads or permutes attribution among features.

    Args:
        attribute, forward_func, inputs, baselines, target,
        additional_forward_args: see :func:`completeness`; ``inputs`` is one Tensor.
        feature: the index of the ignored element of an example.

    Returns:
        ``|attribution of feature|``: ``Tensor[N]``; the assert's scale is
        the example's total ``sum |attributions|``.

    >>> dummy(from_fnattr(fnattr.integrated_gradients), model, x, feature=2, target=0)
    """
    return _dummy(attribute, forward_func, inputs, baselines, target, additional_forward_args,
                  feature)[0]


def assert_dummy(attribute: Callable, forward_func: Callable, inputs: Tensor,
                 baselines: Any = None, target: Any = None, additional_forward_args: Any = None,
                 *, feature: int | tuple[int, ...], atol: float, rtol: float) -> None:
    """Raises ``AssertionError`` where ``dummy > atol + rtol * sum|attributions|``.

    See :func:`dummy`.
    """
    _check("dummy", _as_attribution(attribute),
           _dummy(attribute, forward_func, inputs, baselines, target, additional_forward_args,
                  feature), atol, rtol, "sum|attributions|")


# ---------------------------------------------------------------- symmetry


def _symmetry(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any,
              target: Any, additional_forward_args: Any, features: Sequence[Any]
              ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    if len(features) != 2:
        raise ValueError(f"`features` must be two feature indices, got {features!r}")
    i, j = ((slice(None), *_feature(inputs, f)) for f in features)
    flat = torch.arange(inputs[0].numel()).reshape(inputs.shape[1:])
    perm = flat.flatten().clone()
    fi, fj = int(flat[i[1:]]), int(flat[j[1:]])
    perm[fi], perm[fj] = fj, fi
    x = inputs.clone()
    x[j] = x[i]
    b = baselines
    if isinstance(baselines, Tensor):
        b = baselines.expand_as(inputs[:1]) if baselines.shape[0] == 1 \
            else baselines.expand_as(inputs)
        b = b.clone()
        b[j] = b[i]
    a = attribute(_Symmetrized(forward_func, perm), x, b, target,
                  additional_forward_args).detach()
    return (a[i] - a[j]).abs(), (a[i].abs() + a[j].abs()) / 2


def symmetry(attribute: Callable, forward_func: Callable, inputs: Tensor, baselines: Any = None,
             target: Any = None, additional_forward_args: Any = None, *,
             features: tuple[Any, Any]) -> Tensor:
    """The attribution gap between two symmetric features with equal values.

    **Axiom** (symmetry preservation): if swapping two variables does not
    change the function, and they have equal values in the input and in the
    baseline, they get equal attributions. The checker builds the symmetric
    model ``f(x) + f(swap(x))`` from ``forward_func``, copies the first
    feature's value onto the second in ``inputs`` and in tensor
    ``baselines`` (a single baseline row stays a single row), and attributes.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 4, Theorem 1: integrated
        gradients is the unique symmetry-preserving path method).

    Satisfied by integrated gradients (straight-line path), gradient, guided
    backprop, deconvolution, and gradient SHAP without input noise. Violated
    by path methods whose path is not symmetric (e.g. moving one feature
    after the other) and, per draw, by gradient SHAP with ``stdevs > 0``.

    Args:
        attribute, forward_func, inputs, baselines, target,
        additional_forward_args: see :func:`completeness`; ``inputs`` is one Tensor.
        features: the indices of the two elements of an example to make symmetric.

    Returns:
        ``|a_i - a_j|``: ``Tensor[N]``; the assert's scale is ``(|a_i| + |a_j|) / 2``.

    >>> symmetry(from_fnattr(fnattr.integrated_gradients), model, x, features=(0, 1), target=0)
    """
    return _symmetry(attribute, forward_func, inputs, baselines, target,
                     additional_forward_args, features)[0]


def assert_symmetry(attribute: Callable, forward_func: Callable, inputs: Tensor,
                    baselines: Any = None, target: Any = None,
                    additional_forward_args: Any = None, *, features: tuple[Any, Any],
                    atol: float, rtol: float) -> None:
    """Raises ``AssertionError`` where ``symmetry > atol + rtol * (|a_i| + |a_j|) / 2``.

    See :func:`symmetry`.
    """
    _check("symmetry", _as_attribution(attribute),
           _symmetry(attribute, forward_func, inputs, baselines, target,
                     additional_forward_args, features), atol, rtol, "(|a_i| + |a_j|) / 2")


# ---------------------------------------------------------------- two-model axioms


def _gap(a: TensorOrTuple, expected: TensorOrTuple) -> tuple[Tensor, Tensor]:
    a, expected = _flat(a), _flat(expected)
    return (a - expected).abs().amax(1), expected.abs().amax(1)


def _linearity(attribute: Callable, forward_func: Callable, other_func: Callable,
               inputs: TensorOrTuple, baselines: Any, target: Any,
               additional_forward_args: Any, coefficients: tuple[float, float]
               ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    a, b = coefficients
    combined = _Combined(forward_func, other_func, a, b)

    def run(f: Callable) -> Tensor:
        return _flat(attribute(f, inputs, baselines, target, additional_forward_args))

    return _gap(run(combined), a * run(forward_func) + b * run(other_func))


def linearity(attribute: Callable, forward_func: Callable, other_func: Callable,
              inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
              additional_forward_args: Any = None, *,
              coefficients: tuple[float, float] = (2.0, -0.5)) -> Tensor:
    """How far the attributions of ``a f + b g`` are from ``a A(f) + b A(g)``.

    **Axiom** (linearity): attributing a linear combination of two networks
    gives the same combination of their attributions. The checker builds
    ``a * forward_func + b * other_func`` (the two must take the same inputs
    and give outputs of the same shape). The default coefficients include a
    negative one, which rules that depend on the gradient's sign fail.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.2, "Linearity").

    Satisfied by integrated gradients, gradient, and gradient SHAP with a
    fixed seed (the same samples for all three calls). Violated by guided
    backprop and deconvolution for negative coefficients.

    Args:
        attribute: see :func:`completeness`.
        forward_func, other_func: the two networks ``f`` and ``g``.
        inputs, baselines, target, additional_forward_args: see :func:`completeness`.
        coefficients: ``(a, b)``.

    Returns:
        The per-example largest ``|A(a f + b g) - (a A(f) + b A(g))|``:
        ``Tensor[N]``; the assert's scale is the largest ``|a A(f) + b A(g)|``.

    >>> linearity(from_fnattr(fnattr.integrated_gradients), f, g, x, target=0)
    """
    return _linearity(attribute, forward_func, other_func, inputs, baselines, target,
                      additional_forward_args, coefficients)[0]


def assert_linearity(attribute: Callable, forward_func: Callable, other_func: Callable,
                     inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
                     additional_forward_args: Any = None, *,
                     coefficients: tuple[float, float] = (2.0, -0.5), atol: float,
                     rtol: float) -> None:
    """Raises ``AssertionError`` where ``linearity > atol + rtol * max|a A(f) + b A(g)|``.

    See :func:`linearity`.
    """
    _check("linearity", _as_attribution(attribute),
           _linearity(attribute, forward_func, other_func, inputs, baselines, target,
                      additional_forward_args, coefficients),
           atol, rtol, "max|a A(f) + b A(g)|")


def _implementation_invariance(attribute: Callable, forward_func: Callable,
                               other_func: Callable, inputs: TensorOrTuple, baselines: Any,
                               target: Any, additional_forward_args: Any
                               ) -> tuple[Tensor, Tensor]:
    attribute = _as_attribution(attribute)
    return _gap(attribute(other_func, inputs, baselines, target, additional_forward_args),
                attribute(forward_func, inputs, baselines, target, additional_forward_args))


def implementation_invariance(attribute: Callable, forward_func: Callable,
                              other_func: Callable, inputs: TensorOrTuple,
                              baselines: Any = None, target: Any = None,
                              additional_forward_args: Any = None) -> Tensor:
    """How far the attributions of two functionally equal networks are apart.

    **Axiom** (implementation invariance): two networks that compute the
    same function (equal outputs for all inputs, however implemented) get
    identical attributions. The caller supplies the pair
    (:func:`fnattr.testing.strategies.equivalent_models` draws one); the
    checker does not verify that they are equal.

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks",
        https://arxiv.org/abs/1703.01365 (Section 2.2, "Implementation Invariance").

    Satisfied by every method that depends on the function only through its
    gradients: integrated gradients, gradient, gradient SHAP (fixed seed).
    Violated by guided backprop and deconvolution, whose ReLU rules depend on
    how the function is written (e.g. ``z`` versus ``relu(z) - relu(-z)``).

    Args:
        attribute: see :func:`completeness`.
        forward_func, other_func: two functionally equal networks.
        inputs, baselines, target, additional_forward_args: see :func:`completeness`.

    Returns:
        The per-example largest ``|A(other) - A(forward_func)|``: ``Tensor[N]``;
        the assert's scale is the largest ``|A(forward_func)|``.

    >>> implementation_invariance(from_fnattr(fnattr.guided_backprop), f, f_twin, x, target=0)
    """
    return _implementation_invariance(attribute, forward_func, other_func, inputs, baselines,
                                      target, additional_forward_args)[0]


def assert_implementation_invariance(attribute: Callable, forward_func: Callable,
                                     other_func: Callable, inputs: TensorOrTuple,
                                     baselines: Any = None, target: Any = None,
                                     additional_forward_args: Any = None, *, atol: float,
                                     rtol: float) -> None:
    """Raises ``AssertionError`` where ``implementation_invariance > atol + rtol * max|A(f)|``.

    See :func:`implementation_invariance`.
    """
    _check("implementation invariance", _as_attribution(attribute),
           _implementation_invariance(attribute, forward_func, other_func, inputs, baselines,
                                      target, additional_forward_args),
           atol, rtol, "max|A(f)|")
