"""Dataset-scale attribution: sharded with torch.distributed, streamed to Zarr, resumable.

:func:`attribute_dataset` runs one of fnattr's methods over every example of a
dataset and writes the results to a Zarr v3 store; :func:`open_attributions`
opens one. The layout is in :mod:`._store`, processes and chunk ownership in
:mod:`._shard`, the loop and its writer thread in :mod:`._engine`.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from .. import _normalize as N
from .._catalog import lookup
from . import _engine, _shard, _store
from ._data import as_items, from_folder, load_dataset_spec

__all__ = ["attribute_dataset", "open_attributions", "from_folder", "load_dataset_spec"]

if TYPE_CHECKING:  # imported where used: `import fnattr` does not load zarr
    import zarr

RESERVED = ("inputs", "target", "generator", "return_convergence_delta")


def open_attributions(out: Any) -> zarr.Group:
    """Opens the store written by :func:`attribute_dataset` (read-only).

    A plain ``zarr.open_group(out, mode="r")``: the arrays are ``attributions``,
    ``target``, ``delta`` (when the method has one) and ``complete`` (one flag per
    chunk); ``group.attrs["fnattr"]`` holds the configuration.

    Args:
        out: the store (a path or any store zarr accepts).

    Returns:
        The ``zarr.Group``.

    Example:
        {digits}
        >>> _ = fnattr.attribute_dataset(fnattr.gradient, model, (x, labels), "saliency.zarr")
        >>> group = fnattr.open_attributions("saliency.zarr")
        >>> group["attributions"].shape, group["target"][:3].tolist()
        ((50, 1, 8, 8), [0, 1, 2])
    """
    import zarr

    group = zarr.open_group(out, mode="r", zarr_format=3)
    if "fnattr" not in group.attrs:
        raise ValueError(f"`out` {out!r} is not a store written by fnattr.attribute_dataset")
    return group


def _layer(model: Any, layer: Any) -> tuple[Any, str]:
    """The layer as the method takes it (a dotted name, or the module itself when
    ``model`` is a forward function), and as the stored configuration names it."""
    if isinstance(layer, str):
        N.resolve_layer(model, layer)
        return layer, layer
    if isinstance(layer, nn.Module):
        owners = [model] if isinstance(model, nn.Module) else _store.closed_modules(model)
        for owner in owners:
            for name, module in owner.named_modules():
                if module is layer:
                    return (name if owner is model else layer), name
        if not isinstance(model, nn.Module):  # a module the function reaches some other way
            return layer, f"<{type(layer).__name__}>"
    if isinstance(layer, (list, tuple)):
        raise TypeError("`layer` must be one layer: a store holds one attributions array "
                        "(run one store per layer)")
    raise ValueError("`layer` must be a submodule of `model` (the module or its dotted name)")


def _check(entry: Any, method: Any, model: Any, layer: Any, target: Any, batch_size: Any,
           kwargs: dict) -> tuple[Any, str | None]:
    """Validates the arguments; returns the layer for the method and its stored name
    (``None``, ``None`` without a layer)."""
    if entry is None:
        raise ValueError(f"`method` must be one of fnattr's attribution methods, got {method!r}")
    N.check_forward_func(model, "model")
    N.check_positive_int(batch_size, "batch_size")
    for key in RESERVED:
        if key in kwargs:
            raise ValueError(f"`{key}` is set by attribute_dataset (see `target`, `seed`, `data`)")
    if entry.needs_layer != (layer is not None):
        raise ValueError(f"`layer` is {'required' if entry.needs_layer else 'not an argument'}"
                         f" for {entry.name}")
    if not (target in (None, "label", "pred") or isinstance(target, int)
            and not isinstance(target, bool)):
        raise ValueError(f"`target` must be 'label', 'pred', an int or None, got {target!r}")
    if not entry.target and target not in (None, "label"):
        raise ValueError(f"`target`: {entry.name} takes no target (it explains a neuron)")
    return _layer(model, layer) if entry.needs_layer else (None, None)


def _config(entry: Any, layer: str | None, target: Any, seed: int, n: int, model: Any,
            kwargs: dict) -> dict:
    config = {"method": entry.name, "layer": layer, "target": target if entry.target else None,
              "seed": seed, "n_examples": n, "model_weights": _store.fingerprint(model)}
    config.update({f"argument `{k}`": _store.describe(v) for k, v in kwargs.items()})
    return config


def _prepare(out: Any, config: dict, probe: dict, n: int, shard: Any, resume: bool,
             overwrite: bool) -> tuple[zarr.Group, list[int]]:
    """Checks an existing run against ``config`` (every process) and creates the store
    when needed (process 0); returns the group, open for writing, and its missing
    chunks, read by every process before any of them writes (so all see one list)."""
    import zarr

    existing = _store.open_run(out)
    if existing is not None and not overwrite:
        if not resume:
            raise ValueError("`out` already holds a run: pass resume=True to continue it or "
                             "overwrite=True to replace it")
        _store.check_config(existing.attrs["fnattr"]["config"], config)
    _shard.barrier(shard)
    if shard.rank == 0:
        if existing is None or overwrite:
            shapes = {k: (v.shape[1:], v.dtype) for k, v in probe.items()}
            meta = {"versions": {"fnattr": _version(), "torch": torch.__version__,
                                 "zarr": zarr.__version__, "python": platform.python_version()}}
            chunk = _store.chunk_length(n, probe["attributions"][0].nbytes)
            _store.create(out, config, shapes, n, chunk, overwrite, meta)
        else:
            existing["abort"][0] = -1
    _shard.barrier(shard)
    group = zarr.open_group(out, mode="r+", zarr_format=3)
    missing = _store.missing_chunks(group)
    _shard.barrier(shard)
    return group, missing


def _version() -> str:
    from .. import __version__

    return __version__


def attribute_dataset(
    method: Callable,
    model: Callable,
    data: Any,
    out: Any,
    *,
    layer: nn.Module | str | None = None,
    target: Any = "label",
    batch_size: int = 64,
    seed: int = 0,
    device: Any = None,
    num_workers: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    compile: bool = False,
    **method_kwargs: Any,
) -> zarr.Group:
    """Attributes every example of a dataset into a Zarr store, sharded and resumable.

    Runs ``method`` batch by batch over ``data`` and streams the results to a
    Zarr v3 store (layout in :mod:`fnattr.dataset._store`): ``attributions``
    (N, ...), ``target`` (N,), ``delta`` ((N,), or (N, n_samples) for sampled
    methods) when the method has a convergence delta. Under ``torchrun`` every
    process takes its own whole chunks on ``cuda:LOCAL_RANK`` (or the CPU), and the
    store is the same as a one-process run. Sampled methods draw example ``i``'s
    paths from a generator seeded by ``(seed, i)`` alone, so results do not depend
    on world size, batch size or resume point. A rerun skips the chunks already
    complete (also after ``kill -9``); a different configuration is refused.

    Args:
        method: an fnattr method from the catalog (``fnattr.integrated_gradients``...).
        model: the model, or a forward function such as ``lambda ids:
            model(ids, attention_mask=(ids != pad).long()).logits`` (a Hugging
            Face model; compute the mask from the ids: only the ``x`` of each item
            reaches the model). A model is copied, never moved, when it is not
            on the run's device; a function's modules must already be there. A
            function's fingerprint (compared on resume) covers the weights of
            the modules its closure and globals reach.
        data: a map-style Dataset with items ``x``, ``(x, y)`` or ``(x, y, *rest)``
            (``rest`` unused), a Tensor, or a tuple ``(X, Y)``.
        out: the store: a path or any store zarr accepts.
        layer: the layer of layer and neuron methods (module or dotted name; a
            module with a forward function).
        target: ``"label"`` (each item's ``y``), ``"pred"`` (the model's argmax),
            an int, or ``None``; stored as ``target`` (-1 for ``None``).
        batch_size: examples per method call.
        seed: the seed of sampled methods' draws.
        device: the device; default ``cuda:LOCAL_RANK`` when CUDA is there, else CPU.
        num_workers: the DataLoader's worker processes.
        resume: continue a run with the same configuration found at ``out``.
        overwrite: replace whatever is at ``out``.
        progress: a tqdm bar on process 0; default when stderr is a terminal.
        compile: run the method through ``torch.compile``.
        **method_kwargs: the method's own arguments (``n_steps``, ``baselines``...).

    Returns:
        The store, opened read-only (see :func:`open_attributions`).

    Raises:
        ValueError: an argument is invalid, or ``out`` holds a different run
            (the message names what differs).
        RuntimeError: the method failed on a batch (names the chunk and examples)
            or another process did.

    Example:
        {digits}
        >>> store = fnattr.attribute_dataset(fnattr.integrated_gradients, model, (x, labels),
        ...                                  "ig.zarr", n_steps=16, batch_size=16)
        >>> store["attributions"].shape, store["delta"].shape
        ((50, 1, 8, 8), (50,))
        >>> ig = fnattr.integrated_gradients(model, x, target=labels, n_steps=16)
        >>> torch.allclose(torch.from_numpy(store["attributions"][:]), ig, atol=1e-5)
        True
    """
    return run(method, model, data, out, {}, layer=layer, target=target,
               batch_size=batch_size, seed=seed, device=device, num_workers=num_workers,
               resume=resume, overwrite=overwrite, progress=progress, compile=compile,
               **method_kwargs)


def run(method: Callable, model: Callable, data: Any, out: Any, extra_config: dict, *,
        layer: Any, target: Any, batch_size: int, seed: int, device: Any, num_workers: int,
        resume: bool, overwrite: bool, progress: bool | None, compile: bool,
        **method_kwargs: Any) -> zarr.Group:
    """:func:`attribute_dataset` whose stored configuration also holds ``extra_config``
    (JSON values compared on resume like the rest): what a caller knows about the run
    that the arguments do not show, such as how ``fnattr explain`` read its inputs."""
    entry = lookup(method)
    layer, layer_name = _check(entry, method, model, layer, target, batch_size, method_kwargs)
    items = as_items(data)
    n = len(items)
    if n == 0:
        raise ValueError("`data` is empty")
    config = {**_config(entry, layer_name, target, seed, n, model, method_kwargs),
              **extra_config}
    shard = _shard.join(device)
    try:
        local = _engine.on_device(model, shard.device)
        call = _engine.method_call(entry, local, layer, seed, method_kwargs, compile)
        x0, y0 = _engine.collate([items[0]])
        x0 = x0.to(shard.device)
        probe = call(x0, _engine.targets(target if entry.target else None, local, x0, y0), [0])
        group, missing = _prepare(out, config, probe, n, shard, resume, overwrite)
        chunk = group.attrs["fnattr"]["chunk"]
        todo = _engine.batches(_shard.owned(missing, shard), chunk, n, batch_size)
        left = sum(min(n, (k + 1) * chunk) - k * chunk for k in missing)
        error = None
        with _engine.progress_bar(progress, shard, left) as bar:
            try:
                _engine.run_chunks(call, group, items, todo, shard,
                                   target if entry.target else None, local, num_workers, bar)
            except Exception as e:  # raised below, once every process knows
                error = e
        failed = _shard.agree(shard, error is not None)
        if error is not None:
            raise error
        if failed >= 0:
            raise RuntimeError(f"rank {failed} failed, so rank {shard.rank} stopped "
                               "(its error says why)")
    finally:
        _shard.leave(shard)
    return open_attributions(out)
