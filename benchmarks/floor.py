"""The "floor": every benchmarked method hand-written in minimal PyTorch.

The same math as Captum with no framework: one expanded batch, one
``torch.autograd.grad`` call, everything that does not depend on the call's
arguments (frozen model copy, quadrature nodes, ReLU-rule model copies) built
once in :class:`Floor`'s constructor, outside any timed region.

* The floor runs on a **frozen deep copy** of the model
  (``requires_grad_(False)``, same weights): what a hand-writer who only wants
  input/layer gradients would do; no graph is recorded for parameters.
* Layer sites are reached by **splitting the ``nn.Sequential``** at the layer
  (:func:`benchmarks.models.run_to`), no hooks: neuron methods run the forward
  up to the layer only (``full_forward=True`` runs the rest too, discarded);
  layer methods make the layer's output the leaf.
* Guided backprop / deconvolution use a **hand-written modified-ReLU model**:
  a deep copy in which every ``nn.ReLU`` module is replaced by a module calling
  a custom ``torch.autograd.Function`` with the rule's backward (guided:
  ``relu(g) * 1[x > 0]``, deconvolution: ``relu(g)``), built once. No hooks.
* Gradient SHAP draws from a ``torch.Generator`` in fnattr's documented order
  (baseline indices, noise, alphas; :func:`fnattr.sample_paths`) and takes the
  drawn paths as tensors (:meth:`Floor.gradient_shap_paths`), so it can be
  checked against Captum on Captum's own draws (:func:`captum_paths`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .models import ModelSpec

__all__ = ["Floor", "captum_paths", "seeded", "GuidedReLUFn", "DeconvReLUFn"]


class GuidedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out > 0)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (mask,) = ctx.saved_tensors
        return g.clamp(min=0) * mask


class DeconvReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return g.clamp(min=0)


class _RuleReLU(nn.Module):
    def __init__(self, fn: type) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn.apply(x)


def _with_rule(model: nn.Module, fn: type) -> nn.Module:
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(m, child_name, _RuleReLU(fn))
    return out


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1 + nodes), 0.5 * w


def _stages(model: nn.Sequential, layer: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    stages = list(model)
    i = next(i for i, s in enumerate(stages) if s is layer)
    return nn.Sequential(*stages[:i + 1]), nn.Sequential(*stages[i + 1:])


class Floor:
    """Hand-written minimal PyTorch for one model (see the module docs)."""

    def __init__(self, spec: ModelSpec, n_steps: int = 50) -> None:
        self.model = copy.deepcopy(spec.model).requires_grad_(False).eval()
        self.layer = self.model.get_submodule(spec.layer_name)
        self.head, self.tail = _stages(self.model, self.layer)
        self.guided = _with_rule(self.model, GuidedReLUFn)
        self.deconv = _with_rule(self.model, DeconvReLUFn)
        dev, dt = spec.inputs.device, spec.inputs.dtype
        a, w = _gauss_legendre(n_steps)
        self.alphas = torch.tensor(a, dtype=dt, device=dev)
        self.weights = torch.tensor(w, dtype=dt, device=dev)
        self._eye: dict[tuple[int, int], Tensor] = {}

    # -- input-gradient methods -------------------------------------------------
    def _input_grad(self, model: nn.Module, x: Tensor, target: int) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            out = model(x)
            return torch.autograd.grad(out[:, target].sum(), x)[0]

    def guided_backprop(self, x: Tensor, target: int) -> Tensor:
        return self._input_grad(self.guided, x, target)

    def deconvolution(self, x: Tensor, target: int) -> Tensor:
        return self._input_grad(self.deconv, x, target)

    # -- neuron gradient ---------------------------------------------------------
    def neuron_gradient(self, x: Tensor, neuron: tuple, full_forward: bool = False) -> Tensor:
        """Stops the forward at the layer; ``full_forward`` also runs the rest of
        the model (what a method must do when it cannot know that the layer is
        not called again later, as Captum and fnattr's eager mode do)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            h = self.head(x)
            if full_forward:
                self.tail(h)
            return torch.autograd.grad(h[(slice(None), *neuron)].sum(), x)[0]

    def neuron_gradient_many(self, x: Tensor, neurons: Sequence[tuple],
                             chunk_size: int | None = None) -> Tensor:
        """K neurons, one shared forward to the layer, then the K backwards:
        ``chunk_size=1``: a Python loop of K ``autograd.grad(retain_graph=True)``
        of ``h[:, neuron].sum()``; otherwise the K neuron values are taken with one
        gather (``h.flatten(1)[:, idx]``, whose backward is one scatter, linear in
        K) and backpropagated with ``is_grads_batched`` over one-hot cotangents,
        ``chunk_size`` rows at a time (all K when ``None``). Result ``(K, *x.shape)``."""
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            h = self.head(x)
            k = len(neurons)
            if chunk_size == 1:
                return torch.stack([
                    torch.autograd.grad(h[(slice(None), *nrn)].sum(), x,
                                        retain_graph=i < k - 1)[0]
                    for i, nrn in enumerate(neurons)])
            shape = h.shape[1:]
            idx = torch.tensor([int(np.ravel_multi_index(nrn, shape)) for nrn in neurons],
                               device=x.device)
            vals = h.flatten(1)[:, idx].T  # (K, N)
            n = vals.shape[1]
            step = k if chunk_size is None else chunk_size
            eye = self._eye.get((k, n))
            if eye is None or eye.device != x.device or eye.dtype != x.dtype:
                eye = torch.eye(k, dtype=x.dtype, device=x.device)[:, :, None].expand(k, k, n)
                self._eye[(k, n)] = eye
            parts = [torch.autograd.grad(vals, x, grad_outputs=eye[s:s + step],
                                         is_grads_batched=True, retain_graph=s + step < k)[0]
                     for s in range(0, k, step)]
            return parts[0] if len(parts) == 1 else torch.cat(parts)

    # -- internal influence ------------------------------------------------------
    def internal_influence(self, x: Tensor, target: int, baseline: float = 0.0) -> Tensor:
        """Gauss-Legendre internal influence (``n_steps`` from the constructor),
        straight path from a constant baseline; step-major rows like Captum."""
        s, n = self.alphas.shape[0], x.shape[0]
        a = self.alphas.reshape(s, 1, *[1] * (x.dim() - 1))
        pts = (baseline + a * (x - baseline)).reshape(s * n, *x.shape[1:])
        with torch.enable_grad():
            h = self.head(pts).requires_grad_()
            out = self.tail(h)
            g = torch.autograd.grad(out[:, target].sum(), h)[0]
        return torch.tensordot(self.weights, g.reshape(s, n, *g.shape[1:]), dims=1)

    # -- gradient SHAP -------------------------------------------------------------
    @staticmethod
    def draw(x: Tensor, baselines: Tensor, n_samples: int, stdev: float,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(ends, starts, alphas)``: ``(S, N, ...)``, ``(S, N, ...)``, ``(S, N)``."""
        n = x.shape[0]
        idx = torch.randint(baselines.shape[0], (n_samples, n), generator=generator,
                            device=x.device)
        starts = baselines[idx]
        ends = x.unsqueeze(0).expand(n_samples, *x.shape)
        if stdev > 0:
            noise = torch.randn(ends.shape, generator=generator, dtype=x.dtype, device=x.device)
            ends = ends + stdev * noise
        alphas = torch.rand((n_samples, n), generator=generator, dtype=x.dtype, device=x.device)
        return ends, starts, alphas

    def _shap(self, grad_of_points, ends: Tensor, starts: Tensor, alphas: Tensor) -> Tensor:
        s, n = alphas.shape
        a = alphas.reshape(s, n, *[1] * (ends.dim() - 2))
        delta = ends - starts
        pts = (starts + a * delta).reshape(s * n, *ends.shape[2:])
        g = grad_of_points(pts).reshape(ends.shape)
        return (g * delta).mean(0)

    def gradient_shap_paths(self, ends: Tensor, starts: Tensor, alphas: Tensor,
                            target: int) -> Tensor:
        return self._shap(lambda p: self._input_grad(self.model, p, target), ends, starts, alphas)

    def gradient_shap(self, x: Tensor, baselines: Tensor, target: int, n_samples: int,
                      stdev: float, generator: torch.Generator | None) -> Tensor:
        return self.gradient_shap_paths(*self.draw(x, baselines, n_samples, stdev, generator),
                                        target)

    def neuron_gradient_shap_paths(self, ends: Tensor, starts: Tensor, alphas: Tensor,
                                   neuron: tuple, full_forward: bool = False) -> Tensor:
        return self._shap(lambda p: self.neuron_gradient(p, neuron, full_forward),
                          ends, starts, alphas)

    def neuron_gradient_shap(self, x: Tensor, baselines: Tensor, neuron: tuple,
                             n_samples: int, stdev: float,
                             generator: torch.Generator | None,
                             full_forward: bool = False) -> Tensor:
        return self.neuron_gradient_shap_paths(
            *self.draw(x, baselines, n_samples, stdev, generator), neuron, full_forward)


@contextlib.contextmanager
def seeded(np_seed: int, torch_seed: int):
    """Seeds numpy's and torch's global RNGs (Captum's sources); restores both after."""
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np.random.seed(np_seed)
    torch.manual_seed(torch_seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def captum_paths(x: Tensor, baselines: Tensor, n_samples: int, stdev: float,
                 np_seed: int, torch_seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Replays the draws of Captum 0.9's ``(Neuron)GradientShap.attribute`` (one
    input tensor, ``nt_samples_batch_size=None``) under the given seeds, laid out
    step-major ``(S, N, ...)`` for :meth:`Floor.gradient_shap_paths`.

    Captum's order: ``np.random.choice(B, N * S)`` baseline rows (example-major,
    row ``n * S + s``), ``torch.normal(0, stdev)`` noise on
    ``x.repeat_interleave(S)``, then ``np.random.uniform(0, 1, N * S)`` alphas.
    """
    n, s = x.shape[0], n_samples
    with seeded(np_seed, torch_seed):
        rows = baselines[np.random.choice(baselines.shape[0], n * s).tolist()]
        std = torch.tensor(stdev, device=x.device).repeat((n * s, *x.shape[1:]))
        noisy = x.repeat_interleave(s, dim=0) + torch.normal(0, std)
        alphas = torch.tensor(np.random.uniform(0.0, 1.0, n * s), dtype=x.dtype,
                              device=x.device)

    def step_major(t: Tensor) -> Tensor:
        return t.reshape(n, s, *t.shape[1:]).transpose(0, 1)

    return step_major(noisy), step_major(rows), step_major(alphas)
