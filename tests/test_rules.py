"""Modified-ReLU rules (issue 4): guided backprop and deconvolution.

* Captum 0.9 parity on ``nn.ReLU`` models (every target form, neuron variants,
  compat classes).
* Functional twins (``F.relu``, ``torch.relu``, ``Tensor.relu``, aliases,
  in-place forms) give Captum's numbers for the ``nn.ReLU`` twin, while Captum
  itself is wrong on them (its module hooks do not see functional ReLUs).
* The rules' backward against the formula under autograd / torch.func.
* ``with_rule`` hygiene: nothing patched or left active afterwards.
* Many targets in one call, double backprop, torch.compile.
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, jacfwd, jvp, vjp, vmap
from torch.nn.functional import relu as alias_relu

import fnattr
from fnattr import compat

from ._catalog_args import ENTRIES
from .conftest import MLP, ConvNet, ConvNetFunctional, MLPFunctional, ReusedReLU

DT = torch.float64


@contextlib.contextmanager
def quiet():
    """Silences Captum's own warnings (the oracle, not the code under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def captum_cls(name):
    import captum.attr as C

    return getattr(C, name)


def captum_attr(name, *ctor, **kw):
    with quiet():
        return captum_cls(name)(*ctor).attribute(**kw)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

MODELS = {
    "mlp": (MLP, (4, 6)),
    "convnet": (ConvNet, (4, 3, 8, 8)),
    "reused": (ReusedReLU, (4, 5)),
    "mlp_inplace": (lambda: MLP(inplace=True), (4, 6)),
}


def make(name):
    cls, shape = MODELS[name]
    return cls().eval(), torch.randn(*shape)


class MLPAlias(nn.Module):
    """MLP's function with ``from torch.nn.functional import relu`` and ``torch.relu_``."""

    def __init__(self, mlp):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = mlp.fc1, mlp.fc2, mlp.fc3

    def forward(self, x):
        h = alias_relu(self.fc1(x))
        h = self.fc2(h)
        torch.relu_(h)
        return self.fc3(h)


class MLPInplace(nn.Module):
    """MLP's function with ``F.relu(..., inplace=True)`` and ``nn.ReLU(inplace=True)``."""

    def __init__(self, mlp):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = mlp.fc1, mlp.fc2, mlp.fc3
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.fc1(x)
        F.relu(h, inplace=True)
        return self.fc3(self.act(self.fc2(h)))


class MLPUnderscore(nn.Module):
    """MLP's function with ``F.relu_`` and ``Tensor.relu``."""

    def __init__(self, mlp):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = mlp.fc1, mlp.fc2, mlp.fc3

    def forward(self, x):
        h = F.relu_(self.fc1(x))
        return self.fc3(self.fc2(h).relu())


def mlp_inplace_modules(mlp):
    twin = MLP(inplace=True).eval()
    twin.load_state_dict(mlp.state_dict())
    return twin


# (twin builder, base class, input shape, has no nn.ReLU at all -> Captum is wrong)
TWINS = {
    "MLPFunctional": (MLPFunctional, MLP, (6, 6), True),
    "MLPAlias": (MLPAlias, MLP, (6, 6), True),
    "MLPUnderscore": (MLPUnderscore, MLP, (6, 6), True),
    "MLPInplace": (MLPInplace, MLP, (6, 6), False),
    "MLP(inplace=True)": (mlp_inplace_modules, MLP, (6, 6), False),
    "ConvNetFunctional": (ConvNetFunctional, ConvNet, (5, 3, 8, 8), True),
}

RULE_FNS = {"guided": fnattr.guided_relu, "deconv": fnattr.deconv_relu}
# the catalog's methods that run under a rule, by rule
METHODS = {e.rule: (e.fn, e.compat, RULE_FNS[e.rule])
           for e in ENTRIES if e.rule and e.site == "inputs"}
NEURON_METHODS = {e.rule: (e.fn, e.compat) for e in ENTRIES if e.rule and e.site == "neuron"}


def test_every_catalog_rule_has_its_input_and_neuron_method():
    assert set(METHODS) == set(NEURON_METHODS) == set(RULE_FNS)


def targets(n):
    return {
        "int": 2,
        "list": [i % 3 for i in range(n)],
        "tensor1d": torch.tensor([(i + 1) % 3 for i in range(n)]),
        "tensor0d": torch.tensor(1),
    }


# --------------------------------------------------------------------------
# 1. Captum parity on nn.ReLU models
# --------------------------------------------------------------------------


