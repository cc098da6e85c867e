"""Layer integrated gradients on language models: ``python -m benchmarks.lig``.

Two parts, each timed interleaved in this one process (``benchmarks.run``'s
``run_interleaved``: rounds of one sample per candidate, the first candidate
rotating; medians over all timed calls), each candidate checked against
Captum 0.9 before it is timed:

* **LIG on BERT embeddings** (``model.bert.embeddings``, an attention mask as
  ``additional_forward_args``, token-id baselines 0, ``n_steps=50``,
  gausslegendre, sequence 128, batch 8): fnattr eager, fnattr compiled
  (``fnattr.compile``; its first call, compile time, reported apart) and
  Captum's ``LayerIntegratedGradients``, on a tiny BERT (hidden 64, 2 layers)
  and a 6-layer BERT (width reduced from BERT-base's 768, see ``--six-width``:
  one call at 768 wide is ~13 TFLOP, minutes on this 2-core CPU).
* **The K x T matrix of a causal LM**: a tiny GPT-2 (2 layers, 64 wide), a
  prompt of T tokens and K greedily generated tokens; the attribution of each
  generated token's logit to each prompt token, as one call with
  ``target=fnattr.each([(position, token), ...])`` (one shared forward per path
  batch, a vectorized backward over the K targets) against a loop of K Captum
  calls (and a loop of K fnattr calls).

Settings are printed with the results (markdown, for ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from typing import Any, Callable

import torch

import fnattr
from benchmarks.run import Cand, rel_err, run_interleaved

CPU = torch.device("cpu")
TOL = 1e-4  # max|a - b| / max|captum|


def bert(hidden: int, layers: int, heads: int, seq: int, batch: int, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, vocab_size=1000, num_labels=2,
                        max_position_embeddings=max(512, seq))
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 1000, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[batch // 2:, seq * 3 // 4:] = 0  # half the batch padded
    forward = lambda i, m: model(i, attention_mask=m).logits  # noqa: E731
    return forward, model.bert.embeddings, ids, mask


def captum_lig(forward: Callable, layer: Any) -> Callable:
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(forward, layer)

    def call(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lig.attribute(*args, **kwargs)

    return call


def checked(name: str, fn: Callable, ref: torch.Tensor) -> Cand:
    out = fn()
    c = Cand(name, fn)
    c.err = rel_err(out, ref)
    c.ok = c.err <= TOL
    c.check = f"{c.err:.1e} vs Captum"
    if not c.ok:
        raise SystemExit(f"{name}: {c.check} exceeds {TOL}")
    return c


def lig_block(label: str, spec: tuple, args: argparse.Namespace) -> list[Cand]:
    forward, layer, ids, mask = bert(*spec)
    kw = dict(baselines=0, target=1, additional_forward_args=mask, n_steps=args.n_steps)
    captum = captum_lig(forward, layer)
    ref = captum(ids, **kw)
    cands = [checked("fnattr eager", lambda: fnattr.layer_integrated_gradients(
        forward, layer, ids, **kw), ref)]
    if args.compile:
        compiled = fnattr.compile(fnattr.layer_integrated_gradients, forward, layer)
        t0 = time.perf_counter()
        compiled(ids, **kw)
        compile_s = time.perf_counter() - t0
        cands.append(checked("fnattr compiled", lambda: compiled(ids, **kw), ref))
        cands[-1].compile_s = compile_s
    cands.append(checked("Captum 0.9", lambda: captum(ids, **kw), ref))
    run_interleaved(cands, args.repeats, args.sample_s, CPU)
    print(f"\n### {label}\n")
    table(cands)
    return cands


def gpt2_matrix(args: argparse.Namespace) -> list[Cand]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    forward, layer = (lambda i: model(i).logits), model.transformer.wte
    t, k = args.prompt, args.k
    ids = torch.randint(1, 100, (1, t))
    with torch.no_grad():
        for _ in range(k):
            ids = torch.cat([ids, forward(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    targets = [(t - 1 + j, int(ids[0, t + j])) for j in range(k)]
    kw = dict(baselines=0, n_steps=args.n_steps)
    captum = captum_lig(forward, layer)

    def captum_loop() -> torch.Tensor:
        return torch.stack([captum(ids, target=tg, **kw)[0].sum(-1)[:t] for tg in targets])

    def fnattr_loop() -> torch.Tensor:
        return torch.stack([fnattr.layer_integrated_gradients(
            forward, layer, ids, target=tg, **kw)[0].sum(-1)[:t] for tg in targets])

    def one_pass(chunk: int | None) -> Callable:
        return lambda: fnattr.token_scores(fnattr.layer_integrated_gradients(
            forward, layer, ids, target=fnattr.each(targets), chunk_size=chunk, **kw),
            normalize=False)[:, 0, :t]

    ref = captum_loop()
    cands = [checked("fnattr one pass (chunk_size=None)", one_pass(None), ref)]
    cands += [checked(f"fnattr one pass (chunk_size={c})", one_pass(c), ref) for c in (4, k)]
    cands += [checked(f"fnattr, loop of {k} calls", fnattr_loop, ref),
              checked(f"Captum 0.9, loop of {k} calls", captum_loop, ref)]
    run_interleaved(cands, args.repeats, args.sample_s, CPU)
    print(f"\n### K x T matrix: tiny GPT-2 (2 layers, 64 wide), prompt T={t}, K={k} generated "
          f"tokens (sequence {t + k}), n_steps={args.n_steps}\n")
    table(cands)
    return cands


def table(cands: list[Cand]) -> None:
    ref = cands[-1].summary()["median"]
    print("| candidate | median ms | min ms | rounds ms | x Captum (speed-up) | compile s | check |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for c in cands:
        s = c.summary()
        comp = f"{c.compile_s:.1f}" if c.compile_s is not None else ""
        print(f"| {c.name} | {1e3 * s['median']:.1f} | {1e3 * s['min']:.1f} | "
              f"{1e3 * s['lo']:.1f}-{1e3 * s['hi']:.1f} | {ref / s['median']:.2f}x | {comp} | "
              f"{c.check} |")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="tiny,six,matrix", help="comma list of tiny, six, matrix")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=50)
    p.add_argument("--six-width", type=int, default=128, help="hidden size of the 6-layer BERT")
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sample-s", type=float, default=0.5)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s), load {os.getloadavg()}")
    t0 = time.perf_counter()
    if "tiny" in parts:
        lig_block(f"LIG on a tiny BERT (hidden 64, 2 layers, 2 heads), sequence {args.seq}, "
                  f"batch {args.batch}, n_steps={args.n_steps}",
                  (64, 2, 2, args.seq, args.batch), args)
    if "six" in parts:
        w = args.six_width
        lig_block(f"LIG on a 6-layer BERT (hidden {w}, {max(1, w // 64)} heads, intermediate "
                  f"{4 * w}), sequence {args.seq}, batch {args.batch}, n_steps={args.n_steps}",
                  (w, 6, max(1, w // 64), args.seq, args.batch), args)
    if "matrix" in parts:
        gpt2_matrix(args)
    print(f"\nwall time {(time.perf_counter() - t0) / 60:.1f} min; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
