"""The composable core: objectives, gradients at a site, path averaging.

Every named method in :mod:`fnattr` is a short composition of these public
transforms; compose them yourself for methods Captum does not ship (see the
README's "Composable core" section).

* An **objective** says *what* is explained: ``target_objective(target)`` (a
  model output per example) or ``neuron_objective(selector)`` (a neuron of a
  layer per example). Objectives return ``(N,)`` values, or ``(K, N)`` for a
  list of selectors/targets.
* :func:`input_gradients` / :func:`layer_gradients` say *with respect to
  what*: the gradient of the objective (summed over examples) at the inputs
  or at a layer's output/input.
* :func:`quadrature` and :func:`path_average` say *where*: a weighted average
  of a gradient function over points ``baseline + alpha * (input - baseline)``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .types import ForwardFunc, NeuronSelector, Target

from . import _budget, _engine, _normalize as N
from ._gauss import gauss_legendre

__all__ = [
    "quadrature",
    "target_objective",
    "targets_objective",
    "neuron_objective",
    "input_gradients",
    "layer_gradients",
    "path_average",
    "sample_paths",
]


def quadrature(method: str = "gausslegendre", n_steps: int = 50) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of a rule for integrals over ``alpha`` in ``[0, 1]``.

    Numerically equal to Captum's ``approximation_parameters`` (Riemann nodes
    come from a float32 ``linspace``, Gauss-Legendre from numpy's
    ``leggauss`` rescaled to ``[0, 1]``). Above 200 Gauss-Legendre nodes,
    where ``leggauss`` costs O(n^3) (26 s for 3000), the nodes come from
    Newton's method on asymptotic expansions instead (``fnattr._gauss``: about
    as accurate, O(n) per iteration, 10**5 nodes in under a second). The most
    recently computed rules are cached (``QUADRATURE_CACHE`` of them).

    Args:
        {args: method}
        n_steps: number of nodes (>= 2 for Riemann rules, >= 1 for Gauss-Legendre).

    Returns:
        ``(alphas, weights)``: two tuples of ``n_steps`` floats. The weights
        sum to 1, except ``riemann_trapezoid``'s (``1 - 1/n``, as in Captum).

    Example:
        >>> import fnattr
        >>> alphas, weights = fnattr.quadrature("riemann_trapezoid", 3)
        >>> alphas, weights
        ((0.0, 0.5, 1.0), (0.16666666666666666, 0.3333333333333333, 0.16666666666666666))
    """
    key = N.check_method(method, n_steps)
    if key not in _QUADRATURE:  # computed eagerly: numpy and ``tolist`` do not trace
        if len(_QUADRATURE) >= QUADRATURE_CACHE:  # bounded: the oldest rule goes
            _QUADRATURE.pop(next(iter(_QUADRATURE)), None)
        _QUADRATURE[key] = _quadrature(*key)
    return _QUADRATURE[key]


