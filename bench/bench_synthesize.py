"""Synthesis throughput of `synthesize_batch` (hf engine) by micro-batch size, against the naive loop.

The naive loop is what users copy from the synthesizer's model card: one prompt at a time,
tokenize, `generate(max_new_tokens=400)`, decode, parse. Same texts, same greedy completions
(asserted), measured side by side in one run. Prints a table and writes JSON.

    python bench/bench_synthesize.py [--texts 64] [--out bench/results/synthesize.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from ipt_data import build_prompt, parse_pairs, synthesize_batch
from ipt_data.engines import clear_cache
from ipt_data.method.tokenizer import load_tokenizer
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts


def naive_loop(texts: list[str], model_path: str) -> tuple[list[list[dict]], float]:
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    start = time.perf_counter()
    out = []
    for text in texts:
        # the prompt already holds "<s>": add_special_tokens=False keeps one BOS (SPEC 1)
        ids = torch.tensor([tok.encode(build_prompt(text), add_special_tokens=False).ids])
        with torch.inference_mode():
            gen = model.generate(ids, max_new_tokens=400, do_sample=False, pad_token_id=tok.token_to_id("</s>"))
        out.append(parse_pairs(tok.decode(gen[0, ids.shape[1] :].tolist(), skip_special_tokens=True)))
    return out, time.perf_counter() - start


def ours(texts: list[str], model_path: str, batch_size: int) -> tuple[list[list[dict]], float, int]:
    clear_cache()
    kwargs = dict(
        model=model_path, rounds=1, max_new_tokens=400, engine="hf", engine_options={"batch_size": batch_size}
    )
    synthesize_batch({"text": texts[:2]}, **kwargs)  # load the engine outside the timing
    start = time.perf_counter()
    out = synthesize_batch({"text": texts}, **kwargs)
    return out["pairs"], time.perf_counter() - start, sum(out["completion_tokens"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--model", default=TINY_SYNTHESIZER)
    ap.add_argument("--out", default="bench/results/synthesize.json")
    args = ap.parse_args()
    texts = synthetic_texts(args.texts, seed=2024)

    naive_pairs, naive_s = naive_loop(texts, args.model)
    rows = [
        {
            "method": "naive loop (model card)",
            "batch": 1,
            "seconds": naive_s,
            "texts_per_s": len(texts) / naive_s,
            "speedup": 1.0,
        }
    ]
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        pairs, secs, tokens = ours(texts, args.model, b)
        same = sum(p == q for p, q in zip(pairs, naive_pairs, strict=True))
        assert same == len(texts), f"batch {b}: {len(texts) - same} texts got other pairs than the naive loop"
        rows.append(
            {
                "method": "synthesize_batch (hf)",
                "batch": b,
                "seconds": secs,
                "texts_per_s": len(texts) / secs,
                "tokens_per_s": tokens / secs,
                "speedup": naive_s / secs,
            }
        )

    print(f"{len(texts)} texts, tiny fixture, CPU ({os.cpu_count()} cores, torch {torch.__version__})")
    print(f"{'method':28} {'batch':>5} {'seconds':>8} {'texts/s':>8} {'x naive':>8}")
    for r in rows:
        print(f"{r['method']:28} {r['batch']:>5} {r['seconds']:>8.2f} {r['texts_per_s']:>8.1f} {r['speedup']:>8.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {"texts": len(texts), "machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
