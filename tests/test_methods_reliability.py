"""Findings of the fuzzing pass (issue 13) and Captum-parity gaps (issue 12) that
are behaviour, not argument errors (those are in test_normalize_errors.py, state after
faults in test_methods_state.py): threads sharing a model, tensor targets and indices,
autocast, empty batches, inference tensors, Gauss-Legendre nodes for large
``n_steps``, gradient SHAP points built as Captum builds them, generator state
after a refused call, and ``grad_kwargs``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import fnattr
from fnattr import _gauss, compat
from fnattr._methods import _gradient_shap, _neuron_gradient_shap

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._reference import assert_same, quiet
    from ._shap_reference import captum_draws, captum_gradient_shap
    from .conftest import MLP, ConvNet
except ImportError:
    from _reference import assert_same, quiet
    from _shap_reference import captum_draws, captum_gradient_shap
    from conftest import MLP, ConvNet


def _mlp():
    torch.manual_seed(0)
    return MLP().eval(), torch.randn(5, 6)


# ---------------------------------------------------------------- 13.3 threads


def test_threads_sharing_a_model_get_single_thread_results():
    model, x = _mlp()
    calls = {
        "internal_influence": lambda: fnattr.internal_influence(model, model.fc1, x, target=1,
                                                                n_steps=8),
        "neuron_gradient": lambda: fnattr.neuron_gradient(model, model.fc2, x, [2, 3]),
    }
    reference = {k: f() for k, f in calls.items()}
    failures: list = []
    start = threading.Barrier(4)

    def work(i: int) -> None:
        start.wait()
        for j in range(25):
            name = list(calls)[(i + j) % 2]
            try:
                ok = torch.equal(calls[name](), reference[name])
            except Exception as e:  # a false "layer was not called", say
                ok = repr(e)
            if ok is not True:
                failures.append((i, j, name, ok))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert all(p.requires_grad for p in model.parameters())  # the live parameters are back
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_tap_lets_another_threads_forward_through():
    # A hook of a call in flight in one thread leaves another thread's plain
    # forward through the same module untouched.
    model, x = _mlp()
    expected = model(x)
    seen = []

    def selector(value):
        t = threading.Thread(target=lambda: seen.append(model(x)))
        t.start()
        t.join()
        return value[:, 0]

    fnattr.neuron_gradient(model, model.fc1, x, selector)
    assert_same(seen[0], expected, atol=0, rtol=0)


# ---------------------------------------------------------------- 13.4 / 12.2 targets


def test_tensor_targets_mean_what_ints_mean():
    model, x = _mlp()
    ii = lambda t: fnattr.internal_influence(model, model.fc2, x, target=t, n_steps=3)
    assert_same(ii(torch.tensor(-1)), ii(3), atol=0, rtol=0)
    assert_same(ii(torch.tensor(2, dtype=torch.int32)), ii(2), atol=0, rtol=0)
    # 12.2: a one-element tensor is that class for every example, as in Captum
    assert_same(ii(torch.tensor([2])), ii(2), atol=0, rtol=0)
    assert_same(fnattr.gradient(model, x, torch.tensor([2])), fnattr.gradient(model, x, 2))
    # negative per-example targets index from the end, as a negative int does
    assert_same(ii([-1, 0, -4, 1, -2]), ii([3, 0, 0, 1, 2]), atol=0, rtol=0)
    assert_same(ii(torch.tensor([-1, 0, -4, 1, -2])), ii([3, 0, 0, 1, 2]), atol=0, rtol=0)


def test_one_element_tensor_target_matches_captum():
    from captum.attr import IntegratedGradients

    model, x = _mlp()
    with quiet():
        expected = IntegratedGradients(model).attribute(x, target=torch.tensor([2]), n_steps=5)
    ours = fnattr.integrated_gradients(model, x, target=torch.tensor([2]), n_steps=5)
    assert_same(ours, expected)
    g = torch.Generator().manual_seed(0)
    shap = fnattr.gradient_shap(model, x, torch.zeros(2, 6), target=torch.tensor([2]),
                                return_convergence_delta=True, generator=g)
    g = torch.Generator().manual_seed(0)
    assert_same(shap[0], fnattr.gradient_shap(model, x, torch.zeros(2, 6), target=2,
                                              generator=g))


def test_tensor_neuron_indices_mean_what_ints_mean():
    torch.manual_seed(0)
    model, img = ConvNet().eval(), torch.randn(2, 3, 8, 8)
    ng = lambda s: fnattr.neuron_gradient(model, model.conv2, img, s)
    t = torch.tensor
    assert_same(ng((t(1), t(-1), t(0))), ng((1, 3, 0)), atol=0, rtol=0)
    assert_same(ng([(t(1), t(2), t(0)), (0, 1, 1)]), ng([(1, 2, 0), (0, 1, 1)]), atol=0,
                rtol=0)


def test_callable_selector_returning_n_by_1_matches_captum():
    from captum.attr import NeuronGradient

    model, x = _mlp()
    selector = lambda v: v[:, 2:3] * v[:, 3:4]  # shape (N, 1)
    with quiet():
        expected = NeuronGradient(model, model.fc1).attribute(x, selector)
    assert_same(fnattr.neuron_gradient(model, model.fc1, x, selector), expected)
    assert_same(fnattr.neuron_gradient(model, model.fc1, x, [selector, 1])[0], expected)


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


# ---------------------------------------------------------------- 13.8 Gauss-Legendre


@pytest.mark.parametrize("n", [30, 201, 500])
def test_fast_gauss_legendre_equals_numpy(n, monkeypatch):
    monkeypatch.setattr(_gauss, "EXACT_MAX", 0)  # the asymptotic path, also for small n
    nodes, weights = _gauss.gauss_legendre(n)
    ref_nodes, ref_weights = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(nodes, ref_nodes, rtol=0, atol=1e-15)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=5e-14)


def test_gauss_legendre_up_to_200_is_numpys_bit_for_bit():
    for n in (1, 2, 7, 50, 200):
        nodes, weights = np.polynomial.legendre.leggauss(n)
        alphas, w = fnattr.quadrature("gausslegendre", n)
        assert alphas == tuple((0.5 * (1 + nodes)).tolist())
        assert w == tuple((0.5 * weights).tolist())


def test_gauss_legendre_large_n_integrates_exactly():
    n = 20_000  # leggauss would take minutes; the rule must integrate degree < 2n exactly
    alphas, weights = map(np.array, fnattr.quadrature("gausslegendre", n))
    assert len(alphas) == n and np.all(np.diff(alphas) > 0)
    assert abs(weights.sum() - 1) < 1e-13
    assert abs((weights * alphas**3).sum() - 0.25) < 1e-13
    assert abs((weights * np.cos(40 * alphas)).sum() - np.sin(40) / 40) < 1e-13
    for n in range(2, 2 + 2 * fnattr._transforms.QUADRATURE_CACHE):
        fnattr.quadrature("riemann_left", n)
    assert len(fnattr._transforms._QUADRATURE) <= fnattr._transforms.QUADRATURE_CACHE


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
    ours = _gradient_shap(model, (x,), False, draws, 2, None, False, True, False, None)
    assert expected.abs().max() > 0.1
    assert (ours - expected).abs().max() <= 1e-6
    layer = model[2]
    expected = captum_gradient_shap((model, layer), dict(kwargs, neuron_selector=(2, 3, 2)),
                                    7, 8, neuron=True)
    ours = _neuron_gradient_shap(model, layer, (x,), False, draws, (2, 3, 2), None, False,
                                 True, False, None, None)
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
