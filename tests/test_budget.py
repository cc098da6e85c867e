"""Memory budgets (fnattr._budget, fnattr._probe): peak working memory within the budget,
results independent of the split, argument errors, the context manager."""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable

import pytest
import torch
from torch import nn

import fnattr
from fnattr import _budget, _probe

B = 2**10  # KiB
MiB = 2**20


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 12 * 12, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


X = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
BASE = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
GEN = lambda: torch.Generator().manual_seed(3)  # noqa: E731

# name -> (call(net, **budget_kwargs), expanded rows, takes internal_batch_size)
CASES = {
    "integrated_gradients": (lambda m, **k: fnattr.integrated_gradients(
        m, X, target=1, n_steps=16, **k), 64, True),
    "integrated_gradients_each": (lambda m, **k: fnattr.integrated_gradients(
        m, X, target=fnattr.each([0, 1, 2]), n_steps=16, **k), 64, True),
    "neuron_integrated_gradients": (lambda m, **k: fnattr.neuron_integrated_gradients(
        m, m[5], X, [(0,), (3,), (7,)], n_steps=16, **k), 64, True),
    "internal_influence": (lambda m, **k: fnattr.internal_influence(
        m, m[5], X, target=1, n_steps=16, **k), 64, True),
    "layer_integrated_gradients": (lambda m, **k: fnattr.layer_integrated_gradients(
        m, m[2], X, target=1, n_steps=16, **k), 64, True),
    "layer_conductance": (lambda m, **k: fnattr.layer_conductance(
        m, m[5], X, target=1, n_steps=16, **k), 68, True),
    "gradient_shap": (lambda m, **k: fnattr.gradient_shap(
        m, X, BASE, n_samples=16, target=1, generator=GEN(), **k), 64, True),
    "neuron_gradient_shap": (lambda m, **k: fnattr.neuron_gradient_shap(
        m, m[5], X, (2,), BASE, n_samples=16, generator=GEN(), **k), 64, True),
    "neuron_gradient_many": (lambda m, **k: fnattr.neuron_gradient(
        m, m[2], X, [(c, 5, 5) for c in range(16)], **k), 4, False),
    "gradient_each": (lambda m, **k: fnattr.gradient(
        m, X, target=fnattr.each(range(10)), **k), 4, False),
    # the noise tunnel's copies (16 per example) under the budget, the inner method too
    "noise_tunnel": (lambda m, **k: fnattr.noise_tunnel(
        functools.partial(fnattr.integrated_gradients, m), X, target=1, n_steps=4,
        nt_samples=16, stdevs=0.1, generator=GEN(), **k), 256, False),
}


