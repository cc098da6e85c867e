"""Where on the paths: quadrature nodes, random paths, and the path average.

:func:`quadrature` gives deterministic positions and weights on ``[0, 1]``,
:func:`sample_paths` random straight paths (gradient SHAP), and
:func:`path_average` the weighted average of a gradient function over the
points of either, as one expanded batch per ``internal_batch_size`` block.
Inside, every gradient carries a leading K (targets or neurons); a single
objective is K = 1, dropped at the end (``stacked=False``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .types import Target
from . import _budget, _normalize as N
from ._functional import transforms_active
from ._gauss import gauss_legendre
from ._objectives import Objective, _target_rows

__all__ = ["quadrature", "path_average", "at_inputs", "sample_paths"]


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


def _arg_rows(t: Any, n0: int, n1: int, reps: int, n: int) -> Any:
    """Rows of a per-example argument for examples ``n0:n1``, repeated for
    ``reps`` steps, laid out step-major (non-tensors and broadcast tensors as they are)."""
    if not isinstance(t, Tensor):
        return t
    if t.dim() == 0 or t.shape[0] != n:
        return t if (t.dim() == 0 or t.shape[0] == 1) else t.repeat(reps, *[1] * (t.dim() - 1))
    part = t[n0:n1]
    return part if reps == 1 else part.repeat(reps, *[1] * (t.dim() - 1))


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
    alphas, weights = _rule_tensors(alphas, weights, ref)
    if weights.dim() != 1 or weights.shape[0] != alphas.shape[0]:
        raise ValueError(
            f"`weights` must hold one weight per path position: got shape "
            f"{tuple(weights.shape)} for {alphas.shape[0]} `alphas`")
    plan_key = grad_fn  # (the planner's cache key: the caller's function)
    if not stacked:  # one objective: the same path with a K = 1 axis, dropped at the end
        inner = grad_fn
        grad_fn = lambda *a: tuple(g.unsqueeze(0) for g in inner(*a))  # noqa: E731
    per_point = alphas.dim() == 2
    s, n = alphas.shape[0], (ref.shape[1] if per_point else ref.shape[0])

    def run(block: tuple[int, int, int, int]) -> list[Tensor]:
        s0, s1, n0, n1 = block
        a = alphas[s0:s1] if not per_point else alphas[s0:s1, n0:n1]
        ends = [_block(x, s0, s1, n0, n1, per_point) for x in inputs]
        starts = [_block(b, s0, s1, n0, n1, per_point) for b in baselines]
        points = tuple(_point(x, b, _bcast(a, x), convex).reshape(-1, *x.shape[2:])
                       for x, b in zip(ends, starts))
        args = tuple(_arg_rows(t, n0, n1, s1 - s0, n) for t in additional_forward_args)
        grads = grad_fn(points, _rows(target, n0, n1, s1 - s0, n), args)
        return _reduce_block(grads, weights[s0:s1], ends, starts, (s1 - s0, n1 - n0),
                             multiply_by_delta, reduce)

    chunk = None
    if internal_batch_size is None:
        internal_batch_size, chunk = _budget.path_plan(
            run, plan_key, memory_budget, inputs, baselines, alphas, target,
            additional_forward_args, (stacked, multiply_by_delta, reduce))
    elif not transforms_active():
        _budget.parse(memory_budget)  # checked even where internal_batch_size wins
    blocks = _blocks(internal_batch_size, s, n)
    total: list[Tensor] | None = None
    with _budget.chunk_limit(chunk):
        for block in blocks:
            part = run(block)
            total = part if len(blocks) == 1 else _accumulate(total, part, block, (s, n),
                                                              reduce)
    return tuple(total) if stacked else tuple(t[0] for t in total)


def at_inputs(grad_fn: Callable, inputs: tuple[Tensor, ...], objective: Objective,
              args: tuple, memory_budget: Any = None) -> tuple[Tensor, ...]:
    """``grad_fn`` at the inputs themselves; under a memory budget, on CUDA, or for
    a CPU batch too large for one automatic block, as a one-point path
    (``0 + 1 * x`` is ``x`` exactly), so that the planner splits the examples and
    the K rows like every expanded method's."""
    if transforms_active() or (_budget.resolve(memory_budget) is None
                               and inputs[0].device.type != "cuda"
                               and not _budget.cpu_split(inputs)):
        return grad_fn(inputs, objective, args)
    return path_average(grad_fn, inputs, (0.0,) * len(inputs), [1.0], [1.0], target=objective,
                        additional_forward_args=args, stacked=True,
                        memory_budget=memory_budget)


