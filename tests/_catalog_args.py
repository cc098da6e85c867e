"""Argument builders for the checks that cover every method: built from the catalog.

The cross-method tests (variants, state, differentiable, compile, bad
arguments, axioms) take their method list from ``fnattr._catalog.CATALOG``
and build each call from the entry's ``site`` (what comes before ``inputs``
and which output is explained) and ``path`` (quadrature or sampling
arguments). A new catalog entry is covered automatically; one whose site or
path has no builder here, or whose signature does not accept the built
arguments, fails :func:`build` with "no argument builder for <name>"
(``test_catalog.py::test_every_entry_has_an_argument_builder``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from fnattr._catalog import CATALOG, Method

ENTRIES = sorted(CATALOG.values(), key=lambda m: m.name)
SAMPLED = {e.name for e in ENTRIES if e.path == "sampled"}


@dataclass(frozen=True)
class Setting:
    """What one test context uses for every method: layer, explained output, path."""

    layer: Any  # a dotted name serves fresh model instances; a module one model
    target: Any = 1
    neuron: Any = (1,)
    n_steps: int = 6
    baselines: Any = None  # a sampled method's baseline distribution
    n_samples: int = 3
    stdevs: float = 0.1
    seed: int = 7
    extra: dict = field(default_factory=dict)  # passed to every method (e.g. create_graph)

    def but(self, **changes: Any) -> "Setting":
        return replace(self, **changes)


def _inputs_site(s: Setting) -> tuple[tuple, dict]:
    return (), {"target": s.target}


def _layer_site(s: Setting) -> tuple[tuple, dict]:
    return (s.layer,), {"target": s.target}


def _neuron_site(s: Setting) -> tuple[tuple, dict]:
    return (s.layer,), {"neuron_selector": s.neuron}


def _no_path(s: Setting) -> dict:
    return {}


def _quadrature_path(s: Setting) -> dict:
    return {"n_steps": s.n_steps}


def _sampled_path(s: Setting) -> dict:
    return {"baselines": s.baselines, "n_samples": s.n_samples, "stdevs": s.stdevs,
            "generator": torch.Generator().manual_seed(s.seed)}


SITE_ARGS: dict[str, Callable[[Setting], tuple[tuple, dict]]] = {
    "inputs": _inputs_site, "layer": _layer_site, "neuron": _neuron_site}
PATH_ARGS: dict[str, Callable[[Setting], dict]] = {
    "none": _no_path, "quadrature": _quadrature_path, "sampled": _sampled_path}


def build(entry: Method, setting: Setting) -> tuple[tuple, dict]:
    """``(args before inputs, keyword args)`` for ``entry`` in ``setting``.

    Raises ``LookupError("no argument builder for <name> ...")`` when the
    entry's site or path is unknown here or its signature refuses them.
    """
    site, path = SITE_ARGS.get(entry.site), PATH_ARGS.get(entry.path)
    if site is None or path is None:
        raise LookupError(f"no argument builder for {entry.name} "
                          f"(site={entry.site!r}, path={entry.path!r})")
    head, kwargs = site(setting)
    kwargs = {**kwargs, **path(setting), **setting.extra}
    try:
        inspect.signature(entry.fn).bind(None, *head, None, **kwargs)
    except TypeError as err:
        raise LookupError(f"no argument builder for {entry.name}: {err}") from None
    return head, kwargs


def call(entry: Method, model: Any, x: Any, setting: Setting, **kwargs: Any) -> Any:
    """``entry.fn(model, *head, x, **built, **kwargs)``."""
    head, built = build(entry, setting)
    return entry.fn(model, *head, x, **{**built, **kwargs})


def caller(entry: Method, setting: Setting, **kwargs: Any) -> Callable[[Any, Any], Any]:
    """``f(model, x)`` calling ``entry`` in ``setting`` (a fresh generator per call)."""
    return lambda model, x: call(entry, model, x, setting, **kwargs)
