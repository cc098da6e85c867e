"""Docstrings: every ``>>>`` example runs, every public function documents its
arguments, and public signatures show the aliases of :mod:`fnattr.types`.

The examples run with fixed globals (``fnattr`` and ``torch`` only), so an
example that works here works when pasted from ``help()``; the shared
argument texts come from :mod:`fnattr._docs`.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import inspect
import pkgutil
import pydoc
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest
import torch

import fnattr
import fnattr.compat
import fnattr.data
import fnattr.dataset
import fnattr.metrics
import fnattr.viz
from fnattr import _docs
from fnattr.types import Target, TensorOrTuple

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# fnattr.testing's examples are sketches inside hypothesis tests (not converted yet).
OPTIONAL = ("fnattr.testing",)


def _modules() -> list:
    names = ["fnattr"] + [m.name for m in pkgutil.walk_packages(fnattr.__path__, "fnattr.")
                          if not m.name.endswith("__main__")
                          and not m.name.startswith(OPTIONAL)]
    return [importlib.import_module(n) for n in names]


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    seen, out = set(), []
    for module in _modules():
        for test in finder.find(module, module.__name__, globs={}):
            if test.examples and test.name not in seen:
                seen.add(test.name)
                out.append(test)
    return sorted(out, key=lambda t: t.name)


DOCTESTS = _doctests()


def _param(test: doctest.DocTest):
    """A doctest that calls ``fnattr.compile`` is marked ``compile`` (~30 s on 2 cores)."""
    compiles = any("fnattr.compile(" in e.source for e in test.examples)
    return pytest.param(test, id=test.name, marks=[pytest.mark.compile] if compiles else [])


@pytest.mark.parametrize("test", [_param(t) for t in DOCTESTS])
def test_docstring_examples_run(test: doctest.DocTest, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    torch.manual_seed(0)
    test.globs = {"__name__": test.name.rsplit(".", 1)[0], "fnattr": fnattr, "torch": torch}
    lines: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=lines.append)
    assert result.failed == 0, "".join(lines)


def _public() -> list[tuple[str, object]]:
    out = [(f"fnattr.{n}", getattr(fnattr, n)) for n in fnattr.__all__]
    out += [(f"fnattr.metrics.{n}", getattr(fnattr.metrics, n)) for n in fnattr.metrics.__all__]
    out += [(f"fnattr.viz.{n}", getattr(fnattr.viz, n)) for n in fnattr.viz.__all__]
    out += [(f"fnattr.dataset.{n}", getattr(fnattr.dataset, n)) for n in fnattr.dataset.__all__]
    return [(n, f) for n, f in out if inspect.isfunction(inspect.unwrap(f))]


PUBLIC = _public()


def _section(doc: str, title: str) -> str:
    m = re.search(rf"^{title}:\n((?:[ \t]+\S.*\n|\n)*)", doc + "\n", re.MULTILINE)
    return m.group(1) if m else ""


@pytest.mark.parametrize("name, fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_docstring_documents_every_argument(name: str, fn) -> None:
    doc = inspect.getdoc(fn)
    assert doc, f"{name} has no docstring"
    assert "{args:" not in doc and "{digits}" not in doc, f"{name}: unrendered placeholder"
    args = _section(doc, "Args")
    documented = set(re.findall(r"^    (\w+)(?: \(.*?\))?:", args, re.MULTILINE))
    params = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [p for p in params if p not in documented]
    assert not missing, f"{name}: Args does not document {missing}"
    assert _section(doc, "Returns"), f"{name}: no Returns section"
    assert ">>> " in doc, f"{name}: no example"


# Modules imported only for type checkers, so that ``import fnattr`` stays light.
LAZY = ("zarr.",)


def _string_annotations(fn) -> list[str]:
    sig = inspect.signature(fn)
    annotations = [p.annotation for p in sig.parameters.values()] + [sig.return_annotation]
    return [a for a in annotations if isinstance(a, str) and not a.startswith(LAZY)]


@pytest.mark.parametrize("name, fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_signature_shows_public_names(name: str, fn) -> None:
    assert not _string_annotations(fn), name
    assert "N." not in str(inspect.signature(fn)), name


def test_signatures_show_the_aliases():
    sig = str(inspect.signature(fnattr.gradient_shap))
    assert "inputs: TensorOrTuple" in sig and "target: Target = None" in sig, sig
    sig = str(inspect.signature(fnattr.neuron_gradient))
    assert "layer: Layer" in sig and "neuron_selector: NeuronSelector" in sig, sig
    assert "baselines: Baselines = None" in str(inspect.signature(fnattr.integrated_gradients))


@pytest.mark.parametrize("cls", [getattr(fnattr.compat, n) for n in fnattr.compat.__all__
                                 if n != "LayerAttribution"])
def test_compat_signatures_show_public_names(cls) -> None:
    for member in (cls.__init__, cls.attribute):
        assert not _string_annotations(member), cls.__name__
        assert "N." not in str(inspect.signature(member)), cls.__name__


def test_help_shows_arguments_shapes_and_example():
    text = pydoc.render_doc(fnattr.integrated_gradients, renderer=pydoc.plaintext)
    assert "baselines: the path start" in text
    assert "method: the quadrature rule" in text
    assert ">>> model = fnattr.data.load_digits_model()" in text
    assert "torch.Size([50, 1, 8, 8])" in text


def test_render_expands_placeholders_at_their_indent():
    doc = "Summary.\n\n    Args:\n        {args: n_steps, baselines[sampled]}\n        x: own.\n"
    out = _docs.render(doc)
    assert "        n_steps: the number of path points" in out
    assert "        baselines: reference rows" in out and "[sampled]" not in out
    assert out.endswith("        x: own.\n")
    assert _docs.render(out) == out  # idempotent
    digits = _docs.render("    Example:\n        {digits}\n        >>> 1\n")
    assert "        >>> model = fnattr.data.load_digits_model()\n" in digits


def test_render_refuses_an_unknown_argument():
    with pytest.raises(ValueError, match="'nope'"):
        _docs.render("    {args: target, nope}\n")


def test_py_typed_ships():
    assert (ROOT / "fnattr" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["fnattr"]


def test_types_module_is_public_and_named():
    import fnattr.types as T

    for name in T.__all__:
        alias = getattr(T, name)
        assert alias.__name__ == name and repr(alias) == name
    assert "fnattr.types" in sys.modules


def _body(inputs: TensorOrTuple, target: Target = None) -> TensorOrTuple:
    """Body.

    Args:
        {args: inputs, target}
    """
    return inputs


def test_render_public_sees_through_a_wraps_wrapper():
    """A boundary decorator made with functools.wraps (the wrapper is public,
    ``inspect.signature`` reads the body): both get the rendered text and the
    resolved annotations."""
    body = types.FunctionType(_body.__code__, _body.__globals__, "_body", _body.__defaults__)
    body.__doc__, body.__annotations__ = _body.__doc__, dict(_body.__annotations__)

    @functools.wraps(body)
    def public(*args, **kwargs):
        return body(*args, **kwargs)

    _docs.render_public({"public": public}, ["public"])
    assert str(inspect.signature(public)) == "(inputs: TensorOrTuple, target: Target = None)" \
        " -> TensorOrTuple"
    assert "inputs: a tensor ``[N, ...]``" in inspect.getdoc(public)
    assert inspect.getdoc(body) == inspect.getdoc(public)
