"""Layer integrated gradients (fnattr._lig): Captum parity on a tiny BERT, a conv net
and tuple-valued layers; K targets in one pass equal K calls (the causal-LM matrix);
token summaries; the Hugging Face ModelOutput error; state left untouched."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import fnattr
from fnattr import compat, viz

from .conftest import ConvNet, captum_quiet

transformers = pytest.importorskip("transformers")
captum_attr = pytest.importorskip("captum.attr")

METHODS = ["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
           "gausslegendre"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Transformer forwards on tiny batches: 2 threads on a shared machine were 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(a, b, tol=1e-6):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100, num_labels=3)
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 100, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return model, (lambda i, m: model(i, attention_mask=m).logits), ids, mask


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def captum_lig(forward, layer, inputs, multiply_by_inputs=True, **kwargs):
    with captum_quiet():
        return captum_attr.LayerIntegratedGradients(
            forward, layer, multiply_by_inputs=multiply_by_inputs).attribute(inputs, **kwargs)


@pytest.mark.parametrize("baselines", [0, "ids"])
def test_bert_embeddings_with_mask_match_captum(bert, baselines):
    model, forward, ids, mask = bert
    if baselines == "ids":  # a per-example baseline of token ids ([CLS] kept, rest pad)
        baselines = torch.zeros_like(ids)
        baselines[:, 0] = ids[:, 0]
    kw = dict(baselines=baselines, target=1, additional_forward_args=mask, n_steps=20,
              return_convergence_delta=True)
    attr, delta = fnattr.layer_integrated_gradients(forward, model.bert.embeddings, ids, **kw)
    ref, ref_delta = captum_lig(forward, model.bert.embeddings, ids, **kw)
    assert attr.shape == (3, 9, 64)
    close(attr, ref)
    close(delta, ref_delta)


def test_a_block_called_with_its_mask_attributes_to_its_hidden_states(bert):
    # A BERT layer is called as layer(hidden_states, attention_mask, ...), the mask
    # a bool tensor: its input's attribution is the hidden states' (the mask stays
    # in place), which equal the embeddings' output. Captum raises there
    # ("'NoneType' object has no attribute 'clone'").
    model, forward, ids, mask = bert
    kw = dict(baselines=0, target=1, additional_forward_args=mask, n_steps=8)
    got = fnattr.layer_integrated_gradients(forward, model.bert.encoder.layer[0], ids,
                                            attribute_to_layer_input=True, **kw)
    assert isinstance(got, torch.Tensor) and got.shape == (3, 9, 64)
    close(got, captum_lig(forward, model.bert.embeddings, ids, **kw))
    ii = fnattr.internal_influence(lambda e, m: model(inputs_embeds=e, attention_mask=m).logits,
                                   model.bert.encoder.layer[0],
                                   model.bert.embeddings.word_embeddings(ids), target=1,
                                   additional_forward_args=mask, n_steps=4,
                                   attribute_to_layer_input=True)
    assert ii.shape == (3, 9, 64) and float(ii.abs().max()) > 0


class _FlatTokens(nn.Module):
    """A layer run on the examples' tokens flattened into the batch, (N * T, d)."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(12, 2)

    def forward(self, x):
        h = torch.tanh(self.fc(x.reshape(-1, 4)))
        return self.head(h.reshape(x.shape[0], -1))


@pytest.mark.parametrize("kw", [dict(), dict(internal_batch_size=3), dict(target=[0, 1, 0, 1, 1]),
                                dict(baselines=0.5), dict(multiply_by_inputs=False),
                                dict(attribute_to_layer_input=True)],
                         ids=["plain", "ibs", "targets", "baselines", "no-multiply", "input"])
