"""Findings of the fuzzing pass (issue 13) and Captum-parity gaps (issue 12) that
are behaviour of the methods, not argument errors (those are in
test_normalize_errors.py, state after faults in test_methods_state.py):
autocast, empty batches, inference tensors, gradient SHAP points built as
Captum builds them, generator state after a refused call, and ``grad_kwargs``.
Threads sharing a model are in test_engine.py, tensor targets and indices in
test_normalize.py, Gauss-Legendre nodes for large ``n_steps`` in test_gauss.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fnattr
from fnattr import compat
from fnattr._catalog import CATALOG

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._reference import assert_same, bfloat16_conv, quiet
    from ._shap_reference import captum_draws, captum_gradient_shap
    from .conftest import MLP
    from ._catalog_args import ENTRIES as _ENTRIES, Setting as _Setting, call as _call
except ImportError:
    from _reference import assert_same, bfloat16_conv, quiet
    from _shap_reference import captum_draws, captum_gradient_shap
    from conftest import MLP
    from _catalog_args import ENTRIES as _ENTRIES, Setting as _Setting, call as _call


def _mlp():
    torch.manual_seed(0)
    return MLP().eval(), torch.randn(5, 6)


# ---------------------------------------------------------------- 13.6 autocast


def test_autocast_returns_input_dtype_and_layer_methods_run():
    model, x = _mlp()
    with torch.autocast("cpu"):
        ig, delta = fnattr.integrated_gradients(model, x, target=1, n_steps=4,
                                                return_convergence_delta=True)
        ii = fnattr.internal_influence(model, model.fc1, x, target=1, n_steps=4)
        lc, lc_delta = fnattr.layer_conductance(model, model.fc1, x, target=1, n_steps=4,
                                                return_convergence_delta=True)
        shap, shap_delta = fnattr.gradient_shap(model, x, torch.zeros(2, 6), target=1,
                                                return_convergence_delta=True)
    for t in (ig, delta, ii, lc, lc_delta, shap, shap_delta):
        assert t.dtype == torch.float32
    # bfloat16 forward, float32 reduction: close to the float32 result
    assert_same(ig, fnattr.integrated_gradients(model, x, target=1, n_steps=4),
                atol=5e-2, rtol=5e-2)
    assert_same(ii, fnattr.internal_influence(model, model.fc1, x, target=1, n_steps=4),
                atol=5e-2, rtol=5e-2)


# ---------------------------------------------------------------- reduced precision


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ["IntegratedGradients", "InternalInfluence",
                                  "LayerIntegratedGradients", "NeuronIntegratedGradients",
                                  "LayerConductance"])
def test_bfloat16_paths_are_placed_and_summed_like_captum(name):
    # A bfloat16 model: Captum places path points with Python-float alphas
    # (each product rounded to bfloat16) and sums the weighted gradients in
    # float32 (float32 step sizes), returning float32. fnattr does the same: its
    # quadrature was rounded to bfloat16 before, and the sum kept in it (LIG 3x,
    # conductance 2x further from the float64 model's values than Captum's).
    import captum.attr as C

    model, x = bfloat16_conv()
    site = () if name == "IntegratedGradients" else (model[0],)
    neuron = name.startswith("Neuron")
    args = ((1, 2, 2),) if neuron else ()
    kw = dict(n_steps=8) if neuron else dict(target=1, n_steps=8)
    fn = next(e.fn for e in CATALOG.values() if e.compat == name)
    ours = fn(model, *site, x, *args, **kw)
    with quiet():
        theirs = getattr(C, name)(model, *site).attribute(x, *args, **kw)
    d = _double(model)
    exact = fn(d, *((d[0],) if site else ()), x.double(), *args, **kw)
    assert ours.dtype == torch.float32
    if name == "LayerConductance":  # Captum rounds its result to bfloat16
        assert theirs.dtype == torch.bfloat16 and _rel(ours, theirs) < 2 ** -7
        assert _rel(ours, exact) <= 1.01 * _rel(theirs, exact)
    else:
        assert _rel(ours, theirs) < 1e-6
    assert _rel(ours, exact) < 0.2  # (the bfloat16 forward and backward themselves)


def _double(model):
    import copy

    return copy.deepcopy(model).double()


def test_bfloat16_gradient_shap_runs_where_captum_raises():
    # Captum's GradientShap adds float32 noise to bfloat16 inputs and the
    # model raises on the dtype; fnattr draws in the inputs' dtype and sums in
    # float32. On the same paths it lands as near the float64 model's value as
    # integrated gradients does (the bfloat16 forward and backward themselves).
    import captum.attr as C

    model, x = bfloat16_conv()
    b = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    with quiet(), pytest.raises(RuntimeError, match="should be the same"):
        C.GradientShap(model).attribute(x, b, target=1, n_samples=3)
    ours, delta = fnattr.gradient_shap(model, x, b, target=1, n_samples=3,
                                       return_convergence_delta=True,
                                       generator=torch.Generator().manual_seed(0))
    assert ours.dtype == delta.dtype == torch.float32
    ends, starts, alphas = fnattr.sample_paths((x,), (b,), 3, (0.0,),
                                               torch.Generator().manual_seed(1))
    core = CATALOG["gradient_shap"].core
    low = core(model, x, (ends, starts, alphas), 1)
    exact = core(_double(model), x.double(), (tuple(t.double() for t in ends),
                                              tuple(t.double() for t in starts),
                                              alphas.double()), 1)
    assert low.dtype == torch.float32 and _rel(low, exact) < 0.05


# ---------------------------------------------------------------- activation checkpointing


class _Checkpointed(nn.Module):
    """A block under ``torch.utils.checkpoint`` (non-reentrant, as timm's
    ``set_grad_checkpointing`` runs it, also in eval mode), or not."""

    def __init__(self, checkpointed, inplace):
        super().__init__()
        self.checkpointed = checkpointed
        self.block = nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace), nn.Linear(16, 16),
                                   nn.ReLU(inplace), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        if self.checkpointed:
            from torch.utils.checkpoint import checkpoint

            h = checkpoint(self.block, x, use_reentrant=False)
        else:
            h = self.block(x)
        return self.head(torch.tanh(h))


@pytest.mark.parametrize("entry", _ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("inplace", [False, True])
def test_checkpointed_models_give_the_same_attributions(entry, inplace):
    # The backward recomputes the checkpointed block's forward. fnattr's
    # detached parameters and layer taps used to be gone by then: every method
    # raised "recomputed values ... have different metadata" (Captum runs).
    # They now last through the backward (the layer, block.2, lies inside the
    # recomputed block; K neurons or targets too).
    torch.manual_seed(0)
    plain = _Checkpointed(False, inplace).eval()
    model = _Checkpointed(True, inplace).eval()
    model.load_state_dict(plain.state_dict())
    x = torch.randn(5, 6)
    setting = _Setting(layer="block.2", neuron=[(3,), (5,)], target=1,
                       baselines=torch.zeros(2, 6))
    got = _call(entry, model, x, setting)
    want = _call(entry, plain, x, setting)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert float(torch.as_tensor(want).abs().max()) > 0


# ---------------------------------------------------------------- 13.10 empty batches


def test_empty_batch_gives_empty_results_of_the_right_shape():
    model, _ = _mlp()
    x = torch.randn(0, 6)
    b = torch.zeros(2, 6)
    ig, d = fnattr.integrated_gradients(model, x, target=1, n_steps=3,
                                        return_convergence_delta=True)
    assert ig.shape == (0, 6) and d.shape == (0,)
    lc, d = fnattr.layer_conductance(model, model.fc1, x, target=1, n_steps=3,
                                     return_convergence_delta=True)
    assert lc.shape == (0, 8) and d.shape == (0,)
    assert fnattr.neuron_gradient(model, model.fc1, x, [1, 2]).shape == (2, 0, 6)
    assert fnattr.neuron_gradient(model, model.fc1, x, "all").shape == (8, 0, 6)
    assert fnattr.neuron_integrated_gradients(model, model.fc1, x, [1, 2],
                                              n_steps=3).shape == (2, 0, 6)
    s, d = fnattr.gradient_shap(model, x, b, target=1, return_convergence_delta=True)
    assert s.shape == (0, 6) and d.shape == (0,)
    assert fnattr.neuron_gradient_shap(model, model.fc1, x, [1, 2], b).shape == (2, 0, 6)
    e, d = fnattr.integrated_gradients(model, x, target=fnattr.each([0, 1]), n_steps=3,
                                       return_convergence_delta=True)
    assert e.shape == (2, 0, 6) and d.shape == (2, 0)
    assert fnattr.internal_influence(model, model.fc1, x, target=[], n_steps=3).shape == (0, 8)


# ---------------------------------------------------------------- 13.12 inference mode


def test_inference_tensors_are_copied_and_inference_mode_is_refused():
    model, x = _mlp()
    with torch.inference_mode():
        xi = x.clone()
    assert_same(fnattr.integrated_gradients(model, xi, target=1, n_steps=3),
                fnattr.integrated_gradients(model, x, target=1, n_steps=3), atol=0, rtol=0)
    assert_same(fnattr.neuron_gradient(model, model.fc1, xi, 2),
                fnattr.neuron_gradient(model, model.fc1, x, 2), atol=0, rtol=0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fnattr.gradient(model, x, target=1)


# ---------------------------------------------------------------- 12.1 SHAP points


def test_gradient_shap_replays_captum_at_relu_and_max_pool_kinks():
    # Inputs built so that every path point lies on a ReLU kink up to rounding:
    # x = -b (1 - a) / a puts a * x + (1 - a) * b at 0 for Captum's drawn alpha.
    # Which side of the kink a point falls on then depends on how the point is
    # rounded: only Captum's own formula gives Captum's numbers (the other form,
    # b + a * (x - b), differs here by the whole attribution).
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()
    n, b = 4, torch.randn(1, 3, 8, 8)
    _, _, alphas = captum_draws((torch.zeros(n, 3, 8, 8),), (b,), 1, 0.0, 7, 8)
    a = alphas[0].double().reshape(n, 1, 1, 1)
    x = (-b.double() * (1 - a) / a).float()
    draws = captum_draws((x,), (b,), 1, 0.0, 7, 8)
    kwargs = dict(inputs=x, baselines=b, n_samples=1, stdevs=0.0)
    expected = captum_gradient_shap((model,), dict(kwargs, target=2), 7, 8)
    # the catalog's core: the method from explicit draws (what fnattr.compile traces)
    ours = CATALOG["gradient_shap"].core(model, x, draws, 2)
    assert expected.abs().max() > 0.1
    assert (ours - expected).abs().max() <= 1e-6
    layer = model[2]
    expected = captum_gradient_shap((model, layer), dict(kwargs, neuron_selector=(2, 3, 2)),
                                    7, 8, neuron=True)
    ours = CATALOG["neuron_gradient_shap"].core(model, layer, x, draws, (2, 3, 2))
    assert expected.abs().max() > 0.1
    assert (ours - expected).abs().max() <= 1e-6


# ---------------------------------------------------------------- 13.14 generator


@pytest.mark.parametrize("bad", [dict(internal_batch_size=0), dict(target=[0, 1]),
                                 dict(stdevs=float("nan")), dict(n_samples=0)])
def test_refused_gradient_shap_call_leaves_the_generator_alone(bad):
    model, x = _mlp()
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    kwargs = {"target": 1, "generator": g, **bad}
    with pytest.raises((ValueError, TypeError)):
        fnattr.gradient_shap(model, x, torch.zeros(2, 6), **kwargs)
    assert torch.equal(g.get_state(), state)
    with pytest.raises((ValueError, TypeError)):
        fnattr.neuron_gradient_shap(model, model.fc1, x, 1, torch.zeros(2, 6), generator=g,
                                    internal_batch_size=0)
    with pytest.raises((ValueError, TypeError)):
        fnattr.neuron_gradient_shap(model, model.fc1, x, 1, torch.zeros(2, 6), generator=g,
                                    chunk_size=0)
    assert torch.equal(g.get_state(), state)


# ---------------------------------------------------------------- 12.4 grad_kwargs


def test_grad_kwargs_materialize_grads_is_accepted_as_in_captum():
    from captum.attr import InternalInfluence, LayerConductance

    model, x = _mlp()
    gk = {"materialize_grads": True}
    with quiet():
        expected = InternalInfluence(model, model.fc1).attribute(x, target=1, n_steps=4,
                                                                 grad_kwargs=gk)
        expected_lc = LayerConductance(model, model.fc1).attribute(x, target=1, n_steps=4,
                                                                  grad_kwargs=gk)
    assert_same(fnattr.internal_influence(model, model.fc1, x, target=1, n_steps=4,
                                          grad_kwargs=gk), expected)
    assert_same(compat.InternalInfluence(model, model.fc1).attribute(
        x, target=1, n_steps=4, grad_kwargs=gk), expected)
    assert_same(fnattr.layer_conductance(model, model.fc1, x, target=1, n_steps=4,
                                         grad_kwargs=gk), expected_lc)


# ---------------------------------------------------------------- None entries in a layer value


class _WithNone(nn.Module):
    """``layer(h, c)`` returning ``(out, c)``: ``c`` is None, a bool mask or integer
    positions (``with_none``), or the plain ``layer(h)`` returning ``out`` (False)."""

    def __init__(self, with_none):
        super().__init__()
        self.with_none = with_none
        self.block = nn.Linear(6, 8)
        self.layer = _Pair(with_none)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.block(x))
        if not self.with_none:
            return self.fc(self.layer(h))
        c = {True: None, "bool": x[:, :3] > 0,
             "long": torch.arange(3).expand(x.shape[0], 3)}[self.with_none]
        return self.fc(self.layer(h, c)[0])


class _Pair(nn.Module):
    def __init__(self, with_none):
        super().__init__()
        self.with_none, self.lin = with_none, nn.Linear(8, 8)

    def forward(self, h, c=None):
        out = torch.sin(self.lin(h))
        return (out, c) if self.with_none else out


@pytest.mark.parametrize("entry", [e for e in _ENTRIES if e.site != "inputs"],
                         ids=lambda e: e.name)
@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("constant", [True, "bool", "long"], ids=["None", "bool", "long"])
def test_none_entries_of_a_layer_value_are_left_out(entry, to_input, constant):
    # A layer returning (h, None), or called as layer(h, None): Captum raises
    # AttributeError on the None; fnattr attributes to the tensors (one here, so
    # one tensor comes back) and equals the same layer without the None. A bool
    # mask or integer positions beside h (a Hugging Face block called as
    # block(h, mask)) are left in place likewise: Captum raises on those too.
    torch.manual_seed(0)
    plain, model = _WithNone(False).eval(), _WithNone(constant).eval()
    model.load_state_dict(plain.state_dict())
    x = torch.randn(4, 6)
    side = "attribute_to_neuron_input" if entry.site == "neuron" \
        else "attribute_to_layer_input"
    extra = {side: True} if to_input else {}
    setting = _Setting(layer="layer", neuron=(2,), target=1, baselines=torch.zeros(2, 6),
                       extra=extra)
    got = _call(entry, model, x, setting)
    want = _call(entry, plain, x, setting)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert float(want.abs().max()) > 0
