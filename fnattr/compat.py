"""Captum-compatible classes: migrating is an import change.

``from fnattr.compat import NeuronGradient`` instead of
``from captum.attr import NeuronGradient``. Each class keeps Captum 0.9's
constructor and ``attribute`` signatures and is a thin shell over the
function of the same name in :mod:`fnattr`; ``attribute`` also accepts that
function's keyword-only extras (``create_graph``, ``generator``,
``chunk_size``, ``internal_batch_size``).

The shells are generated from the method catalog (:mod:`fnattr._catalog`,
whose ``compat`` field names each method's class): :func:`_shell` builds a
class from the function's signature and the few places where Captum's
``attribute`` differs from it (``_CAPTUM_ONLY``: ``Saliency``'s ``abs``, the
``grad_kwargs`` of layer methods). ``NoiseTunnel`` wraps any of them (or a
Captum object) over :func:`fnattr.noise_tunnel`, and Captum's own
``NoiseTunnel`` accepts them (their ``attribute`` has the ``__wrapped__``
Captum's ``log_usage`` decorator gives its methods).

``device_ids`` is accepted for signature compatibility and ignored: a
``DataParallel``/``DistributedDataParallel`` model is run through its
``.module`` on one device (fnattr never gathers per-device hook outputs).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import _lig, _methods as M, _neuron, _shap  # noqa: F401  (their catalog entries)
from . import _normalize as N
from ._catalog import CATALOG, Method
from ._noise import noise_tunnel

__all__ = [
    "Deconvolution",
    "GradientShap",
    "GuidedBackprop",
    "IntegratedGradients",
    "InternalInfluence",
    "LayerAttribution",
    "LayerConductance",
    "LayerIntegratedGradients",
    "NeuronDeconvolution",
    "NeuronGradient",
    "NeuronGradientShap",
    "NeuronGuidedBackprop",
    "NeuronIntegratedGradients",
    "NoiseTunnel",
    "Saliency",
]

_P = inspect.Parameter

# Captum ``attribute`` parameters the fnattr function does not have:
# class -> ((name, default, insert after), ...).
_CAPTUM_ONLY: dict[str, tuple[tuple[str, Any, str | None], ...]] = {
    "Saliency": (("abs", True, "target"),),
    "InternalInfluence": (("grad_kwargs", None, None),),
    "LayerConductance": (("grad_kwargs", None, None),),
    "LayerIntegratedGradients": (("grad_kwargs", None, None),),
}
# Captum's ``multiplies_by_inputs`` where no constructor argument sets it.
_MULTIPLIES = {"LayerConductance": True}


class _Shell:
    """What every Captum attribution object offers besides ``attribute``."""

    _has_delta = False
    _multiply_by_inputs = False
    _layer_attributions = False  # attributions are a layer's (layer classes)

    def __init__(self, forward_func: Callable, name: str = "forward_func") -> None:
        if not callable(forward_func):
            raise TypeError(f"`{name}` must be callable, got {type(forward_func).__name__}")
        self.forward_func = forward_func

    @classmethod
    def get_name(cls) -> str:
        """The class name with spaces: ``"Neuron Gradient Shap"``."""
        return "".join(c if c.islower() or i == 0 else " " + c
                       for i, c in enumerate(cls.__name__))

    def has_convergence_delta(self) -> bool:
        return self._has_delta

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def compute_convergence_delta(self, attributions: Any, start_point: Any, end_point: Any,
                                  target: Any = None, additional_forward_args: Any = None) -> Tensor:
        """Captum's ``compute_convergence_delta``: :func:`fnattr.convergence_delta`
        (a layer class's attributions are its layer's, of any tensor count)."""
        return M.convergence_delta(self.forward_func, attributions, start_point, end_point,
                                   target, additional_forward_args,
                                   layer_attributions=self._layer_attributions)

    def attribute_future(self) -> None:
        """Not implemented, as in Captum (``NotImplementedError``)."""
        raise NotImplementedError(
            f"attribute_future is not implemented for {type(self).__name__}")


def _captum_method(fn: Callable) -> Callable:
    """``fn`` with a ``__wrapped__``, as Captum's ``log_usage`` leaves its methods.

    Captum's ``NoiseTunnel`` calls ``attribute.__wrapped__(obj, ...)`` to skip
    its usage logging; this is the one reason for the wrapper.
    """
    @functools.wraps(fn)
    def attribute(self: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **kwargs)

    return attribute


def _shell(compat_name: str) -> type:
    """The Captum-signature class of the catalog method whose ``compat`` is ``compat_name``."""
    entry = next(e for e in CATALOG.values() if e.compat == compat_name)
    fn_params = inspect.signature(entry.fn).parameters
    ctor = _ctor_params(entry, fn_params)
    taken = {p.name for p in ctor} | {"forward_func", "model", "layer"}
    attr = [p for p in fn_params.values()
            if p.kind is _P.POSITIONAL_OR_KEYWORD and p.name not in taken]
    for name, default, after in _CAPTUM_ONLY.get(compat_name, ()):
        at = len(attr) if after is None else [p.name for p in attr].index(after) + 1
        attr.insert(at, _P(name, _P.POSITIONAL_OR_KEYWORD, default=default))
    self_p = _P("self", _P.POSITIONAL_OR_KEYWORD)
    init_sig = inspect.Signature([self_p, *ctor])
    extras = [p for p in fn_params.values()
              if p.kind is _P.KEYWORD_ONLY and p.name not in {q.name for q in attr}]
    attr_sig = inspect.Signature([self_p, *attr, *extras])

    def __init__(self: _Shell, *args: Any, **kwargs: Any) -> None:
        a = init_sig.bind(self, *args, **kwargs)
        a.apply_defaults()
        values = dict(a.arguments)
        _Shell.__init__(self, values[ctor[0].name], ctor[0].name)
        if entry.rule:
            self.model = self.forward_func
        if entry.needs_layer:
            self.layer, self.device_ids = values["layer"], values["device_ids"]
        self._multiply_by_inputs = values.get("multiply_by_inputs",
                                              _MULTIPLIES.get(compat_name, False))

    def attribute(self: _Shell, *args: Any, **kwargs: Any) -> Any:
        a = attr_sig.bind(self, *args, **kwargs)
        a.apply_defaults()
        values = dict(a.arguments)
        values.pop("self")
        grad_kwargs = values.pop("grad_kwargs", None)
        if "grad_kwargs" in fn_params:  # the function checks the keys it honours
            values["grad_kwargs"] = grad_kwargs
        else:
            N.check_grad_kwargs(grad_kwargs)  # the keys fnattr honours, the rest by name
        take_abs = values.pop("abs", False)
        if "multiply_by_inputs" in fn_params:
            values["multiply_by_inputs"] = self._multiply_by_inputs
        site = (self.layer,) if entry.needs_layer else ()
        out = entry.fn(self.forward_func, *site, **values)
        if take_abs:
            out = tuple(o.abs() for o in out) if isinstance(out, tuple) else out.abs()
        return out

    __init__.__signature__ = init_sig  # type: ignore[attr-defined]
    attribute.__signature__ = attr_sig  # type: ignore[attr-defined]
    attribute.__doc__ = f"Captum's ``{compat_name}.attribute``; see :func:`fnattr.{entry.name}`."
    doc = (f"Captum's ``{compat_name}`` over :func:`fnattr.{entry.name}` "
           f"(generated from the catalog by ``fnattr.compat._shell``).")
    return type(compat_name, (_Shell,), {
        "__init__": __init__, "attribute": _captum_method(attribute), "__doc__": doc,
        "__module__": __name__, "_has_delta": entry.delta,
        "_layer_attributions": entry.site == "layer"})


def _ctor_params(entry: Method, fn_params: Any) -> list[inspect.Parameter]:
    """Captum's constructor: the model, the layer and device ids, ``multiply_by_inputs``."""
    first = "model" if entry.rule else "forward_func"
    out = [_P(first, _P.POSITIONAL_OR_KEYWORD)]
    if entry.needs_layer:
        out += [_P("layer", _P.POSITIONAL_OR_KEYWORD),
                _P("device_ids", _P.POSITIONAL_OR_KEYWORD, default=None)]
    if "multiply_by_inputs" in fn_params:
        out.append(_P("multiply_by_inputs", _P.POSITIONAL_OR_KEYWORD, default=True))
    return out