def test_a_layer_on_tokens_flattened_into_the_batch_matches_captum(kw):
    # The layer's value has N * T rows, one example's after another: Captum
    # integrates it row by row; fnattr failed with torch's "expanded size" error.
    torch.manual_seed(0)
    model, x = _FlatTokens().eval(), torch.randn(5, 3, 4)
    kw = {"target": 1, "n_steps": 4, **kw}
    got = fnattr.layer_integrated_gradients(model, model.fc, x, **kw)
    assert got.shape == (15, 4)
    close(got, captum_lig(model, model.fc, x, **kw))
    # the deltas sum each example's rows (Captum's refuses: attribution rows != examples)
    attr, delta = fnattr.layer_integrated_gradients(model, model.fc, x, target=1, n_steps=4,
                                                    return_convergence_delta=True)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    close(delta, attr.reshape(5, -1).sum(1) - gap)
    each = fnattr.layer_integrated_gradients(model, model.fc, x, target=fnattr.each([0, 1]),
                                             n_steps=4)
    close(each[1], attr, 0)
    # methods that interpolate the inputs need one row per example (Captum's fail too)
    for method in (fnattr.internal_influence, fnattr.layer_conductance):
        with pytest.raises(ValueError, match="needs one row per example"):
            method(model, model.fc, x, target=1, n_steps=4)


class _TwoEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Embedding(20, 6), nn.Embedding(20, 6), nn.Linear(30, 3)

    def forward(self, ids):
        return self.fc(torch.tanh(self.a(ids) + self.b((ids * 3) % 20)).flatten(1))


class _Parallel(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x):
        return self.l1(x) * torch.tanh(self.l2(2 * x))


@pytest.mark.parametrize("kw", [dict(), dict(internal_batch_size=3), dict(target=[0, 1, 2, 1]),
                                dict(method="riemann_trapezoid", n_steps=7),
                                dict(multiply_by_inputs=False), dict(attribute_to_layer_input=True),
                                dict(return_convergence_delta=True)],
                         ids=["plain", "ibs", "targets", "trapezoid", "no-multiply", "input",
                              "delta"])
def test_a_list_of_layers_matches_captum(kw):
    # Captum's LayerIntegratedGradients takes a list of layers, substitutes them
    # together at each path point and returns one attribution per layer.
    torch.manual_seed(0)
    model, ids = _TwoEmbeddings().eval(), torch.randint(1, 20, (4, 5))
    layers = [model.a, model.b]
    if kw.get("attribute_to_layer_input"):  # two parallel layers with floating-point inputs
        model = _Parallel().eval()
        ids, layers = torch.randn(4, 5), [model.l1, model.l2]
    kw = {"baselines": 0, "target": 1, "n_steps": 4, **kw}
    got = fnattr.layer_integrated_gradients(model, layers, ids, **kw)
    ref = captum_lig(model, layers, ids, **kw)
    if kw.get("return_convergence_delta"):
        (got, delta), (ref, ref_delta) = got, ref
        close(delta, ref_delta)
    assert isinstance(got, list) and len(got) == 2
    for g, r in zip(got, ref):
        close(g, r)
    shell = compat.LayerIntegratedGradients(model, layers,
                                            multiply_by_inputs=kw.pop("multiply_by_inputs", True))
    for g, r in zip(shell.attribute(ids, **kw), ref if not kw.get("return_convergence_delta")
                    else [None, None]):
        if r is not None:
            close(g, r)


def test_a_list_of_layers_with_each_targets_vmap_and_create_graph():
    torch.manual_seed(0)
    model, ids = _TwoEmbeddings().eval(), torch.randint(1, 20, (4, 5))
    kw = dict(baselines=0, n_steps=4)
    one = fnattr.layer_integrated_gradients(model, [model.a, model.b], ids, target=1, **kw)
    each = fnattr.layer_integrated_gradients(model, [model.a, model.b], ids,
                                             target=fnattr.each([0, 1]), **kw)
    graph = fnattr.layer_integrated_gradients(model, [model.a, model.b], ids, target=1,
                                              create_graph=True, **kw)
    mapped = torch.func.vmap(lambda i: fnattr.layer_integrated_gradients(
        model, [model.a, model.b], i[None], target=1, **kw)[1][0])(ids)
    for e, o, g in zip(each, one, graph):
        close(e[1], o, 0)
        assert g.requires_grad
        close(g.detach(), o, 0)
    close(mapped, one[1], 1e-6)
    with pytest.raises(TypeError, match="only layer_integrated_gradients takes a list"):
        fnattr.internal_influence(model, [model.a, model.b], ids)
    with pytest.raises(TypeError, match="fnattr.compile takes one `layer`"):
        fnattr.compile(fnattr.layer_integrated_gradients, model, [model.a, model.b])
    with pytest.raises(ValueError, match="lists a layer twice"):
        fnattr.layer_integrated_gradients(model, [model.a, model.a], ids, target=1)


