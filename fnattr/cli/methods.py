"""The methods the command line runs, read from fnattr's catalog.

Which options a method takes comes from its signature and its catalog entry
(site, path, delta), so a method registered in ``fnattr._catalog`` appears in
``fnattr explain --method`` and in the demo with no edit here, as long as the
CLI can supply every argument it requires.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import fnattr  # noqa: F401  (importing fnattr registers its methods in the catalog)
from fnattr._catalog import CATALOG, Method

from .args import flag_of_param
from .errors import argument_of, describe

# the required arguments the CLI can supply (the model and layer positionally)
_SUPPLIED = {"forward_func", "model", "layer", "inputs", "neuron_selector", "baselines",
             "target"}


def parameters(entry: Method) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(entry.fn).parameters)


def accepts(entry: Method, param: str) -> bool:
    return param in parameters(entry)


def requires(entry: Method, param: str) -> bool:
    found = parameters(entry).get(param)
    return found is not None and found.default is inspect.Parameter.empty


def _drivable(entry: Method) -> bool:
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               or name in _SUPPLIED for name, p in parameters(entry).items())


METHODS: dict[str, Method] = {name: e for name, e in CATALOG.items() if _drivable(e)}


def layer_input_param(entry: Method) -> str:
    """The flag ``--layer-input`` sets this keyword argument of ``entry``."""
    return "attribute_to_neuron_input" if entry.site == "neuron" else "attribute_to_layer_input"


def bind(entry: Method, forward: Callable, layer: str | None,
         compile_fn: Callable | None = None) -> Callable:
    """``entry`` as a function of ``(inputs, **kwargs)``, compiled with
    ``compile_fn`` (``fnattr.compile``) if given."""
    leading = (forward, layer) if entry.needs_layer else (forward,)
    if compile_fn is not None:
        return compile_fn(entry.fn, *leading)
    return functools.partial(entry.fn, *leading)


def fixed_kwargs(entry: Method, options: dict[str, Any], layer_input: bool) -> dict:
    """Keyword arguments for every call of ``entry``: the given ``options``
    (fnattr's argument names) it accepts, the layer side, and a delta request."""
    kwargs = {name: value for name, value in options.items() if accepts(entry, name)}
    if layer_input:
        kwargs[layer_input_param(entry)] = True
    if entry.delta:
        kwargs["return_convergence_delta"] = True
    return kwargs


def split_delta(entry: Method, result: Any, n: int) -> tuple[Any, Any]:
    """``(attributions, per-example delta or None)`` from a call's result; a delta
    per sample (gradient SHAP) becomes each example's mean over its samples."""
    if not entry.delta:
        return result, None
    attributions, delta = result
    return attributions, delta.detach().reshape(n, -1).mean(1)


def failure(entry: Method, error: BaseException) -> str:
    """One line for a failed call, naming the flag of the argument fnattr named."""
    option = flag_of_param(argument_of(error))
    head = f"{entry.name} rejected {option}" if option else f"{entry.name} failed"
    return f"{head}: {describe(error)}"