def _blocks(internal_batch_size: int | None, s: int, n: int) -> list[tuple[int, int, int, int]]:
    """``(s0, s1, n0, n1)`` blocks of steps and examples, ``internal_batch_size`` rows
    at most: whole steps at a time, or slices of examples within a step."""
    if internal_batch_size is None or internal_batch_size >= s * n:
        return [(0, s, 0, n)]
    if internal_batch_size >= n:
        steps = internal_batch_size // n
        return [(s0, min(s0 + steps, s), 0, n) for s0 in range(0, s, steps)]
    return [(s0, s0 + 1, n0, min(n0 + internal_batch_size, n))
            for s0 in range(s) for n0 in range(0, n, internal_batch_size)]


def _rows(target: Any, n0: int, n1: int, reps: int, n: int) -> Any:
    if isinstance(target, Objective):
        return target.rows(n0, n1, reps, n)
    return _target_rows(target, n0, n1, reps, n)


def _rule_tensors(alphas: Any, weights: Any, ref: Tensor) -> tuple[Tensor, Tensor]:
    """``alphas`` and ``weights`` as tensors on ``ref``'s device, in its dtype or
    float32 where that is wider (a bfloat16 or float16 model's path is placed and
    summed in float32, as Captum's Python-float alphas and float32 step sizes do);
    a quadrature's tuples are converted once per dtype and device (cached, eager only)."""
    dtype = torch.promote_types(ref.dtype, torch.float32)
    cacheable = isinstance(alphas, tuple) and isinstance(weights, tuple) \
        and not transforms_active() and not torch.is_inference_mode_enabled()
    key = (alphas, weights, dtype, ref.device) if cacheable else None
    if key is not None and key in _RULE_TENSORS:
        return _RULE_TENSORS[key]
    pair = (torch.as_tensor(alphas, dtype=dtype, device=ref.device),
            torch.as_tensor(weights, dtype=dtype, device=ref.device))
    if key is not None:
        if len(_RULE_TENSORS) >= QUADRATURE_CACHE:
            _RULE_TENSORS.pop(next(iter(_RULE_TENSORS)), None)
        _RULE_TENSORS[key] = pair
    return pair


# (alphas, weights, dtype, device) -> the two tensors, never written to.
_RULE_TENSORS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _point(x: Tensor, b: Any, a: Tensor, convex: bool) -> Tensor:
    if x.dtype != a.dtype:  # a reduced-precision model: scale in float32, round each
        low = x.dtype       # product to the model's dtype, as a Python-float alpha does
        if convex:
            return (a * x).to(low) + ((1 - a) * b).to(low)
        return b + (a * (x - b)).to(low)
    return a * x + (1 - a) * b if convex else b + a * (x - b)


def _reduce_block(grads, w, ends, starts, sizes, multiply_by_delta, reduce):
    """One block's per-point gradients ``(K, steps * examples, ...)``, times ``x - b``,
    weighted over the path: ``(K, examples, ...)`` (``(K, steps, examples, ...)``
    unreduced).

    Runs outside autocast in the wider of the gradient's and the weights' dtypes
    (a bfloat16 layer gradient under ``torch.autocast`` is reduced in float32)."""
    part = []
    outside = torch.is_autocast_enabled(w.device.type)
    with torch.autocast(w.device.type, enabled=False) if outside else contextlib.nullcontext():
        for i, g in enumerate(grads):
            if g.shape[1] != sizes[0] * sizes[1]:  # a layer value not one row per example
                raise ValueError(
                    f"the `layer`'s value has {g.shape[1]} rows where the expanded batch has "
                    f"{sizes[0] * sizes[1]} examples: this method needs one row per example "
                    "along dim 0 (layer_integrated_gradients also takes a value with several "
                    "rows per example, e.g. tokens flattened into the batch)")
            g = g.reshape(g.shape[0], *sizes, *g.shape[2:])
            if g.dtype != w.dtype:
                g = g.to(torch.promote_types(g.dtype, w.dtype))
            if multiply_by_delta:
                g = g * (ends[i] - starts[i])
            if reduce:
                g = torch.tensordot(w if w.dtype == g.dtype else w.to(g.dtype), g,
                                    dims=([0], [1]))
            part.append(g)
    return part


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


def _accumulate(total, part, block, sizes, reduce):
    """Adds (or, unreduced, places) one block's ``(K, ...)`` values into full-size tensors."""
    s0, s1, n0, n1 = block
    index = (slice(None), slice(n0, n1)) if reduce else (slice(None), slice(s0, s1),
                                                         slice(n0, n1))
    if total is None:
        total = [p.new_zeros((p.shape[0], sizes[1], *p.shape[2:]) if reduce
                             else (p.shape[0], *sizes, *p.shape[3:])) for p in part]
    return [_put(t, index, p) for t, p in zip(total, part)]


def _put(t: Tensor, index: tuple, p: Tensor) -> Tensor:
    if not (t.requires_grad or p.requires_grad or transforms_active()):
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