def test_a_value_shared_by_all_examples_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos, self.fc = nn.Embedding(3, 4), nn.Linear(12, 2)

        def forward(self, x):
            p = self.pos(torch.arange(3)[None])  # (1, 3, 4): one value for every example
            return self.fc((x + p).flatten(1))

    model, x = Shared().eval(), torch.randn(5, 3, 4)
    with pytest.raises(ValueError, match=r"`layer` Embedding's value has shape \(1, 3, 4\)"):
        fnattr.layer_integrated_gradients(model, model.pos, x, target=1)


@pytest.mark.parametrize("batch", [1, 2, 7, 40])
def test_internal_batch_size_matches_captum(bert, batch):
    model, forward, ids, mask = bert
    kw = dict(baselines=0, target=2, additional_forward_args=mask, n_steps=6,
              internal_batch_size=batch)
    close(fnattr.layer_integrated_gradients(forward, model.bert.embeddings, ids, **kw),
          captum_lig(forward, model.bert.embeddings, ids, **kw))


def test_one_example_and_a_word_embedding_layer(bert):
    model, forward, ids, mask = bert
    kw = dict(baselines=0, target=0, additional_forward_args=mask[:1], n_steps=8)
    layer = model.bert.embeddings.word_embeddings
    close(fnattr.layer_integrated_gradients(forward, layer, ids[:1], **kw),
          captum_lig(forward, layer, ids[:1], **kw))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_conv_layer_every_quadrature_matches_captum(method, multiply_by_inputs):
    torch.manual_seed(1)
    net, x = ConvNet().eval(), torch.randn(4, 3, 8, 8)
    kw = dict(baselines=0.1, target=3, n_steps=7, method=method, return_convergence_delta=True)
    attr, delta = fnattr.layer_integrated_gradients(net, net.conv2, x, **kw,
                                                    multiply_by_inputs=multiply_by_inputs)
    ref, ref_delta = captum_lig(net, net.conv2, x, multiply_by_inputs, **kw)
    close(attr, ref)
    close(delta, ref_delta)


def test_attribute_to_layer_input_matches_captum():
    torch.manual_seed(2)
    net, x = ConvNet().eval(), torch.randn(3, 3, 8, 8)
    kw = dict(baselines=torch.randn(1, 3, 8, 8), target=[0, 2, 4], n_steps=9,
              attribute_to_layer_input=True)
    attr = fnattr.layer_integrated_gradients(net, net.conv2, x, **kw)
    assert attr.shape == (3, 4, 6, 6)  # conv2's input
    close(attr, captum_lig(net, net.conv2, x, **kw))


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("to_input", [False, True])
def test_a_value_changed_in_place_downstream_works_where_captum_raises(to_input, create_graph):
    # torchvision's VGG runs ReLU(inplace=True) on every conv's output: Captum's
    # substituted value is a leaf that requires grad, and the in-place ReLU
    # raises. fnattr substitutes a copy; the numbers are those of the same
    # model with ReLU(inplace=False), where Captum runs (also with create_graph,
    # where the substitute is no leaf and the in-place op moved the gradient).
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 5)).eval()
    plain = nn.Sequential(net[0], nn.ReLU(), net[2], net[3]).eval()
    x = torch.randn(2, 3, 6, 6)
    kw = dict(target=1, n_steps=5, attribute_to_layer_input=to_input)
    # at the conv's output, or at the ReLU's input (the ReLU changes it in place)
    layer, ref_layer = (net[1], plain[1]) if to_input else (net[0], plain[0])
    with pytest.raises(RuntimeError, match="in-place"):
        captum_lig(net, layer, x, **kw)
    attr = fnattr.layer_integrated_gradients(net, layer, x, **kw, create_graph=create_graph)
    close(attr.detach(), captum_lig(plain, ref_layer, x, **kw))
    assert attr.abs().max() > 1e-3


