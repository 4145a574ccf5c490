"""What the quality stages cost: pair filters and decontamination against ~1M benchmark n-grams, as a share of
the shard phase's CPU time with the instant engine of the overhead benchmark (issue 25; the promise: under 10%).

    python bench/bench_quality.py [--docs 5000] [--ngrams 1000000] [--repeats 3] [--fractions 1,0.2]
                                  [--per-filter] [--out bench/results/quality.json]

Set-up as `bench_overhead.py`'s part (a): English prose (`prose_corpus.documents`, median ~330 words), M = 2,
shard 4,096, batch 512, the tiny fixture's tokenizer, the instant engine (`simulated_gpu.Instant`: every prompt
answered at once with one fixed completion of three pairs), `augment` run by `side_by_side.augment_runner` into a
fresh folder each time, sides interleaved (`side_by_side.interleaved`), medians of `--repeats`. Every run gets a
fresh encoder, as a new process would: the tokenizer is read from a new copy of the fixture's files (a new path,
so nothing is remembered from the run before; the tokenizer file's load is then part of `setup`).

The benchmark: seeded random words (50,000 made-up words; items of a 20-60 word question and a 3-20 word
answer, plus one short item in 20 of 8-12 words, indexed whole) until about `--ngrams` 13-grams, written once
as JSON Lines (`{"question": ..., "answer": ...}`) in a temporary folder. Nothing of it is planted in the
documents, so nothing matches: every text and pair is looked up and kept.

Sides, at each `--fractions` value (the share of rows converted; the rest are counted raw):
- plain: no quality options;
- filters: `filters="grounding,length,repetition,duplicates"`;
- decontaminate: `decontaminate=<the benchmark file>` (texts drop, pairs drop_pair, rendered raw: the defaults);
- both: both.

From each run's report, per document: the shard phase's stages (`chunk`, `synthesize`, `templify`, `count`,
`write`, and the quality stages' own `pair_filter`, `decontaminate` when they act). The engine is instant and
TOKENIZERS_PARALLELISM=false, so these are one core's CPU seconds (each run's process CPU time over its wall time
is printed as a check). Printed and written to `--out`: ms per document by stage, the shard phase's total,
the overhead of each side vs plain, (side - plain) / plain, of the medians ("vs plain") and the median of
each repeat against plain's run of the same repeat ("paired"), and the quality stages' own seconds over plain's
total ("own/plain"). `--per-filter` adds a side for each pair filter alone (where the filters' time goes).
`setup` is shown apart: the benchmark index is built there, once per run, not per shard (plain's setup is the
rest of it). Beware: the instant engine's fixed pairs are mostly ungrounded in prose, so the grounding
filter drops most of them and texts go raw: with filters the later stages do less work (see the counts), and
the overhead vs plain is then lower than the filters' own seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from prose_corpus import documents, write_jsonl  # noqa: E402
from side_by_side import augment_runner, interleaved  # noqa: E402
from simulated_gpu import GroundedInstant, Instant  # noqa: E402

from ipt_data import fixtures  # noqa: E402
from ipt_data.engines import register_engine  # noqa: E402  (the documented way to add an engine)

N = 13
BASE = ("chunk", "synthesize", "templify", "count", "shard_stats", "write")  # the shard phase's stages in every run
OWN = ("pair_filter", "decontaminate")  # the quality stages' own keys, when they act
FILTERS = "grounding,length,repetition,duplicates"
SIDES = ("plain", "filters", "decontaminate", "both")
W = {k: max(9, len(k) + 2) for k in BASE + OWN}  # the table's column widths
register_engine("instant", lambda model, device, **o: Instant(model, device, **o))
register_engine("grounded-instant", lambda model, device, **o: GroundedInstant(model, device, **o))
ENGINES = {"instant": "instant", "grounded": "grounded-instant"}


def write_benchmark(path: Path, ngrams: int, seed: int = 0) -> dict:
    """Seeded random items until about `ngrams` n-grams of `N` words (a question and its answer make one text;
    an item under `N` words is indexed whole, not counted). Returns what was written."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(50_000)]
    items = short = grams = 0
    with open(path, "w", encoding="utf-8") as f:
        while grams < ngrams:
            if rng.random() < 0.05:
                question, answer = " ".join(rng.choices(vocab, k=rng.randint(7, 11))) + "?", rng.choice(vocab)
                short += 1
            else:
                q, a = rng.randint(20, 60), rng.randint(3, 20)
                question = " ".join(rng.choices(vocab, k=q)).capitalize() + "?"
                answer = " ".join(rng.choices(vocab, k=a)).capitalize() + "."
                grams += q + a - N + 1
            items += 1
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")
    return {"items": items, "short_items": short, "ngrams_written": grams, "bytes": path.stat().st_size}


