"""The values that flow between fnattr's modules (issue 14): Functional, Objective, Site.

Each is a small frozen value passed as an argument; nothing is stuck onto a
function or kept in a module-level registry.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import fnattr
from fnattr import _engine
from fnattr._functional import Functional
from fnattr._objectives import Objective, as_objective


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def test_functional_is_a_frozen_value_with_its_model_and_rule():
    model = _mlp()
    f = fnattr.functional(model)
    assert isinstance(f, Functional) and f.root is model and f.rule is None and f.detach
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.rule = "guided"
    x = torch.randn(2, 4)
    torch.testing.assert_close(f(x), model(x))
    assert fnattr.functional(f) is f                      # no double wrapping
    live = fnattr.functional(f, detach=False)
    assert live.root is model and not live.detach
    ruled = fnattr.with_rule(model, fnattr.deconv_relu)
    assert ruled.root is model and ruled.rule == "deconv"
    assert fnattr.functional(ruled).rule == "deconv"      # functional keeps the rule
    inner_wins = fnattr.with_rule(fnattr.with_rule(model, fnattr.guided_relu), fnattr.deconv_relu)
    assert inner_wins.rule == "guided"
    with pytest.raises(TypeError, match="`forward_func`"):
        fnattr.functional(5)
    dp = nn.DataParallel(model)
    assert fnattr.functional(dp).root is model


def test_functional_detaches_parameters_and_restores_them():
    model = _mlp()
    x = torch.randn(2, 4)
    before = [p for p in model.parameters()]
    out = fnattr.functional(model)(x)
    assert not out.requires_grad                          # no parameter graph
    assert [p for p in model.parameters()] == before and all(p.requires_grad for p in before)
    assert fnattr.functional(model, detach=False)(x).requires_grad


def test_objectives_carry_k_and_squeeze():
    out = torch.arange(12.0).reshape(4, 3)
    one = fnattr.target_objective(2)
    assert (one.k, one.squeeze, one.reads_layer) == (1, True, False)
    assert one.fn(out, None).shape == (1, 4) and one(out).shape == (4,)
    torch.testing.assert_close(one(out), out[:, 2])
    many = fnattr.target_objective(fnattr.each([0, 2]))
    assert (many.k, many.squeeze) == (2, False) and many(out).shape == (2, 4)
    assert fnattr.targets_objective([1]).fn(out, None).shape == (1, 4)
    neuron = fnattr.neuron_objective((1,))
    assert (neuron.k, neuron.squeeze, neuron.reads_layer) == (1, True, True)
    assert fnattr.neuron_objective([(0,), (1,)]).k == 2
    assert fnattr.neuron_objective("all").k is None       # known once the layer is seen
    mine = as_objective(lambda o, v: o.sum(1), reads_layer=False)
    assert isinstance(mine, Objective) and mine.k is None and not mine.squeeze


def test_objective_rows_follow_the_path_layout():
    target = torch.tensor([2, 0, 1])
    rows = fnattr.target_objective(target).rows(1, 3, 2, 3)   # examples 1:3, two steps
    assert torch.equal(rows.targets[0], torch.tensor([0, 1, 0, 1]))
    again = fnattr.target_objective(target).repeat(2)         # example-major copies
    assert torch.equal(again.targets[0], torch.tensor([2, 2, 0, 0, 1, 1]))
    neuron = fnattr.neuron_objective((0,))
    assert neuron.rows(0, 1, 3, 3) is neuron                   # per-layer, not per-example


def test_user_objective_gets_k_from_its_shape():
    model = _mlp()
    x = torch.randn(3, 4)
    (g1,) = fnattr.input_gradients(model, (x,), lambda out, _: out[:, 0])
    (gk,) = fnattr.input_gradients(model, (x,), lambda out, _: out[:, :2].T)
    assert g1.shape == x.shape and gk.shape == (2, *x.shape)
    torch.testing.assert_close(gk[0], g1)


def test_no_global_slot_registry():
    assert not hasattr(_engine, "_SLOTS")
    model = _mlp()
    compiled_layer = fnattr._compile.prepare(
        fnattr._catalog.lookup(fnattr.neuron_gradient), model, model[0])
    assert compiled_layer.slots.layer is model[0]          # the slots travel in the value
    assert not model[0]._forward_hooks                      # registered only around calls


def test_sites_are_values():
    model = _mlp()
    site = _engine.Site(model[0], input_side=True)
    assert site == _engine.Site(model[0], True) and _engine.INPUTS.layer is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        site.input_side = False