class Split(nn.Module):
    def forward(self, h):
        return h[:, :3], h[:, 3:] * 2


class TupleNet(nn.Module):
    """A layer whose value is a tuple of two tensors of different shapes."""

    def __init__(self):
        super().__init__()
        self.fc, self.split, self.out = nn.Linear(5, 7), Split(), nn.Linear(7, 2)

    def forward(self, x):
        a, b = self.split(torch.tanh(self.fc(x)))
        return self.out(torch.cat([a.sin(), b], 1))


def test_tuple_valued_layer_matches_captum():
    torch.manual_seed(3)
    net, x = TupleNet().eval(), torch.randn(4, 5)
    kw = dict(target=1, n_steps=11, return_convergence_delta=True)
    (a, b), delta = fnattr.layer_integrated_gradients(net, net.split, x, **kw)
    (ra, rb), ref_delta = captum_lig(net, net.split, x, **kw)
    assert a.shape == (4, 3) and b.shape == (4, 4)
    close(a, ra)
    close(b, rb)
    close(delta, ref_delta)


def test_compat_shell_matches_captum(bert):
    model, forward, ids, mask = bert
    ours = compat.LayerIntegratedGradients(forward, model.bert.embeddings,
                                           multiply_by_inputs=False)
    assert ours.has_convergence_delta() and not ours.multiplies_by_inputs
    assert ours.get_name() == "Layer Integrated Gradients"
    kw = dict(baselines=0, target=1, additional_forward_args=mask, n_steps=5)
    close(ours.attribute(ids, **kw),
          captum_lig(forward, model.bert.embeddings, ids, multiply_by_inputs=False, **kw))


def test_each_target_equals_single_calls_and_deltas(bert):
    model, forward, ids, mask = bert
    kw = dict(baselines=0, additional_forward_args=mask, n_steps=6, internal_batch_size=7,
              return_convergence_delta=True)
    layer = model.bert.embeddings
    attr, delta = fnattr.layer_integrated_gradients(forward, layer, ids,
                                                    target=fnattr.each([2, 0]), **kw)
    for k, t in enumerate([2, 0]):
        single, single_delta = fnattr.layer_integrated_gradients(forward, layer, ids, target=t,
                                                                 **kw)
        close(attr[k], single)
        close(delta[k], single_delta)


def generate(model, prompt, k):
    ids = prompt
    with torch.no_grad():
        for _ in range(k):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def test_causal_lm_matrix_in_one_pass_equals_the_loop(gpt2):
    prompt = torch.tensor([[5, 17, 42, 8, 99, 3]])
    t, k = prompt.shape[1], 4
    ids = generate(gpt2, prompt, k)
    forward, layer = (lambda i: gpt2(i).logits), gpt2.transformer.wte
    targets = [(t - 1 + j, int(ids[0, t + j])) for j in range(k)]
    attr = fnattr.layer_integrated_gradients(forward, layer, ids, baselines=0,
                                             target=fnattr.each(targets), n_steps=8)
    matrix = fnattr.token_scores(attr, normalize=False)[:, 0, :t]
    assert matrix.shape == (k, t)
    loop = torch.stack([
        fnattr.layer_integrated_gradients(forward, layer, ids, baselines=0, target=tg,
                                          n_steps=8)[0].sum(-1)[:t] for tg in targets])
    close(matrix, loop)
    close(attr[2], captum_lig(forward, layer, ids, baselines=0, target=targets[2], n_steps=8))
    # causality: the generated tokens after a position do not change its logit
    assert attr[0, 0, t:].abs().max() == 0