def side(tmp: Path, name: str, corpus: Path, fraction: float, quality: dict, engine: str = "instant"):
    """One side: `augment` through `augment_runner`, each call with a fresh copy of the tokenizer's files (a
    fresh encoder). Keeps each run's seconds by stage, its process CPU seconds and its published report."""
    runs = []

    def call():
        tokenizer = tmp / f"tokenizer-{name}-{len(runs)}"
        shutil.copytree(fixtures.TINY_SYNTHESIZER, tokenizer, ignore=shutil.ignore_patterns("*.safetensors"))
        run = augment_runner(
            tmp, name, dataset=str(corpus), model=fixtures.TINY_SYNTHESIZER, tokenizer=str(tokenizer),
            engine=engine, rounds=2, fraction=fraction, shard_size=4096, batch_size=512, **quality,
        )  # fmt: skip
        cpu = time.process_time()
        seconds, tokens, prompts = run("rounds")
        cpu = time.process_time() - cpu
        published = tmp / f"out-{name}-rounds" / "run_report.json"
        report = json.loads(published.read_text()) if published.exists() else {}
        runs.append({"stages": run.stages["rounds"], "cpu_s": cpu, "wall_s": seconds, "report": report})
        shutil.rmtree(tokenizer, ignore_errors=True)
        return seconds, tokens, prompts

    call.runs = runs
    return call


def summarize(runs: list[dict], n: int) -> dict:
    """Medians over the repeats: ms per document of each stage, of the shard phase (all its stages) and of the
    quality stages alone; setup, shard phase on the clock, and the whole run's wall and CPU seconds."""
    ms = 1000 / n

    def med(fn):
        return statistics.median(fn(r["stages"]) for r in runs)

    keys = BASE + tuple(k for k in OWN if any(k in r["stages"] for r in runs))
    out = {k: ms * med(lambda s, k=k: s.get(k, 0.0)) for k in keys}
    out["shard_stages"] = ms * med(lambda s: sum(s.get(k, 0.0) for k in BASE + OWN))
    out["own_stages"] = ms * med(lambda s: sum(s.get(k, 0.0) for k in OWN))
    out["per_run_shard_stages"] = [ms * sum(r["stages"].get(k, 0.0) for k in BASE + OWN) for r in runs]
    out["setup_s"] = med(lambda s: s.get("setup", 0.0))
    out["shards_wall_s"] = med(lambda s: s.get("shards_wall", 0.0))
    out["wall_s"] = statistics.median(r["wall_s"] for r in runs)
    out["cpu_over_wall"] = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs)
    return out


def counts(report: dict) -> dict:
    """What the run did (from its published report): how many pairs went where, and the matches."""
    keep = ("pairs", "filtered", "raw_texts", "texts", "output_rows", "decontamination", "rejects")
    return {k: report[k] for k in keep if k in report}


