"""Templify and mix throughput and memory.

    python bench/bench_templify.py [--sizes 100000,1000000] [--out bench/results/templify.json]

For each size: templify chains/s and peak RSS in one process (plain batches), and with
`Dataset.map(num_proc=2)`; then `mix` over streams (`IterableDataset`) of `--mix-sizes` rows (plus as
many general rows), whose peak RSS should not grow with the size. Each measurement runs in a fresh
process, so peaks are its own.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from ipt_data import templify_batch
from ipt_data.testing.fixtures import synthetic_example


def rows_for(n_chains: int, rounds: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    cols: dict[str, list] = {k: [] for k in ("text", "pairs", "chain", "shot", "continued", "chain_prefix")}
    for c in range(n_chains):
        members = [synthetic_example(rng) for _ in range(rounds)]
        for s, (text, pairs) in enumerate(members):
            last = s == rounds - 1
            prefix = [{"text": t, "pairs": p} for t, p in members[:s]] if last and s else []
            values = (text, pairs, f"c{c}", s, not last, json.dumps(prefix) if prefix else "")
            for k, v in zip(cols, values, strict=True):
                cols[k].append(v)
    return cols


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def measure_templify(n: int, rounds: int, num_proc: int) -> dict:
    data = rows_for(n, rounds)
    start = time.perf_counter()
    if num_proc == 1:
        texts = 0
        for i in range(0, len(data["text"]), 1000):
            texts += len(templify_batch({k: v[i : i + 1000] for k, v in data.items()}, seed=0)["text"])
    else:
        from datasets import Dataset, disable_progress_bars

        disable_progress_bars()
        ds = Dataset.from_dict(data)
        del data
        start = time.perf_counter()
        out = ds.map(
            templify_batch,
            batched=True,
            batch_size=1000,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            fn_kwargs={"seed": 0},
        )
        texts = len(out)
    secs = time.perf_counter() - start
    assert texts == n, "one pre-training text per chain"
    return {
        "what": "templify",
        "chains": n,
        "num_proc": num_proc,
        "seconds": secs,
        "chains_per_s": n / secs,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_stream_mix(n: int) -> dict:
    from datasets import IterableDataset

    from ipt_data import mix

    def rows(n=n):
        rng = random.Random(0)
        for i in range(n):
            yield {"text": synthetic_example(rng)[0], "kind": "augmented", "i": i}

    def general(n=n):
        rng = random.Random(1)
        for _ in range(n):
            pair = synthetic_example(rng)[1][0]
            yield {"question": pair["instruction"], "response": pair["response"]}

    start = time.perf_counter()
    count = 0
    stream = mix(
        IterableDataset.from_generator(rows), general=IterableDataset.from_generator(general), general_ratio=1.0, seed=0
    )
    for _ in stream:
        count += 1
    secs = time.perf_counter() - start
    return {
        "what": "mix (streaming)",
        "rows": n,
        "rows_out": count,
        "seconds": secs,
        "rows_per_s": count / secs,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--mix-sizes", default="100000,250000")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default="bench/results/templify.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    args = ap.parse_args()
    if args.one:
        kind, n, num_proc = args.one.split(":")
        result = measure_stream_mix(int(n)) if kind == "mix" else measure_templify(int(n), args.rounds, int(num_proc))
        print(json.dumps(result))
        return
    results = []
    jobs = [f"templify:{n}:{p}" for n in args.sizes.split(",") for p in (1, 2)]
    jobs += [f"mix:{n}:1" for n in args.mix_sizes.split(",")]
    for job in jobs:
        n = int(job.split(":")[1])
        cmd = [sys.executable, __file__, "--one", job, "--rounds", str(args.rounds)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        rate = r.get("chains_per_s") or r.get("rows_per_s")
        label = f"{r['what']} num_proc={r['num_proc']}" if "num_proc" in r else r["what"]
        print(
            f"{label:28} {n:>10,} {r['seconds']:>8.1f}s {rate:>10,.0f}/s  peak RSS {r['peak_rss_mb']:>7,.0f} MB",
            flush=True,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
