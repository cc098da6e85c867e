"""fnattr.compat against Captum 0.9 (the noise tunnel is in test_noise.py).

Captum is the oracle: the same call on the same model gives the same numbers
(``assert_same``: atol 1e-6, rtol 1e-5).
"""

from __future__ import annotations

import inspect

import pytest
import torch

import captum.attr as C
import fnattr
from fnattr import compat
from fnattr._catalog import CATALOG

try:
    from ._reference import assert_same, quiet
    from .conftest import MLP, compat_ctor, compat_setup
except ImportError:
    from _reference import assert_same, quiet
    from conftest import MLP, compat_ctor, compat_setup

NEW = ["IntegratedGradients", "NeuronIntegratedGradients", "LayerConductance", "Saliency"]
CLASSES = [n for n in compat.__all__ if n != "LayerAttribution"]


def _params(sig, skip_extras=True):
    return [(p.name, p.default) for p in sig.parameters.values()
            if not (skip_extras and p.kind in (p.VAR_KEYWORD, p.KEYWORD_ONLY))]


@pytest.mark.parametrize("name", CLASSES)
def test_signatures_and_meta_match_captum(name):
    ours, theirs = getattr(compat, name), getattr(C, name)
    assert _params(inspect.signature(ours.attribute)) == _params(
        inspect.signature(theirs.attribute))
    assert _params(inspect.signature(ours.__init__)) == _params(
        inspect.signature(theirs.__init__))
    assert ours.get_name() == theirs.get_name()
    model = MLP().eval()
    for kw in ({}, {"multiply_by_inputs": False}):
        if name == "NoiseTunnel":
            a, b = ours(compat.IntegratedGradients(model, **kw)), theirs(
                C.IntegratedGradients(model, **kw))
        elif "multiply_by_inputs" not in inspect.signature(theirs.__init__).parameters:
            if kw:
                continue
            args = (model, model.fc2) if "layer" in inspect.signature(theirs.__init__).parameters \
                else (model,)
            a, b = ours(*args), theirs(*args)
        else:
            args = (model, model.fc2) if "layer" in inspect.signature(theirs.__init__).parameters \
                else (model,)
            a, b = ours(*args, **kw), theirs(*args, **kw)
        assert a.has_convergence_delta() == b.has_convergence_delta()
        assert a.multiplies_by_inputs == b.multiplies_by_inputs
        with pytest.raises(NotImplementedError, match="attribute_future"):
            a.attribute_future()


def test_every_catalog_method_has_its_compat_class():
    names = {m.compat for m in CATALOG.values()}
    assert None not in names
    for name in names:
        cls = getattr(compat, name)
        assert name in compat.__all__ and cls.__name__ == name and cls.__doc__
        assert cls.__module__ == "fnattr.compat"


CASES = [
    ("Saliency", "mlp", dict(target=2)),
    ("Saliency", "multi", dict(target=[0, 2, 1], abs=False)),
    ("IntegratedGradients", "mlp", dict(target=1, n_steps=7, return_convergence_delta=True)),
    ("IntegratedGradients", "multi", dict(target=[0, 2, 1], baselines=(0.1, torch.ones(1, 3)),
                                          method="riemann_trapezoid", n_steps=5,
                                          internal_batch_size=4)),
    ("NeuronIntegratedGradients", "mlp", dict(neuron_selector=(3,), n_steps=6)),
    ("NeuronIntegratedGradients", "multi", dict(neuron_selector=1, n_steps=4,
                                                attribute_to_neuron_input=True)),
    ("LayerConductance", "mlp", dict(target=0, n_steps=6, return_convergence_delta=True)),
    ("LayerConductance", "multi", dict(target=[1, 1, 0], n_steps=5, method="riemann_left",
                                       attribute_to_layer_input=True)),
]


@pytest.mark.parametrize("name, kind, kwargs", CASES)
def test_new_classes_match_captum(name, kind, kwargs):
    model, x, args = compat_setup(kind)
    if args is not None:
        kwargs = dict(kwargs, additional_forward_args=args)
    ctor = compat_ctor(name, model)
    with quiet():
        expected = getattr(C, name)(*ctor).attribute(x, **kwargs)
    assert_same(getattr(compat, name)(*ctor).attribute(x, **kwargs), expected)


def test_multiply_by_inputs_false_and_saliency_abs_default():
    model, x, _ = compat_setup("mlp")
    with quiet():
        for name in ("IntegratedGradients", "NeuronIntegratedGradients"):
            ctor = compat_ctor(name, model)
            kw = dict(neuron_selector=(2,)) if len(ctor) > 1 else dict(target=3)
            expected = getattr(C, name)(*ctor, multiply_by_inputs=False).attribute(x, **kw)
            got = getattr(compat, name)(*ctor, multiply_by_inputs=False).attribute(x, **kw)
            assert_same(got, expected)
    sal = compat.Saliency(model).attribute(x, 1)
    assert (sal >= 0).all() and (compat.Saliency(model).attribute(x, 1, False) < 0).any()
    assert_same(sal, fnattr.gradient(model, x, 1).abs())


def test_layer_integrated_gradients_shell_checks_grad_kwargs_by_key():
    # the same rule as the functions that take grad_kwargs: honoured keys pass,
    # any other key is refused by name (issue 12.4), not a blanket refusal
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x = torch.randn(5, 4)
    lig = compat.LayerIntegratedGradients(model, model[0])
    plain = lig.attribute(x, target=1, n_steps=8)
    torch.testing.assert_close(
        lig.attribute(x, target=1, n_steps=8, grad_kwargs={"materialize_grads": True}), plain)
    with pytest.raises(ValueError, match="`grad_kwargs` key 'retain_graph'"):
        lig.attribute(x, target=1, n_steps=8, grad_kwargs={"retain_graph": True})