def peak(fn):
    """Peak bytes allocated by the CPU allocator during ``fn()`` (net of frees),
    from torch.profiler's allocation events; returns ``(peak, fn())``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    alloc = torch._C._profiler._EventType.Allocation
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == alloc and e.extra_fields.device.type == "cpu":
            events.append((e.start_time_ns, e.extra_fields.alloc_size,
                           e.extra_fields.total_allocated))
    events.sort()
    base = events[0][2] - events[0][1]
    return max(t for _, _, t in events) - base, out


def _flat(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", list(CASES))
def test_peak_within_budget_and_result_unchanged(net, name):
    call, rows, has_ibs = CASES[name]
    unsplit = (lambda: call(net, internal_batch_size=10**9)) if has_ibs else (lambda: call(net))
    unsplit()  # warm (allocator caches, oneDNN primitives)
    full, ref = peak(unsplit)
    one_row = full / rows  # the unsplit call's bytes per expanded row
    peaks = []
    for fraction in (0.7, 0.5, 0.35):
        budget = int(fraction * full)
        call(net, memory_budget=budget)  # the probe runs (and is cached) outside the profiler
        used, out = peak(lambda: call(net, memory_budget=budget))
        assert used <= budget + one_row, (fraction, used, budget, one_row)
        for a, b in zip(_flat(out), _flat(ref)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        peaks.append(used)
    assert peaks[-1] < 0.5 * full  # the budget did split the call


def test_budget_strings_and_units():
    assert _budget.parse("512MiB") == 512 * 2**20
    assert _budget.parse("2GiB") == 2 * 2**30
    assert _budget.parse("1.5GB") == 1_500_000_000
    assert _budget.parse(" 64 kib ") == 64 * 2**10
    assert _budget.parse("100") == 100
    assert _budget.parse("3mb") == 3_000_000
    assert _budget.parse(4096) == 4096
    assert _budget.parse(None) is None


@pytest.mark.parametrize("bad", [0, -1, "-5MiB", "0GB", "", "lots", "12 parsecs", "1.2.3MB",
                                 "MiB"])
def test_bad_budgets_are_value_errors(net, bad):
    with pytest.raises(ValueError, match="`memory_budget`"):
        fnattr.integrated_gradients(net, X, target=1, memory_budget=bad)
    with pytest.raises(ValueError, match="`memory_budget`"):
        fnattr.memory_budget(bad)


@pytest.mark.parametrize("bad", [True, 1.5, [1]])
def test_budget_of_wrong_type_is_type_error(net, bad):
    with pytest.raises(TypeError, match="`memory_budget`"):
        fnattr.gradient_shap(net, X, BASE, target=1, memory_budget=bad)


def test_budget_below_one_row_says_what_one_row_needs(net):
    with pytest.raises(ValueError, match=r"too small: one row needs [\d.]+ MiB"):
        fnattr.internal_influence(net, net[5], X, target=1, memory_budget=B)
    with pytest.raises(ValueError, match="one row needs"):
        fnattr.neuron_gradient(net, net[2], X, [(0, 1, 1), (1, 2, 2)], memory_budget=B)


def test_explicit_internal_batch_size_wins(net):
    ref = fnattr.integrated_gradients(net, X, target=1, n_steps=8)
    out = fnattr.integrated_gradients(net, X, target=1, n_steps=8, internal_batch_size=5,
                                      memory_budget=1)  # 1 byte: would not fit one row
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`memory_budget`"):  # still checked
        fnattr.integrated_gradients(net, X, target=1, internal_batch_size=5, memory_budget=-1)


def test_context_sets_default_nests_and_restores(net):
    assert _budget.resolve(None) is None
    with fnattr.memory_budget("1MiB"):
        assert _budget.resolve(None) == 2**20
        with fnattr.memory_budget(B):
            assert _budget.resolve(None) == B
            assert _budget.resolve("2MiB") == 2 * 2**20  # the argument wins
            with pytest.raises(ValueError, match="one row needs"):
                fnattr.internal_influence(net, net[5], X, target=1)
        assert _budget.resolve(None) == 2**20
        with pytest.raises(RuntimeError):
            with fnattr.memory_budget("5MiB"):
                raise RuntimeError("inside")
        assert _budget.resolve(None) == 2**20
        with fnattr.memory_budget(None):  # automatic again inside
            assert _budget.resolve(None) is None
    assert _budget.resolve(None) is None


def test_context_is_thread_local():
    seen = []
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen.append(_budget.resolve(None))
        with fnattr.memory_budget("3MiB"):
            seen.append(_budget.resolve(None))
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with fnattr.memory_budget("1MiB"):
        inside.set()
        done.wait()
        assert _budget.resolve(None) == 2**20
    t.join()
    assert seen == [None, 3 * 2**20]


def test_probe_under_an_active_profiler_falls_back(net):
    """Profilers do not nest: under one the planner estimates from saved bytes."""
    ref = fnattr.internal_influence(net, net[5], X, target=2, n_steps=12)
    _probe._CACHE.clear()
    _, out = peak(lambda: fnattr.internal_influence(net, net[5], X, target=2, n_steps=12,
                                                    memory_budget="4MiB"))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    _probe._CACHE.clear()


def test_plan_splits_rows_then_k():
    cost = _probe.Cost(row=100, k_row=10)
    assert _budget.plan(1000, cost, rows=50, k=8) == (10, 1)
    assert _budget.plan(1000, cost, rows=5, k=8) == (5, 8)
    assert _budget.plan(1000, cost, rows=5, k=100) == (5, 11)
    with pytest.raises(ValueError, match="at least"):
        _budget.plan(1000, cost, rows=5, k=1, outside=950)
    with pytest.raises(ValueError, match="at least"):  # the final reduction does not fit
        _budget.plan(1000, cost, rows=5, k=1, outside=500, after=600)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _budget._fast(1000, cpu, 1) == _budget.CPU_ROWS  # CPU speed caps
    assert _budget._fast(1000, cpu, _budget.CPU_BLOCK_BYTES // 10) == 10
    assert _budget._fast(1000, cuda, 1) == 1000


@pytest.mark.compile
def test_compiled_call_follows_the_budget(net):
    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 12 * 12, 10)).eval()
    ig = fnattr.compile(fnattr.integrated_gradients, small)
    ref = fnattr.integrated_gradients(small, X, target=1, n_steps=8)
    for budget in ("256KiB", "256KiB", None):
        torch.testing.assert_close(ig(X, target=1, n_steps=8, memory_budget=budget), ref,
                                   rtol=1e-5, atol=1e-6)
    with fnattr.memory_budget(1):
        with pytest.raises(ValueError, match="one row needs"):
            ig(X, target=1, n_steps=8)


def test_block_rows_for_other_expansions():
    """The planner noise tunnel calls: a block of r rows holding r MiB fits the budget."""
    def run(r):
        work = torch.ones(r, MiB // 4)  # one MiB of working memory per row
        return work.sum(1)

    key = ("test_block_rows",)
    rows = _budget.block_rows("20MiB", run, key, [], 100, torch.device("cpu"))
    assert 10 <= rows <= 20
    used, _ = peak(lambda: [run(rows) for _ in range(2)])
    assert used <= 20 * MiB + MiB
    assert _budget.block_rows("1GiB", run, key, [], 100, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="one row needs"):
        _budget.block_rows(MiB // 2, run, key, [], 100, torch.device("cpu"))



def test_every_catalog_method_taking_a_budget_has_a_case():
    # CASES is per method (expanded rows differ); a catalog method that takes
    # `memory_budget` without a case here fails loudly
    from fnattr._catalog import CATALOG

    takes = [e.name for e in CATALOG.values()
             if "memory_budget" in inspect.signature(e.fn).parameters]
    missing = [n for n in takes if not any(k == n or k.startswith(n + "_") for k in CASES)]
    assert not missing, f"no memory-budget case for {missing}"


def _rows_fed(module: nn.Module, call: Callable[[], Any]) -> tuple[Any, list[int]]:
    """``call()``'s result and the batch sizes ``module`` was fed during it."""
    rows: list[int] = []
    handle = module.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    try:
        return call(), rows
    finally:
        handle.remove()


