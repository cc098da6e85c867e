"""Model-parameter randomization test (Adebayo et al. 2018), without touching the model."""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .. import _normalize as N
from ..types import TensorOrTuple
from . import _common as C
from ._similarity import SIMILARITIES, compare_to

ORDERS = ("cascading", "independent")


def model_randomization(
    explanation_func: Callable,
    model: nn.Module,
    inputs: TensorOrTuple,
    *,
    order: str = "cascading",
    layers: Sequence[str | nn.Module] | None = None,
    similarity: str = "spearman",
    generator: torch.Generator | None = None,
    vectorize: bool = False,
    **kwargs: Any,
) -> dict[str, Tensor]:
    """Similarity of explanations of the trained model and of randomized models.

    The sanity check of Adebayo et al.: a method whose maps stay similar when
    the weights are re-initialized does not explain the model. Layers are
    re-initialized from the output down, each keeping all the layers before
    it randomized (``"cascading"``), or one at a time (``"independent"``).
    New weights are drawn from ``generator`` like PyTorch's default
    ``Linear``/``Conv`` init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, for
    every parameter of the layer (``N(0, 1)`` for a layer without a >= 2-d
    weight, e.g. a norm layer). The model is never modified: each explanation
    runs on a module view that calls ``model`` through
    ``torch.func.functional_call`` with the randomized parameters (one batch
    of all examples per layer, or with ``vectorize=True`` all layers' parameter
    sets stacked and explained under ``torch.func.vmap``), so the model's
    parameters and buffers are bit-identical afterwards, also when the
    explanation raises.

    How the model reaches ``explanation_func``: a class (Captum's or
    ``fnattr.compat``'s) is built on the view, ``cls(view).attribute(inputs,
    **kwargs)``; a bound ``.attribute`` of such an object runs on a copy of the
    object whose ``forward_func``/``model`` is the view; any other callable
    (``fnattr.gradient``, ...) is called as ``explanation_func(view, inputs,
    **kwargs)``. The view resolves the model's layer names and modules, and
    gives the model's submodules as its own (``view.features[2]``, ``view[0]``):
    an explanation may name its layer from the model it is given.

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps",
        https://arxiv.org/abs/1810.03292

    Args:
        explanation_func: as above.
        model: an ``nn.Module``.
        {args: inputs}
        order: ``"cascading"`` or ``"independent"``.
        layers: names or modules in the order to randomize; ``None``: every module
            with a >= 2-d parameter of its own, last registered first.
        similarity: ``"spearman"``, ``"spearman_abs"``, ``"pearson"`` or ``"ssim"``
            (see :func:`fnattr.metrics.similarity`).
        generator: the new weights' randomness (the global RNG if ``None``).
        vectorize: explain all randomized models in one ``vmap`` (the explanation
            must support ``vmap``: fnattr's functions do; module hooks, e.g.
            Captum's, do not). Same numbers; on CPU it measured no faster, and ops
            with no batching rule (CPU attention) run one model at a time.
        **kwargs: passed to the explanation (``target=`` ...).

    Returns:
        ``{layer name: Tensor[N]}`` in the order randomized.

    Example:
        {digits}
        >>> sims = fnattr.metrics.model_randomization(
        ...     fnattr.gradient, model, x, target=labels,
        ...     generator=torch.Generator().manual_seed(0))
        >>> list(sims)  # from the output layer down
        ['classifier.3', 'classifier.1', 'features.2', 'features.0']
        >>> sims["classifier.3"].shape  # Spearman correlation per example
        torch.Size([50])
    """
    model, _, names = _check(explanation_func, model, inputs, order, layers, similarity,
                             generator, vectorize)
    compare = compare_to(_explain(explanation_func, model, {}, inputs, kwargs), similarity)
    replaced, sets = {}, []
    for name in names:  # all draws first, in layer order: the same numbers either way
        fresh = _draw(model, name, generator)
        replaced = {**replaced, **fresh} if order == "cascading" else fresh
        sets.append(replaced)
    if vectorize:
        stacked = _stack(model, sets)
        with warnings.catch_warnings():  # an op with no batching rule runs one model at
            warnings.filterwarnings(     # a time: torch says so for each (e.g. attention)
                "ignore", "There is a performance drop because we have not yet implemented "
                "the batching rule", UserWarning)
            explained = torch.func.vmap(
                lambda p: _explain(explanation_func, model, p, inputs, kwargs))(stacked)
        return {name: compare(tuple(e[j] for e in explained)) for j, name in enumerate(names)}
    return {name: compare(_explain(explanation_func, model, rep, inputs, kwargs))
            for name, rep in zip(names, sets)}


