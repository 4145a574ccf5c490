"""The `slurm` executor: a run's shards as Slurm job arrays (`--executor slurm`), submitted with `sbatch`.

The driver checks the shards an earlier run made (reading and hashing their rows: a done shard is not queued
again), writes what the array tasks need into the work folder (which every node must see, as with Ray), one
task at a time: `slurm/<id>/work.pkl` (the `ShardWork`) and `tasks/I.pkl` per shard to make (where its rows are,
or the rows the driver had to read), then submits them as array jobs of at most `MAX_ARRAY` tasks (Slurm's
default `MaxArraySize` is 1001), named `ipt-data-<id>`. Task I runs `python -m ipt_data.run.slurm_executor
<folder> I` with this process's Python and environment, at most `--slurm-parallel` at once per array, with the
partition, GPUs, CPUs, memory and time limit asked for. Each task makes its shard exactly as a local run does
(the same `ShardWork`: it reads its rows, writes the shard, its published files and its done marker) and
leaves its result in `results/I.json`; the driver takes the results as they come. A task that fails or is
killed leaves none: once no task is left in the queue (and `RESULTS_GRACE_S` more, for a shared filesystem
that shows files late) the run stops, naming those shards and their logs (`logs/`), and the same command again
makes only them. `squeue` failing (a busy controller) is waited out, not taken for an empty queue. Ctrl-C
cancels the jobs; a driver killed outright leaves them to the next run, which cancels them by name first.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ipt_data.errors import ConfigError, IptDataError
from ipt_data.run.inputs import ShardTask
from ipt_data.run.shard import ShardResult, ShardWork

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
RESULTS_GRACE_S = 30.0  # a result written on another node may show late on a shared filesystem
MAX_ARRAY = 1000  # tasks per array job (Slurm's MaxArraySize is 1001 by default): more shards, more arrays


class SlurmTaskError(IptDataError):
    """Array tasks of the run's Slurm job ended without making their shards."""


