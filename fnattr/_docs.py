"""Shared argument texts, written once and rendered into every public docstring.

A docstring names the shared arguments it takes with a placeholder line in
its ``Args:`` section, and starts its example with a ``{digits}`` line (which
becomes the three ``>>>`` lines that load ``model``, ``x`` and ``labels``)::

    Args:
        {args: forward_func, inputs, target}
        extra: documented here, as usual.

    Example:
        {digits}
        (then the example's own lines)

:func:`render_public` (called once by ``fnattr/__init__.py`` for the package
and :mod:`fnattr.metrics`, and by :mod:`fnattr.viz`) replaces each
placeholder by the text of :data:`ARGS` (one ``name: text`` entry per
argument, wrapped at the placeholder's indent) or by the lines that load the
embedded digits model (:mod:`fnattr.data`), so ``help()``,
``inspect.getdoc`` and ``doctest`` all see plain Google-style docstrings with
runnable examples. It also resolves the string annotations that ``from
__future__ import annotations`` leaves, so ``inspect.signature`` shows the
public aliases of :mod:`fnattr.types` (``inputs: TensorOrTuple``).

A name written ``baselines[sampled]`` takes the ``"baselines[sampled]"``
text and is shown as ``baselines``: the variant of an argument whose meaning
differs for a family of methods.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import Any, Iterable

__all__ = ["ARGS", "DIGITS", "render", "render_public"]

_METHODS = ("``riemann_right``, ``riemann_left``, ``riemann_middle``, "
            "``riemann_trapezoid`` or ``gausslegendre``")

#: One text per shared argument; the meanings are Captum 0.9's.
ARGS: dict[str, str] = {
    "forward_func": (
        "the model (an ``nn.Module``) or any callable ``f(*inputs, "
        "*additional_forward_args)`` returning a tensor with dim 0 = examples. "
        "A ``DataParallel`` model runs its ``.module``."),
    "model": (
        "the model (an ``nn.Module``) or any callable ``f(*inputs, "
        "*additional_forward_args)``; every ReLU its forward runs (``nn.ReLU``, "
        "``F.relu``, ``torch.relu``, ``Tensor.relu``, in-place forms) gets the rule, "
        "only for this call (see :func:`fnattr.with_rule`)."),
    "layer": (
        "an ``nn.Module`` of the model, or its dotted name (``\"features.2\"``)."),
    "inputs": (
        "a tensor ``[N, ...]`` or a tuple of tensors sharing dim 0 (``N`` "
        "examples); the attributions have the same structure and shapes."),
    "baselines": (
        "the path start: ``None`` (zeros), a number, a tensor of the input's "
        "shape or with a batch dim of 1, or a tuple of those (one per input)."),
    "baselines[sampled]": (
        "reference rows to draw path starts from (required): a tensor "
        "``[B, ...]`` shaped like one example per row, a number, a tuple of those "
        "(one per input), or a callable returning them."),
    "target": (
        "which output to explain, one scalar per example: ``None`` (the output "
        "already is one), an int or a tuple of ints (the same output index for "
        "every example), a 0-d or one-element tensor, a 1-D tensor or list with one "
        "index per example, or a list of tuples. ``fnattr.each([t1, t2, ...])`` "
        "explains K targets in one pass (a leading ``K`` dim on the result)."),
    "target[single]": (
        "which output to explain, one scalar per example: ``None`` (the output "
        "already is one), an int or a tuple of ints (the same output index for "
        "every example), a 0-d or one-element tensor, a 1-D tensor or list with one "
        "index per example, or a list of tuples (not ``fnattr.each``)."),
    "neuron_selector": (
        "which neuron of the layer's value (without its batch dim): an int, a "
        "tuple of ints/slices (slices are summed), or a callable mapping the layer "
        "value to one scalar per example (shape ``[N]`` or ``[N, 1]``). A list of "
        "selectors (or ``\"all\"``: every neuron, row-major) gives K neurons from "
        "one forward and one vectorized backward, on a leading ``K`` dim."),
    "additional_forward_args": (
        "extra arguments passed to the model after the inputs (a non-tuple is "
        "wrapped in a tuple); tensors with a batch dim are repeated with the "
        "inputs along a path."),
    "n_steps": "the number of path points (quadrature nodes).",
    "method": f"the quadrature rule: {_METHODS}.",
    "internal_batch_size": (
        "at most this many rows per forward/backward (``None``: all path points "
        "in one expanded batch); it never changes the result."),
    "return_convergence_delta": (
        "also return the completeness gap per example, "
        "``sum(attributions) - (f(inputs) - f(baselines))`` (see "
        ":func:`fnattr.convergence_delta`)."),
    "multiply_by_inputs": (
        "multiply the averaged gradient by ``inputs - baselines`` (global "
        "attribution, Captum's default); ``False`` gives the local form."),
    "attribute_to_layer_input": (
        "attribute to the layer's input instead of its output."),
    "attribute_to_neuron_input": (
        "select the neuron from the layer's input instead of its output."),
    "n_samples": "the number of random path points per example.",
    "stdevs": (
        "the standard deviation of the Gaussian noise added to the inputs: one "
        "float, or a tuple with one per input."),
    "create_graph": (
        "keep the result differentiable (with respect to the inputs and the "
        "model's parameters); ``False`` records no graph for the parameters."),
    "generator": (
        "the ``torch.Generator`` every random number is drawn from (``None``: "
        "the global RNG); the same seed gives the same draws, eager or compiled."),
    "grad_kwargs": (
        "Captum's extra ``torch.autograd.grad`` arguments: ``None`` or a dict "
        "whose keys fnattr honours (``materialize_grads``, which it always "
        "applies); any other key is a ``ValueError`` naming it."),
    "memory_budget": (
        "the most working memory the call may use: bytes, or a size such as "
        "``\"512MiB\"`` (``KiB``/``MiB``/``GiB`` or ``kB``/``MB``/``GB``); the "
        "expanded rows and the K rows are split into blocks that fit, and the "
        "result does not depend on the split (``None``: the enclosing "
        "``fnattr.memory_budget`` context's, else the automatic choice)."),
    "chunk_size": (
        "rows per vectorized backward for K neurons (``None``: as many as keep "
        "that many copies of the saved activations under a per-device budget)."),
}

#: The example setup: the embedded digits model and 50 test images.
DIGITS = (
    ">>> import torch, fnattr, fnattr.data\n"
    ">>> model = fnattr.data.load_digits_model()\n"
    ">>> x, labels = fnattr.data.load_digits_examples()  # [50, 1, 8, 8], [50]"
)

_PLACEHOLDER = re.compile(
    r"^(?P<indent>[ \t]*)\{(?:args:(?P<names>[^}]*)|(?P<digits>digits))\}[ \t]*$", re.MULTILINE)
_WIDTH = 80


def _entry(key: str, indent: str) -> str:
    if key not in ARGS:
        raise ValueError(f"no shared text for argument {key!r} (add it to fnattr._docs.ARGS)")
    name = key.split("[")[0]
    return textwrap.fill(f"{name}: {ARGS[key]}", _WIDTH, initial_indent=indent,
                         subsequent_indent=indent + "    ", break_on_hyphens=False)


def render(doc: str | None) -> str | None:
    """``doc`` with every ``{args: a, b}`` and ``{digits}`` line expanded."""
    if not doc or "{" not in doc:
        return doc

    def expand(m: re.Match) -> str:
        indent = m.group("indent")
        if m.group("digits"):
            return textwrap.indent(DIGITS, indent)
        keys = [k.strip() for k in m.group("names").split(",") if k.strip()]
        return "\n".join(_entry(k, indent) for k in keys)

    return _PLACEHOLDER.sub(expand, doc)


def _resolve_annotations(fn: Any) -> None:
    """Replaces string annotations by the objects they name, in place.

    Each is evaluated in the function's module, as ``typing.get_type_hints``
    does; one naming a module imported only for type checkers (``zarr.Group``,
    kept lazy) stays a string. The dict is updated rather than replaced: a
    ``functools.wraps`` wrapper shares it with the function it wraps, which
    ``inspect.signature`` reads.
    """
    target = inspect.unwrap(fn)
    annotations = getattr(target, "__annotations__", None)
    if not annotations:
        return
    namespace = getattr(target, "__globals__", {})
    for key, value in list(annotations.items()):
        if isinstance(value, str):
            try:
                annotations[key] = eval(value, namespace)  # noqa: S307 (annotation text)
            except (NameError, AttributeError, TypeError):
                pass  # left as a string; tests/test_docs.py lists the allowed ones


def render_public(namespace: dict[str, Any], names: Iterable[str]) -> None:
    """Renders the docstrings and resolves the annotations of ``namespace[name]``.

    Classes get their own docstring and those of the methods they define
    rendered. Rendering twice changes nothing.
    """
    for name in names:
        obj = namespace[name]
        targets = [obj]
        if inspect.isclass(obj):
            targets += [v for v in vars(obj).values() if inspect.isfunction(v)]
        for t in targets:
            if callable(t) and not inspect.isclass(t):
                _resolve_annotations(t)
            doc = t.__doc__
            rendered = render(doc)
            if rendered != doc:
                t.__doc__ = rendered
                inner = inspect.unwrap(t) if not inspect.isclass(t) else t
                if inner is not t and inner.__doc__ == doc:
                    inner.__doc__ = rendered
