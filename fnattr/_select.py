"""Captum's target and neuron selection: which scalar per example is explained.

``target`` picks outputs (an int, a tuple, a 0-d or per-example tensor, a list
of ints or tuples, ``fnattr.each`` for several); ``neuron_selector`` picks a
neuron of a layer's value (an int, a tuple of ints/slices, a callable, a list,
``"all"``). Validation errors name the argument. Re-exported by
:mod:`fnattr._normalize`; :mod:`fnattr._objectives` builds objectives on them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

class Each:
    """Several targets attributed in one pass; see :func:`fnattr.each`."""

    __slots__ = ("targets",)

    def __init__(self, targets: Any) -> None:
        self.targets = tuple(targets)

    def map(self, fn: Callable[[Any], Any]) -> "Each":
        return Each(fn(t) for t in self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return f"each({list(self.targets)!r})"


def each(targets: Any) -> Each:
    """Asks for attributions of several targets in one pass.

    ``target=fnattr.each([0, 1, 2])`` attributes each of the three targets
    with one shared forward and a vectorized backward; the result gains a
    leading dim of size 3 (row ``k`` equals the call with ``target=targets[k]``).
    Each entry may be any Captum target form (an int, a tuple, a per-example
    list or tensor). A plain list keeps Captum's meaning: one target per example.

    Args:
        targets: an iterable of targets, e.g. ``range(num_classes)``.

    Returns:
        A marker to pass as ``target``.

    Example:
        {digits}
        >>> sal = fnattr.gradient(model, x, target=fnattr.each(range(10)))
        >>> sal.shape  # one saliency map per class
        torch.Size([10, 50, 1, 8, 8])
        >>> torch.equal(sal[3], fnattr.gradient(model, x, target=3))
        True
    """
    out = Each(targets)
    if not out.targets:
        raise ValueError("`target`: fnattr.each() needs at least one target")
    return out


def check_target(target: Any, n_examples: int) -> None:
    """Validates ``target`` against the number of examples (shape checks follow
    at selection time, when the output's shape is known)."""
    if isinstance(target, Each):
        for t in target.targets:
            if isinstance(t, Each):
                raise TypeError("`target`: fnattr.each() cannot be nested")
            check_target(t, n_examples)
        return
    if target is None:
        return
    if isinstance(target, Tensor) and (target.dim() == 0 or target.shape == (1,)):
        check_index_tensor(target, "target")  # one class for every example (as Captum)
        return
    if isinstance(target, bool):
        raise TypeError("`target` must be an int, tuple, tensor or list, not bool")
    if isinstance(target, numbers.Integral):
        return
    if isinstance(target, tuple):
        if not all(isinstance(t, numbers.Integral) for t in target):
            raise TypeError("a tuple `target` must hold ints (one index per output dim)")
        return
    if isinstance(target, Tensor):
        if target.dim() != 1 or target.shape[0] != n_examples:
            raise ValueError(
                f"a tensor `target` must be 0-d or 1-D with one entry per example "
                f"({n_examples}), got shape {tuple(target.shape)}"
            )
        check_index_tensor(target, "target")
        return
    if isinstance(target, list):
        if len(target) != n_examples:
            raise ValueError(
                f"a list `target` needs one entry per example ({n_examples}), got "
                f"{len(target)}"
            )
        if all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target):
            return
        if all(isinstance(t, tuple) for t in target):
            return
        raise TypeError("a list `target` must hold only ints or only tuples of ints")
    raise TypeError(
        f"`target` must be None, an int, a tuple, a tensor or a list, got "
        f"{type(target).__name__}"
    )


def repeat_interleave_target(target: Any, times: int) -> Any:
    """A per-example ``target`` for ``times`` consecutive copies of each example."""
    if isinstance(target, Each):
        return target.map(lambda t: repeat_interleave_target(t, times))
    if isinstance(target, list):
        return [t for t in target for _ in range(times)]
    if isinstance(target, Tensor) and target.dim() == 1 and target.shape[0] > 1:
        return target.repeat_interleave(times)
    return target


