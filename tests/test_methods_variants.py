"""Every catalog method in every variant gives the same answer.

The method list is ``fnattr._catalog.CATALOG`` (arguments from
``tests/_catalog_args.py``), plus the K forms of two methods.

Variants: eager (plain autograd), ``torch.func.vmap`` over examples (the
engine's functional mode), and ``fnattr.compile`` (marked ``compile``).
Sampled methods use ``randomness="same"`` under vmap: the per-example calls
draw the same paths, so they equal a loop of single-example calls with the
same seed.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

import fnattr
from fnattr._catalog import CATALOG

from ._catalog_args import ENTRIES, Setting, build, call
from .conftest import ConvNet

BASE = torch.zeros(3, 3, 8, 8)
BASE[1] += 0.5
SETTING = Setting(layer="conv2", target=1, neuron=(1, 2, 2), n_steps=6, baselines=BASE,
                  n_samples=3, stdevs=0.1, seed=7)
# every catalog method, plus the K forms (many neurons, many targets)
CASES = {e.name: (e, SETTING) for e in ENTRIES}
CASES["neuron_gradient_many"] = (CATALOG["neuron_gradient"],
                                 SETTING.but(neuron=[(1, 2, 2), (0, 0, 1)]))
CASES["gradient_each"] = (CATALOG["gradient"], SETTING.but(target=fnattr.each([0, 3])))


def _call(net, x, name):
    entry, setting = CASES[name]
    return call(entry, net, x, setting)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(4, 3, 8, 8)
    return net, x


def _eager(setup, name):
    net, x = setup
    if CASES[name][0].path == "sampled":
        # a loop of single-example calls, same seed each: what vmap "same" means
        outs = [_call(net, x[i:i + 1], name) for i in range(len(x))]
        return torch.cat(outs, dim=-4)
    return _call(net, x, name)


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_over_examples_equals_eager(setup, name):
    net, x = setup
    sampled = CASES[name][0].path == "sampled"

    def one(xi):
        out = _call(net, xi[None], name)
        return out.select(-4, 0)

    got = vmap(one, randomness="same" if sampled else "error")(x)
    want = _eager(setup, name)
    if want.dim() > 4:  # a leading K: vmap puts the example dim first
        got = got.movedim(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_functional_mode_equals_plain(setup, name):
    """The same call inside torch.func.grad (functional mode) and outside (plain)."""
    net, x = setup
    plain = _call(net, x, name)
    box = {}

    def inside(scale):
        out = _call(net, x * scale, name)
        box["out"] = out.detach()
        return out.sum()

    torch.func.grad(inside)(torch.tensor(1.0))
    torch.testing.assert_close(box["out"], plain, rtol=1e-5, atol=1e-6)


@pytest.mark.compile
@pytest.mark.parametrize("name", [n for n in CASES if not n.endswith(("_many", "_each"))])
def test_compiled_equals_eager(setup, name):
    net, x = setup
    entry, setting = CASES[name]
    torch._dynamo.reset()
    head, kwargs = build(entry, setting)
    compiled = fnattr.compile(entry.fn, net, *[net.get_submodule(h) for h in head])
    got = compiled(x, **kwargs)
    want = _call(net, x, name)
    # inductor may reorder float32 reductions
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