QUADRATURE_CACHE = 64
_QUADRATURE: dict[tuple[str, int], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _quadrature(method: str, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if method == "gausslegendre":
        nodes, w = gauss_legendre(n)
        return tuple((0.5 * (1 + nodes)).tolist()), tuple((0.5 * w).tolist())
    weights = [1 / n] * n
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, n)
    elif method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = torch.linspace(1 / n, 1, n)
    return tuple(alphas.tolist()), tuple(weights)


def target_objective(target: Target = None) -> Callable[[Tensor, Any], Tensor]:
    """The objective "the model's output at ``target``", one scalar per example.

    *What* is explained, as a value: pass it to :func:`input_gradients`,
    :func:`layer_gradients` or :func:`path_average`'s gradient function.
    ``fnattr.each`` of K targets gives :func:`targets_objective`.

    Args:
        {args: target}

    Returns:
        ``objective(output, layer_value=None)`` returning a tensor ``[N]``
        (``[K, N]`` for ``fnattr.each`` of K targets).

    Example:
        {digits}
        >>> objective = fnattr.target_objective(labels)
        >>> objective(model(x)).shape
        torch.Size([50])
        >>> (g,) = fnattr.input_gradients(model, (x,), objective)
        >>> g.shape
        torch.Size([50, 1, 8, 8])
    """
    if isinstance(target, N.Each):
        return targets_objective(target.targets)
    return lambda output, _value=None: N.select_target(output, target)


def targets_objective(targets: Sequence[Any]) -> Callable[[Tensor, Any], Tensor]:
    """Several targets at once: ``objective(output, _) -> Tensor[K, N]``.

    Each entry of ``targets`` is one Captum ``target`` (an int, a tuple, a
    per-example list or tensor); row ``k`` of the result is the output at
    ``targets[k]``. One forward serves all K, and the gradient of a ``[K, N]``
    objective is one vectorized backward.

    Args:
        targets: a sequence of K targets, each one of ``target``'s forms.

    Returns:
        ``objective(output, layer_value=None)`` returning a tensor ``[K, N]``.

    Example:
        {digits}
        >>> objective = fnattr.targets_objective([0, labels])
        >>> objective(model(x)).shape
        torch.Size([2, 50])
        >>> (g,) = fnattr.input_gradients(model, (x,), objective)
        >>> g.shape
        torch.Size([2, 50, 1, 8, 8])
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("`targets` must hold at least one target")

    def objective(output: Tensor, _value: Any = None) -> Tensor:
        return torch.stack([N.select_target(output, t) for t in targets])

    objective.stacked = True  # lets the engine choose the backward's chunk size
    return objective


def neuron_objective(neuron_selector: NeuronSelector) -> Callable[[Any, Any], Tensor]:
    """The objective "the value of a neuron of the tapped layer", per example.

    A list of selectors makes a ``[K, N]`` objective (all K neurons from one
    forward); ``"all"`` takes every neuron of the layer, ``K =
    value[0].numel()`` rows in row-major order of the layer's per-example shape
    (reshape the result's leading dim to that shape).

    Args:
        {args: neuron_selector}

    Returns:
        ``objective(output, layer_value)`` returning a tensor ``[N]`` (``[K,
        N]`` for K selectors); use it with ``layer=`` in :func:`input_gradients`.

    Example:
        {digits}
        >>> objective = fnattr.neuron_objective([0, 1])
        >>> (g,) = fnattr.input_gradients(model, (x,), objective, layer=model.classifier[1])
        >>> g.shape
        torch.Size([2, 50, 1, 8, 8])
    """
    selectors, many = N.format_selectors(neuron_selector)

    def objective(_output: Any, value: Any) -> Tensor:
        if selectors == ["all"]:
            if isinstance(value, tuple):
                raise ValueError('`neuron_selector` "all" needs a layer whose value is one tensor')
            return value.reshape(value.shape[0], math.prod(value.shape[1:])).T.clone()
        if many:
            gathered = N.select_neurons(value, selectors)
            if gathered is not None:
                return gathered
        picked = [_per_example(N.select_neuron(value, s), value) for s in selectors]
        return torch.stack(picked) if many else picked[0]

    objective.stacked = many
    return objective


def _per_example(picked: Tensor, value: Any) -> Tensor:
    n = (value[0] if isinstance(value, tuple) else value).shape[0]
    if picked.dim() > 1 and picked.shape[0] == n and picked[0].numel() == 1:
        picked = picked.reshape(n)  # e.g. (N, 1): one scalar per example, as Captum
    if picked.dim() == 1 and picked.shape[0] == n:
        # A copy, not a view: a later in-place op on the layer value must not
        # rewrite the neuron's history (Captum clones the layer value likewise).
        return picked.clone() if picked._base is not None else picked
    if picked.numel() == 1:  # an aggregate over the batch: its gradient is the same
        return picked.reshape(1).expand(n) / n
    raise ValueError(
        "a callable `neuron_selector` must return one scalar per example (shape "
        f"({n},)) or a single scalar, got shape {tuple(picked.shape)}"
    )


def input_gradients(
    forward_func: ForwardFunc,
    inputs: Sequence[Tensor],
    objective: Callable,
    *,
    additional_forward_args: tuple = (),
    layer: nn.Module | None = None,
    attribute_to_layer_input: bool = False,
    create_graph: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, ...]:
    """Gradient of ``objective`` (summed over examples) with respect to the inputs.

    With ``layer`` given, ``objective`` reads that layer's output (or input,
    with ``attribute_to_layer_input``) instead of the model's output, and the
    forward stops at the layer when the model provably calls it once (a chain
    of plain ``nn.Sequential`` containers). A ``[K, N]`` objective gives
    gradients with a leading ``K`` from one forward and a vectorized backward
    (``chunk_size`` rows at a time).

    Args:
        {args: forward_func}
        inputs: a tuple of tensors ``[N, ...]`` (always a tuple here).
        objective: from :func:`target_objective`, :func:`neuron_objective`, or
            your own ``objective(output, layer_value) -> Tensor[N] | Tensor[K, N]``.
        additional_forward_args: a tuple passed to the model after the inputs.
        layer: the ``nn.Module`` whose value the objective reads, if any.
        attribute_to_layer_input: read the layer's input instead of its output.
        create_graph: keep the result differentiable.
        chunk_size: rows per vectorized backward over K (``None``: chosen from
            the bytes the forward saves for fnattr's objectives; all K for your
            own objectives unless you set ``objective.stacked = True``).

    Returns:
        A tuple of gradients shaped like ``inputs`` (with a leading ``K``).

    Example:
        {digits}
        >>> (g,) = fnattr.input_gradients(model, (x,), fnattr.target_objective(labels))
        >>> torch.equal(g, fnattr.gradient(model, x, target=labels))
        True
    """
    N.check_forward_func(forward_func)
    N.check_floating(inputs)
    if layer is not None:
        layer = N.resolve_layer(forward_func, layer)
    return _engine.gradients(
        _engine.functional(forward_func, detach=not create_graph), inputs,
        additional_forward_args, objective, layer=layer,
        input_side=attribute_to_layer_input, read_at_layer=layer is not None,
        create_graph=create_graph, chunk_size=_chunk(chunk_size),
        model=N.unwrap_parallel(forward_func) if layer is not None else None,
    )


def layer_gradients(
    forward_func: ForwardFunc,
    layer: nn.Module,
    inputs: Sequence[Tensor],
    objective: Callable,
    *,
    additional_forward_args: tuple = (),
    attribute_to_layer_input: bool = False,
    create_graph: bool = False,
    chunk_size: int | None = None,
    return_value: bool = False,
    substitute: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, ...]:
    """Gradient of ``objective`` (summed over examples) with respect to a layer's value.

    The layer's output (or input) is tapped with a zero probe; the gradient
    with respect to the probe is returned, one tensor per tensor of the
    layer's value (Captum's tuple convention), with a leading ``K`` for a
    ``[K, N]`` objective. With ``substitute`` (one tensor per tensor of the
    layer's value, same shapes) the layer's value is *replaced* by those
    tensors at every call and the gradient is taken at them: the inputs only
    drive the rest of the forward and may be integer token ids (see
    :func:`fnattr.layer_integrated_gradients`).

    Args:
        {args: forward_func}
        layer: the ``nn.Module`` whose value the gradient is taken at.
        inputs: a tuple of tensors ``[N, ...]`` (always a tuple here).
        objective: as in :func:`input_gradients`.
        additional_forward_args: a tuple passed to the model after the inputs.
        {args: attribute_to_layer_input, create_graph, chunk_size}
        return_value: also return the layer's value (a copy taken when the
            layer ran), as ``(grads, value)``.
        substitute: tensors to put in place of the layer's value (``None``:
            the value the layer computes).

    Returns:
        A tuple of gradients shaped like the layer's value (with a leading
        ``K``); ``(grads, value)`` with ``return_value``.

    Example:
        {digits}
        >>> layer = model.classifier[1]  # linear(256 -> 32)
        >>> (g,) = fnattr.layer_gradients(model, layer, (x,), fnattr.target_objective(labels))
        >>> g.shape
        torch.Size([50, 32])
    """
    N.check_forward_func(forward_func)
    layer = N.resolve_layer(forward_func, layer)
    return _engine.gradients(
        _engine.functional(forward_func, detach=not create_graph), inputs,
        additional_forward_args, objective, layer=layer,
        input_side=attribute_to_layer_input, wrt_layer=True,
        create_graph=create_graph, chunk_size=_chunk(chunk_size), return_value=return_value,
        substitute=substitute,
    )


def _chunk(chunk_size: Any) -> int | None:
    return None if chunk_size is None else N.check_positive_int(chunk_size, "chunk_size")


def _arg_rows(t: Any, n0: int, n1: int, reps: int, n: int) -> Any:
    """Rows of a per-example argument for examples ``n0:n1``, repeated for
    ``reps`` steps, laid out step-major (non-tensors and broadcast tensors as they are)."""
    if not isinstance(t, Tensor):
        return t
    if t.dim() == 0 or t.shape[0] != n:
        return t if (t.dim() == 0 or t.shape[0] == 1) else t.repeat(reps, *[1] * (t.dim() - 1))
    part = t[n0:n1]
    return part if reps == 1 else part.repeat(reps, *[1] * (t.dim() - 1))


def _target_rows(target: Any, n0: int, n1: int, reps: int, n: int) -> Any:
    if isinstance(target, N.Each):
        return target.map(lambda t: _target_rows(t, n0, n1, reps, n))
    if isinstance(target, list):
        return target[n0:n1] * reps
    if isinstance(target, Tensor) and target.dim() == 1 and target.shape[0] > 1:
        return target[n0:n1].repeat(reps)  # (a (1,) target is one class for all)
    return target


def path_average(
    grad_fn: Callable[[tuple, Any, tuple], tuple[Tensor, ...]],
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor | float, ...],
    alphas: Tensor | Sequence[float],
    weights: Tensor | Sequence[float],
    *,
    target: Target = None,
    additional_forward_args: tuple = (),
    multiply_by_delta: bool = False,
    stacked: bool = False,
    internal_batch_size: int | None = None,
    reduce: bool = True,
    convex: bool = False,
    memory_budget: int | str | None = None,
) -> tuple[Tensor, ...]:
    """Weighted average of a gradient function over points on straight paths.

    Computes, per example, ``sum_s w_s * g(b_s + alpha_s * (x_s - b_s))``
    (times ``x_s - b_s`` with ``multiply_by_delta``), where ``g`` is
    ``grad_fn`` evaluated on one expanded batch of path points (step-major
    rows, like Captum), so the model sees large batches and one backward.
    ``inputs``/``baselines`` entries are per example ``(N, ...)`` (shared by
    all points: deterministic quadrature) or per point ``(S, N, ...)``
    (sampled paths); ``alphas`` is ``(S,)`` or ``(S, N)``.

    Args:
        grad_fn: ``grad_fn(points, target_rows, args_rows)`` -> tuple of per-row
            gradients (with a leading ``K`` when ``stacked``).
        inputs: path ends, a tuple with one tensor per input.
        baselines: path starts, a tuple with one number or tensor per input.
        alphas: the path positions (see :func:`quadrature`, :func:`sample_paths`).
        weights: one weight per position.
        target: per-example values, repeated for every point's row.
        additional_forward_args: a tuple; tensors with a batch dim are repeated
            for every point's row.
        multiply_by_delta: multiply each point's gradient by ``x - b``.
        stacked: ``grad_fn`` returns a leading ``K`` dim (many targets/neurons).
        {args: internal_batch_size}
        reduce: if False, return the unweighted per-point values
            ``(S, N, ...)`` instead of their weighted sum (e.g. to compute a
            convergence delta per sample).
        convex: build the points as ``alpha * x + (1 - alpha) * b`` (Captum's
            gradient SHAP formula) instead of ``b + alpha * (x - b)`` (Captum's
            integrated gradients, conductance and internal influence). The two
            differ by rounding (~1e-7 in float32), enough to flip a ReLU or
            max-pool kink.
        memory_budget: bytes (or ``"512MiB"``) the call's working memory may
            use when ``internal_batch_size`` is None: the block size (and the K
            chunk) come from a probe of two rows (see ``fnattr._budget``).
            ``None``: the :func:`fnattr.memory_budget` context's, else automatic.

    Returns:
        A tuple of ``(N, ...)`` tensors (``(K, N, ...)`` when ``stacked``).

    Example:
        {digits}
        >>> def grad_fn(points, target_rows, args_rows):  # integrated gradients by hand
        ...     objective = fnattr.target_objective(target_rows)
        ...     return fnattr.input_gradients(model, points, objective,
        ...                                   additional_forward_args=args_rows)
        >>> alphas, weights = fnattr.quadrature("gausslegendre", 16)
        >>> (attr,) = fnattr.path_average(grad_fn, (x,), (0.0,), alphas, weights,
        ...                               target=labels, multiply_by_delta=True)
        >>> ig = fnattr.integrated_gradients(model, x, target=labels, n_steps=16)
        >>> torch.allclose(attr, ig, atol=1e-6)
        True
    """
    ref = next(t for t in inputs if isinstance(t, Tensor))
    N.check_floating(inputs)
    alphas = torch.as_tensor(alphas, dtype=ref.dtype, device=ref.device)
    weights = torch.as_tensor(weights, dtype=ref.dtype, device=ref.device)
    if weights.dim() != 1 or weights.shape[0] != alphas.shape[0]:
        raise ValueError(
            f"`weights` must hold one weight per path position: got shape "
            f"{tuple(weights.shape)} for {alphas.shape[0]} `alphas`")
    s = alphas.shape[0]
    per_point = alphas.dim() == 2
    n = ref.shape[1] if per_point else ref.shape[0]

    def run(block: tuple[int, int, int, int]) -> list[Tensor]:
        s0, s1, n0, n1 = block
        a = alphas[s0:s1] if not per_point else alphas[s0:s1, n0:n1]
        ends = [_block(x, s0, s1, n0, n1, per_point) for x in inputs]
        starts = [_block(b, s0, s1, n0, n1, per_point) for b in baselines]
        points = tuple(_point(x, b, _bcast(a, x), convex).reshape(-1, *x.shape[2:])
                       for x, b in zip(ends, starts))
        args = tuple(_arg_rows(t, n0, n1, s1 - s0, n) for t in additional_forward_args)
        grads = grad_fn(points, _target_rows(target, n0, n1, s1 - s0, n), args)
        return _reduce_block(grads, weights[s0:s1], ends, starts, (s1 - s0, n1 - n0),
                             multiply_by_delta, stacked, reduce)

    chunk = None
    if internal_batch_size is None:
        internal_batch_size, chunk = _budget.path_plan(
            run, grad_fn, memory_budget, inputs, baselines, alphas, target,
            additional_forward_args, (stacked, multiply_by_delta, reduce))
    elif not _engine.transforms_active():
        _budget.parse(memory_budget)  # checked even where internal_batch_size wins
    blocks = _blocks(internal_batch_size, s, n)
    if len(blocks) == 1:
        with _budget.chunk_limit(chunk):
            return tuple(run(blocks[0]))
    total: list[Tensor] | None = None
    with _budget.chunk_limit(chunk):
        for block in blocks:
            total = _accumulate(total, run(block), block, (s, n), stacked, reduce)
    return tuple(total)


def _point(x: Tensor, b: Any, a: Tensor, convex: bool) -> Tensor:
    return a * x + (1 - a) * b if convex else b + a * (x - b)


def _reduce_block(grads, w, ends, starts, sizes, multiply_by_delta, stacked, reduce):
    """One block's per-point gradients, times ``x - b``, weighted over the path.

    Runs outside autocast in the wider of the gradient's and the weights' dtypes
    (a bfloat16 layer gradient under ``torch.autocast`` is reduced in float32)."""
    part = []
    outside = torch.is_autocast_enabled(w.device.type)
    with torch.autocast(w.device.type, enabled=False) if outside else contextlib.nullcontext():
        for i, g in enumerate(grads):
            g = g.reshape(*g.shape[:int(stacked)], *sizes, *g.shape[1 + int(stacked):])
            g = g.to(torch.promote_types(g.dtype, w.dtype))
            if multiply_by_delta:
                g = g * (ends[i] - starts[i])
            if reduce:
                g = torch.tensordot(w.to(g.dtype), g, dims=([0], [int(stacked)])) \
                    if not stacked else torch.einsum("s,ks...->k...", w.to(g.dtype), g)
            part.append(g)
    return part


def _blocks(internal_batch_size: int | None, s: int, n: int) -> list[tuple[int, int, int, int]]:
    """``(s0, s1, n0, n1)`` blocks of at most ``internal_batch_size`` rows: whole
    steps at a time, or slices of examples within a step when it is below ``n``."""
    if internal_batch_size is None or internal_batch_size >= s * n:
        return [(0, s, 0, n)]
    if internal_batch_size >= n:
        steps = internal_batch_size // n
        return [(s0, min(s0 + steps, s), 0, n) for s0 in range(0, s, steps)]
    return [(s0, s0 + 1, n0, min(n0 + internal_batch_size, n))
            for s0 in range(s) for n0 in range(0, n, internal_batch_size)]


def _block(t: Any, s0: int, s1: int, n0: int, n1: int, per_point: bool) -> Any:
    """The ``(steps, examples, ...)`` block of a path end (broadcast over steps)."""
    if not isinstance(t, Tensor):
        return t
    if per_point:
        return t[s0:s1, n0:n1]
    t = t if t.shape[0] == 1 else t[n0:n1]
    return t.unsqueeze(0)


def _bcast(a: Tensor, like: Any) -> Tensor:
    """Alphas ``(S,)`` or ``(S, N)`` shaped to broadcast against ``(S, N, ...)``."""
    extra = (like.dim() if isinstance(like, Tensor) else 2) - a.dim()
    return a.reshape(*a.shape, *[1] * extra) if a.dim() == 2 else a.reshape(-1, 1, *[1] * (extra - 1))


def _accumulate(total, part, block, sizes, stacked, reduce):
    """Adds (or, unreduced, places) one block's values into full-size tensors."""
    s0, s1, n0, n1 = block
    lead = (slice(None),) * int(stacked)
    index = lead + ((slice(n0, n1),) if reduce else (slice(s0, s1), slice(n0, n1)))
    if total is None:
        total = []
        for p in part:
            shape = list(p.shape)
            if reduce:
                shape[int(stacked)] = sizes[1]
            else:
                shape[int(stacked):int(stacked) + 2] = sizes
            total.append(p.new_zeros(shape))
    return [_put(t, index, p) for t, p in zip(total, part)]


