"""The method catalog: one entry per named method, and everything built from it agrees."""

from __future__ import annotations

import inspect

import pytest

import fnattr
from fnattr import _catalog, compat

ENTRIES = sorted(_catalog.CATALOG.values(), key=lambda m: m.name)


def test_every_exported_method_is_catalogued():
    for entry in ENTRIES:
        assert getattr(fnattr, entry.name) is entry.fn, entry.name
    assert {"gradient", "integrated_gradients", "gradient_shap", "neuron_gradient",
            "internal_influence", "layer_conductance"} <= set(_catalog.CATALOG)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda m: m.name)
def test_signature_matches_declaration(entry):
    params = list(inspect.signature(entry.fn).parameters)
    assert params[0] in ("forward_func", "model")
    assert (params[1] == "layer") == entry.needs_layer
    assert ("target" in params) == entry.target
    assert ("neuron_selector" in params) == (entry.site == "neuron")
    assert ("return_convergence_delta" in params) == entry.delta
    assert ("n_steps" in params) == (entry.path == "quadrature")
    assert ("generator" in params) == (entry.path == "sampled")


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.compat], ids=lambda m: m.name)
def test_compat_shell_exists_when_declared(entry):
    assert inspect.isclass(getattr(compat, entry.compat))


def test_lookup_by_name_and_function():
    assert _catalog.lookup("gradient").fn is fnattr.gradient
    assert _catalog.lookup(fnattr.gradient).name == "gradient"
    assert _catalog.lookup(lambda x: x) is None
    assert _catalog.lookup("nope") is None


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="site"):
        _catalog.Method("m", print, site="output")
    with pytest.raises(ValueError, match="path"):
        _catalog.Method("m", print, site="inputs", path="random")
    with pytest.raises(ValueError, match="sampled"):
        _catalog.Method("m", print, site="inputs", path="sampled")