def _stack(model: nn.Module, sets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """One ``[L, ...]`` tensor per parameter any set replaces (the model's value elsewhere)."""
    own = dict(model.named_parameters())
    keys = dict.fromkeys(k for rep in sets for k in rep)
    return {k: torch.stack([rep.get(k, own[k].detach()) for rep in sets]) for k in keys}


class _Randomized(nn.Module):
    """``model`` called with some parameters replaced; resolves ``model``'s layer names."""

    def __init__(self, model: nn.Module, replaced: dict[str, Tensor]) -> None:
        super().__init__()
        self.model = model
        self.replaced = replaced
        self.training = model.training  # not .train(): that would set the model's flags

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.replaced, args, kwargs, strict=False)

    def get_submodule(self, target: str) -> nn.Module:
        return self if target == "" else self.model.get_submodule(target)

    # The model's submodules are the view's, so that an explanation can name its
    # layer from the model it is given (``lambda m, x: f(m, m.features[2], x)``).
    # Only modules: the model's own parameters are not the randomized ones.
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            value = getattr(model, name, None) if model is not None else None
            if isinstance(value, nn.Module):
                return value
            raise

    def __getitem__(self, index: Any) -> nn.Module:
        try:
            value = self.model[index]  # type: ignore[index]
        except TypeError:
            raise TypeError(f"the model ({type(self.model).__name__}) cannot be indexed") \
                from None
        if not isinstance(value, nn.Module):
            raise TypeError(f"model[{index!r}] is not a module")
        return value


def _explain(explanation_func: Callable, model: nn.Module, replaced: dict, inputs: Any,
             kwargs: dict) -> tuple:
    view = _Randomized(model, replaced)
    if inspect.isclass(explanation_func):
        out = explanation_func(view).attribute(inputs, **kwargs)
    elif inspect.ismethod(explanation_func) and explanation_func.__name__ == "attribute":
        owner = copy.copy(explanation_func.__self__)
        for attr in ("forward_func", "model"):
            if getattr(owner, attr, None) is not None:
                setattr(owner, attr, view)
        out = owner.attribute(inputs, **kwargs)
    else:
        out = explanation_func(view, inputs, **kwargs)
    return tuple(t.detach() for t in N.as_tuple(out, "explanation")[0])


def _draw(model: nn.Module, name: str, generator: torch.Generator | None) -> dict[str, Tensor]:
    """New values for the parameters owned by module ``name``."""
    own = dict(model.get_submodule(name).named_parameters(recurse=False))
    weights = [p for p in own.values() if p.dim() >= 2]
    bound = 1 / math.sqrt(weights[0][0].numel()) if weights else None
    device = generator.device if generator is not None else torch.device("cpu")
    out = {}
    for pname, p in own.items():
        new = torch.empty(p.shape, dtype=p.dtype, device=device)
        new = new.uniform_(-bound, bound, generator=generator) if bound else \
            new.normal_(generator=generator)
        out[f"{name}.{pname}" if name else pname] = new.to(p.device)
    return out


def _layer_names(model: nn.Module, layers: Any) -> list[str]:
    if layers is None:
        names = [n for n, m in model.named_modules()
                 if any(p.dim() >= 2 for p in m.parameters(recurse=False))]
        if not names:
            raise ValueError("`model` has no layer with a >= 2-d parameter: pass `layers`")
        return names[::-1]
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence) or not layers:
        raise TypeError("`layers` must be a non-empty list of layer names or modules")
    by_module = {id(m): n for n, m in model.named_modules()}
    names = []
    for layer in layers:
        module = N.resolve_layer(model, layer, "layers")
        if id(module) not in by_module:
            raise ValueError(f"`layers`: {type(module).__name__} is not a module of `model`")
        if not list(module.parameters(recurse=False)):
            raise ValueError(f"`layers`: {by_module[id(module)]!r} has no parameters of its own")
        names.append(by_module[id(module)])
    if len(set(names)) != len(names):
        raise ValueError("`layers` names a layer twice")
    return names


def _check(explanation_func: Any, model: Any, inputs: Any, order: Any, layers: Any,
           similarity: Any, generator: Any, vectorize: Any) -> tuple:
    N.check_forward_func(explanation_func, "explanation_func")
    model = N.unwrap_parallel(model)
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise TypeError(f"`model` must be an (eager) nn.Module, got {type(model).__name__}")
    xs, _ = N.as_tuple(inputs)
    if order not in ORDERS:
        raise ValueError(f"`order` must be one of {ORDERS}, got {order!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"`similarity` must be one of {tuple(SIMILARITIES)}, got {similarity!r}")
    C.check_generator(generator)
    C.check_flag(vectorize, "vectorize")
    return model, xs, _layer_names(model, layers)
