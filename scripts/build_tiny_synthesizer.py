"""Build and train the tiny synthesizer fixture (about 4 MB) on CPU in a few minutes.

    python scripts/build_tiny_synthesizer.py [--out ipt_data/assets/tiny-synthesizer] [--steps 1500]

The real synthesizer's tokenizer (Mistral-7B-v0.1's `tokenizer.json`, 32,000 tokens, `<s>`=1,
`</s>`=2, committed under tests/data/ by scripts/make_tokenizer_goldens.py), so tests and benchmarks
go through the real tokenization path, and a 2-layer Mistral (hidden 64, head size 32, tied
embeddings) trained to answer `ipt_data.fixtures.synthetic_example` texts in the real synthesizer's
wire format, one to three examples per sequence (M-shot prompts), with the loss on the completions
only.

The fixture's world uses a few hundred of the 32,000 tokens. Training computes the softmax over
those tokens plus one logit standing for all the others, whose embeddings are frozen at zero: that
is the exact full-vocabulary cross-entropy of such a model (their logits are all 0, so together they
add log(n_unused) to the log-sum-exp) at a small fraction of the cost. Weights are stored as float16
(config says float32: engines compute in float32). Seeded: a rerun gives the same fixture on the
same torch build.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import MistralConfig, MistralForCausalLM

from ipt_data.budget import PromptEncoder
from ipt_data.fixtures import TINY_SYNTHESIZER, synthetic_example

REAL_TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "data" / "mistral-7b-v0.1-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def training_sequences(encoder: PromptEncoder, rng: random.Random, n: int) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) for `n` sequences of 1-3 examples; labels only on completions and EOS."""
    seqs = []
    for _ in range(n):
        examples = [synthetic_example(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        ctx = encoder.context_ids([t for t, _ in examples])
        demo = encoder.demo_ids(examples)
        ids, labels = [], []
        for c, d in zip(ctx, demo, strict=True):
            ids += d
            labels += [-100] * len(c) + d[len(c) :]
        seqs.append((ids, labels))
    return seqs


def train(model, seqs, steps: int, batch_size: int, lr: float, seed: int) -> None:
    """Exact full-vocabulary cross-entropy, computed over the used tokens (see the module doc)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    used = sorted({t for ids, _ in seqs for t in ids})
    emb = model.model.embed_tokens.weight  # tied with the output layer
    vocab = emb.shape[0]
    unused = torch.ones(vocab, dtype=torch.bool)
    unused[used] = False
    with torch.no_grad():
        emb[unused] = 0.0
    remap = torch.full((vocab,), -100, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    used_t = torch.tensor(used)
    rest = math.log(vocab - len(used))  # log-sum-exp of the zero logits of every unused token
    print(f"{len(used)} of {vocab} tokens used")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    model.train()
    t0 = time.time()
    for step in range(steps):
        batch = rng.sample(seqs, batch_size)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([s + [0] * (width - len(s)) for s, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in batch])
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = hidden[:, :-1] @ emb[used_t].T
        logits = torch.cat([logits, torch.full_like(logits[..., :1], rest)], dim=-1)
        targets = labels[:, 1:]
        targets = torch.where(targets == -100, targets, remap[targets.clamp(min=0)])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)
    assert not emb[unused].any(), "unused embeddings must stay zero"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=TINY_SYNTHESIZER)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--tokenizer", default=str(REAL_TOKENIZER), help="folder holding the tokenizer.json to use")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    encoder = PromptEncoder(args.tokenizer)
    seqs = training_sequences(encoder, rng, 20000)
    print(f"{len(seqs)} sequences, mean length {sum(len(s) for s, _ in seqs) / len(seqs):.0f} tokens")

    config = MistralConfig(
        vocab_size=encoder.tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        sliding_window=None,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=encoder.bos_id,
        eos_token_id=encoder.eos_id,
        pad_token_id=encoder.eos_id,
    )
    model = MistralForCausalLM(config)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
    train(model, seqs, args.steps, args.batch_size, args.lr, args.seed)

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    model.eval()
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 400
    model.save_pretrained(out)
    weights = out / "model.safetensors"
    save_file({k: v.half() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        shutil.copyfile(Path(args.tokenizer) / name, out / name)
    (out / "README.md").write_text(
        "Tiny synthesizer fixture for ipt_data tests, trained on synthetic data by "
        "scripts/build_tiny_synthesizer.py with Mistral-7B-v0.1's tokenizer. Not a useful model.\n"
    )
    print(json.dumps({p.name: p.stat().st_size for p in sorted(out.iterdir())}, indent=1))


if __name__ == "__main__":
    main()
