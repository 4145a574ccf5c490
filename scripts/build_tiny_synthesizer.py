"""Build and train the tiny synthesizer fixture (about 0.5 MB) on CPU in a few minutes.

    python scripts/build_tiny_synthesizer.py [--out ipt_data/assets/tiny-synthesizer] [--steps 1500]

A byte-level BPE tokenizer (`<unk>`, `<s>`, `</s>` special; the markup strings `<CON>`, `</CON>`,
`<QUE>`, `<ANS>`, `</END>` plain added tokens) and a 2-layer Mistral (hidden 64, head size 32,
tied embeddings) trained to answer `ipt_data.fixtures.synthetic_example` texts in the real
synthesizer's wire format, one to three examples per sequence (M-shot prompts), with the loss on
the completions only. Seeded: a rerun gives the same fixture on the same torch build.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from ipt_data import wire
from ipt_data.budget import PromptEncoder
from ipt_data.fixtures import TINY_SYNTHESIZER, synthetic_example

MARKUP = ["<CON>", "</CON>", "<QUE>", "<ANS>", "</END>"]


def build_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=4096,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(MARKUP)  # plain added tokens, not special: decoding keeps them
    return fast


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
    torch.manual_seed(seed)
    rng = random.Random(seed)
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
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=TINY_SYNTHESIZER)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--vocab-size", type=int, default=640)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    corpus = []
    for _ in range(3000):
        text, pairs = synthetic_example(rng)
        corpus.append(wire.demo_body(text, pairs))
    tokenizer = build_tokenizer(corpus, args.vocab_size)
    encoder = PromptEncoder(tokenizer)
    seqs = training_sequences(encoder, rng, 20000)
    print(
        f"vocab {len(tokenizer)}, {len(seqs)} sequences, mean length "
        f"{sum(len(s) for s, _ in seqs) / len(seqs):.0f} tokens"
    )

    config = MistralConfig(
        vocab_size=len(tokenizer),
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
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(
        "Tiny synthesizer fixture for ipt_data tests, trained on synthetic data by "
        "scripts/build_tiny_synthesizer.py. Not a useful model.\n"
    )
    print(json.dumps({p.name: p.stat().st_size for p in sorted(out.iterdir())}, indent=1))


if __name__ == "__main__":
    main()
