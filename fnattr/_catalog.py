"""The method catalog: every named method declared once, with what it is.

``fnattr.compile``, the CLI's method table, the demo, the Captum-compatible
shells and the cross-method tests are built from :data:`CATALOG`; adding a
method is its definition under ``@attribution(site, ...)`` (which calls
:func:`register`, :mod:`fnattr._boundary`) plus its tests (the checklist is
in ``docs/DESIGN.md``, "Adding a method").

A :class:`Method` records:

* ``site``: where the gradient is taken or what is explained: ``"inputs"``
  (attributions shaped like the inputs, explained output chosen by
  ``target``), ``"layer"`` (attributions shaped like a layer's value) or
  ``"neuron"`` (attributions shaped like the inputs, explained value chosen
  by ``neuron_selector`` at a layer). Layer and neuron methods take ``layer``
  as their second argument.
* ``path``: ``"none"`` (one gradient), ``"quadrature"`` (deterministic points
  ``n_steps``/``method``) or ``"sampled"`` (random points drawn from a
  ``generator``; ``draw(bound_arguments) -> paths`` draws them and ``core``,
  the method with a ``paths`` argument in place of the drawing arguments,
  computes the result from explicit draws, which is what compiles).
* ``rule``: ``"guided"``/``"deconv"`` when the method runs under a ReLU rule.
* ``delta``: whether ``return_convergence_delta`` is accepted.
* ``compat``: the name of its Captum class in :mod:`fnattr.compat`.
* ``target``: whether it takes ``target`` (neuron methods do not).
* ``integer_inputs``: whether inputs may be integer (token ids): only methods
  that differentiate at a layer, never at the inputs.
* ``layers``: whether ``layer`` may be a list of layers (attributed together,
  one result per layer, as Captum's ``LayerIntegratedGradients``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Method", "CATALOG", "register", "lookup"]

SITES = ("inputs", "layer", "neuron")
PATHS = ("none", "quadrature", "sampled")


@dataclass(frozen=True)
class Method:
    """One named attribution method and how to drive it."""

    name: str
    fn: Callable
    site: str
    path: str = "none"
    rule: str | None = None
    delta: bool = False
    compat: str | None = None
    draw: Callable | None = None
    core: Callable | None = None
    integer_inputs: bool = False
    layers: bool = False

    @property
    def needs_layer(self) -> bool:
        return self.site != "inputs"

    @property
    def target(self) -> bool:
        return self.site != "neuron"

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"site must be one of {SITES}, got {self.site!r}")
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        if (self.path == "sampled") != (self.draw is not None and self.core is not None):
            raise ValueError("a sampled method needs both `draw` and `core` (and only it)")


CATALOG: dict[str, Method] = {}


def register(fn: Callable, site: str, **info: object) -> Callable:
    """Adds ``fn`` to the catalog under its ``__name__``; returns ``fn``."""
    entry = Method(name=fn.__name__, fn=fn, site=site, **info)  # type: ignore[arg-type]
    CATALOG[entry.name] = entry
    return fn


def lookup(method: Callable | str) -> Method | None:
    """The catalog entry of a method given as a function or a name (``None`` if absent)."""
    if isinstance(method, str):
        return CATALOG.get(method)
    entry = CATALOG.get(getattr(method, "__name__", ""))
    return entry if entry is not None and entry.fn is method else None
