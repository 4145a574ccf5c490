"""A 50 MB single-line text: chunked and counted in bounded memory (issue: it once took 12 GB to chunk and
10 GB to count).

    python bench/bench_huge_text.py [--mb 50] [--out bench/results/huge_text.json]

Builds one line of `--mb` megabytes from the bundled sample corpus (no newline in it), then in this process:
`chunk_batch` with the synthesizer's real tokenizer (the tiny fixture's) and the default budget, and
`count_texts` of the whole text. Prints the peak RSS of the process (target: under 2 GB), the time of each
step, the number of chunks, and checks that the chunks join back to the text exactly and each fits.

Then, in a fresh process, the whole `augment` run on that one line as a JSON Lines file (the instant engine of
`simulated_gpu.py`: only our own work, fraction 1, the defaults otherwise) and its peak RSS end to end (the
figure the README gives); `--no-augment` skips it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ipt_data.config import SAMPLE_CORPUS
from ipt_data.method.tokenizer import get_encoder, prompt_budget
from ipt_data.stages.chunk import chunk_batch
from ipt_data.testing.fixtures import TINY_SYNTHESIZER


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def huge_line(mb: int) -> str:
    paragraphs = [json.loads(line)["text"].replace("\n", " ") for line in open(SAMPLE_CORPUS, encoding="utf-8")]
    unit = " ".join(paragraphs) + " "
    return (unit * (mb * 1_000_000 // len(unit) + 1))[: mb * 1_000_000]


def augment_child(corpus: str, output: str) -> None:
    """In this (fresh) process: `augment` on `corpus` with the instant engine; prints its report's numbers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from simulated_gpu import Instant

    from ipt_data.config import AugmentConfig
    from ipt_data.engines import register_engine
    from ipt_data.run import augment

    register_engine("instant", lambda model, device, **o: Instant(model, device, **o))
    t = time.perf_counter()
    report = augment(
        AugmentConfig(dataset=corpus, model=TINY_SYNTHESIZER, engine="instant", fraction=1.0, output=output),
        progress=False,
    )
    seconds = {k: round(v, 1) for k, v in report["seconds"].items()}
    print(json.dumps({"seconds": round(time.perf_counter() - t, 1), "stages": seconds, "chunks": report["chunks"],
                      "peak_rss_mb": round(peak_mb()), "output_rows": report["output_rows"]}))  # fmt: skip


def bench_augment(text: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "huge.jsonl"
        corpus.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
        code = (
            f"import sys; sys.argv = ['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_huge_text as b; b.augment_child({str(corpus)!r}, {str(Path(tmp) / 'out')!r})"
        )
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--out", default="bench/results/huge_text.json")
    args = ap.parse_args()
    text = huge_line(args.mb)
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
    if not args.no_augment:
        del chunks
        result["augment"] = run = bench_augment(text)
        print(
            f"augment end to end (instant engine, fraction 1): {run['chunks']:,} chunks, {run['seconds']} s; "
            f"peak RSS {run['peak_rss_mb']:,} MB; stages {run['stages']}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