@pytest.mark.parametrize("features, whole", [(16, True), (3 * 32 * 32, False)])
def test_cpu_default_runs_small_paths_whole_and_splits_large_ones(features, whole):
    """No budget on CPU: an expanded batch whose inputs take <= CPU_SMALL_BYTES is one
    block (splitting only adds overhead); a larger one goes in CPU_ROWS-row blocks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(features, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(16, features)
    attr, rows = _rows_fed(model[0], lambda: fnattr.internal_influence(
        model, model[2], x, target=1, n_steps=50))
    assert (16 * 50 * features * 4 <= _budget.CPU_SMALL_BYTES) == whole
    assert max(rows) == (16 * 50 if whole else _budget.CPU_ROWS)
    ref = fnattr.internal_influence(model, model[2], x, target=1, n_steps=50,
                                    internal_batch_size=16 * 50)
    torch.testing.assert_close(attr, ref)


@pytest.fixture
def traced_compile(monkeypatch):
    """torch.compile replaced by a stand-in that runs the graph's Python as traced
    (``is_compiling()`` is True), so that a model's hook sees the rows the
    compiled graph would, without compiling."""
    calls: list[dict] = []  # the keyword arguments of every graph call

    def traced(fn: Callable, **kw: Any) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            with monkeypatch.context() as m:
                m.setattr(torch.compiler, "is_compiling", lambda: True)
                return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(fnattr._compile.torch, "compile", traced)
    return calls


@pytest.mark.parametrize("method, layer", [(fnattr.integrated_gradients, None),
                                           (fnattr.internal_influence, 4),
                                           (fnattr.layer_integrated_gradients, 0)])
def test_compiled_path_methods_on_cpu_take_eagers_automatic_blocks(traced_compile, method, layer):
    """fnattr.compile decides the split outside the graph: with no budget on CPU a
    path method runs eager's CPU_ROWS-row blocks (the whole expanded batch was
    slower compiled too), not one block. torch.compile is the stand-in of
    ``traced_compile``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.Linear(3 * 32 * 32, 8), nn.ReLU(),
                          nn.Linear(8, 4), nn.Identity()).eval()
    x = torch.randn(16, 3 * 32 * 32)
    site = () if layer is None else (model[layer],)
    attr, rows = _rows_fed(model[1], lambda: fnattr.compile(method, model, *site)(
        x, target=1, n_steps=50))
    assert max(rows) == _budget.CPU_ROWS
    ref = method(model, *site, x, target=1, n_steps=50, internal_batch_size=16 * 50)
    torch.testing.assert_close(attr, ref)