def _not_a_tensor(output: Any) -> str:
    """The error for a forward function whose output is not one tensor, with the
    one-line wrapper that picks the tensor to explain."""
    message = f"the forward function must return a Tensor, got {type(output).__name__}"
    if isinstance(output, dict):
        keys = list(output)
        first = keys[0] if keys else "out"
        return (f"{message}; a Hugging Face model returns a ModelOutput (a dict): pass a "
                "forward function that returns its logits, e.g. `forward_func=lambda ids, "
                "mask: model(ids, attention_mask=mask).logits` with "
                f"`additional_forward_args=mask`; for another dict (keys {keys[:5]}), "
                f"e.g. `lambda x: model(x)[{first!r}]`")
    if isinstance(output, (tuple, list)):
        return (f"{message} of {len(output)}: pass a forward function that returns the "
                "tensor to explain, e.g. `lambda x: model(x)[0]`")
    return message


def select_target(output: Tensor, target: Any, per_example: bool = True) -> Tensor:
    """``output[..]`` for ``target`` (Captum's meanings); one scalar per example
    (any shape when ``per_example`` is False)."""
    if not isinstance(output, Tensor):
        raise TypeError(_not_a_tensor(output))
    if type(target) is int and output.dim() == 2:  # the common case, one plain index
        _check_index_bounds((target,), output.shape[1:], "target")
        return output[:, target]
    if isinstance(target, Tensor) and target.shape == (1,):
        target = target.reshape(())  # one class for every example (as Captum)
    if target is None:
        selected = output
    elif isinstance(target, (numbers.Integral, tuple)) or (
        isinstance(target, Tensor) and target.dim() == 0
    ):
        index = (target,) if not isinstance(target, tuple) else target
        if len(index) > output.dim() - 1:
            raise ValueError(
                f"`target` {target!r} has more indices than the output has non-batch "
                f"dims (output shape {tuple(output.shape)})"
            )
        _check_index_bounds(index, output.shape[1:], "target")
        selected = take(output, index)
    elif isinstance(target, list) and target and isinstance(target[0], tuple):
        if any(len(t) != output.dim() - 1 for t in target):
            raise ValueError(
                f"each tuple in a list `target` must index all non-batch output dims "
                f"(output shape {tuple(output.shape)})"
            )
        for t in target:
            _check_index_bounds(t, output.shape[1:], "target")
        selected = torch.stack([output[(i, *t)] for i, t in enumerate(target)])
    else:  # one int per example: a list or a 1-D tensor
        selected = _gather_per_example(output, target)
    if per_example and selected.dim() > 1 and selected[0].numel() == 1:
        selected = selected.reshape(selected.shape[0])  # e.g. (N, 1): Captum accepts it
    if per_example and selected.dim() != 1:
        raise ValueError(
            "the output must be one scalar per example: give a `target` that selects "
            f"one output per example (the output has shape {tuple(output.shape)}, the "
            f"selection has shape {tuple(selected.shape)})"
        )
    return selected


def _gather_per_example(output: Tensor, target: Any) -> Tensor:
    """``output[i, target[i]]`` for one class index per example (a list or 1-D tensor)."""
    if output.dim() != 2:
        raise ValueError(
            f"a per-example `target` needs a 2-D output (batch, classes), got "
            f"output shape {tuple(output.shape)}"
        )
    index = torch.as_tensor(target, device=output.device)
    if index.shape[0] != output.shape[0]:
        raise ValueError(
            f"`target` has {index.shape[0]} entries for {output.shape[0]} examples"
        )
    if _concrete(index) and index.numel() and (
        int(index.min()) < -output.shape[1] or int(index.max()) >= output.shape[1]
    ):
        raise IndexError(f"`target` index out of range for {output.shape[1]} outputs")
    index = index.long()
    index = torch.where(index < 0, index + output.shape[1], index)  # as an int target
    return output.gather(1, index.reshape(-1, 1)).squeeze(1)


