"""Benchmark decontamination's cost: building a `BenchmarkIndex` and looking a corpus's texts up in it.

    python bench/bench_decontam.py [--ngrams 1000000] [--docs 5000]

A synthetic benchmark (seeded random words: items of a 20-60 word question and a 3-20 word answer, plus one
short item in 20 of 8-12 words, indexed whole) of about `--ngrams` distinct 13-grams is written as JSON Lines
and indexed by a child process (its build seconds and peak RSS are its own). This process then loads the index
(memory-mapped: the RSS it adds is mostly the pages touched) and times `hashes` and `find` over `--docs` prose
documents (`prose_corpus.documents`, median ~330 words), a few of which get a benchmark question pasted in, to
check they (and only they) are found. Target: `find` well under 100 us per 330-word text.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from prose_corpus import documents  # noqa: E402

from ipt_data.quality.benchmarks import BenchmarkIndex, parse_specs  # noqa: E402
from ipt_data.quality.ngrams import NgramHasher  # noqa: E402

N = 13
PASTED = 50  # documents that get a benchmark question pasted in


def write_benchmark(path: Path, ngrams: int, seed: int = 0) -> list[str]:
    """Items until about `ngrams` 13-grams; returns the long questions (to paste into documents)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(50_000)]
    questions, total = [], 0
    with open(path, "w", encoding="utf-8") as f:
        while total < ngrams:
            if rng.random() < 0.05:
                question, answer = " ".join(rng.choices(vocab, k=rng.randint(8, 12))), ""
            else:
                question = " ".join(rng.choices(vocab, k=rng.randint(20, 60))).capitalize() + "?"
                answer = " ".join(rng.choices(vocab, k=rng.randint(3, 20))) + "."
                total += len(question.split()) + len(answer.split()) - N + 1
                questions.append(question)
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")
    return questions


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    """This process's resident memory now (its mapped index pages included), from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def build(source: str, folder: str) -> None:
    """In a child process: build the index, print its seconds and this process's peak RSS as JSON."""
    import datasets  # noqa: F401 - imported by the build: count it in the baseline, not in the build

    baseline, start = rss_mb(), time.perf_counter()
    BenchmarkIndex.build(parse_specs(f"{source}?name=synthetic"), folder, n=N)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "baseline_mb": baseline}))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ngrams", type=int, default=1_000_000, help="about this many n-grams in the benchmark")
    parser.add_argument("--docs", type=int, default=5_000, help="prose documents looked up")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--build", nargs=2, metavar=("SOURCE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return build(*args.build)

    with tempfile.TemporaryDirectory() as tmp:
        source, folder = Path(tmp) / "synthetic.jsonl", Path(tmp) / "index"
        questions = write_benchmark(source, args.ngrams)
        child = subprocess.run(
            [sys.executable, __file__, "--build", str(source), str(folder)], capture_output=True, text=True, check=True
        )
        built = json.loads(child.stdout.strip().splitlines()[-1])
        disk = sum(p.stat().st_size for p in folder.iterdir())

        docs = documents(args.docs)
        rng = random.Random(1)
        pasted = sorted(rng.sample(range(len(docs)), min(PASTED, len(docs))))
        for i in pasted:
            cut = len(docs[i]) // 2
            docs[i] = f"{docs[i][:cut]} {rng.choice(questions).upper()} {docs[i][cut:]}"
        words = [len(d.split()) for d in docs]

        before = rss_mb()
        start = time.perf_counter()
        index = BenchmarkIndex.load(folder)
        index.find(docs[:1])
        load_seconds = time.perf_counter() - start
        loaded = rss_mb()

        hits = index.find(docs)
        found = [i for i, h in enumerate(hits) if h]
        find_seconds = best_of(args.repeats, lambda: index.find(docs))
        after = rss_mb()
        hasher = NgramHasher(N)
        hash_seconds = best_of(args.repeats, lambda: hasher.hashes(docs))

    summary = index.summary()
    per_text, per_kwords = 1e6 / len(docs), 1e6 / (sum(words) / 1000)
    print(
        f"benchmark: {summary['benchmarks'][0]['items']:,} items, {summary['ngrams']:,} n-grams, "
        f"{summary['whole']:,} whole items (lengths {summary['whole_lengths']}), "
        f"bitmap 2^{summary['bitmap_bits']['ngrams']} bits"
    )
    print(
        f"build: {built['seconds']:.2f} s, peak RSS of the building process {built['peak_rss_mb']:.0f} MiB "
        f"({built['baseline_mb']:.0f} MiB before it started building)"
    )
    print(f"index on disk: {disk / 2**20:.1f} MiB")
    print(
        f"load (+ first find): {load_seconds * 1e3:.1f} ms, RSS +{loaded - before:.1f} MiB "
        f"(+{after - before:.1f} MiB after {args.repeats + 1} finds over all texts: their results, buffers kept)"
    )
    print(f"texts: {len(docs):,}, words median {statistics.median(words):.0f}, mean {statistics.mean(words):.0f}")
    print(f"hashes: {hash_seconds * per_text:.1f} us/text, {hash_seconds * per_kwords:.1f} us/1,000 words")
    print(f"find:   {find_seconds * per_text:.1f} us/text, {find_seconds * per_kwords:.1f} us/1,000 words")
    print(
        f"found: {len(found)} texts with a hit, {PASTED} with a pasted question; "
        f"all pasted found: {set(pasted) <= set(found)}, others found: {len(set(found) - set(pasted))}"
    )


if __name__ == "__main__":
    main()
