"""`augment_on_ray(config)`: the same job as `ipt_data.augment`, its shards run on a Ray cluster.

The driver reads the input once (any source `ipt-data augment` reads) and stages each unfinished shard
as a JSON Lines file in the work folder. Ray Data then maps the shard list through a pool of actors,
one engine per actor (one GPU per actor with `gpus_per_worker=1`); each actor runs exactly the code of
the local pipeline on its shard and writes the shard's parquet, rejects and done marker. Shards, and so
chains, are the same as in a local run, so the output equals the local pipeline's (the driver mixes and
publishes exactly as it does). A rerun skips shards already marked done; an actor that dies is
restarted and its shard retried.

The work folder must be visible to every node (a shared filesystem), as it is on one machine.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ipt_data.config import AugmentConfig
from ipt_data.pipeline import WorkDir, _columns, _iter_shards, _merge, finish, open_run, run_shard


class ShardActor:
    """A Ray Data actor: holds one engine (cached per process) and processes whole shards."""

    def __init__(self, config: dict[str, Any], work_path: str):
        self.config = AugmentConfig(**config)
        self.work = WorkDir(work_path, self.config)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"k": [], "stats": [], "failed": []}
        for k, start in zip(batch["k"], batch["start"], strict=True):
            k, start = int(k), int(start)
            with open(self.work.shard(k, ".input.jsonl"), encoding="utf-8") as f:
                rows = _columns([json.loads(line) for line in f])
            stats, failed = run_shard(self.config, self.work, k, start, rows)
            out["k"].append(k)
            out["stats"].append(json.dumps(stats))
            out["failed"].append(failed)
        return out


def _stage(work: WorkDir, k: int, rows: dict[str, list]) -> None:
    """Write shard `k`'s input rows (any JSON value, as read) for the actors; atomic."""
    path = work.shard(k, ".input.jsonl")
    if path.exists():
        return
    n = len(next(iter(rows.values()))) if rows else 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogatepass") as f:
        for i in range(n):
            f.write(json.dumps({c: v[i] for c, v in rows.items()}, default=repr) + "\n")
    os.replace(tmp, path)


def augment_on_ray(
    config: AugmentConfig,
    *,
    address: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 0.5,
    ray_init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `config` with its shards on Ray (see module doc); returns the run report."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray executor needs Ray Data: pip install 'ipt-data[ray]'") from exc

    started = time.perf_counter()
    source, work = open_run(config)
    report: dict[str, Any] = {}
    pending, done = [], {}
    n_shards = 0
    for k, start, rows in _iter_shards(source, config.shard_size, config.limit):
        n_shards = k + 1
        stats = work.done(k)
        if stats is not None:
            done[k] = stats
        else:
            _stage(work, k, rows())
            pending.append({"k": k, "start": start})
    report.setdefault("seconds", {})["setup"] = time.perf_counter() - started

    results: dict[int, tuple[dict, bool]] = {}
    if pending:
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address=address, **(ray_init or {}))
        try:
            shards = ray.data.from_items(pending).repartition(len(pending))
            options: dict[str, Any] = {"num_cpus": cpus_per_worker, "max_restarts": -1, "max_task_retries": -1}
            if gpus_per_worker:
                options["num_gpus"] = gpus_per_worker
            out = shards.map_batches(
                ShardActor,
                fn_constructor_kwargs={"config": config.to_dict(), "work_path": str(work.path)},
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                **options,
            )
            for row in out.iter_rows():
                results[int(row["k"])] = (json.loads(row["stats"]), bool(row["failed"]))
        finally:
            if started_ray:
                ray.shutdown()
    retry_later = []
    for k in range(n_shards):  # merge in shard order, as the local pipeline does
        stats, failed = (done[k], False) if k in done else results[k]
        _merge(report, stats)
        if failed:
            retry_later.append(k)
    return finish(config, work, report, n_shards, len(done), retry_later, started)
