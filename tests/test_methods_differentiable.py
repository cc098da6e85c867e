"""create_graph=True: attributions are differentiable, with correct gradients.

For every catalog method (``tests/_catalog_args.py``), ``L(theta) =
<attribution(theta), R>`` for a fixed random ``R``; ``dL/dtheta`` from
autograd (through the attribution) must equal central finite differences in
float64, for a parameter tensor and for the inputs. Sampled methods re-seed
their generator for every evaluation, so the draws are fixed and L is a
deterministic function.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fnattr
from fnattr._catalog import CATALOG

from ._catalog_args import ENTRIES, Setting, caller

EPS = 1e-6


def _smooth():
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Softplus(),
                         nn.Linear(5, 3)).double()


def _relu():
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                         nn.Linear(6, 3)).double()


BASE = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
SETTING = Setting(layer="2", target=1, neuron=(1,), n_steps=5, baselines=BASE, n_samples=4,
                  stdevs=0.1, seed=11, extra={"create_graph": True})


def _model(entry):
    """Rules act on ReLUs: rule methods run on a ReLU net, the others on a smooth one."""
    return _relu if entry.rule else _smooth


# every catalog method (model, attribute(model, x)), plus the K forms
METHODS = {e.name: (_model(e), caller(e, SETTING)) for e in ENTRIES}
METHODS["neuron_gradient_many"] = (_smooth, caller(CATALOG["neuron_gradient"],
                                                   SETTING.but(neuron=[(1,), (4,)])))
METHODS["gradient_each"] = (_smooth, caller(CATALOG["gradient"],
                                            SETTING.but(target=fnattr.each([0, 2]))))


def _fd(fn, t: torch.Tensor, count: int = 4) -> tuple[torch.Tensor, list[int]]:
    """Central differences of fn() w.r.t. `count` entries of t (modified in place)."""
    flat = t.data.view(-1)
    picks = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:count]
    out = []
    for i in picks.tolist():
        old = flat[i].item()
        flat[i] = old + EPS
        hi = fn().item()
        flat[i] = old - EPS
        lo = fn().item()
        flat[i] = old
        out.append((hi - lo) / (2 * EPS))
    return torch.tensor(out, dtype=torch.float64), picks.tolist()


@pytest.mark.parametrize("name", list(METHODS))
def test_gradient_of_attribution_matches_finite_differences(name):
    torch.manual_seed(0)
    make, attribute = METHODS[name]
    model = make()
    x = torch.randn(3, 4, dtype=torch.float64)
    r = torch.randn_like(attribute(model, x))

    def loss():
        return (attribute(model, x) * r).sum()

    attr = attribute(model, x)
    assert attr.requires_grad, "create_graph=True must return a differentiable attribution"
    weight = model[0].weight
    x_var = x.clone().requires_grad_()
    # On a ReLU net a rule's attribution depends on x only through the gates
    # (derivative 0 almost everywhere): x may be unused, its gradient is zero.
    got_w, got_x = torch.autograd.grad((attribute(model, x_var) * r).sum(), (weight, x_var),
                                       allow_unused=True, materialize_grads=True)
    fd_w, picks_w = _fd(loss, weight)
    torch.testing.assert_close(got_w.view(-1)[picks_w], fd_w, rtol=1e-4, atol=1e-6)
    fd_x, picks_x = _fd(loss, x)
    torch.testing.assert_close(got_x.view(-1)[picks_x], fd_x, rtol=1e-4, atol=1e-6)


def test_without_create_graph_attributions_are_constants():
    model = _smooth()
    x = torch.randn(3, 4, dtype=torch.float64)
    assert not fnattr.integrated_gradients(model, x, target=0, n_steps=4).requires_grad
    assert not fnattr.neuron_gradient(model, model[2], x, (0,)).requires_grad
    assert not fnattr.internal_influence(model, model[2], x, target=0, n_steps=4).requires_grad
