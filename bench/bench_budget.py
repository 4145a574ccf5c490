"""Budget accuracy: how often the reference's `words x 1.5` estimate misjudges whether an M-shot prompt fits
the 3,696-token prompt budget, against our exact counts; and what exact counting costs.

    python bench/bench_budget.py [--tokenizer PATH_OR_NAME] [--prompts 2000] [--out bench/results/budget.json]

Prompts are 1- to 3-shot prompts over documents of 50 to 2,500 words built from the bundled sample corpus.
`overflow`: the estimate accepts a prompt whose real length exceeds the budget (the reference's engine
then fails it). `waste`: the estimate rejects (breaks the chain on) a prompt that fits with more than 20%
of the budget to spare. The result depends on the tokenizer's tokens per word, printed with it; the default,
the tiny fixture, has the real synthesizer's tokenizer (Mistral-7B-v0.1's `tokenizer.json`).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from ipt_data import build_prompt
from ipt_data.config import SAMPLE_CORPUS
from ipt_data.method.tokenizer import get_encoder, prompt_budget
from ipt_data.testing.fixtures import TINY_SYNTHESIZER


def documents(n: int, seed: int) -> list[str]:
    paragraphs = [json.loads(line)["text"] for line in open(SAMPLE_CORPUS, encoding="utf-8")]
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        target, words = rng.randint(50, 2500), []
        while len(words) < target:
            words += rng.choice(paragraphs).split()
        docs.append(" ".join(words[:target]))
    return docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=TINY_SYNTHESIZER)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/budget.json")
    args = ap.parse_args()
    encoder = get_encoder(args.tokenizer)
    budget = prompt_budget()
    rng = random.Random(args.seed)
    docs = documents(args.prompts * 2, args.seed)
    pair = [{"instruction": "What is the main point of the text?", "response": "It explains a process step by step."}]
    prompts = []
    for _ in range(args.prompts):
        shots = rng.choice([1, 2, 3])
        texts = rng.sample(docs, shots)
        prompts.append((texts[-1], [(t, pair * 3) for t in texts[:-1]]))

    estimates = [len(build_prompt(t, d).split()) * 1.5 for t, d in prompts]
    start = time.perf_counter()
    exact = [len(ids) for ids in encoder.encode_parts_batch([_parts(t, d) for t, d in prompts])]
    encode_s = time.perf_counter() - start
    accepted = [(e, x) for e, x in zip(estimates, exact, strict=True) if e <= budget]
    rejected = [(e, x) for e, x in zip(estimates, exact, strict=True) if e > budget]
    overflow = sum(x > budget for _, x in accepted)
    waste = sum(x <= 0.8 * budget for _, x in rejected)
    fits_anyway = sum(x <= budget for _, x in rejected)
    words = sum(len(build_prompt(t, d).split()) for t, d in prompts)

    texts = docs[:1000]
    start = time.perf_counter()
    encoder.count_texts(texts)
    count_ms = (time.perf_counter() - start) * 1000 * 1000 / len(texts)
    mean_words = sum(len(t.split()) for t in texts) / len(texts)
    result = {
        "tokenizer": args.tokenizer,
        "prompts": len(prompts),
        "budget": budget,
        "tokens_per_word": sum(exact) / words,
        "accepted_by_estimate": len(accepted),
        "overflow": overflow,
        "overflow_rate": overflow / max(1, len(accepted)),
        "rejected_by_estimate": len(rejected),
        "waste": waste,
        "waste_rate": waste / max(1, len(rejected)),
        "rejected_but_fit": fits_anyway,
        "rejected_but_fit_rate": fits_anyway / max(1, len(rejected)),
        "estimate_over_exact": sum(e / x for e, x in zip(estimates, exact, strict=True)) / len(exact),
        "encode_ms_per_1000_prompts": encode_s * 1000 * 1000 / len(prompts),
        "count_ms_per_1000_texts": count_ms,
        "mean_words_per_text": mean_words,
    }
    print(f"tokenizer {Path(args.tokenizer).name}: {result['tokens_per_word']:.2f} tokens/word; budget {budget}")
    print(
        f"words x 1.5 accepts {len(accepted)} prompts, of which {overflow} overflow "
        f"({100 * result['overflow_rate']:.1f}%)"
    )
    print(
        f"words x 1.5 rejects {len(rejected)} prompts, of which {waste} fit with >20% to spare "
        f"({100 * result['waste_rate']:.1f}%)"
    )
    print(
        f"words x 1.5 / exact tokens: {result['estimate_over_exact']:.3f} on average; "
        f"{fits_anyway} rejected prompts ({100 * result['rejected_but_fit_rate']:.1f}%) would have fit "
        "(a chain broken for nothing)"
    )
    print(
        f"exact counting: {count_ms:.1f} ms per 1,000 texts of {mean_words:.0f} words; "
        f"{result['encode_ms_per_1000_prompts']:.1f} ms per 1,000 M-shot prompts"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


def _parts(text, demos):
    from ipt_data.method.wire import prompt_parts

    return prompt_parts(text, demos)


if __name__ == "__main__":
    main()
