"""Attribution for language models: token heatmaps and a generated x prompt matrix.

Two Hugging Face models built from tiny configs (random weights, no download):

1. **A BERT classifier**: layer integrated gradients on its embeddings (the
   inputs are token ids, so the path runs between the embedding values at a pad
   baseline and at the tokens), reduced to one score per token and drawn as a
   coloured token line (``docs/lm_tokens.png``).
2. **A causal LM (GPT-2)**: for a prompt of T tokens and K greedily generated
   tokens, the attribution of each generated token's logit to each prompt token
   is a ``K x T`` matrix. With ``target=fnattr.each([(position, token), ...])``
   all K rows come from one call: one forward per path batch shared by the K
   targets, and one vectorized backward over them (``docs/lm_matrix.png``).
   It equals the loop of K single-target calls.

A model that returns a ``ModelOutput`` is wrapped in a one-line forward that
returns the logits: ``lambda ids, mask: model(ids, attention_mask=mask).logits``.

Runs in a few seconds on a CPU: ``python examples/language_models.py [outdir]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

import fnattr
from fnattr import viz

WORDS = ["[PAD]", "[CLS]", "[SEP]", "the", "film", "was", "not", "good", "great", "but",
         "acting", "plot", "boring", "and", "a", "i", "loved", "it", "story", "."]


def bert_token_scores() -> tuple[list[str], torch.Tensor]:
    """Per-token scores of a tiny BERT classifier for class 1 on one sentence."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, vocab_size=len(WORDS), num_labels=2)
    model = BertForSequenceClassification(config).eval()
    sentence = "[CLS] the film was not good but the acting was great . [SEP]".split()
    ids = torch.tensor([[WORDS.index(w) for w in sentence]])
    mask = torch.ones_like(ids)
    baselines = torch.zeros_like(ids)  # [PAD] everywhere except [CLS] and [SEP]
    baselines[0, 0], baselines[0, -1] = ids[0, 0], ids[0, -1]
    forward = lambda i, m: model(i, attention_mask=m).logits  # noqa: E731
    attr, delta = fnattr.layer_integrated_gradients(
        forward, model.bert.embeddings, ids, baselines=baselines, target=1,
        additional_forward_args=mask, return_convergence_delta=True)
    print(f"BERT: attributions {tuple(attr.shape)}, convergence delta {delta.item():.1e}")
    return sentence, fnattr.token_scores(attr)[0]


def generated_x_prompt(k: int = 8) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    """The ``K x T`` matrix of a tiny GPT-2, in one call and as a loop of K calls."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(WORDS),
                        bos_token_id=0, eos_token_id=0, initializer_range=0.3)
    model = GPT2LMHeadModel(config).eval()
    forward = lambda i: model(i).logits  # noqa: E731
    prompt = "i loved the story and the acting but the plot".split()
    ids = torch.tensor([[WORDS.index(w) for w in prompt]])
    t = ids.shape[1]
    with torch.no_grad():  # greedy generation
        for _ in range(k):
            ids = torch.cat([ids, forward(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    generated = [WORDS[i] for i in ids[0, t:].tolist()]
    # the logit of generated token j is read at position t - 1 + j
    targets = [(t - 1 + j, int(ids[0, t + j])) for j in range(k)]
    attr = fnattr.layer_integrated_gradients(forward, model.transformer.wte, ids, baselines=0,
                                             target=fnattr.each(targets))   # (K, 1, T + K, H)
    matrix = fnattr.token_scores(attr, normalize=False)[:, 0, :t]            # (K, T)
    loop = torch.stack([
        fnattr.token_scores(fnattr.layer_integrated_gradients(
            forward, model.transformer.wte, ids, baselines=0, target=tg), normalize=False)[0, :t]
        for tg in targets])
    return prompt, [f"{j}:{w}" for j, w in enumerate(generated)], matrix, loop


def main(outdir: str = "docs") -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    sentence, scores = bert_token_scores()
    viz.save(viz.tokens(sentence, scores, width=7.0,
                        title="tiny BERT, class 1: layer integrated gradients on the embeddings"),
             out / "lm_tokens.png", dpi=110)
    (out / "lm_tokens.html").write_text(viz.tokens(sentence, scores, html=True))
    prompt, generated, matrix, loop = generated_x_prompt()
    print(f"GPT-2: K x T = {tuple(matrix.shape)}; one pass vs loop of K calls: "
          f"max |diff| = {(matrix - loop).abs().max().item():.1e}")
    rows = matrix / matrix.norm(dim=1, keepdim=True)  # each row on one scale
    viz.save(viz.token_matrix(generated, prompt, rows,
                              title="tiny GPT-2: generated token (row) x prompt token"),
             out / "lm_matrix.png", dpi=110)
    print(f"wrote {out / 'lm_tokens.png'}, {out / 'lm_tokens.html'}, {out / 'lm_matrix.png'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
