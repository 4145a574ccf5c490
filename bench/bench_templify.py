"""Templify throughput: chains/s and peak RSS in one process, on synthesize-shaped rows.

python bench/bench_templify.py [--chains 100000] [--rounds 2] [--out bench/results/templify.json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

from ipt_data import templify_batch
from ipt_data.fixtures import synthetic_example


def rows_for(n_chains: int, rounds: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    cols: dict[str, list] = {k: [] for k in ("text", "pairs", "chain", "shot", "continued", "chain_prefix")}
    for c in range(n_chains):
        members = [synthetic_example(rng) for _ in range(rounds)]
        for s, (text, pairs) in enumerate(members):
            last = s == rounds - 1
            prefix = [{"text": t, "pairs": p} for t, p in members[:s]] if last and s else []
            for k, v in zip(
                cols, (text, pairs, f"c{c}", s, not last, json.dumps(prefix) if prefix else ""), strict=True
            ):
                cols[k].append(v)
    return cols


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--out", default="bench/results/templify.json")
    args = ap.parse_args()
    data = rows_for(args.chains, args.rounds)
    n = len(data["text"])
    start = time.perf_counter()
    texts = chars = 0
    for i in range(0, n, args.batch_size):
        out = templify_batch({k: v[i : i + args.batch_size] for k, v in data.items()}, seed=0)
        texts += len(out["text"])
        chars += sum(map(len, out["text"]))
    secs = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "chains": args.chains,
        "rows": n,
        "texts": texts,
        "seconds": secs,
        "chains_per_s": texts / secs,
        "rows_per_s": n / secs,
        "mb_out": chars / 1e6,
        "peak_rss_mb": rss_mb,
    }
    assert texts == args.chains, "one pre-training text per chain"
    print(
        f"templify: {args.chains:,} chains of {args.rounds} ({n:,} rows) in {secs:.1f}s = "
        f"{texts / secs:,.0f} chains/s, {n / secs:,.0f} rows/s; peak RSS {rss_mb:,.0f} MB (input held in memory)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