class _Scaled(nn.Module):
    """``net(x) * w + net(y)``: a second input and a per-example argument ``w``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * 32 * 32, 8), nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x, y=None, w=None):
        out = self.net(x)
        if w is not None:
            out = out * w
        return out if y is None else out + self.net(y)


_AT_INPUTS = {
    "gradient, per-example target": (fnattr.gradient, None, lambda n: dict(
        target=torch.arange(n) % 4)),
    "gradient, each, tuple inputs, args": (fnattr.gradient, None, lambda n: dict(
        target=fnattr.each([0, 2]), additional_forward_args=(torch.rand(n, 1),))),
    "guided_backprop": (fnattr.guided_backprop, None, lambda n: dict(target=1)),
    "neuron_gradient, K selectors": (fnattr.neuron_gradient, "net.2", lambda n: dict(
        neuron_selector=[0, 3])),
    "neuron_deconvolution": (fnattr.neuron_deconvolution, "net.2", lambda n: dict(
        neuron_selector=1)),
}


@pytest.mark.parametrize("case", list(_AT_INPUTS))
def test_compiled_methods_at_the_inputs_on_cpu_take_eagers_automatic_blocks(traced_compile, case):
    """fnattr.compile of a method at the inputs (no internal_batch_size to carry
    into the graph) splits a large CPU batch into eager's CPU_ROWS-row blocks
    outside the graph: the inputs, a per-example target and per-example args
    sliced, the results concatenated (after a leading K). torch.compile is the
    stand-in of ``traced_compile``."""
    method, layer, kwargs = _AT_INPUTS[case]
    torch.manual_seed(0)
    model = _Scaled().eval()
    n = 700  # 700 rows of 12 KiB: more than CPU_ROWS rows and CPU_SMALL_BYTES
    x = torch.randn(n, 3 * 32 * 32)
    inputs = (x, torch.randn(n, 3 * 32 * 32)) if "tuple" in case else x
    kw = kwargs(n)
    site = () if layer is None else (layer,)
    attr, rows = _rows_fed(model.net[0], lambda: fnattr.compile(method, model, *site)(
        inputs, **kw))
    assert rows and max(rows) == _budget.CPU_ROWS and sum(rows) == n * (1 + ("tuple" in case))
    ref = method(model, *site, inputs, **kw)  # eager, its own blocks
    torch.testing.assert_close(attr, ref)


@pytest.mark.parametrize("method", [fnattr.gradient, fnattr.guided_backprop])
@pytest.mark.parametrize("n, whole", [(160, True), (1024, False)])
def test_cpu_default_splits_a_large_batch_at_the_inputs(method, n, whole):
    """No budget on CPU: the methods evaluated at the inputs themselves follow the
    same rule as the expanded ones (a batch over CPU_ROWS rows and CPU_SMALL_BYTES
    goes in CPU_ROWS-row blocks), with the numbers of one whole batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3 * 32 * 32, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(n, 3 * 32 * 32)
    attr, rows = _rows_fed(model[0], lambda: method(model, x, target=1))
    assert (n * x[0].numel() * 4 <= _budget.CPU_SMALL_BYTES) == whole
    assert max(rows) == (n if whole else _budget.CPU_ROWS)
    ref = torch.cat([method(model, part, target=1) for part in x.split(100)])  # each whole
    torch.testing.assert_close(attr, ref)