class SlurmExecutor:
    name, in_process = "slurm", False

    def __init__(
        self,
        *,
        partition: str | None = None,
        gpus_per_task: int = 0,
        cpus_per_task: int = 1,
        mem: str | None = None,
        time_limit: str | None = None,
        parallel: int = 0,
        extra_args: tuple[str, ...] = (),
        poll_seconds: float = POLL_SECONDS,
        results_grace_s: float | None = None,
        max_array: int | None = None,
    ):
        self.partition, self.gpus_per_task, self.cpus_per_task = partition, gpus_per_task, cpus_per_task
        self.mem, self.time_limit, self.parallel, self.extra_args = mem, time_limit, parallel, tuple(extra_args)
        self.poll_seconds = poll_seconds
        self.results_grace_s = RESULTS_GRACE_S if results_grace_s is None else results_grace_s
        self.max_array = MAX_ARRAY if max_array is None else max_array

    def sbatch_args(self, folder: Path, n: int, offset: int = 0) -> list[str]:
        """The `sbatch` options of an array job of `n` tasks (those from `offset` on; its logs in `folder/logs`)."""
        array = f"0-{n - 1}" + (f"%{self.parallel}" if self.parallel else "")
        args = [
            "--parsable",
            f"--array={array}",
            f"--job-name={_job_name(folder)}",
            f"--output={folder / 'logs' / f'{offset}+%a.log'}",
            f"--cpus-per-task={self.cpus_per_task}",
            "--export=ALL",
        ]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.gpus_per_task:
            args.append(f"--gpus-per-task={self.gpus_per_task}")
        if self.mem:
            args.append(f"--mem={self.mem}")
        if self.time_limit:
            args.append(f"--time={self.time_limit}")
        return args + list(self.extra_args)

    def run(self, work: ShardWork, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
        root = Path(work.work_path) / "slurm"
        _cancel_orphans(root)
        folder = root / uuid.uuid4().hex[:12]
        for sub in ("tasks", "results", "errors", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        shards: list[int] = []  # task index -> shard
        for task in tasks:  # each written out as it comes: the driver holds one at a time
            if (Path(work.work_path) / "shards" / f"{task.k:05d}.done.json").exists():
                reused = work.reused(task)  # a done shard is checked here (its rows read and hashed), not queued
                if reused is not None:
                    yield reused
                    continue
            _dump(folder / "tasks" / f"{len(shards)}.pkl", task)
            shards.append(task.k)
        if not shards:
            shutil.rmtree(folder, ignore_errors=True)
            return
        _dump(folder / "work.pkl", work)
        jobs: list[str] = []
        finished = False
        try:
            for offset in range(0, len(shards), self.max_array):
                count = min(self.max_array, len(shards) - offset)
                script = folder / f"job-{offset}.sh"
                command = [sys.executable, "-m", "ipt_data.run.slurm_executor", str(folder)]
                line = " ".join(shlex.quote(c) for c in command)
                script.write_text(f'#!/bin/bash\nexec {line} "$(({offset} + SLURM_ARRAY_TASK_ID))"\n')
                jobs.append(_submit(self.sbatch_args(folder, count, offset), script))
            log.info("submitted %d shards as Slurm job array(s) %s (%s)", len(shards), ", ".join(jobs), folder)
            yield from self._results(folder, shards, jobs)
            finished = True
        finally:
            if not finished:
                subprocess.run(["scancel", f"--name={_job_name(folder)}"], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)  # every shard made: its logs say nothing more

    def _results(self, folder: Path, shards: list[int], jobs: list[str]) -> Iterator[ShardResult]:
        """The tasks' results as they come; once no task is left in the queue, those still missing are given
        `results_grace_s` to appear (written on another node, a shared filesystem may show them late), then the
        run stops naming them."""
        taken: set[int] = set()
        gone_since: float | None = None
        while len(taken) < len(shards):
            queued = _queued(jobs)  # read before the results: a task that ended just now left its file
            for path in sorted((folder / "results").glob("*.json")):
                i = int(path.stem)
                if i not in taken:
                    taken.add(i)
                    yield ShardResult(**json.loads(path.read_text()))
            if len(taken) == len(shards):
                return
            if queued is False:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > self.results_grace_s:
                    raise _failed(folder, shards, taken, jobs)
            else:  # queued, or squeue could not tell (a busy controller): wait
                gone_since = None
            time.sleep(self.poll_seconds)


def _job_name(folder: Path) -> str:
    return f"ipt-data-{folder.name}"


def _cancel_orphans(root: Path) -> None:
    """Cancel the job arrays that earlier drivers of this work folder submitted and left (a driver killed with
    `kill -9` cannot cancel its own), found by their job name: this run holds the folder's lock, so no live run
    owns them (their tasks would write nothing anyway: they check the lock). Their folders go too."""
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        subprocess.run(["scancel", f"--name={_job_name(folder)}"], capture_output=True, check=False)
        log.info("cancelled what was left of Slurm jobs %s, from an earlier run of this work folder", _job_name(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _dump(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _submit(args: list[str], script: Path) -> str:
    try:
        done = subprocess.run(["sbatch", *args, str(script)], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(
            "--executor slurm needs Slurm's sbatch on the PATH: run ipt-data on a node of the cluster (a login node)"
        ) from exc
    if done.returncode:
        raise ConfigError(f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def _queued(jobs: list[str]) -> bool | None:
    """Whether any task of the arrays is still pending, running or completing; None when `squeue` cannot tell (a
    busy or restarting controller: asked again at the next poll). A job Slurm no longer knows is not queued."""
    done = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i"], capture_output=True, text=True)
    if done.returncode == 0:
        return bool(done.stdout.strip())
    return False if "invalid job id" in done.stderr.lower() else None


def _failed(folder: Path, shards: list[int], taken: set[int], jobs: list[str]) -> IptDataError:
    missing = [i for i in range(len(shards)) if i not in taken]
    names = [shards[i] for i in missing]
    errors = [(folder / "errors" / f"{i}.txt") for i in missing]
    said = next((p.read_text().strip() for p in errors if p.exists()), None)
    return SlurmTaskError(
        f"Slurm job(s) {', '.join(jobs)}: {len(missing)} array task(s) ended without making their shards (shards "
        f"{', '.join(map(str, names[:10]))}{', ...' if len(names) > 10 else ''})"
        + (f": {said}" if said else "; killed, out of time or memory?")
        + f". Their logs: {folder / 'logs'} (kept until the next run). Run the same command again: only their "
        "shards are made."
    )


def run_task(folder: Path, index: int) -> int:
    """One array task: make shard `index` of the job in `folder` and leave its result (or its error)."""
    with open(folder / "work.pkl", "rb") as f:
        work: ShardWork = pickle.load(f)
    with open(folder / "tasks" / f"{index}.pkl", "rb") as f:
        task: ShardTask = pickle.load(f)
    try:
        result = work(task)
    except Exception as exc:
        traceback.print_exc()
        one_line = f"{type(exc).__name__}: {exc}".splitlines()[0]
        (folder / "errors" / f"{index}.txt").write_text(one_line + "\n")
        return 1
    tmp = folder / "results" / f".{index}.tmp"
    tmp.write_text(json.dumps(result.__dict__))
    os.replace(tmp, folder / "results" / f"{index}.json")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run_task(Path(sys.argv[1]), int(sys.argv[2])))
