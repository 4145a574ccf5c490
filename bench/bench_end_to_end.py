"""End to end: `augment` (the same code as `ipt-data augment`) on the bundled corpus repeated N times,
with the tiny fixture on this machine: input texts/s and the time split by stage.

    python bench/bench_end_to_end.py [--copies 20] [--engine hf] [--out bench/results/end_to_end.json]

GPU-days per billion raw tokens are extrapolated only from numbers taken on a GPU (`--gpu-tokens-per-s`,
the synthesizer's generated tokens/s measured on one GPU); CPU numbers of the tiny fixture say nothing
about a 7B model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from ipt_data.config import SAMPLE_CORPUS, AugmentConfig
from ipt_data.run import augment
from ipt_data.testing.fixtures import TINY_SYNTHESIZER


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--engine", default="hf")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gpu-tokens-per-s", type=float, default=None)
    ap.add_argument("--out", default="bench/results/end_to_end.json")
    args = ap.parse_args()
    lines = Path(SAMPLE_CORPUS).read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("\n".join(lines * args.copies) + "\n", encoding="utf-8")
        config = AugmentConfig(
            dataset=str(corpus),
            model=TINY_SYNTHESIZER,
            engine=args.engine,
            rounds=args.rounds,
            max_new_tokens=200,
            batch_size=64,
            shard_size=256,
            output=str(Path(tmp) / "out"),
        )
        start = time.perf_counter()
        report = augment(config, progress=False)
        wall = time.perf_counter() - start
        shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
    rows = report["rows"]["in"]
    raw_tokens = sum(len(line.split()) for line in lines) * args.copies
    seconds = report["seconds"]
    result = {
        "rows": rows,
        "wall_s": wall,
        "texts_per_s": rows / wall,
        "seconds": seconds,
        "completion_tokens": report["completion_tokens"],
        "prompt_tokens": report["prompt_tokens"],
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "engine": args.engine,
    }
    print(
        f"augment, {rows:,} texts ({args.copies} x bundled corpus), tiny fixture, {args.engine}, "
        f"{result['machine']}: {wall:.1f}s = {rows / wall:.1f} texts/s"
    )
    stages = {k: v for k, v in seconds.items() if k != "total"}
    for stage, secs in stages.items():
        print(f"  {stage:12} {secs:7.2f}s  {100 * secs / wall:5.1f}%")
    if args.gpu_tokens_per_s:
        per_text = report["completion_tokens"] / rows  # generated tokens per input text
        words_per_text = raw_tokens / rows
        gpu_days = 1e9 / words_per_text * per_text / args.gpu_tokens_per_s / 86400
        result["gpu_days_per_1b_raw_words"] = gpu_days
        print(
            f"  at {args.gpu_tokens_per_s:,.0f} generated tokens/s per GPU: {gpu_days:,.1f} GPU-days per 1B raw words"
        )
    else:
        print("  (no GPU numbers in this run: pass --gpu-tokens-per-s measured on a GPU to extrapolate GPU-days)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
