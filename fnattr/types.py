"""Public type aliases of fnattr's signatures.

Each alias is a named :class:`typing.TypeAliasType` (from ``typing_extensions``
before Python 3.12), so ``inspect.signature`` and ``help()`` show its name
(``inputs: TensorOrTuple``) instead of the ``Union`` it stands for, and type
checkers see the union. The meanings of the values are those of Captum 0.9;
``help(fnattr.integrated_gradients)`` (any method) spells them out.

* :data:`TensorOrTuple`: ``inputs`` and attributions: a tensor, or a tuple of
  tensors, dim 0 = examples.
* :data:`Baselines`: ``None``, a number, a tensor, or a tuple of those.
* :data:`Target`: which output to explain (``None``, int, tuple, tensor,
  list, or :func:`fnattr.each` of several).
* :data:`NeuronSelector`: which neuron of a layer (int, tuple of ints/slices,
  callable, or a list of those).
* :data:`Layer`: an ``nn.Module`` of the model or its dotted name.
* :data:`ForwardFunc`: the model, or any callable returning a tensor.

Example:
    >>> import inspect, fnattr
    >>> from fnattr.types import TensorOrTuple
    >>> TensorOrTuple.__value__
    typing.Union[torch.Tensor, tuple[torch.Tensor, ...]]
    >>> inspect.signature(fnattr.gradient).parameters["inputs"]
    <Parameter "inputs: TensorOrTuple">
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Literal, Union

from torch import Tensor, nn

from ._normalize import Each

if sys.version_info >= (3, 12):
    from typing import TypeAliasType
else:  # typing_extensions is a dependency of torch
    from typing_extensions import TypeAliasType

__all__ = [
    "Baselines",
    "ForwardFunc",
    "Layer",
    "NeuronSelector",
    "Target",
    "TensorOrTuple",
]

TensorOrTuple = TypeAliasType("TensorOrTuple", Union[Tensor, tuple[Tensor, ...]])
Baselines = TypeAliasType(
    "Baselines", Union[None, Tensor, int, float, tuple[Union[Tensor, int, float], ...]])
Target = TypeAliasType("Target", Union[None, int, tuple, Tensor, list, Each])
NeuronSelector = TypeAliasType(
    "NeuronSelector",
    Union[int, tuple[Union[int, slice], ...], Callable[[Any], Tensor], list, Literal["all"]])
Layer = TypeAliasType("Layer", Union[nn.Module, str])
ForwardFunc = TypeAliasType("ForwardFunc", Callable[..., Any])
