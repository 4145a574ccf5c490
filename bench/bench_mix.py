"""The end of a run (mix, statistics, publish) over a finished work folder: the shards read through the Hugging
Face datasets cache and shuffled with `flatten_indices` (the code before issue 27: `Dataset.from_parquet`)
against the shards as one Arrow table in the work folder, removed when the run ends, and the shuffled corpus
gathered as Arrow batches (today's `mix_shards` and `mix`). Side by side in one run.

    python bench/bench_mix.py [--docs 40000] [--fraction 0.2] [--repeats 2] [--out bench/results/mix.json]

Builds a work folder once (`--docs` prose documents, `--fraction` converted by the instant engine, the rest
raw), then reruns `augment` on it, which only mixes and publishes, with as many general rows (1:1 by tokens),
each side `--repeats` times, interleaved (a run without general data mixes nothing at its end since issue 24:
its workers write the published files, `ipt_data.run.outputs`). Per side: the `mix` seconds and the
whole rerun's, the bytes the run leaves in the datasets cache (a fresh one per run), the largest size of the
work folder's mixing tables while it ran (sampled every 50 ms), and whether the published files (`data/`,
`stats.json`, `README.md`) are byte-identical between the sides.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prose_corpus import documents, write_jsonl  # noqa: E402
from simulated_gpu import Instant  # noqa: E402

from ipt_data.config import AugmentConfig  # noqa: E402
from ipt_data.engines import register_engine  # noqa: E402
from ipt_data.run import augment  # noqa: E402
from ipt_data.testing.fixtures import TINY_SYNTHESIZER  # noqa: E402

finish = importlib.import_module("ipt_data.run.finish")  # the module (`ipt_data.run.finish` is also a function)

register_engine("instant", lambda model, device, **o: Instant(model, device, **o))
TODAY = finish.mix_shards
FLATTENED = importlib.import_module("ipt_data.corpus.mixing")._flattened


def through_the_cache(config, work, n_shards, encoder, folder):
    """`mix_shards` as it was before issue 27: the shards through `Dataset.from_parquet` (an Arrow copy in the
    datasets cache, never removed; the shuffled corpus written beside it)."""
    import datasets

    from ipt_data.corpus import mixing
    from ipt_data.corpus.mixing import mix

    shards = datasets.Dataset.from_parquet(work.shard_files(n_shards))
    mixing._flattened = lambda ds: ds.flatten_indices()  # and `datasets`' own flatten_indices (restored by rerun)
    general = finish.as_dataset(finish.open_general(config, folder)) if config.general else None
    corpus = mix(
        shards, general=general, general_ratio=config.general_ratio, by=config.mix_by, tokenizer=encoder,
        seed=config.seed, general_columns=config.general_columns, keep_columns=config.keep_columns,
    )  # fmt: skip
    return corpus


def size(paths) -> int:
    total = 0
    for path in paths:
        for root, _, files in os.walk(path):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
    return total


def published(out: Path) -> dict[str, str]:
    files = sorted(out.glob("data/*.parquet")) + [out / "stats.json", out / "README.md"]
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def rerun(config: AugmentConfig, mix_shards, tmp: Path) -> dict:
    import datasets

    cache = Path(tempfile.mkdtemp(dir=tmp, prefix="cache-"))
    datasets.config.HF_DATASETS_CACHE = str(cache)  # read at call time by the builders
    work = Path(config.resolved_work_dir())
    peak, running = [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], size(list(work.glob(f"{finish.MIX_FOLDER}*")) + [cache]))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    finish.mix_shards = mix_shards
    sampler.start()
    start = time.perf_counter()
    try:
        report = augment(config, progress=False)
    finally:
        finish.mix_shards = TODAY
        importlib.import_module("ipt_data.corpus.mixing")._flattened = FLATTENED
        running[0] = False
        sampler.join()
    return {
        "seconds": time.perf_counter() - start,
        "mix_s": report["seconds"]["mix"],
        "rows": sum(report["output_rows"].values()),
        "cache_bytes_left": size([cache]),
        "mix_tables_left": size(work.glob(f"{finish.MIX_FOLDER}*")),
        "peak_temporary_bytes": peak[0],
        "published": published(Path(config.output)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/results/mix.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mix-"))
    docs = documents(args.docs)
    corpus = write_jsonl(tmp / "prose.jsonl", docs)
    general = tmp / "general.jsonl"
    general.write_text(
        "".join(json.dumps({"question": d[:200], "response": d[200:1200]}) + "\n" for d in documents(args.docs, 2)),
        encoding="utf-8",
    )
    base = dict(
        dataset=str(corpus), model=TINY_SYNTHESIZER, engine="instant", rounds=2, fraction=args.fraction,
        shard_size=4096, batch_size=512, work_dir=str(tmp / "work"), output=str(tmp / "out"), overwrite=True,
    )  # fmt: skip
    t = time.perf_counter()
    first = augment(AugmentConfig(**base), progress=False)
    print(f"work folder: {sum(first['output_rows'].values()):,} rows in {time.perf_counter() - t:.1f} s", flush=True)
    result = {"docs": args.docs, "fraction": args.fraction, "cases": {}}
    for case, extra in [("with general data 1:1", {"general": str(general)})]:
        config = AugmentConfig(**base, **extra)
        runs = {"datasets cache (before)": [], "work folder (today)": []}
        for _ in range(args.repeats):
            for name, fn in [("datasets cache (before)", through_the_cache), ("work folder (today)", TODAY)]:
                runs[name].append(rerun(config, fn, tmp))
                r = runs[name][-1]
                print(f"  {case}, {name}: mix {r['mix_s']:.2f} s, rerun {r['seconds']:.2f} s", flush=True)
        rows = {}
        for name, rs in runs.items():
            rows[name] = {
                "rows": rs[0]["rows"],
                "mix_s": statistics.median(r["mix_s"] for r in rs),
                "rerun_s": statistics.median(r["seconds"] for r in rs),
                "all_mix_s": [round(r["mix_s"], 2) for r in rs],
                "cache_bytes_left": max(r["cache_bytes_left"] for r in rs),
                "mix_tables_left": max(r["mix_tables_left"] for r in rs),
                "peak_temporary_bytes": max(r["peak_temporary_bytes"] for r in rs),
            }
        published_sets = {json.dumps(r["published"], sort_keys=True) for rs in runs.values() for r in rs}
        rows["identical_published_files"] = len(published_sets) == 1
        rows["shard_bytes"] = size([tmp / "work" / "shards"])
        result["cases"][case] = rows
    print(f"\n{args.docs:,} documents, fraction {args.fraction}; medians of {args.repeats}")
    print(f"{'case / side':52} {'rows':>8} {'mix s':>7} {'rerun s':>8} {'cache left':>11} {'peak temp':>10}")
    for case, rows in result["cases"].items():
        for name in ("datasets cache (before)", "work folder (today)"):
            r = rows[name]
            print(
                f"{case + ', ' + name:52} {r['rows']:>8,} {r['mix_s']:>7.2f} {r['rerun_s']:>8.2f} "
                f"{r['cache_bytes_left'] / 1e6:>9.1f}MB {r['peak_temporary_bytes'] / 1e6:>8.1f}MB"
            )
        b, a = rows["datasets cache (before)"], rows["work folder (today)"]
        print(
            f"  mix {b['mix_s'] / a['mix_s']:.1f}x faster; shards {rows['shard_bytes'] / 1e6:.1f} MB of parquet; "
            f"published files identical: {rows['identical_published_files']}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