def bench(args, tmp: Path) -> tuple[dict, dict]:
    source = tmp / "synthetic-benchmark.jsonl"
    t = time.perf_counter()
    benchmark = write_benchmark(source, args.ngrams)
    benchmark["write_s"] = time.perf_counter() - t
    corpus = write_jsonl(tmp / "prose.jsonl", documents(args.docs))
    quality = {
        "plain": {},
        "filters": {"filters": FILTERS},
        "decontaminate": {"decontaminate": str(source)},
        "both": {"filters": FILTERS, "decontaminate": str(source)},
    }
    if args.per_filter:  # where the filters' time goes: each alone
        quality.update({f"only {f}": {"filters": f} for f in FILTERS.split(",")})
    result = {}
    for engine, fraction in [(e, f) for e in args.engines for f in args.fractions]:
        label = f"{engine} engine, fraction {fraction:g}"
        print(f"{label}: {args.docs} documents", flush=True)
        sides = {
            name: side(tmp, f"{engine}-{fraction:g}-{name.replace(' ', '-')}", corpus, fraction, q, ENGINES[engine])
            for name, q in quality.items()
        }
        rows = interleaved(sides, args.repeats)
        result[label] = {name: summarize(fn.runs, args.docs) for name, fn in sides.items()}
        for name, fn in sides.items():
            result[label][name]["counts"] = counts(fn.runs[0]["report"])
            result[label][name]["all_wall_s"] = rows[name]["all_seconds"]
        plain = result[label]["plain"]["shard_stages"]
        result[label]["ratio"] = {
            name: {
                "overhead": (result[label][name]["shard_stages"] - plain) / plain,
                "own_over_plain": result[label][name]["own_stages"] / plain,
                # each repeat against plain's run of the same repeat (run just before it): less hit by drift
                "overhead_paired": statistics.median(
                    (v - p) / p
                    for v, p in zip(
                        result[label][name]["per_run_shard_stages"],
                        result[label]["plain"]["per_run_shard_stages"],
                        strict=True,
                    )
                ),
            }
            for name in sides
            if name != "plain"
        }
        inputs = sides["decontaminate"].runs[0]["report"].get("inputs", {})
        benchmark.setdefault("indexed", inputs.get("decontaminate", {}).get("against"))
    return result, benchmark


def report(result: dict, benchmark: dict) -> None:
    indexed = (benchmark.get("indexed") or [{}])[0]
    print(
        f"\nbenchmark: {benchmark['items']:,} items ({benchmark['short_items']:,} short), "
        f"{indexed.get('ngrams', benchmark['ngrams_written']):,} n-grams indexed, {benchmark['bytes'] / 2**20:.1f} MiB"
    )
    print("shard phase, CPU ms per document by stage (medians)")
    for label, rows in result.items():
        print(f"  {label}")
        head = (
            "    "
            + f"{'':20s}"
            + "".join(f"{k:>{W[k]}s}" for k in BASE + OWN)
            + f"{'total':>9s}{'vs plain':>10s}{'paired':>9s}"
        )
        print(head + f"{'own/plain':>11s}{'setup s':>9s}")
        names = [name for name in rows if name != "ratio"]
        for name in names:
            row = rows[name]
            cells = "".join(f"{row[k]:{W[k]}.3f}" if k in row else f"{'-':>{W[k]}s}" for k in BASE + OWN)
            ratio = rows["ratio"].get(name)
            vs = f"{100 * ratio['overhead']:+9.1f}%{100 * ratio['overhead_paired']:+8.1f}%" if ratio else f"{'':>19s}"
            own = f"{100 * ratio['own_over_plain']:10.1f}%" if ratio else f"{'':>11s}"
            print(f"    {name:20s}{cells}{row['shard_stages']:9.3f}{vs}{own}{row['setup_s']:9.2f}")
        for name in names:
            c = rows[name]["counts"]
            print(
                f"    {name}: pairs {c.get('pairs')}, dropped {c.get('filtered', {})}, raw texts "
                f"{ {k: v for k, v in c.get('raw_texts', {}).items() if v} }, matches {c.get('decontamination', {})}; "
                f"run CPU/wall {rows[name]['cpu_over_wall']:.2f}"
            )
    print(
        "  setup: seconds before the shard phase (model check, input, tokenizer; with decontaminate the benchmark "
        "index is built there, once per run); not in the shard phase's total"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--ngrams", type=int, default=1_000_000, help="about this many n-grams in the benchmark")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fractions", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 0.2])
    ap.add_argument(
        "--engines",
        type=lambda s: [e for e in s.split(",") if e],
        default=["instant", "grounded"],
        help="instant (one fixed completion: its pairs are mostly ungrounded, so filters drop them), grounded (pairs "
        "made of each text's own words: filters keep them; the fair measure of what filters cost)",
    )
    ap.add_argument("--per-filter", action="store_true", help="also a side for each pair filter alone")
    ap.add_argument("--out", default="bench/results/quality.json")
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result, benchmark = bench(args, Path(tmp))
    report(result, benchmark)
    wall = time.perf_counter() - started
    print(f"\nwall time: {wall:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": sys.version,
                "cpus": os.cpu_count(),
                "args": vars(args),
                "benchmark": benchmark,
                "cpu": result,
                "wall_s": wall,
            },
            indent=1,
            default=str,
        )
    )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