def _put(t: Tensor, index: tuple, p: Tensor) -> Tensor:
    if not (t.requires_grad or p.requires_grad or _engine.transforms_active()):
        t[index] += p  # in place: no second copy of the result per block
        return t
    t = t.clone()  # out of place: the accumulation stays differentiable
    t[index] = t[index] + p
    return t


def sample_paths(
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor | float, ...],
    n_samples: int,
    stdevs: tuple[float, ...],
    generator: torch.Generator | None = None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], Tensor]:
    """Random straight paths for gradient SHAP: ``(ends, starts, alphas)``.

    For each example and each of ``n_samples`` samples: a baseline row drawn
    uniformly from ``baselines`` (independently per input tensor, as Captum
    draws them), Gaussian noise ``N(0, stdev^2)`` added to the input, and a
    position ``alpha ~ U(0, 1)`` on the path. Every draw comes from
    ``generator`` (the global torch RNG when ``None``; numpy's is never
    used), in a fixed order: baseline indices, noise, alphas. Noise and alphas
    are drawn in the inputs' dtype, so one seed gives different samples for
    float32 and float64 inputs (reproducible per seed and dtype).

    Args:
        inputs: a tuple of ``(N, ...)`` tensors.
        baselines: a tuple of reference rows ``(B, ...)`` or numbers, one per input.
        n_samples: samples per example ``S``.
        stdevs: a tuple with one noise standard deviation per input.
        {args: generator}

    Returns:
        ``ends`` (noisy inputs) and ``starts`` (drawn baselines), tuples of
        ``(S, N, ...)`` tensors, and ``alphas`` of shape ``(S, N)``.

    Example:
        {digits}
        >>> g = torch.Generator().manual_seed(0)
        >>> ends, starts, alphas = fnattr.sample_paths((x,), (torch.zeros(4, 1, 8, 8),), 8,
        ...                                            (0.1,), g)
        >>> ends[0].shape, starts[0].shape, alphas.shape
        (torch.Size([8, 50, 1, 8, 8]), torch.Size([8, 50, 1, 8, 8]), torch.Size([8, 50]))
    """
    n_samples = N.check_positive_int(n_samples, "n_samples")
    stdevs = N.format_stdevs(stdevs, len(inputs))
    ref = inputs[0]
    n = ref.shape[0]
    starts = []
    for x, b in zip(inputs, baselines):
        if isinstance(b, Tensor):
            idx = torch.randint(b.shape[0], (n_samples, n), generator=generator,
                                device=_rng_device(generator, b))
            starts.append(b[idx.to(b.device)])
        else:
            starts.append(torch.full((1, 1, *x.shape[1:]), b, dtype=x.dtype, device=x.device)
                          .expand(n_samples, n, *x.shape[1:]))
    ends = []
    for x, sd in zip(inputs, stdevs):
        x = x.unsqueeze(0).expand(n_samples, *x.shape)
        if sd > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                device=_rng_device(generator, x))
            x = x + sd * noise.to(x.device)
        ends.append(x)
    alphas = torch.rand((n_samples, n), generator=generator, dtype=ref.dtype,
                        device=_rng_device(generator, ref)).to(ref.device)
    return tuple(ends), tuple(starts), alphas


def _rng_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    return like.device if generator is None else generator.device