Saliency = _shell("Saliency")
IntegratedGradients = _shell("IntegratedGradients")
GradientShap = _shell("GradientShap")
GuidedBackprop = _shell("GuidedBackprop")
Deconvolution = _shell("Deconvolution")
InternalInfluence = _shell("InternalInfluence")
LayerConductance = _shell("LayerConductance")
NeuronGradient = _shell("NeuronGradient")
NeuronIntegratedGradients = _shell("NeuronIntegratedGradients")
NeuronGradientShap = _shell("NeuronGradientShap")
NeuronGuidedBackprop = _shell("NeuronGuidedBackprop")
NeuronDeconvolution = _shell("NeuronDeconvolution")
LayerIntegratedGradients = _shell("LayerIntegratedGradients")


class LayerAttribution:
    """Holder of Captum's static ``LayerAttribution.interpolate``."""

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims: int | tuple[int, ...],
                    interpolate_mode: str = "nearest") -> Tensor:
        return M.interpolate(layer_attribution, interpolate_dims, interpolate_mode)


class NoiseTunnel(_Shell):
    """Captum's ``NoiseTunnel`` over :func:`fnattr.noise_tunnel`.

    Wraps any attribution object with an ``attribute`` method (an
    ``fnattr.compat`` class or a Captum one). ``attribute`` also takes a
    keyword-only ``generator``; the deltas come in Captum's order (per chunk of
    ``nt_samples_batch_size`` copies, example-major within a chunk).
    """

    def __init__(self, attribution_method: Any) -> None:
        if not callable(getattr(attribution_method, "attribute", None)):
            raise TypeError("`attribution_method` must be an attribution object with `attribute`")
        super().__init__(attribution_method.forward_func)
        self.attribution_method = attribution_method
        self.is_delta_supported = attribution_method.has_convergence_delta()
        self._has_delta = self.is_delta_supported
        self._multiply_by_inputs = attribution_method.multiplies_by_inputs
        self._layer_attributions = getattr(attribution_method, "_layer_attributions", None)
        if self._layer_attributions is None:  # a Captum class: its layer classes
            self._layer_attributions = any(c.__name__ == "LayerAttribution"
                                           for c in type(attribution_method).__mro__)

    @_captum_method
    def attribute(self, inputs: Any, nt_type: str = "smoothgrad", nt_samples: int = 5,
                  nt_samples_batch_size: int | None = None,
                  stdevs: float | tuple[float, ...] = 1.0,
                  draw_baseline_from_distrib: bool = False, *,
                  generator: torch.Generator | None = None, **kwargs: Any) -> Any:
        out = noise_tunnel(self.attribution_method.attribute, inputs, nt_type=nt_type,
                           nt_samples=nt_samples, stdevs=stdevs,
                           nt_samples_batch_size=nt_samples_batch_size,
                           draw_baseline_from_distrib=draw_baseline_from_distrib,
                           generator=generator, **kwargs)
        if not (self.is_delta_supported and kwargs.get("return_convergence_delta")):
            return out
        attrs, delta = out
        batch = min(nt_samples, nt_samples_batch_size or nt_samples)
        per_example = delta.reshape(-1, nt_samples)
        return attrs, torch.cat([per_example[:, s:s + batch].reshape(-1)
                                 for s in range(0, nt_samples, batch)])

# Resolved annotations in the hand-written classes' signatures (fnattr._docs).
from ._docs import render_public as _render_public  # noqa: E402

_render_public(globals(), ["LayerAttribution", "NoiseTunnel"])
del _render_public