def test_token_scores_sum_to_the_attribution(bert):
    model, forward, ids, mask = bert
    attr = fnattr.layer_integrated_gradients(forward, model.bert.embeddings, ids, baselines=0,
                                             target=1, additional_forward_args=mask, n_steps=5)
    raw = fnattr.token_scores(attr, normalize=False)
    assert raw.shape == (3, 9)
    close(raw.sum(1), attr.sum((1, 2)), 1e-5)
    close(raw[1, 4], attr[1, 4].sum())
    unit = fnattr.token_scores(attr)
    close(unit.norm(dim=-1), torch.ones(3))
    close(unit * raw.norm(dim=-1, keepdim=True), raw)
    assert fnattr.token_scores(torch.zeros(2, 4, 3)).abs().max() == 0  # no NaN for zero rows
    with pytest.raises(TypeError, match="`attributions`"):
        fnattr.token_scores((attr,))
    with pytest.raises(ValueError, match="`attributions`"):
        fnattr.token_scores(torch.zeros(4))


def test_model_output_error_names_the_one_line_recipe(bert):
    model, _, ids, mask = bert
    with pytest.raises(TypeError, match="SequenceClassifierOutput") as info:
        fnattr.layer_integrated_gradients(model, model.bert.embeddings, ids, baselines=0,
                                          target=1, additional_forward_args=mask, n_steps=2)
    assert "lambda ids, mask: model(ids, attention_mask=mask).logits" in str(info.value)
    layer = nn.Identity()
    with pytest.raises(TypeError, match="must return a Tensor, got dict; a Hugging Face"):
        fnattr.layer_integrated_gradients(lambda x: {"logits": layer(x).sum(1)}, layer,
                                          torch.ones(2, 3))


def test_integer_baselines_are_token_ids(bert):
    model, forward, ids, mask = bert
    layer = model.bert.embeddings
    with pytest.raises(TypeError, match="`baselines\\[0\\]`.*token ids"):
        fnattr.layer_integrated_gradients(forward, layer, ids, baselines=torch.zeros(3, 9),
                                          target=1, additional_forward_args=mask)
    with pytest.raises(ValueError, match="`baselines`.*token ids"):
        fnattr.layer_integrated_gradients(forward, layer, ids, baselines=0.5, target=1,
                                          additional_forward_args=mask)


def test_leaves_no_hooks_or_flags_even_when_the_model_raises(bert):
    model, forward, ids, mask = bert
    layer = model.bert.embeddings
    fnattr.layer_integrated_gradients(forward, layer, ids, baselines=0, target=1,
                                      additional_forward_args=mask, n_steps=2)

    def broken(i, m):
        model(i, attention_mask=m)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fnattr.layer_integrated_gradients(broken, layer, ids, target=1,
                                          additional_forward_args=mask, n_steps=2)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_create_graph_differentiates_through_both_layer_values():
    # After the layer the model is linear, so completeness is exact for any
    # quadrature: sum(attr) = f(x) - f(b), and so are its parameter gradients.
    torch.manual_seed(4)
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 2)
    forward = lambda i: head(emb(i)).sum(1)  # noqa: E731
    ids, base = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[0, 7, 0]])
    attr = fnattr.layer_integrated_gradients(forward, emb, ids, baselines=base, target=1,
                                             n_steps=3, method="riemann_left",
                                             create_graph=True)
    params = [emb.weight, head.weight]
    got = torch.autograd.grad(attr.sum(), params)
    want = torch.autograd.grad((forward(ids) - forward(base.expand(2, 3)))[:, 1].sum(), params)
    for g, w in zip(got, want):
        close(g, w, 1e-5)


