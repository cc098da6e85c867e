"""Every method against Captum 0.9 on torchvision's own architectures (issue 12).

``PYTHONPATH=/tmp/tvsite:. python -m benchmarks.torchvision_parity``

torchvision is not installed in the test environment (its public wheel is built
against CUDA torch); install it anywhere (``pip install --no-deps --target
/tmp/tvsite torchvision``) and it is imported with
:func:`benchmarks.models.import_torchvision`. Models: ``resnet18``, ``vgg11``,
``mobilenet_v3_small``, ``densenet121`` (10 classes, 2 images of 3x64x64) and a
small ``VisionTransformer`` (2 layers, width 32, 3x32x32), all in eval mode
with seeded random weights (no downloads). For every method, fnattr and Captum
are called with the same arguments (8 path steps; gradient SHAP with 4 samples
on 3 baselines, fnattr on Captum's own draws replayed from its seeds) and the
table gives ``max|fnattr - captum| / max|captum|``, float32.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any, Callable

import torch

import fnattr
from fnattr._catalog import CATALOG

from .floor import captum_paths, seeded
from .models import import_torchvision
from .run import rel_err

STEPS, SAMPLES, STDEV = 8, 4, 0.1


class ModuleReLUDenseNet(torch.nn.Module):
    """torchvision's DenseNet forward with its one functional ReLU (``F.relu`` after
    the last block) run as an ``nn.ReLU`` module, which Captum's rule hooks reach."""

    def __init__(self, densenet: Any) -> None:
        super().__init__()
        self.features, self.classifier = densenet.features, densenet.classifier
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.adaptive_avg_pool2d(self.relu(self.features(x)), (1, 1))
        return self.classifier(torch.flatten(out, 1))


def models() -> dict[str, tuple[Any, torch.Tensor, str, tuple]]:
    """name -> (model, inputs, layer name, neuron index in that layer's output)."""
    tv = import_torchvision().models
    torch.manual_seed(0)
    x64, x32 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 32, 32)
    vit = tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                               hidden_dim=32, mlp_dim=64, num_classes=10)
    densenet = tv.densenet121(num_classes=10)
    return {
        "resnet18": (tv.resnet18(num_classes=10), x64, "layer3", (5, 1, 1)),
        "vgg11": (tv.vgg11(num_classes=10), x64, "features.8", (3, 2, 2)),
        "mobilenet_v3_small": (tv.mobilenet_v3_small(num_classes=10), x64, "features.3",
                               (4, 2, 2)),
        "densenet121": (densenet, x64, "features.denseblock2", (7, 3, 3)),
        "densenet121, its F.relu as a module": (ModuleReLUDenseNet(densenet), x64,
                                                "features.denseblock2", (7, 3, 3)),
        "vit (torchvision, small)": (vit, x32, "encoder.layers.encoder_layer_0", (3, 5)),
    }


def cases(model: Any, x: torch.Tensor, layer: Any, neuron: tuple) -> dict[str, tuple]:
    """method -> (fnattr call, Captum call), both returning the attribution."""
    import captum.attr as C

    t, steps = 3, dict(n_steps=STEPS)
    base = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    ends, starts, alphas = captum_paths(x, base, SAMPLES, STDEV, 7, 8)
    paths = ((ends,), (starts,), alphas)  # the catalog core's layout: tuples per input
    shap = dict(baselines=base, n_samples=SAMPLES, stdevs=STDEV)

    def captum_shap(obj: Any, **kw: Any) -> Callable[[], Any]:
        def call() -> Any:
            with seeded(7, 8):
                return obj.attribute(x, **shap, **kw)
        return call

    return {
        "gradient": (lambda: fnattr.gradient(model, x, target=t),
                     lambda: C.Saliency(model).attribute(x, target=t, abs=False)),
        "integrated_gradients": (
            lambda: fnattr.integrated_gradients(model, x, target=t, **steps),
            lambda: C.IntegratedGradients(model).attribute(x, target=t, **steps)),
        "guided_backprop": (lambda: fnattr.guided_backprop(model, x, target=t),
                            lambda: C.GuidedBackprop(model).attribute(x, target=t)),
        "deconvolution": (lambda: fnattr.deconvolution(model, x, target=t),
                          lambda: C.Deconvolution(model).attribute(x, target=t)),
        "gradient_shap": (lambda: CATALOG["gradient_shap"].core(model, x, paths, t),
                          captum_shap(C.GradientShap(model), target=t)),
        "internal_influence": (
            lambda: fnattr.internal_influence(model, layer, x, target=t, **steps),
            lambda: C.InternalInfluence(model, layer).attribute(x, target=t, **steps)),
        "layer_conductance": (
            lambda: fnattr.layer_conductance(model, layer, x, target=t, **steps),
            lambda: C.LayerConductance(model, layer).attribute(x, target=t, **steps)),
        "layer_integrated_gradients": (
            lambda: fnattr.layer_integrated_gradients(model, layer, x, target=t, **steps),
            lambda: C.LayerIntegratedGradients(model, layer).attribute(x, target=t, **steps)),
        "neuron_gradient": (
            lambda: fnattr.neuron_gradient(model, layer, x, neuron),
            lambda: C.NeuronGradient(model, layer).attribute(x, neuron)),
        "neuron_integrated_gradients": (
            lambda: fnattr.neuron_integrated_gradients(model, layer, x, neuron, **steps),
            lambda: C.NeuronIntegratedGradients(model, layer).attribute(x, neuron, **steps)),
        "neuron_guided_backprop": (
            lambda: fnattr.neuron_guided_backprop(model, layer, x, neuron),
            lambda: C.NeuronGuidedBackprop(model, layer).attribute(x, neuron)),
        "neuron_deconvolution": (
            lambda: fnattr.neuron_deconvolution(model, layer, x, neuron),
            lambda: C.NeuronDeconvolution(model, layer).attribute(x, neuron)),
        "neuron_gradient_shap": (
            lambda: CATALOG["neuron_gradient_shap"].core(model, layer, x, paths, neuron),
            captum_shap(C.NeuronGradientShap(model, layer), neuron_selector=neuron)),
    }


def compare(ours: Callable[[], Any], theirs: Callable[[], Any]) -> str:
    """The table cell: the relative error, or which side raised (and its error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum's own warnings
            ref = theirs()
    except Exception as e:  # noqa: BLE001  (reported in the table)
        try:
            ours()
            return f"Captum raises ({type(e).__name__}); fnattr runs"
        except Exception as f:  # noqa: BLE001
            return f"both raise ({type(e).__name__} / {type(f).__name__}: {str(f)[:60]})"
    return f"{rel_err(ours(), ref):.0e}"


def run() -> list[str]:
    built = models()
    names = None
    rows: list[str] = []
    for model_name, (model, x, layer_name, neuron) in built.items():
        model.eval()
        layer = model.get_submodule(layer_name)
        errs = {method: compare(ours, theirs)
                for method, (ours, theirs) in cases(model, x, layer, neuron).items()}
        if names is None:
            names = list(errs)
            rows += ["| model (layer) | " + " | ".join(names) + " |",
                     "|---|" + "---:|" * len(names)]
        rows.append(f"| {model_name} (`{layer_name}`) | "
                    + " | ".join(errs[n] for n in names) + " |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m benchmarks.torchvision_parity",
                            description=__doc__.split("\n")[0]).parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(run()))


if __name__ == "__main__":
    main()
