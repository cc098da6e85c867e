"""Property-test your own attribution method: a hand-rolled integrated gradients.

Run: python examples/property_test_your_method.py
"""

import torch
from hypothesis import given

from fnattr.testing import axioms, property_settings, strategies


def my_integrated_gradients(f, x, baselines, target, steps=64):
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps  # midpoint rule on [0, 1]
    path = baselines + alphas.view(-1, *[1] * x.dim()) * (x - baselines)  # (steps, *x.shape)
    path = path.detach().requires_grad_()
    out = f(path.flatten(0, 1))[:, target].sum()
    (grads,) = torch.autograd.grad(out, path)
    return grads.mean(0) * (x - baselines)


@property_settings(max_examples=25)
@given(strategies.attribution_problems(strategies.models(activations=("tanh", "softplus"))))
def test_my_integrated_gradients(p):
    axioms.assert_completeness(my_integrated_gradients, p.model, p.inputs, p.baselines,
                               p.target, atol=1e-3, rtol=1e-2)
    axioms.assert_dummy(my_integrated_gradients, p.model, p.inputs, p.baselines, p.target,
                        feature=(0,) * len(p.case.input_shape), atol=0.0, rtol=0.0)


if __name__ == "__main__":
    test_my_integrated_gradients()  # hypothesis runs the 25 examples; raises on a failure
    print("my_integrated_gradients: completeness and dummy hold on 25 random models")