def test_viz_tokens_html_and_figure():
    words, scores = ["[CLS]", "<b>", "good", "bad"], torch.tensor([0.0, 0.5, 1.0, -1.0])
    page = viz.tokens(words, scores, html=True, title="review")
    assert page.count("<span title=") == 4 and "&lt;b&gt;" in page and "<b>review</b>" in page
    colors = dict(zip(words, re.findall(r"background:#(\w{6})", page)))
    assert (colors["[CLS]"], colors["good"], colors["bad"]) == ("f7f6f6", "67001f", "053061")
    fig = viz.tokens(words, scores, width=3.0)
    boxes = {t.get_text(): t.get_bbox_patch().get_facecolor() for t in fig.axes[0].texts}
    red, blue, white = boxes["good"], boxes["bad"], boxes["[CLS]"]
    assert red[0] > 0.2 + red[2] and blue[2] > 0.2 + blue[0]
    assert min(white[:3]) > 0.9  # zero is (nearly) white on the symmetric scale
    assert len(fig.axes) == 2  # the text and its colour bar
    fig = viz.token_matrix(["x", "y"], ["a", "b", "c"], torch.randn(2, 3))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="`scores`"):
        viz.tokens(words, torch.ones(3))
    with pytest.raises(ValueError, match="`matrix`"):
        viz.token_matrix(["x"], ["a", "b"], torch.ones(2, 2))


def test_catalog_entry():
    entry = fnattr._catalog.lookup(fnattr.layer_integrated_gradients)
    assert (entry.site, entry.path, entry.delta, entry.compat, entry.integer_inputs) == \
        ("layer", "quadrature", True, "LayerIntegratedGradients", True)