@pytest.mark.parametrize("target_kind", ["int", "list", "tensor1d", "tensor0d"])
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("method", list(METHODS))
def test_matches_captum(method, model_name, target_kind):
    model, x = make(model_name)
    target = targets(x.shape[0])[target_kind]
    fn, cname, _ = METHODS[method]
    ref = captum_attr(cname, model, inputs=x, target=target)
    ours = fn(model, x, target=target)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    # compat class, Captum's positional signature
    cls = getattr(compat, cname)
    torch.testing.assert_close(cls(model).attribute(x, target), ref, rtol=1e-6, atol=1e-7)
    # and the rule is not a no-op here: it differs from the plain gradient
    assert not torch.allclose(ours, fnattr.gradient(model, x, target=target), atol=1e-6)


NEURON_CASES = [
    ("convnet", "conv2", (1, 2, 3)),
    ("convnet", "conv2", (0, slice(0, 2), slice(1, 3))),
    ("convnet", "fc1", (5,)),
    ("mlp", "fc2", (3,)),
    ("mlp", "fc3", 1),
    ("reused", "fc2", (4,)),
    ("reused", "relu", (2,)),  # the ReLU module itself, called twice
    ("convnet", "relu3", (2,)),
    ("convnet", "pool", (2, 1, 1)),
    ("mlp_inplace", "fc2", (1,)),
    ("mlp_inplace", "relu1", (1,)),
]


@pytest.mark.parametrize("attribute_to_neuron_input", [False, True])
@pytest.mark.parametrize("model_name,layer_name,selector", NEURON_CASES,
                         ids=[f"{m}-{l}-{i}" for i, (m, l, _) in enumerate(NEURON_CASES)])
@pytest.mark.parametrize("method", list(NEURON_METHODS))
def test_neuron_matches_captum(method, model_name, layer_name, selector, attribute_to_neuron_input):
    model, x = make(model_name)
    layer = getattr(model, layer_name)
    fn, cname = NEURON_METHODS[method]
    ref = captum_attr(cname, model, layer, inputs=x, neuron_selector=selector,
                      attribute_to_neuron_input=attribute_to_neuron_input)
    ours = fn(model, layer, x, selector, attribute_to_neuron_input=attribute_to_neuron_input)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    cls = getattr(compat, cname)
    out = cls(model, layer).attribute(x, selector, None, attribute_to_neuron_input)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    by_name = fn(model, layer_name, x, selector, attribute_to_neuron_input=attribute_to_neuron_input)
    torch.testing.assert_close(by_name, ref, rtol=1e-6, atol=1e-7)


def test_neuron_selector_list_matches_single_calls():
    model, x = make("convnet")
    sels = [(1, 2, 3), (5, 0, 0), (0, slice(0, 2), slice(1, 3))]
    for fn, _ in NEURON_METHODS.values():
        many = fn(model, model.conv2, x, sels)
        assert many.shape == (3, *x.shape)
        for k, s in enumerate(sels):
            torch.testing.assert_close(many[k], fn(model, model.conv2, x, s), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cname", ["GuidedBackprop", "Deconvolution",
                                   "NeuronGuidedBackprop", "NeuronDeconvolution"])
def test_compat_class_surface(cname):
    import inspect

    ours, theirs = getattr(compat, cname), captum_cls(cname)
    assert ours.get_name() == theirs.get_name()
    for meth in ("__init__", "attribute"):
        names = list(inspect.signature(getattr(ours, meth)).parameters)
        cnames = list(inspect.signature(getattr(theirs, meth)).parameters)
        assert names[:len(cnames)] == cnames, meth
    model = MLP().eval()
    obj = ours(model) if "Neuron" not in cname else ours(model, model.fc2)
    assert obj.has_convergence_delta() is False
    assert obj.multiplies_by_inputs is False


