"""`ipt_data.stats` over published corpora of growing size: rows/s and peak memory, side by side.

    python bench/bench_stats.py [--sizes 100000,1000000] [--out bench/results/stats.json]

For each size, a corpus shaped as `augment` publishes it (`data/*.parquet`, 20,000 rows per file; two thirds
augmented texts rendered from the fixture's world with their pairs, one third raw texts, every text distinct)
is written by one process, then `stats(folder)` runs in a fresh process: its peak RSS is its own. The peak
should not grow with the size (the computation keeps one batch, counters, and a hash buffer in memory).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS_PER_FILE = 20_000


def write_corpus(folder: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipt_data import templify_batch
    from ipt_data.corpus.mixing import MIX_FEATURES
    from ipt_data.testing.fixtures import synthetic_example

    rng = random.Random(0)
    pool = [synthetic_example(rng) for _ in range(2_000)]
    rendered = templify_batch({"text": [t for t, _ in pool], "pairs": [p for _, p in pool]}, seed=0)
    schema = MIX_FEATURES.arrow_schema
    (folder / "data").mkdir(parents=True)
    for f, start in enumerate(range(0, n, ROWS_PER_FILE)):
        rows = []
        for i in range(start, min(n, start + ROWS_PER_FILE)):
            k = i % len(pool)
            if i % 3 == 2:
                text = f"{pool[k][0]} (raw {i})"
                rows.append({"text": text, "kind": "raw", "n_tokens": len(text.split()), "source": [f"{i}:0"]})
                rows[-1] |= {"n_pairs": 0, "layout": "raw", "inverted": False, "pairs": []}
            else:
                text = f"{rendered['text'][k]}\n(row {i})"
                rows.append(
                    {
                        "text": text,
                        "kind": "augmented",
                        "n_tokens": len(text.split()),
                        "source": [f"{i}:0"],
                        "n_pairs": rendered["n_pairs"][k],
                        "layout": rendered["layout"][k],
                        "inverted": rendered["inverted"][k],
                        "pairs": rendered["pairs"][k],
                    }
                )
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / f"train-{f:05d}.parquet")


def measure(folder: str) -> dict:
    from ipt_data import stats

    start = time.perf_counter()
    s = stats(folder, progress=False)
    secs = time.perf_counter() - start
    rows = sum(s["rows"].values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "seconds": secs, "rows_per_s": rows / secs, "peak_rss_mb": peak, "pairs": s["pairs"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--out", default="bench/results/stats.json")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure one folder, print JSON
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="ipt-bench-stats-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            folder = Path(tmp) / str(n)
            write = [
                sys.executable,
                "-c",
                f"from bench_stats import write_corpus; write_corpus(__import__('pathlib').Path({str(folder)!r}), {n})",
            ]
            subprocess.run(write, check=True, cwd=Path(__file__).parent)
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(folder)], check=True, capture_output=True, text=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            rate, peak = f"{r['rows_per_s']:>10,.0f} rows/s", f"peak RSS {r['peak_rss_mb']:>7,.0f} MB"
            print(f"stats {n:>12,} rows {r['seconds']:>8.1f}s {rate}  {peak}")
    if len(results) > 1:
        growth = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        print(f"peak RSS {results[-1]['rows']:,} / {results[0]['rows']:,} rows: {growth:.2f}x")
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
