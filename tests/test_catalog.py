"""The method catalog: one entry per named method, and everything built from it agrees."""

from __future__ import annotations

import inspect

import pytest

import fnattr
from fnattr import _catalog, compat

from . import _catalog_args

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


# ------------------------------------------------- the cross-method tests' builders


def test_every_entry_has_an_argument_builder():
    # the cross-method tests (variants, state, differentiable, compile, errors,
    # axioms) iterate over the catalog: a new entry they cannot call fails here
    for entry in ENTRIES:
        head, kwargs = _catalog_args.build(entry, _catalog_args.Setting(layer="fc1"))
        assert len(head) == int(entry.needs_layer), entry.name
        assert ("target" in kwargs) == entry.target, entry.name


def test_missing_argument_builder_fails_loudly(monkeypatch):
    setting = _catalog_args.Setting(layer="fc1")
    monkeypatch.delitem(_catalog_args.PATH_ARGS, "quadrature")
    with pytest.raises(LookupError, match="no argument builder for integrated_gradients"):
        _catalog_args.build(_catalog.CATALOG["integrated_gradients"], setting)
    # a declaration whose function does not take what its site/path implies
    wrong = _catalog.Method("smoothed", fnattr.gradient, site="inputs", path="sampled",
                            draw=print, core=print)
    with pytest.raises(LookupError, match="no argument builder for smoothed"):
        _catalog_args.build(wrong, setting)