def test_multi_input_additional_args_matches_captum():
    from .conftest import MultiInput

    model = MultiInput().eval()
    x1, x2 = torch.randn(4, 4), torch.randn(4, 3)
    scale = torch.rand(4, 6) + 0.5
    for fn, cname, _ in METHODS.values():
        ref = captum_attr(cname, model, inputs=(x1, x2), target=[0, 1, 2, 1],
                          additional_forward_args=(scale, True))
        ours = fn(model, (x1, x2), [0, 1, 2, 1], (scale, True))
        assert isinstance(ours, tuple) and len(ours) == 2
        for o, r in zip(ours, ref):
            torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# 2. Functional twins: fnattr is right where Captum is wrong
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("twin_name", list(TWINS))
def test_functional_twins_match_captum_on_module_twin(twin_name, method):
    build, base_cls, shape, all_functional = TWINS[twin_name]
    base = base_cls().eval()
    twin = build(base).eval()
    x = torch.randn(*shape)
    target = [i % 4 for i in range(shape[0])]
    with torch.no_grad():  # same function
        torch.testing.assert_close(twin(x.clone()), base(x.clone()))
    fn, cname, _ = METHODS[method]
    ref = captum_attr(cname, base, inputs=x, target=target)
    ours = fn(twin, x, target=target)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(getattr(compat, cname)(twin).attribute(x, target), ref,
                               rtol=1e-6, atol=1e-7)
    if all_functional:
        # Why fnattr exists: Captum's module hooks miss functional ReLUs, so on the
        # twin Captum silently returns (a mix with) the plain gradient.
        wrong = captum_attr(cname, twin, inputs=x, target=target)
        assert (wrong - ref).abs().max() > 1e-3
        torch.testing.assert_close(wrong, fnattr.gradient(base, x, target=target),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", list(NEURON_METHODS))
def test_functional_twin_neuron_matches_captum_on_module_twin(method):
    base = ConvNet().eval()
    twin = ConvNetFunctional(base).eval()
    x = torch.randn(5, 3, 8, 8)
    fn, cname = NEURON_METHODS[method]
    for sel in [(5,), (2,)]:
        ref = captum_attr(cname, base, base.fc1, inputs=x, neuron_selector=sel)
        torch.testing.assert_close(fn(twin, twin.fc1, x, sel), ref, rtol=1e-6, atol=1e-7)
        wrong = captum_attr(cname, twin, twin.fc1, inputs=x, neuron_selector=sel)
        assert (wrong - ref).abs().max() > 1e-4


# --------------------------------------------------------------------------
# 3. The rules' backward and forward against the formulas
# --------------------------------------------------------------------------


def _xg(seed=0, shape=(5, 7)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=DT)
    x[0, :3] = 0.0  # the gate at exactly zero is closed (x > 0)
    g = torch.randn(*shape, generator=gen, dtype=DT)
    return x, g


RULES = {
    "guided": (fnattr.guided_relu, lambda x, g: g.clamp(min=0) * (x > 0)),
    "deconv": (fnattr.deconv_relu, lambda x, g: g.clamp(min=0)),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_backward_formula_all_transforms(rule):
    f, formula = RULES[rule]
    x, g = _xg()
    expected = formula(x, g)
    assert (g < 0).any() and (x < 0).any()  # the rules have something to do
    # forward is relu
    assert torch.equal(f(x), torch.relu(x))
    # torch.autograd.grad
    xr = x.clone().requires_grad_()
    (gi,) = torch.autograd.grad(f(xr), xr, g)
    assert torch.equal(gi, expected)
    # torch.func.grad
    assert torch.equal(grad(lambda t: (f(t) * g).sum())(x), expected)
    # torch.func.vjp
    out, pull = vjp(f, x)
    assert torch.equal(out, torch.relu(x)) and torch.equal(pull(g)[0], expected)
    # vmap (forward and backward through the vmapped rule)
    assert torch.equal(vmap(f)(x), torch.relu(x))
    _, pull = vjp(vmap(f), x)
    assert torch.equal(pull(g)[0], expected)
    # vmap of grad: per-row gradients
    assert torch.equal(vmap(grad(lambda t, u: (f(t) * u).sum()))(x, g), expected)
    # the autograd.Function classes themselves
    cls = fnattr.GuidedReLU if rule == "guided" else fnattr.DeconvReLU
    (gi,) = torch.autograd.grad(cls.apply(xr), xr, g)
    assert torch.equal(gi, expected)


# PyTorch's own DeprecationWarnings, raised once per process when forward-mode AD
# first loads its TorchScript decompositions (torch/_decomp/decompositions_for_jvp.py).
TORCH_JIT_WARNINGS = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


@pytest.mark.parametrize("rule", list(RULES))
@TORCH_JIT_WARNINGS[0]
@TORCH_JIT_WARNINGS[1]
def test_rule_forward_mode_is_plain_relu_derivative(rule):
    f, _ = RULES[rule]
    x, t = _xg(1)
    out, tangent = jvp(f, (x,), (t,))
    assert torch.equal(out, torch.relu(x))
    assert torch.equal(tangent, t * (x > 0))
    # jacfwd of a ruled model equals jacfwd of the model (rules only change reverse mode)
    model = MLP().to(DT).eval()
    xi = torch.randn(6, dtype=DT)
    ruled = fnattr.with_rule(model, f)
    torch.testing.assert_close(jacfwd(ruled)(xi), jacfwd(model)(xi), rtol=1e-12, atol=1e-12)


def test_inplace_rule_on_non_leaf():
    x, g = _xg(2)
    xr = x.clone().requires_grad_()

    def f(t):
        h = t * 1.0
        h.relu_()
        return h

    out = fnattr.with_rule(f, fnattr.guided_relu)(xr)
    assert torch.equal(out, torch.relu(x))
    (gi,) = torch.autograd.grad(out, xr, g)
    assert torch.equal(gi, g.clamp(min=0) * (x > 0))


# --------------------------------------------------------------------------
# 4. with_rule hygiene
# --------------------------------------------------------------------------


ORIGINALS = {
    "torch.relu": (torch, "relu"),
    "torch.relu_": (torch, "relu_"),
    "F.relu": (F, "relu"),
    "F.relu_": (F, "relu_"),
    "Tensor.relu": (torch.Tensor, "relu"),
    "Tensor.relu_": (torch.Tensor, "relu_"),
    "nn.ReLU.forward": (nn.ReLU, "forward"),
}


def _snapshot():
    return {k: getattr(obj, attr) for k, (obj, attr) in ORIGINALS.items()}


def _stack_len():
    return torch._C._len_torch_function_stack()


def _assert_clean(before):
    after = _snapshot()
    for k in before:
        assert after[k] is before[k], k
    assert _stack_len() == 0
    # a plain ReLU backward is plain again: negative incoming gradients pass
    x, g = _xg(3)
    xr = x.clone().requires_grad_()
    for op in (torch.relu, F.relu, lambda t: t.relu(), nn.ReLU()):
        (gi,) = torch.autograd.grad(op(xr), xr, g)
        assert torch.equal(gi, g * (x > 0))
        assert (gi < 0).any()


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.fc(x))
        F.relu(h)
        raise RuntimeError("boom mid-forward")


@pytest.mark.parametrize("rule", [fnattr.guided_relu, fnattr.deconv_relu])
def test_with_rule_leaves_nothing_behind(rule):
    before = _snapshot()
    depth = []
    model = MLP().eval()

    def spy(x):
        depth.append(_stack_len())
        return model(x)

    x = torch.randn(3, 6)
    fnattr.with_rule(spy, rule)(x)
    assert depth == [1]  # the mode is active during the call ...
    _assert_clean(before)  # ... and gone after it
    fnattr.guided_backprop(model, x, target=0)
    fnattr.neuron_deconvolution(model, model.fc2, x, (1,))
    _assert_clean(before)


def test_with_rule_cleans_up_when_the_forward_raises():
    before = _snapshot()
    model = Raises()
    x = torch.randn(2, 6)
    with pytest.raises(RuntimeError, match="boom"):
        fnattr.with_rule(model, fnattr.guided_relu)(x)
    _assert_clean(before)
    with pytest.raises(RuntimeError, match="boom"):
        fnattr.guided_backprop(model, x, target=0)
    _assert_clean(before)
    with pytest.raises(RuntimeError, match="boom"):
        fnattr.neuron_deconvolution(model, model.fc, x, (0,))
    _assert_clean(before)
    with pytest.raises(RuntimeError, match="boom"):
        grad(lambda t: fnattr.with_rule(model, fnattr.deconv_relu)(t).sum())(x)
    _assert_clean(before)


def test_with_rule_under_func_transforms_and_nested():
    before = _snapshot()
    model = ConvNet().to(DT).eval()
    x = torch.randn(4, 3, 8, 8, dtype=DT)
    ref = fnattr.guided_backprop(model, x, target=2)
    ruled = fnattr.with_rule(model, fnattr.guided_relu)
    # torch.func.grad of the batch sum
    out = grad(lambda t: ruled(t)[:, 2].sum())(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # vmap of per-example grad
    out = vmap(grad(lambda t: ruled(t.unsqueeze(0))[0, 2]))(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # nested with_rule (same rule twice; with_rule'd function inside another)
    twice = fnattr.with_rule(fnattr.with_rule(model, fnattr.guided_relu), fnattr.guided_relu)
    torch.testing.assert_close(fnattr.gradient(twice, x, target=2), ref, rtol=1e-12, atol=1e-12)
    outer = fnattr.with_rule(lambda t: ruled(t) * 1.0, fnattr.guided_relu)
    torch.testing.assert_close(grad(lambda t: outer(t)[:, 2].sum())(x), ref,
                               rtol=1e-12, atol=1e-12)
    # guided_backprop itself inside vmap (a batch of batches)
    xs = torch.stack([x, -x])
    out = vmap(lambda t: fnattr.guided_backprop(model, t, target=2))(xs)
    torch.testing.assert_close(out[0], ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[1], fnattr.guided_backprop(model, -x, target=2),
                               rtol=1e-12, atol=1e-12)
    _assert_clean(before)


def test_requires_grad_and_grads_untouched():
    model = MLP().eval()
    params = {k: p.requires_grad for k, p in model.named_parameters()}
    for requires in (False, True):
        x = torch.randn(3, 6, requires_grad=requires)
        for fn in (fnattr.guided_backprop, fnattr.deconvolution):
            out = fn(model, x, target=1)
            assert x.requires_grad is requires and x.grad is None
            assert not out.requires_grad
        fnattr.neuron_guided_backprop(model, model.fc2, x, (2,))
        assert x.requires_grad is requires and x.grad is None
    assert {k: p.requires_grad for k, p in model.named_parameters()} == params
    assert all(p.grad is None for p in model.parameters())
    assert model.training is False


def test_rule_does_not_leak_into_other_threads():
    # Modes are per thread: while one thread is inside a ruled forward, another
    # thread's ReLU backward is plain.
    started, proceed = threading.Event(), threading.Event()
    errors = []

    def slow_forward(x):
        y = F.relu(x)
        started.set()
        proceed.wait(10)
        return y

    def worker():
        try:
            fnattr.with_rule(slow_forward, fnattr.guided_relu)(torch.randn(3))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert started.wait(10)
        x, g = _xg(4)
        xr = x.clone().requires_grad_()
        (gi,) = torch.autograd.grad(F.relu(xr), xr, g)
        assert torch.equal(gi, g * (x > 0))
        assert _stack_len() == 0
    finally:
        proceed.set()
        t.join(10)
    assert not errors


def test_with_rule_scope_documented_not_reached_ops_stay_plain():
    # Documented scope: other activations and ops below Python dispatch are not
    # rewritten; positional ``inplace`` of F.relu is honoured.
    x, g = _xg(5)
    xr = x.clone().requires_grad_()

    def others(t):
        # (``torch.ops.aten.relu(t)``, once listed here, is a ReLU and is reached:
        # tests/test_rules_reach.py, issue 12.11)
        return F.relu6(t) + t.clamp(min=0) + F.leaky_relu(t) + torch.maximum(t, torch.zeros(()))

    for rule in (fnattr.guided_relu, fnattr.deconv_relu):
        (a,) = torch.autograd.grad(fnattr.with_rule(others, rule)(xr), xr, g)
        (b,) = torch.autograd.grad(others(xr), xr, g)
        assert torch.equal(a, b)

    def positional_inplace(t):
        h = t * 1.0
        F.relu(h, True)
        return h

    out = fnattr.with_rule(positional_inplace, fnattr.guided_relu)(xr)
    assert torch.equal(out, torch.relu(x))
    (gi,) = torch.autograd.grad(out, xr, g)
    assert torch.equal(gi, g.clamp(min=0) * (x > 0))


def test_with_rule_bad_arguments():
    with pytest.raises(ValueError, match="rule"):
        fnattr.with_rule(MLP(), torch.relu)
    with pytest.raises(TypeError, match="forward_func"):
        fnattr.with_rule(3, fnattr.guided_relu)


# --------------------------------------------------------------------------
# 5. Many targets in one call
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_all_classes_in_one_call_equals_loop(method, model_name):
    model, x = make(model_name)
    fn, _, rule = METHODS[method]
    n_classes = model(x).shape[1]
    (many,) = fnattr.input_gradients(fnattr.with_rule(model, rule), (x,),
                                     fnattr.targets_objective(list(range(n_classes))))
    assert many.shape == (n_classes, *x.shape)
    for c in range(n_classes):
        torch.testing.assert_close(many[c], fn(model, x, target=c), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# 6. create_graph=True: double backprop, gate treated as constant
# --------------------------------------------------------------------------


class OneHidden(nn.Module):
    """f(x) = w2 . relu(W1 x + b1) + c: the rule's double backprop has a closed form."""

    def __init__(self, d_in=5, d_hidden=9):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("method", list(METHODS))
def test_double_backprop_closed_form(method):
    model = OneHidden().to(DT)
    x = torch.randn(6, 5, dtype=DT)
    v = torch.randn(6, 5, dtype=DT)
    fn, _, _ = METHODS[method]
    attr = fn(model, x, target=0, create_graph=True)
    assert attr.requires_grad
    W1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()[0]
    mask = (x @ W1.T + model.fc1.bias.detach() > 0).to(DT)  # (N, H)
    if method == "deconv":
        mask = torch.ones_like(mask)
    u = w2.clamp(min=0) * mask  # the incoming gradient after the rule, per example
    torch.testing.assert_close(attr, u @ W1, rtol=1e-12, atol=1e-12)
    loss = (attr * v).sum()
    g_W1, g_b1, g_w2, g_b2 = torch.autograd.grad(
        loss, [model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias],
        allow_unused=True, materialize_grads=True)
    # attr_n = W1^T u_n with u_n = relu(w2) * gate_n, the gate constant:
    torch.testing.assert_close(g_W1, u.T @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_w2[0], ((v @ W1.T) * mask).sum(0) * (w2 > 0), rtol=1e-12,
                               atol=1e-12)
    assert g_b1.abs().max() == 0 and g_b2.abs().max() == 0


def _fd_grads(loss_of, params, eps=1e-6):
    out = []
    with torch.no_grad():
        for p in params:
            fd = torch.zeros_like(p)
            flat, fd_flat = p.view(-1), fd.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = loss_of().item()
                flat[i] = old - eps
                down = loss_of().item()
                flat[i] = old
                fd_flat[i] = (up - down) / (2 * eps)
            out.append(fd)
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_double_backprop_finite_differences(method):
    model = MLP().to(DT).eval()
    x = torch.randn(4, 6, dtype=DT)
    v = torch.randn(4, 6, dtype=DT)
    fn, _, _ = METHODS[method]
    nfn, _ = NEURON_METHODS[method]

    def loss_of():
        a = fn(model, x, target=[0, 1, 2, 3], create_graph=True)
        b = nfn(model, model.fc2, x, (3,), create_graph=True)
        return (a * v).sum() + (b ** 2).sum()

    params = [model.fc1.weight, model.fc2.weight, model.fc3.weight, model.fc2.bias]
    grads = torch.autograd.grad(loss_of(), params, allow_unused=True, materialize_grads=True)
    assert any(g.abs().max() > 1e-6 for g in grads)
    for g, fd in zip(grads, _fd_grads(loss_of, params)):
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------
# 7. torch.compile
# --------------------------------------------------------------------------


@pytest.mark.compile
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_compile_guided_backprop_fullgraph():
    # The two filters are PyTorch's own DeprecationWarnings raised inside dynamo
    # (torch.jit internals; dynamo instantiating autograd.Function for any custom
    # Function's ctx), not fnattr's.
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 4)).eval()
    x = torch.randn(2, 2, 6, 6)

    def guided(t):
        return grad(lambda u: fnattr.with_rule(model, fnattr.guided_relu)(u)[:, 1].sum())(t)

    compiled = torch.compile(guided, fullgraph=True)  # raises on any graph break
    out = compiled(x)
    eager = fnattr.guided_backprop(model, x, target=1)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(eager, fnattr.gradient(model, x, target=1), atol=1e-6)
    x2 = torch.randn(2, 2, 6, 6)
    torch.testing.assert_close(compiled(x2), fnattr.guided_backprop(model, x2, target=1),
                               rtol=1e-5, atol=1e-6)
    assert _stack_len() == 0


@pytest.mark.parametrize("rule", list(RULES))
def test_plain_mode_rules_match_the_transform_rules(rule):
    # Outside torch.func transforms the rules run as old-style Functions (cheaper
    # per call); they must agree with the new-style ones in every mode of AD.
    f, _ = RULES[rule]
    x, g = _xg(3)
    xr = x.clone().requires_grad_()
    out = f(xr)
    from fnattr._rules import _CLASSES

    plain_cls = _CLASSES["guided" if rule == "guided" else "deconv"][2]
    assert type(out.grad_fn)._forward_cls is plain_cls
    (plain,) = torch.autograd.grad(out, xr, g)
    (transformed,) = vjp(f, x)[1](g)
    assert torch.equal(plain, transformed)
    assert torch.equal(plain, RULES[rule][1](x, g))
    import torch.autograd.forward_ad as fwAD

    t = torch.randn_like(x)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(f(fwAD.make_dual(x, t))).tangent
    assert torch.equal(tangent, t * (x > 0))


def test_nested_rules_the_inner_one_wins_in_every_mode():
    # with_rule(with_rule(m, guided), deconv): the inner mode handles each ReLU
    torch.manual_seed(0)
    model = MLP().to(DT).eval()
    x = torch.randn(5, 6, dtype=DT)
    nested = fnattr.with_rule(fnattr.with_rule(model, fnattr.guided_relu), fnattr.deconv_relu)
    expected = fnattr.guided_backprop(model, x, target=1)
    torch.testing.assert_close(fnattr.gradient(nested, x, target=1), expected)
    per_example = vmap(lambda xi: fnattr.gradient(nested, xi[None], target=1)[0])(x)
    torch.testing.assert_close(per_example, expected)
    assert not torch.allclose(expected, fnattr.deconvolution(model, x, target=1))


# --------------------------------------------------------------------------
# 7. Plain eager calls: the rule hooked on the recorded graph (issue 12.22)
# --------------------------------------------------------------------------


class _Counted(nn.Module):
    """MLP's function with a ReLU written ``relu_`` on a view of its hidden layer
    (``view=True``: the in-place op hides its node inside ``CopySlices``)."""

    def __init__(self, mlp, view):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = mlp.fc1, mlp.fc2, mlp.fc3
        self.view, self.calls, self.depth = view, 0, []

    def forward(self, x):
        self.calls += 1
        self.depth.append(_stack_len())
        h = self.fc1(x)
        if self.view:
            h[:, :4].relu_()
            h = h * 1.0
        else:
            h = torch.relu(h)
        return self.fc3(torch.relu(self.fc2(h)))


def _reference(model, x, target, rule):
    # the mode's rule under torch.func.grad (no graph hooks)
    ruled = fnattr.with_rule(model, rule)
    return grad(lambda t: ruled(t)[:, target].sum())(x)


@pytest.mark.parametrize("method", list(METHODS))
def test_plain_calls_run_the_forward_with_no_mode(method):
    # The mode costs ~1 us per torch call of the forward: a plain eager call
    # runs its forward with no mode and hooks the rule on the recorded graph.
    fn, _, rule = METHODS[method]
    torch.manual_seed(0)
    model = _Counted(MLP().to(DT).eval(), view=False)
    x = torch.randn(5, 6, dtype=DT)
    got = fn(model, x, target=1)
    assert model.depth == [0]
    ref = _reference(model, x, 1, rule)
    assert model.depth[-1] >= 1  # under transforms the mode applies the rule
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got, fnattr.gradient(model, x, target=1))
    for neuron in (fnattr.neuron_guided_backprop, fnattr.neuron_deconvolution):
        model.depth.clear()
        neuron(model, model.fc2, x, (3,))
        assert model.depth == [0]


@pytest.mark.parametrize("method", list(METHODS))
def test_relu_in_place_on_a_view_falls_back_to_the_mode(method):
    # relu_ on a view is recorded inside CopySlices, where no hook reaches it:
    # the call reruns its forward under the mode, and the model's later calls
    # use the mode at once.
    fn, _, rule = METHODS[method]
    torch.manual_seed(0)
    model = _Counted(MLP().to(DT).eval(), view=True)
    x = torch.randn(5, 6, dtype=DT)
    ref = _reference(model, x, 2, rule)
    model.calls, model.depth = 0, []
    torch.testing.assert_close(fn(model, x, target=2), ref, rtol=1e-12, atol=1e-12)
    assert model.depth == [0, 1]  # tried on the graph, then under the mode
    torch.testing.assert_close(fn(model, x, target=2), ref, rtol=1e-12, atol=1e-12)
    assert model.depth == [0, 1, 1]
    plain = _Counted(model, view=False)  # another model still uses the graph
    fn(plain, x, target=2)
    assert plain.depth == [0]


@pytest.mark.parametrize("method", list(METHODS))
def test_a_graph_built_before_the_call_is_left_alone(method):
    # Inputs with a history (a ReLU the caller ran) are differentiated as they
    # are: only nodes the call's own forward recorded are hooked.
    fn, _, _ = METHODS[method]
    x, g = _xg(6, (5, 6))
    z = x.clone().requires_grad_()
    h = torch.relu(z * 1.0)
    model = MLP().to(DT).eval()
    fn(model, h, target=0)
    (gz,) = torch.autograd.grad(h, z, g)
    assert torch.equal(gz, g * (x > 0))  # the caller's ReLU is plain
    assert (gz < 0).any()


@pytest.mark.parametrize("method", list(METHODS))
def test_plain_calls_also_reach_relus_inside_composite_ops(method):
    # Documented: hooked on the graph, the rule also reaches ReLUs that a C++
    # composite op records (nn.RNN(nonlinearity="relu") on CPU); under
    # torch.func transforms (and compile) the mode does not see them.
    fn, _, rule = METHODS[method]
    torch.manual_seed(0)
    rnn = nn.RNN(4, 6, nonlinearity="relu", batch_first=True).to(DT)
    head = nn.Linear(6, 3).to(DT)

    def model(t):
        return head(rnn(t)[0][:, -1])

    x = torch.randn(3, 5, 4, dtype=DT)
    plain = fnattr.gradient(model, x, target=1)
    got = fn(model, x, target=1)
    assert not torch.allclose(got, plain)
    torch.testing.assert_close(_reference(model, x, 1, rule), plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
@pytest.mark.parametrize("rule", list(NEURON_METHODS))
def test_plain_k_rows_in_chunks_hook_the_rule_once(rule, chunk_size, monkeypatch):
    # K rows run as one batched backward or several (chunks, one row at a
    # time) over one graph: the rule is hooked once, before the first, and
    # every row equals its own call. (Both rules are idempotent, so a rule
    # hooked twice shows only in the count: one hook call per backward.)
    fn, _ = NEURON_METHODS[rule]
    torch.manual_seed(0)
    model = MLP().to(DT).eval()
    x = torch.randn(5, 6, dtype=DT)
    calls = {"hook": 0, "backward": 0}
    hook, grad_ = fnattr._rules._NODE_HOOKS[rule], torch.autograd.grad

    def counted_hook(*a):
        calls["hook"] += 1
        return hook(*a)

    def counted_grad(*a, **k):
        calls["backward"] += 1
        return grad_(*a, **k)

    selectors = [(0,), (3,), (5,)]
    with monkeypatch.context() as m:
        m.setitem(fnattr._rules._NODE_HOOKS, rule, counted_hook)
        m.setattr(torch.autograd, "grad", counted_grad)
        many = fn(model, model.fc2, x, selectors, chunk_size=chunk_size)
    # one ReLU (after fc1) lies between the input and fc2
    assert calls["backward"] == {None: calls["backward"] or 1, 1: 3, 2: 2}[chunk_size]
    assert calls["hook"] == calls["backward"]
    for k, sel in enumerate(selectors):
        torch.testing.assert_close(many[k], fn(model, model.fc2, x, sel), rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_torch_compiled_module_is_explained_through_its_original(method):
    # A rule cannot reach the ReLUs inside a compiled graph: on torch.compile(model)
    # the rule methods returned something else than the rule's gradient (1.0 and
    # 1.3 of the max off), silently. The compiled wrapper is unwrapped (it is
    # never called, so nothing compiles here).
    fn, _, _ = METHODS[method]
    torch.manual_seed(0)
    model = MLP().to(DT).eval()
    x = torch.randn(5, 6, dtype=DT)
    compiled = torch.compile(model)
    torch.testing.assert_close(fn(compiled, x, target=1), fn(model, x, target=1),
                               rtol=0, atol=0)
    neuron = NEURON_METHODS[method][0]
    torch.testing.assert_close(neuron(compiled, model.fc2, x, (3,)),
                               neuron(model, model.fc2, x, (3,)), rtol=0, atol=0)


class CompiledFunction(torch.autograd.Function):
    """Stands in for AOTAutograd's function: its node type is CompiledFunctionBackward."""

    @staticmethod
    def forward(ctx, x):
        return torch.relu(x)

    @staticmethod
    def backward(ctx, g):
        return g


@pytest.mark.parametrize("method", list(METHODS))
def test_a_compiled_graph_inside_the_forward_is_refused(method):
    # A function that calls a compiled graph: its ReLUs sit inside one
    # CompiledFunctionBackward node, where no hook reaches them. Refused with a
    # TypeError before any backward, and no state is left behind.
    fn, _, _ = METHODS[method]
    model = MLP().to(DT).eval()
    assert CompiledFunction.apply(torch.ones(1, requires_grad=True)).grad_fn.__class__.__name__ \
        == "CompiledFunctionBackward"
    with pytest.raises(TypeError, match="compiled by torch.compile.*fnattr.compile"):
        fn(lambda t: model(CompiledFunction.apply(t)), torch.randn(5, 6, dtype=DT), target=1)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.compile
def test_a_real_compiled_graph_inside_the_forward_is_refused():
    # The same with torch.compile itself (the node type name is AOTAutograd's).
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    compiled = torch.compile(model)
    with pytest.raises(TypeError, match="compiled by torch.compile"):
        fnattr.guided_backprop(lambda t: compiled(t), torch.randn(3, 6), target=1)
