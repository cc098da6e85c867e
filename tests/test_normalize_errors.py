"""Bad arguments: a ValueError / TypeError (IndexError for an out-of-range
index) whose message names the offending argument -- never a bare assert, a
RuntimeError or a shape error from deep inside PyTorch.

Each case is one call; the test asserts the exception type and that the
message matches the argument's name.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fnattr
from fnattr import compat

try:  # tests/ as a package (tests/__init__.py) or as a plain directory
    from ._catalog_args import ENTRIES, Setting, call
    from ._reference import Out3D, TupleNet
    from .conftest import MLP, ConvNet, MultiInput
except ImportError:
    from _catalog_args import ENTRIES, Setting, call
    from _reference import Out3D, TupleNet
    from conftest import MLP, ConvNet, MultiInput

BAD = (ValueError, TypeError, IndexError)


class Env:
    """Models and inputs, built fresh for each case."""

    def __init__(self):
        torch.manual_seed(0)
        self.mlp = MLP().eval()
        self.x = torch.randn(3, 6)
        self.conv = ConvNet().eval()
        self.img = torch.randn(2, 3, 8, 8)
        self.multi = MultiInput().eval()
        self.xs = (torch.randn(3, 4), torch.randn(3, 3))
        self.tuple = TupleNet().eval()
        self.out3d = Out3D().eval()


def ng(e, **kw):
    args = dict(forward_func=e.mlp, layer=e.mlp.fc1, inputs=e.x, neuron_selector=2)
    args.update(kw)
    return fnattr.neuron_gradient(**args)


def ii(e, **kw):
    args = dict(forward_func=e.mlp, layer=e.mlp.fc2, inputs=e.x, target=1, n_steps=3)
    args.update(kw)
    return fnattr.internal_influence(**args)


CASES = [
    # --------------------------------------------------------------- inputs
    ("inputs-list", lambda e: ng(e, inputs=[e.x]), "inputs", BAD),
    ("inputs-ndarray", lambda e: ii(e, inputs=e.x.numpy()), "inputs", BAD),
    ("inputs-tuple-with-non-tensor", lambda e: ng(e, forward_func=e.multi,
                                                  layer=e.multi.relu,
                                                  inputs=(e.xs[0], [1.0, 2.0])), "inputs", BAD),
    ("inputs-tuple-batch-mismatch", lambda e: ng(e, forward_func=e.multi, layer=e.multi.relu,
                                                 inputs=(e.xs[0], e.xs[1][:2])), "inputs", BAD),
    ("inputs-tuple-batch-mismatch-ii", lambda e: ii(e, forward_func=e.multi, layer=e.multi.relu,
                                                    inputs=(e.xs[0][:1], e.xs[1])),
     "inputs", BAD),
    ("inputs-empty-tuple", lambda e: ii(e, inputs=()), "inputs", BAD),
    ("inputs-0d", lambda e: ng(e, inputs=torch.tensor(1.0)), "inputs", BAD),
    # --------------------------------------------------------------- baselines
    ("baselines-wrong-shape", lambda e: ii(e, baselines=torch.zeros(3, 5)), "baselines", BAD),
    ("baselines-wrong-batch", lambda e: ii(e, baselines=torch.zeros(2, 6)), "baselines", BAD),
    ("baselines-wrong-ndim", lambda e: ii(e, baselines=torch.zeros(6)), "baselines", BAD),
    ("baselines-tuple-too-long", lambda e: ii(e, baselines=(0.0, 0.0)), "baselines", BAD),
    ("baselines-tuple-too-short", lambda e: ii(e, forward_func=e.multi, layer=e.multi.relu,
                                               inputs=e.xs, baselines=(0.0,)), "baselines", BAD),
    ("baselines-str", lambda e: ii(e, baselines="zeros"), "baselines", BAD),
    ("baselines-list", lambda e: ii(e, baselines=[0.0] * 6), "baselines", BAD),
    ("baselines-bool", lambda e: ii(e, baselines=True), "baselines", BAD),
    ("baselines-ig-wrong-shape", lambda e: fnattr.integrated_gradients(
        e.mlp, e.x, torch.zeros(3, 2), target=0, n_steps=2), "baselines", BAD),
    # --------------------------------------------------------------- target
    ("target-list-too-short", lambda e: ii(e, target=[0, 1]), "target", BAD),
    ("target-list-too-long", lambda e: ii(e, target=[0, 1, 2, 3]), "target", BAD),
    ("target-float-tensor", lambda e: ii(e, target=torch.tensor([0.0, 1.0, 2.0])), "target",
     BAD),
    ("target-float", lambda e: ii(e, target=1.0), "target", BAD),
    ("target-str", lambda e: ii(e, target="cat"), "target", BAD),
    ("target-bool", lambda e: ii(e, target=True), "target", BAD),
    ("target-int-out-of-range", lambda e: ii(e, target=4), "target", BAD),
    ("target-negative-out-of-range", lambda e: ii(e, target=-5), "target", BAD),
    ("target-list-out-of-range", lambda e: ii(e, target=[0, 9, 1]), "target", BAD),
    ("target-tensor-out-of-range", lambda e: ii(e, target=torch.tensor([0, 1, 4])), "target",
     BAD),
    ("target-2d-tensor", lambda e: ii(e, target=torch.zeros(3, 1, dtype=torch.long)), "target",
     BAD),
    ("target-tuple-too-long", lambda e: ii(e, target=(1, 0)), "target", BAD),
    ("target-tuple-too-long-3d", lambda e: ii(e, forward_func=e.out3d, layer=e.out3d.fc1,
                                              target=(1, 0, 0)), "target", BAD),
    ("target-tuple-non-int", lambda e: ii(e, forward_func=e.out3d, layer=e.out3d.fc1,
                                          target=(1, 0.5)), "target", BAD),
    ("target-list-of-tuples-out-of-range", lambda e: ii(
        e, forward_func=e.out3d, layer=e.out3d.fc1, target=[(0, 1), (2, 0), (1, 1)]),
     "target", BAD),
    ("target-list-of-tuples-wrong-length", lambda e: ii(
        e, forward_func=e.out3d, layer=e.out3d.fc1, target=[(0, 1), (1,), (1, 1)]),
     "target", BAD),
    ("target-list-of-ints-on-3d-output", lambda e: ii(
        e, forward_func=e.out3d, layer=e.out3d.fc1, target=[0, 1, 1]), "target", BAD),
    ("target-none-on-multi-output", lambda e: ii(e, target=None), "target", BAD),
    ("target-mixed-list", lambda e: ii(e, target=[0, (1,), 2]), "target", BAD),
    ("target-ig-out-of-range", lambda e: fnattr.integrated_gradients(e.mlp, e.x, target=7,
                                                                     n_steps=2), "target", BAD),
    # --------------------------------------------------------------- n_steps / method
    ("n_steps-0-gausslegendre", lambda e: ii(e, n_steps=0), "n_steps", BAD),
    ("n_steps-1-riemann", lambda e: ii(e, n_steps=1, method="riemann_trapezoid"), "n_steps",
     BAD),
    ("n_steps-1-riemann-left", lambda e: ii(e, n_steps=1, method="riemann_left"), "n_steps",
     BAD),
    ("n_steps-negative", lambda e: ii(e, n_steps=-3), "n_steps", BAD),
    ("n_steps-float", lambda e: ii(e, n_steps=2.5), "n_steps", BAD),
    ("n_steps-0-conductance", lambda e: fnattr.layer_conductance(e.mlp, e.mlp.fc1, e.x,
                                                                 target=0, n_steps=0),
     "n_steps", BAD),
    ("n_steps-1-riemann-ig", lambda e: fnattr.integrated_gradients(
        e.mlp, e.x, target=0, n_steps=1, method="riemann_right"), "n_steps", BAD),
    ("method-unknown", lambda e: ii(e, method="simpson"), "method", BAD),
    ("method-capitalized", lambda e: ii(e, method="GaussLegendre"), "method", BAD),
    ("method-none", lambda e: ii(e, method=None), "method", BAD),
    ("method-unknown-nig", lambda e: fnattr.neuron_integrated_gradients(
        e.mlp, e.mlp.fc1, e.x, 1, method="riemann"), "method", BAD),
    # --------------------------------------------------------------- internal_batch_size
    ("internal_batch_size-0", lambda e: ii(e, internal_batch_size=0), "internal_batch_size",
     BAD),
    ("internal_batch_size-negative", lambda e: ii(e, internal_batch_size=-2),
     "internal_batch_size", BAD),
    ("internal_batch_size-float", lambda e: ii(e, internal_batch_size=2.0),
     "internal_batch_size", BAD),
    ("internal_batch_size-0-ig", lambda e: fnattr.integrated_gradients(
        e.mlp, e.x, target=0, n_steps=2, internal_batch_size=0), "internal_batch_size", BAD),
    # --------------------------------------------------------------- neuron_selector
    ("selector-str", lambda e: ng(e, neuron_selector="3"), "neuron_selector", BAD),
    ("selector-float", lambda e: ng(e, neuron_selector=2.0), "neuron_selector", BAD),
    ("selector-none", lambda e: ng(e, neuron_selector=None), "neuron_selector", BAD),
    ("selector-bool", lambda e: ng(e, neuron_selector=True), "neuron_selector", BAD),
    ("selector-dict", lambda e: ng(e, neuron_selector={0: 1}), "neuron_selector", BAD),
    ("selector-tuple-with-float", lambda e: ng(e, neuron_selector=(1.5,)), "neuron_selector",
     BAD),
    ("selector-tuple-with-str", lambda e: ng(e, forward_func=e.conv, layer=e.conv.conv2,
                                             inputs=e.img, neuron_selector=(0, "a", 1)),
     "neuron_selector", BAD),
    ("selector-out-of-range", lambda e: ng(e, neuron_selector=8), "neuron_selector",
     IndexError),
    ("selector-negative-out-of-range", lambda e: ng(e, neuron_selector=-9), "neuron_selector",
     IndexError),
    ("selector-tuple-out-of-range-conv", lambda e: ng(e, forward_func=e.conv,
                                                      layer=e.conv.conv2, inputs=e.img,
                                                      neuron_selector=(6, 0, 0)),
     "neuron_selector", IndexError),
    ("selector-tuple-out-of-range-spatial", lambda e: ng(e, forward_func=e.conv,
                                                         layer=e.conv.conv2, inputs=e.img,
                                                         neuron_selector=(0, 4, 0)),
     "neuron_selector", IndexError),
    ("selector-too-short", lambda e: ng(e, forward_func=e.conv, layer=e.conv.conv2,
                                        inputs=e.img, neuron_selector=(1,)),
     "neuron_selector", BAD),
    ("selector-int-on-conv", lambda e: ng(e, forward_func=e.conv, layer=e.conv.conv2,
                                          inputs=e.img, neuron_selector=1),
     "neuron_selector", BAD),
    ("selector-too-long", lambda e: ng(e, neuron_selector=(1, 0)), "neuron_selector", BAD),
    ("selector-on-tuple-valued-layer", lambda e: ng(e, forward_func=e.tuple,
                                                    layer=e.tuple.split, neuron_selector=1),
     "neuron_selector", BAD),
    ("selector-callable-wrong-shape", lambda e: ng(e, neuron_selector=lambda v: v[:, :2]),
     "neuron_selector", BAD),
    ("selector-callable-wrong-length", lambda e: ng(e, neuron_selector=lambda v: v[:2, 0]),
     "neuron_selector", BAD),
    ("selector-callable-non-tensor", lambda e: ng(e, neuron_selector=lambda v: 1.0),
     "neuron_selector", BAD),
    ("selector-empty-list", lambda e: ng(e, neuron_selector=[]), "neuron_selector", BAD),
    ("selector-list-with-bad-entry", lambda e: ng(e, neuron_selector=[0, "x"]),
     "neuron_selector", BAD),
    ("selector-list-with-out-of-range", lambda e: ng(e, neuron_selector=[0, 8]),
     "neuron_selector", IndexError),
    ("selector-nig-out-of-range", lambda e: fnattr.neuron_integrated_gradients(
        e.mlp, e.mlp.fc1, e.x, 8, n_steps=2), "neuron_selector", IndexError),
    ("chunk_size-0", lambda e: ng(e, neuron_selector=[0, 1], chunk_size=0), "chunk_size", BAD),
    # --------------------------------------------------------------- layer
    ("layer-not-in-model", lambda e: ng(e, layer=nn.Linear(6, 8)), r"\blayer\b", BAD),
    ("layer-not-in-model-ii", lambda e: ii(e, layer=nn.ReLU()), r"\blayer\b", BAD),
    ("layer-unknown-name", lambda e: ng(e, layer="fc9"), r"\blayer\b", BAD),
    ("layer-unknown-dotted-name", lambda e: ii(e, layer="fc1.weight.x"), r"\blayer\b", BAD),
    ("layer-name-of-parameter", lambda e: ng(e, layer="fc1.weight"), r"\blayer\b", BAD),
    ("layer-name-non-module-forward", lambda e: ng(e, forward_func=lambda x: e.mlp(x),
                                                   layer="fc1"), r"\blayer\b", BAD),
    ("layer-int", lambda e: ng(e, layer=3), r"\blayer\b", BAD),
    ("layer-none", lambda e: ii(e, layer=None), r"\blayer\b", BAD),
    # --------------------------------------------------------------- forward_func
    ("forward_func-not-callable", lambda e: ng(e, forward_func=42, layer=e.mlp.fc1),
     "forward_func", BAD),
    ("forward_func-not-callable-ii", lambda e: ii(e, forward_func="model", layer=e.mlp.fc1),
     "forward_func", BAD),
    ("compat-forward_func-none", lambda e: compat.NeuronGradient(None, e.mlp.fc1),
     "forward_func", BAD),
    ("compat-forward_func-str", lambda e: compat.InternalInfluence("mlp", e.mlp.fc1),
     "forward_func", BAD),
    ("compat-grad_kwargs", lambda e: compat.InternalInfluence(e.mlp, e.mlp.fc1).attribute(
        e.x, target=0, n_steps=2, grad_kwargs={"retain_graph": True}), "grad_kwargs", BAD),
    ("compat-selector-out-of-range", lambda e: compat.NeuronGradient(e.mlp, e.mlp.fc2)
     .attribute(e.x, 8), "neuron_selector", IndexError),
    ("compat-target-list-too-short", lambda e: compat.InternalInfluence(e.mlp, e.mlp.fc2)
     .attribute(e.x, target=[0], n_steps=2), "target", BAD),
    # --------------------------------------------------------------- interpolate
    ("interpolate-2d", lambda e: fnattr.interpolate(torch.randn(3, 8), (16,)),
     "layer_attribution", BAD),
    ("interpolate-1d", lambda e: fnattr.interpolate(torch.randn(8), 4), "layer_attribution",
     BAD),
    ("interpolate-not-tensor", lambda e: fnattr.interpolate([[1.0]], 4), "layer_attribution",
     BAD),
    ("compat-interpolate-2d", lambda e: compat.LayerAttribution.interpolate(
        torch.randn(3, 8), (16,)), "layer_attribution", BAD),
    # --------------------------------------------------------------- convergence_delta
    # (input attributions come one per input (12.8); a layer's, with
    # layer_attributions=True, may be any number, as Captum's layer classes check them)
    ("delta-attributions-count", lambda e: fnattr.convergence_delta(
        e.multi, torch.zeros(3, 6), (0.0, 0.0), e.xs, 0), "attributions", BAD),
    ("delta-attributions-count-tuple", lambda e: fnattr.convergence_delta(
        e.mlp, (torch.zeros(3, 6), torch.zeros(3, 6)), None, e.x, 0), "attributions", BAD),
    ("compat-delta-attributions-count", lambda e: compat.IntegratedGradients(e.multi)
     .compute_convergence_delta(torch.zeros(3, 6), (0.0, 0.0), e.xs, 0), "attributions", BAD),
    ("compat-nt-delta-attributions-count", lambda e: compat.NoiseTunnel(
        compat.IntegratedGradients(e.multi)).compute_convergence_delta(
        torch.zeros(3, 6), (0.0, 0.0), e.xs, 0), "attributions", BAD),
    ("delta-layer_attributions-not-bool", lambda e: fnattr.convergence_delta(
        e.mlp, torch.zeros(3, 6), None, e.x, 0, layer_attributions="yes"),
     "layer_attributions", TypeError),
    ("delta-attributions-batch", lambda e: fnattr.convergence_delta(
        e.mlp, torch.zeros(2, 6), None, e.x, 0), "attributions", BAD),
    ("delta-attributions-batch-tuple", lambda e: fnattr.convergence_delta(
        e.multi, (torch.zeros(3, 6), torch.zeros(1, 6)), (0.0, 0.0), e.xs, 0),
     "attributions", BAD),
    ("delta-attributions-not-tensor", lambda e: fnattr.convergence_delta(
        e.mlp, [0.0] * 3, None, e.x, 0), "attributions", BAD),
    ("delta-start_point-shape", lambda e: fnattr.convergence_delta(
        e.mlp, torch.zeros(3, 6), torch.zeros(3, 4), e.x, 0), "start_point", BAD),
    ("delta-end_point-not-tensor", lambda e: fnattr.convergence_delta(
        e.mlp, torch.zeros(3, 6), None, "x", 0), "end_point", BAD),
    ("delta-target-list-too-short", lambda e: fnattr.convergence_delta(
        e.mlp, torch.zeros(3, 6), None, e.x, [0, 1]), "target", BAD),
    # --------------------------------------------------------------- issue 13: tensor
    # targets and indices are validated exactly as ints (13.4)
    ("target-0d-tensor-negative-out-of-range", lambda e: ii(e, target=torch.tensor(-5)),
     "target", IndexError),
    ("target-0d-tensor-out-of-range", lambda e: ii(e, target=torch.tensor(4)), "target",
     IndexError),
    ("target-0d-float-tensor", lambda e: ii(e, target=torch.tensor(1.7)), "target", TypeError),
    ("target-0d-bool-tensor", lambda e: ii(e, target=torch.tensor(True)), "target", TypeError),
    ("target-1d-bool-tensor", lambda e: ii(e, target=torch.tensor([True, False, True])),
     "target", TypeError),
    ("target-1-element-float-tensor", lambda e: ii(e, target=torch.tensor([1.0])), "target",
     TypeError),
    ("target-1-element-out-of-range", lambda e: ii(e, target=torch.tensor([4])), "target",
     IndexError),
    ("target-per-example-negative-out-of-range", lambda e: ii(e, target=[-5] * 3), "target",
     IndexError),
    ("target-gradient-0d-tensor-out-of-range", lambda e: fnattr.gradient(
        e.mlp, e.x, target=torch.tensor(-5)), "target", IndexError),
    ("selector-tensor-indices-out-of-range", lambda e: ng(
        e, forward_func=e.conv, layer=e.conv.conv2, inputs=e.img,
        neuron_selector=(torch.tensor(0), torch.tensor(5), torch.tensor(0))),
     "neuron_selector", IndexError),
    ("selector-tensor-indices-out-of-range-list", lambda e: ng(
        e, forward_func=e.conv, layer=e.conv.conv2, inputs=e.img,
        neuron_selector=[(0, 0, 0), (torch.tensor(0), torch.tensor(5), torch.tensor(0))]),
     "neuron_selector", IndexError),
    ("selector-0d-tensor-negative-out-of-range", lambda e: ng(
        e, neuron_selector=torch.tensor(-9)), "neuron_selector", IndexError),
    ("selector-float-tensor", lambda e: ng(e, neuron_selector=torch.tensor(1.0)),
     "neuron_selector", TypeError),
    ("selector-bool-tensor-in-tuple", lambda e: ng(e, neuron_selector=(torch.tensor(True),)),
     "neuron_selector", TypeError),
    # --------------------------------------------------------------- issue 13.13 / 12
    ("selector-1d-tensor", lambda e: ng(e, neuron_selector=torch.tensor([1, 2])),
     "neuron_selector", BAD),
    ("selector-negative-slice-step", lambda e: ng(
        e, forward_func=e.conv, layer=e.conv.conv2, inputs=e.img,
        neuron_selector=(0, slice(None, None, -1), 0)), "neuron_selector", BAD),
    ("layer_gradients-layer-unknown-name", lambda e: fnattr.layer_gradients(
        e.mlp, "0", (e.x,), fnattr.target_objective(0)), r"\blayer\b", BAD),
    ("input_gradients-layer-unknown-name", lambda e: fnattr.input_gradients(
        e.mlp, (e.x,), fnattr.neuron_objective(0), layer="0"), r"\blayer\b", BAD),
    ("targets_objective-empty", lambda e: fnattr.targets_objective([]), "targets", BAD),
    ("functional-not-callable", lambda e: fnattr.functional(5), "forward_func", BAD),
    ("path_average-weights-length", lambda e: fnattr.path_average(
        lambda p, t, a: p, (e.x,), (0.0,), [0.25, 0.75], [1.0]), "weights", BAD),
    ("path_average-weights-2d", lambda e: fnattr.path_average(
        lambda p, t, a: p, (e.x,), (0.0,), [0.25, 0.75], [[0.5, 0.5]]), "weights", BAD),
    ("sample_paths-n_samples-0", lambda e: fnattr.sample_paths((e.x,), (0.0,), 0, (0.0,)),
     "n_samples", BAD),
    ("sample_paths-stdevs-nan", lambda e: fnattr.sample_paths((e.x,), (0.0,), 2,
                                                              (float("nan"),)), "stdevs", BAD),
    ("stdevs-nan", lambda e: fnattr.gradient_shap(e.mlp, e.x, torch.zeros(2, 6),
                                                  stdevs=float("nan"), target=0), "stdevs",
     ValueError),
    ("stdevs-inf", lambda e: fnattr.gradient_shap(e.mlp, e.x, torch.zeros(2, 6),
                                                  stdevs=float("inf"), target=0), "stdevs",
     ValueError),
    ("stdevs-tuple-inf-neuron", lambda e: fnattr.neuron_gradient_shap(
        e.mlp, e.mlp.fc1, e.x, 0, torch.zeros(2, 6), stdevs=(float("-inf"),)), "stdevs",
     ValueError),
    ("shap-internal_batch_size-0", lambda e: fnattr.gradient_shap(
        e.mlp, e.x, torch.zeros(2, 6), target=0, internal_batch_size=0),
     "internal_batch_size", BAD),
    ("inputs-int-ig", lambda e: fnattr.integrated_gradients(
        e.mlp, torch.ones(3, 6, dtype=torch.long), target=0), "layer_integrated_gradients",
     TypeError),
    ("inputs-int-gradient", lambda e: fnattr.gradient(
        e.mlp, torch.ones(3, 6, dtype=torch.long), target=0), r"`inputs` must be floating",
     TypeError),
    ("inputs-int-neuron", lambda e: ng(e, inputs=torch.ones(3, 6, dtype=torch.int32)),
     r"`inputs` must be floating", TypeError),
    ("inputs-bool-shap", lambda e: fnattr.gradient_shap(
        e.mlp, torch.ones(3, 6, dtype=torch.bool), torch.zeros(2, 6), target=0),
     r"`inputs` must be floating", TypeError),
    ("guided_backprop-model-not-callable", lambda e: fnattr.guided_backprop(5, e.x, 0),
     r"`model`", TypeError),
    ("deconvolution-model-not-callable", lambda e: fnattr.deconvolution("m", e.x, 0),
     r"`model`", TypeError),
    ("neuron_guided_backprop-model-not-callable", lambda e: fnattr.neuron_guided_backprop(
        None, e.mlp.fc1, e.x, 0), r"`model`", TypeError),
    ("neuron_deconvolution-model-not-callable", lambda e: fnattr.neuron_deconvolution(
        5, e.mlp.fc1, e.x, 0), r"`model`", TypeError),
    ("interpolate-dims-wrong-length", lambda e: fnattr.interpolate(
        torch.randn(2, 3, 4, 4), (8, 8, 8)), "interpolate_dims", ValueError),
    ("interpolate-dims-non-positive", lambda e: fnattr.interpolate(
        torch.randn(2, 3, 4, 4), (8, 0)), "interpolate_dims", ValueError),
    ("interpolate-mode-unknown", lambda e: fnattr.interpolate(
        torch.randn(2, 3, 4, 4), (8, 8), "cubic"), "interpolate_mode", ValueError),
    ("interpolate-mode-rank", lambda e: fnattr.interpolate(
        torch.randn(2, 3, 4), (8,), "bilinear"), "interpolate_mode", ValueError),
    ("interpolate-trilinear-on-2d", lambda e: fnattr.interpolate(
        torch.randn(2, 3, 4, 4), (8, 8), "trilinear"), "interpolate_mode", ValueError),
    ("grad_kwargs-unknown-key", lambda e: ii(e, grad_kwargs={"retain_graph": True}),
     "retain_graph", ValueError),
    ("grad_kwargs-not-dict", lambda e: ii(e, grad_kwargs=[("materialize_grads", True)]),
     "grad_kwargs", TypeError),
    ("grad_kwargs-unknown-key-conductance", lambda e: fnattr.layer_conductance(
        e.mlp, e.mlp.fc1, e.x, target=0, n_steps=2, grad_kwargs={"allow_unused": True}),
     "allow_unused", ValueError),
    ("compat-grad_kwargs-unknown-key", lambda e: compat.InternalInfluence(
        e.mlp, e.mlp.fc1).attribute(e.x, target=0, n_steps=2,
                                    grad_kwargs={"is_grads_batched": True}),
     "is_grads_batched", ValueError),
]


@pytest.mark.parametrize("call,name,exc", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_names_the_argument(call, name, exc):
    env = Env()
    with pytest.raises(exc, match=name):
        call(env)


def test_bad_argument_raised_before_any_model_call():
    # Argument errors are raised up front, not after a forward pass.
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            calls.append(1)
            return self.fc(x)

    model = Counting()
    x = torch.randn(3, 6)
    for kw in (dict(method="nope"), dict(n_steps=0), dict(internal_batch_size=0),
               dict(target=[0, 1]), dict(baselines=torch.zeros(3, 2))):
        kw = {"target": 0, **kw}
        with pytest.raises(BAD):
            fnattr.internal_influence(model, model.fc, x, **kw)
    assert calls == []


# ------------------------------------------------ every catalog method, shared args

SETTING = Setting(layer="fc2", target=1, neuron=1, n_steps=3, baselines=torch.zeros(2, 6),
                  seed=0)


def _bad_calls(entry):
    """(what is wrong, setting, keyword overrides, argument named) for ``entry``."""
    yield "inputs-list", SETTING, {"inputs": "list"}, "inputs"
    if entry.target:
        yield "target-out-of-range", SETTING.but(target=7), {}, "target"
    if entry.needs_layer:
        yield "layer-unknown-name", SETTING.but(layer="nope"), {}, "layer"
    if entry.site == "neuron":
        yield "neuron_selector-out-of-range", SETTING.but(neuron=99), {}, "neuron_selector"
    if entry.path == "quadrature":
        yield "n_steps-zero", SETTING.but(n_steps=0), {}, "n_steps"
    if entry.path == "sampled":
        yield "n_samples-zero", SETTING.but(n_samples=0), {}, "n_samples"


BAD_CALLS = [(entry, *case) for entry in ENTRIES for case in _bad_calls(entry)]


@pytest.mark.parametrize("entry,what,setting,over,name", BAD_CALLS,
                         ids=[f"{c[0].name}-{c[1]}" for c in BAD_CALLS])
def test_every_method_names_its_bad_arguments(entry, what, setting, over, name):
    env = Env()
    x = [env.x] if over.get("inputs") == "list" else env.x
    with pytest.raises(BAD, match=name):
        call(entry, env.mlp, x, setting)


@pytest.mark.parametrize("output, hint", [
    (lambda h: {"out": h, "aux": h}, r"keys \['out', 'aux'\].*lambda x: model\(x\)\['out'\]"),
    (lambda h: (h, h), r"tuple of 2: .*lambda x: model\(x\)\[0\]"),
])
def test_a_forward_that_returns_no_tensor_names_the_wrapper(output, hint):
    # torchvision's segmentation models return {"out", "aux"}; detection and
    # many research models a tuple: the message names the one-line wrapper.
    layer = nn.Linear(6, 3)
    with pytest.raises(TypeError, match="must return a Tensor, got .*" + hint):
        fnattr.gradient(lambda x: output(layer(x)), torch.randn(2, 6), target=1)


class _ByKeyword(nn.Module):
    """Calls its layer with the input by keyword, as many Hugging Face blocks do."""

    def __init__(self):
        super().__init__()
        self.inner, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.inner(input=x))


@pytest.mark.parametrize("method, kwargs", [
    (fnattr.internal_influence, dict(target=1, n_steps=3, attribute_to_layer_input=True)),
    (fnattr.layer_conductance, dict(target=1, n_steps=3, attribute_to_layer_input=True)),
    (fnattr.layer_integrated_gradients, dict(target=1, n_steps=3,
                                             attribute_to_layer_input=True)),
    (fnattr.neuron_gradient, dict(neuron_selector=(1,), attribute_to_neuron_input=True)),
])
def test_a_layer_whose_inputs_come_by_keyword_is_named(method, kwargs):
    # A forward pre-hook sees positional inputs only: torch's "grad() inputs
    # cannot be empty", a StopIteration or an IndexError came out before.
    model = _ByKeyword()
    with pytest.raises(TypeError, match="no positional inputs.*by keyword"):
        method(model, model.inner, torch.randn(3, 4), **kwargs)
    assert not model.inner._forward_pre_hooks and not model.inner._forward_hooks


def test_an_exported_program_with_a_fixed_batch_is_explained():
    # ep.module() checks the shapes it was exported with; an expanded batch of
    # path points came out as torch's AssertionError ("Guard failed"). Now a
    # ValueError says why and what to do, and internal_batch_size = the
    # exported batch runs it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(2, 6)
    exported = torch.export.export(model, (x,)).module()
    with pytest.raises(ValueError, match="Guard failed.*torch.export.*internal_batch_size"):
        fnattr.integrated_gradients(exported, x, target=1, n_steps=4)
    torch.testing.assert_close(
        fnattr.integrated_gradients(exported, x, target=1, n_steps=4, internal_batch_size=2),
        fnattr.integrated_gradients(model, x, target=1, n_steps=4))