_WIDE = nn.Sequential(nn.Linear(16, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                      nn.Linear(4096, 10)).eval()  # a large backward per target


@pytest.mark.parametrize("method, budget, kwargs", [
    (fnattr.gradient, "16MiB", {}),
    (fnattr.integrated_gradients, "64MiB", dict(n_steps=4, return_convergence_delta=True)),
    (fnattr.guided_backprop, "16MiB", {}),
])
def test_compiled_methods_without_chunk_size_take_the_budgets_k_chunk(traced_compile, method,
                                                                      budget, kwargs):
    """A method with no ``chunk_size`` (gradient, IG, the rule methods) splits
    ``fnattr.each`` targets into the K chunk eager plans under the budget (the
    graph has no other way to take it), the results concatenated along K. The
    rule methods take no ``memory_budget`` argument: the context's applies."""
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    targets = fnattr.each(range(10))
    own = "memory_budget" in inspect.signature(method).parameters
    call = lambda m: (m(x, target=targets, memory_budget=budget, **kwargs) if own  # noqa: E731
                      else _with_budget(budget, lambda: m(x, target=targets, **kwargs)))
    ref = call(functools.partial(method, _WIDE))
    _, chunk = _with_budget(budget, lambda: _budget.planned(
        lambda: method(_WIDE, x, target=targets, **kwargs)))
    assert chunk is not None and chunk < 10
    out = call(fnattr.compile(method, _WIDE))
    sizes = [len(c["target"]) for c in traced_compile]
    assert sum(sizes) == 10 and max(sizes) == chunk
    torch.testing.assert_close(out, ref)


def _with_budget(budget: Any, call: Callable[[], Any]) -> Any:
    with fnattr.memory_budget(budget):
        return call()


@pytest.mark.parametrize("method", [fnattr.guided_backprop, fnattr.neuron_deconvolution])
def test_compiled_rule_methods_follow_the_budget_context(traced_compile, method):
    """The rule methods take no ``memory_budget`` argument, but eager honors a
    ``fnattr.memory_budget`` context, and so does the compiled method: the same
    blocks of examples (the automatic plan would run these 64 rows whole)."""
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    site, kw = ((_WIDE[2],), dict(neuron_selector=3)) if "neuron" in method.__name__ \
        else ((), dict(target=1))
    with fnattr.memory_budget("4MiB"):
        method(_WIDE, *site, x, **kw)  # the probe (two rows), then cached
        ref, eager_rows = _rows_fed(_WIDE[0], lambda: method(_WIDE, *site, x, **kw))
        out, rows = _rows_fed(_WIDE[0], lambda: fnattr.compile(method, _WIDE, *site)(x, **kw))
    _, whole = _rows_fed(_WIDE[0], lambda: fnattr.compile(method, _WIDE, *site)(x, **kw))
    assert max(eager_rows) < 64 and whole == [64]
    assert rows == eager_rows
    torch.testing.assert_close(out, ref)