class TextNet(nn.Module):
    """Token ids -> embedding -> MLP over the mean: a tiny model for compile tests."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc, self.out = nn.Embedding(20, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, ids, mask):
        h = torch.tanh(self.fc(self.emb(ids))) * mask[..., None]
        return self.out(h.sum(1))


@pytest.mark.compile
def test_compiles_on_token_ids_and_each_targets():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(5)
    net, ids = TextNet().eval(), torch.randint(0, 20, (4, 6))
    mask = (torch.rand(4, 6) > 0.2).float()
    # A plain callable over live parameters (as with Hugging Face models): the
    # compiled result must not be attached to them (regression: it was, and
    # AOTAutograd traced a double backward, which CPU flash attention lacks).
    forward = lambda i, m: net(i, m)  # noqa: E731
    compiled = fnattr.compile(fnattr.layer_integrated_gradients, forward, net.emb)
    kw = dict(baselines=0, additional_forward_args=mask, n_steps=5)
    for target in (1, 2, fnattr.each([0, 2])):  # a new int target reuses the graph
        got = compiled(ids, target=target, **kw)
        close(got, fnattr.layer_integrated_gradients(net, net.emb, ids, target=target, **kw),
              1e-5)
        assert not got.requires_grad
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 2  # one int target, one each([...])


def test_language_models_example_matrix_equals_the_loop():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "language_models.py"
    spec = importlib.util.spec_from_file_location("language_models", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    prompt, generated, matrix, loop = example.generated_x_prompt(k=3)
    assert matrix.shape == (3, len(prompt)) and len(generated) == 3
    close(matrix, loop)
    sentence, scores = example.bert_token_scores()
    assert scores.shape == (len(sentence),)
    close(scores.norm(), torch.tensor(1.0))


def test_under_vmap_and_torch_func_grad():
    torch.manual_seed(6)
    net, x = ConvNet().eval(), torch.randn(2, 3, 8, 8)
    lig = lambda v: fnattr.layer_integrated_gradients(net, net.conv2, v, target=1,  # noqa: E731
                                                      n_steps=4)
    close(torch.func.vmap(lambda xi: lig(xi[None])[0])(x), lig(x))
    xg = x.clone().requires_grad_()
    total = fnattr.layer_integrated_gradients(net, net.conv2, xg, target=1, n_steps=4,
                                              create_graph=True).sum()
    close(torch.func.grad(lambda v: lig(v).sum())(x), torch.autograd.grad(total, xg)[0])


_SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64)


def _llama():
    m = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **_SMALL, num_key_value_heads=1, max_position_embeddings=64)).eval()
    return m, (lambda i, am: m(i, attention_mask=am).logits[:, -1]), m.model.embed_tokens, "mask"


def _distilbert():
    m = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=3)).eval()
    return m, (lambda i, am: m(i, attention_mask=am).logits), m.distilbert.embeddings, "mask"


def _t5():
    m = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        decoder_start_token_id=0)).eval()
    # attribution to the encoder's token embeddings; decoder ids as an extra argument
    return (m, (lambda i, d: m(input_ids=i, decoder_input_ids=d).logits[:, -1]),
            m.encoder.embed_tokens, "decoder ids")


def _gpt_neox():
    m = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **_SMALL, max_position_embeddings=64)).eval()
    return m, (lambda i, am: m(i, attention_mask=am).logits[:, -1]), m.gpt_neox.embed_in, "mask"


@pytest.mark.parametrize("build", [_llama, _distilbert, _t5, _gpt_neox],
                         ids=["llama", "distilbert", "t5", "gpt-neox"])
def test_other_hugging_face_architectures_match_captum(build):
    # Rotary positions (Llama, GPT-NeoX), an embedding module with its own
    # positions and LayerNorm (DistilBERT), an encoder-decoder whose decoder ids
    # ride along as an additional argument (T5): Captum's numbers, and K
    # targets in one pass equal to K calls.
    torch.manual_seed(0)
    model, forward, layer, extra = build()
    ids = torch.randint(3, 100, (2, 10))
    if extra == "mask":
        arg = torch.ones(2, 10, dtype=torch.long)
        arg[1, 7:] = 0
    else:
        arg = torch.randint(3, 100, (2, 4))
    kw = dict(baselines=0, n_steps=6, additional_forward_args=(arg,))
    attr = fnattr.layer_integrated_gradients(forward, layer, ids, target=1, **kw)
    ref = captum_lig(forward, layer, ids, target=1, **kw)
    close(attr, ref)
    assert ref.abs().max() > 1e-4
    many = fnattr.layer_integrated_gradients(forward, layer, ids, target=fnattr.each([1, 2]), **kw)
    close(many[1], fnattr.layer_integrated_gradients(forward, layer, ids, target=2, **kw))
    close(many[0], attr)


def test_a_layer_returning_a_model_output_names_the_way_out(bert):
    # model.bert.encoder returns a BaseModelOutput (a dict): the error says so
    # and points to a submodule that returns tensors.
    model, forward, ids, mask = bert
    with pytest.raises(TypeError, match="got BaseModelOutput.*a dict.*submodule that returns"):
        fnattr.layer_integrated_gradients(forward, model.bert.encoder, ids, target=1,
                                          additional_forward_args=mask, n_steps=2)
    assert not model.bert.encoder._forward_hooks


def test_second_derivatives_of_an_sdpa_model_under_the_math_backend(gpt2):
    # torch 2.13 has no derivative of CPU flash attention's backward: the
    # README's recipe (the math backend, call and backward both) gives the same
    # second derivative as the model built with eager attention.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    eager = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        **{k: getattr(gpt2.config, k) for k in ("n_layer", "n_embd", "n_head", "vocab_size")},
        bos_token_id=0, eos_token_id=0, attn_implementation="eager")).eval()
    eager.load_state_dict(gpt2.state_dict())
    x = torch.randn(2, 6, 64, requires_grad=True)

    def second(model):
        attr = fnattr.integrated_gradients(lambda e: model(inputs_embeds=e).logits[:, -1], x,
                                           target=3, n_steps=3, create_graph=True)
        return torch.autograd.grad(attr.sum(), x)[0]

    with pytest.raises(RuntimeError, match="derivative for .*flash_attention.* not implemented"):
        second(gpt2)
    with sdpa_kernel(SDPBackend.MATH):
        got = second(gpt2)
    want = second(eager)
    assert want.abs().max() > 0
    close(got, want, 1e-5)