def take(t: Tensor, index: tuple) -> Tensor:
    """``t[:, *index]``. Tensor indices (0-d, as ``fnattr.compile`` passes them)
    become one advanced-indexing read on a linear index, so a compiled graph does not
    specialize on their values."""
    if not any(isinstance(i, Tensor) for i in index) or any(isinstance(i, slice) for i in index):
        return t[(slice(None), *index)]
    linear = _linear_index(index, t.shape[1:1 + len(index)], t.device)
    flat = t.reshape(t.shape[0], -1, *t.shape[1 + len(index):])
    # advanced indexing, not index_select: inductor miscompiles vmap(vjp(index_select))
    return flat[:, linear.reshape(1)].squeeze(1)


def _is_functorch(t: Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _concrete(t: Tensor) -> bool:
    """True when ``t``'s values can be read here: not while ``torch.compile``
    traces (``fnattr.compile`` passes indices as 0-d tensors, validated before the
    compiled call) and not for a ``torch.func`` transform's wrapper."""
    return not torch.compiler.is_compiling() and not _is_functorch(t)


def check_index_tensor(t: Tensor, name: str) -> None:
    """A tensor used as an index: integers (not bool), as an int would be."""
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise TypeError(f"a tensor `{name}` must hold integers, got {t.dtype}")


def _check_index_bounds(index: tuple, shape: Sequence[int], name: str) -> None:
    for i, size in zip(index, shape):
        if isinstance(i, Tensor):
            check_index_tensor(i, name)
            if i.dim() != 0:
                raise ValueError(f"tensor indices in `{name}` must be 0-d, got shape "
                                 f"{tuple(i.shape)}")
            if not _concrete(i):
                continue  # validated before the compiled call (fnattr.compile)
            i = int(i)
        if isinstance(i, numbers.Integral) and not -size <= i < size:
            raise IndexError(f"`{name}` index {i} is out of range for a dim of size {size}")


def check_selector(selector: Any, name: str = "neuron_selector") -> None:
    """Type-checks one selector (an int, a tuple of ints/slices, or a callable)."""
    if callable(selector):
        return
    if isinstance(selector, str) and selector != "all":
        raise ValueError(f"`{name}` as a string must be \"all\" (every neuron), got {selector!r}")
    if isinstance(selector, bool):
        raise TypeError(f"`{name}` must be an int, a tuple or a callable, not bool")
    if isinstance(selector, (numbers.Integral, str)):
        return
    if isinstance(selector, Tensor):
        _check_selector_tensor(selector, name)
        return
    if isinstance(selector, tuple):
        for s in selector:
            if not isinstance(s, (numbers.Integral, slice, Tensor)) or isinstance(s, bool):
                raise TypeError(
                    f"`{name}` tuples may hold ints and slices only, got "
                    f"{type(s).__name__}"
                )
            if isinstance(s, Tensor):
                _check_selector_tensor(s, name)
            if isinstance(s, slice) and s.step is not None and (
                    not isinstance(s.step, numbers.Integral) or s.step <= 0):
                raise ValueError(f"slices in `{name}` need a positive step, got {s.step!r}")
        return
    raise TypeError(
        f"`{name}` must be an int, a tuple of ints/slices, a callable, or a list of "
        f"those, got {type(selector).__name__}"
    )


def _check_selector_tensor(t: Tensor, name: str) -> None:
    check_index_tensor(t, name)
    if t.dim() != 0:
        raise ValueError(
            f"a tensor `{name}` must be 0-d (one index); for several indices pass a "
            f"tuple, for several neurons a list, got shape {tuple(t.shape)}")


def format_selectors(neuron_selector: Any) -> tuple[list, bool]:
    """Returns ``(selectors, many)``; a list, or ``"all"``, asks for several neurons
    at once."""
    if isinstance(neuron_selector, str):
        check_selector(neuron_selector)
        return [neuron_selector], True
    if isinstance(neuron_selector, list):
        if not neuron_selector:
            raise ValueError("`neuron_selector` is an empty list")
        for s in neuron_selector:
            check_selector(s)
        return list(neuron_selector), True
    check_selector(neuron_selector)
    return [neuron_selector], False


def select_neuron(value: Tensor | tuple[Tensor, ...], selector: Any) -> Tensor:
    """One scalar per example from a layer value (Captum's meaning)."""
    if callable(selector):
        out = selector(value)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"a callable `neuron_selector` must return a Tensor, got "
                f"{type(out).__name__}"
            )
        return out
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(
                "the layer value is a tuple of several tensors: pass a callable "
                "`neuron_selector` to choose a neuron from it"
            )
        value = value[0]
    index = selector if isinstance(selector, tuple) else (selector,)
    has_slice = _check_neuron_index(selector, index, value)
    selected = take(value, index)
    if has_slice:
        selected = selected.reshape(selected.shape[0], math.prod(selected.shape[1:])).sum(1)
    return selected


