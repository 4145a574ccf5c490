"""The `ray` executor: a run's shards on a Ray cluster (`--executor ray`, or `augment_on_ray`).

Each task's input rows are staged (pickled, exactly as read) in the work folder; Ray Data maps the shard list
through a pool of actors, one engine per actor (one GPU per actor with `gpus_per_worker=1`), each calling the
same `ShardWork` as a local run. Shards, and so chains, are the same as locally, so the output equals the
local run's. An actor that dies is restarted and its shard retried. The work folder must be visible to every
node (a shared filesystem), as it is on one machine.
"""

from __future__ import annotations

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
        for k, start, path, input_hash in zip(batch["k"], batch["start"], batch["path"], batch["hash"], strict=True):
            with open(path, "rb") as f:
                rows = pickle.load(f)  # written by the driver of this run, in the run's own work folder
            result = self.work(ShardTask(int(k), int(start), rows, str(input_hash)))
            Path(path).unlink(missing_ok=True)
            out["k"].append(int(k))
            out["result"].append(json.dumps(result.stats))
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


def _stage(work_path: str, task: ShardTask) -> str:
    """Write a task's input rows for the actors, as they were read (pickled: dates, bytes and decimals stay
    what they are); atomic. The actor removes the file once the shard is written."""
    path = Path(work_path) / "shards" / f"{task.k:05d}.input.pkl"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(task.rows, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return str(path)


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
        pending = [{"k": t.k, "start": t.start, "path": _stage(work.work_path, t), "hash": t.input_hash} for t in tasks]
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
                    yield ShardResult(int(row["k"]), json.loads(row["result"]))
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
