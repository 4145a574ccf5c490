"""The `ray` executor: a run's shards on a Ray cluster (`--executor ray`, or `augment_on_ray`).

Each task goes to the actors as where its rows are (byte spans of JSON Lines files, a range of Arrow files): an
actor reads, hashes and routes them itself. Only the rows of an input that a worker cannot reopen (a stream, a
compressed file) are read by the driver, and staged (pickled, exactly as read) in the work folder. Ray Data maps
the shard list through a pool of actors, one engine per actor (one GPU per actor with `gpus_per_worker=1`), each
calling the same `ShardWork` as a local run. Shards, and so chains, are the same as locally, so the output equals the
local run's. An actor that dies is restarted and its shard retried. The work folder must be visible to every
node (a shared filesystem), as it is on one machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ipt_data.errors import IptDataError, MissingExtraError, storage_error
from ipt_data.run.inputs import ShardTask
from ipt_data.run.shard import ShardResult, ShardWork

log = logging.getLogger(__name__)


class ShardActor:
    """A Ray Data actor: holds one engine (cached per process) and processes whole shards."""

    def __init__(self, work: ShardWork):
        self.work = work

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"k": [], "result": []}
        for blob in batch["task"]:
            task = pickle.loads(blob)  # made by the driver of this run
            if task.rows is None and task.where is None:  # staged in the run's own work folder
                with open(_staged(self.work.work_path, task.k), "rb") as f:
                    task.rows = pickle.load(f)
            result = self.work(task)
            out["k"].append(result.k)
            out["result"].append(json.dumps(dataclasses.asdict(result)))
        return out


def _ours(exc: BaseException | None) -> IptDataError | None:
    """The IptDataError that Ray wrapped on its way from an actor, if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, IptDataError):
            return exc
        if isinstance(exc, OSError) and storage_error(exc) is not None:  # an actor's disk full or read-only
            return storage_error(exc)
        exc, seen = getattr(exc, "cause", None) or exc.__cause__, seen + 1
    return None


def _staged(work_path: str, k: int) -> Path:
    return Path(work_path) / "shards" / f"{k:05d}.input.pkl"


def _item(work_path: str, task: ShardTask) -> dict[str, Any]:
    """A task as the actors get it: where its rows are; rows a worker cannot read itself are written to the work
    folder first, as they were read (pickled: dates, bytes and decimals stay what they are; atomic), and removed
    by the driver once the shard is done (an actor that dies after writing it finds them again on its retry)."""
    if task.where is None:
        path = _staged(work_path, task.k)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(task.rows, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        task = dataclasses.replace(task, rows=None)
    return {"k": task.k, "task": pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)}


class RayExecutor:
    name, in_process = "ray", False

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int = 2,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 0.5,
        ray_init: dict[str, Any] | None = None,
    ):
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker
        self.cpus_per_worker, self.ray_init = cpus_per_worker, ray_init or {}

    def run(self, work: ShardWork, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
        try:
            import ray
        except ImportError as exc:
            raise MissingExtraError("the ray executor", "ray[data]", "ray") from exc
        pending = [_item(work.work_path, t) for t in tasks]
        if not pending:
            return
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address=self.address, **self.ray_init)
        try:
            options: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_restarts": -1, "max_task_retries": -1}
            if self.gpus_per_worker:
                options["num_gpus"] = self.gpus_per_worker
            log.info("running %d shards on %d Ray actors", len(pending), self.workers)
            out = (
                ray.data.from_items(pending)
                .repartition(len(pending))
                .map_batches(
                    ShardActor,
                    fn_constructor_kwargs={"work": work},
                    batch_size=1,
                    compute=ray.data.ActorPoolStrategy(size=self.workers),
                    **options,
                )
            )
            try:
                for row in out.iter_rows():
                    _staged(work.work_path, int(row["k"])).unlink(missing_ok=True)
                    yield ShardResult(**json.loads(row["result"]))
            except Exception as exc:
                ours = _ours(exc)
                if ours is None:
                    raise
                raise ours from exc  # an actor's IptDataError (the engine is down, say) as itself
        finally:
            if started_ray:
                ray.shutdown()


def augment_on_ray(config, **options: Any) -> dict[str, Any]:
    """`augment(config)` with its shards on Ray; `options` are `RayExecutor`'s (`address`, `workers`,
    `gpus_per_worker`, `cpus_per_worker`, `ray_init`). Returns the run report."""
    from ipt_data.run import augment

    return augment(config, progress=False, executor=RayExecutor(**options))