def _check_neuron_index(selector: Any, index: tuple, value: Tensor) -> bool:
    """Validates an int/slice ``index`` into ``value``'s per-example dims (all of
    them unless it has a slice); returns whether it has a slice."""
    has_slice = any(isinstance(i, slice) for i in index)
    rank = value.dim() - 1
    if len(index) > rank or (not has_slice and len(index) != rank):
        raise ValueError(
            f"`neuron_selector` {selector!r} must index all {rank} non-batch dims of "
            f"the layer value (shape {tuple(value.shape)}), or use slices"
        )
    _check_index_bounds(index, value.shape[1:], "neuron_selector")
    return has_slice


def _is_index(i: Any) -> bool:
    return (isinstance(i, numbers.Integral) and not isinstance(i, bool)) or (
        isinstance(i, Tensor) and i.dim() == 0)


def select_neurons(value: Tensor | tuple[Tensor, ...], selectors: Sequence[Any]) -> Tensor | None:
    """``(K, N)`` values of K neurons given by integer indices, with one gather.

    Returns ``None`` unless every selector is an int or a tuple of ints (or 0-d
    tensors, as ``fnattr.compile`` passes them) and the layer value is one
    tensor; callers then fall back to :func:`select_neuron` per selector. One
    gather (``flat[:, linear]``) has a backward that is one scatter, linear in
    K; stacking K selects would write K layer-sized gradients instead.
    """
    if isinstance(value, tuple):
        if len(value) != 1:
            return None
        value = value[0]
    indices = [s if isinstance(s, tuple) else (s,) for s in selectors]
    if not all(all(_is_index(i) for i in index) for index in indices):
        return None
    sizes = value.shape[1:]
    for selector, index in zip(selectors, indices):
        _check_neuron_index(selector, index, value)
    if any(isinstance(i, Tensor) for index in indices for i in index):
        linear = torch.stack([_linear_index(index, sizes, value.device) for index in indices])
    else:
        flat = []
        for index in indices:
            lin = 0
            for i, size in zip(index, sizes):
                lin = lin * size + (int(i) + size if i < 0 else int(i))
            flat.append(lin)
        linear = torch.tensor(flat, dtype=torch.long, device=value.device)
    rows = value.reshape(value.shape[0], math.prod(value.shape[1:]))
    if torch.compiler.is_compiling():
        # A one-hot product instead of the gather: vmap of the gather's (and of
        # index_select's) backward specializes the batch size, so every new batch
        # size recompiled (issue 12.13). Exact for finite values; costs a (K, layer
        # size) one-hot matrix.
        return torch.nn.functional.one_hot(linear, rows.shape[1]).to(rows.dtype) @ rows.T
    return rows[:, linear].T


def _linear_index(index: tuple, sizes: Sequence[int], device: torch.device) -> Tensor:
    """Row-major linear index of ``index`` into ``sizes``, as a 0-d long tensor."""
    linear = torch.zeros((), dtype=torch.long, device=device)
    for i, size in zip(index, sizes):
        i = torch.as_tensor(i, device=device).long()
        linear = linear * size + torch.where(i < 0, i + size, i)
    return linear
