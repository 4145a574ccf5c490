"""The `slurm` executor: a run's shards as one Slurm job array (`--executor slurm`), submitted with `sbatch`.

The driver writes what the array's tasks need into the work folder (which every node must see, as with Ray):
`slurm/<id>/work.pkl` (the `ShardWork`) and one `tasks/I.pkl` per shard to make (where its rows are, or the rows
the driver had to read), then submits one array job: task I runs `python -m ipt_data.run.slurm_executor
<folder> I` with this process's Python and environment, at most `--slurm-parallel` at once, with the partition,
GPUs, CPUs, memory and time limit asked for. Each task makes its shard exactly as a local run does (the same
`ShardWork`: it reads its rows, writes the shard, its published files and its done marker) and leaves its result
in `results/I.json`; the driver takes the results as they come. A task that fails or is killed leaves none:
once the job has left the queue the run stops, naming those tasks and their logs (`logs/`), and the same command
again makes only their shards (the others are done and reused). Ctrl-C cancels the job (`scancel`).
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
    ):
        self.partition, self.gpus_per_task, self.cpus_per_task = partition, gpus_per_task, cpus_per_task
        self.mem, self.time_limit, self.parallel, self.extra_args = mem, time_limit, parallel, tuple(extra_args)
        self.poll_seconds = poll_seconds

    def sbatch_args(self, folder: Path, n: int) -> list[str]:
        """The `sbatch` options of the array job (of `n` tasks, its logs in `folder/logs`)."""
        array = f"0-{n - 1}" + (f"%{self.parallel}" if self.parallel else "")
        args = [
            "--parsable",
            f"--array={array}",
            "--job-name=ipt-data",
            f"--output={folder / 'logs' / '%a.log'}",
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
        tasks = list(tasks)
        if not tasks:
            return
        _cancel_orphans(Path(work.work_path) / "slurm")
        folder = Path(work.work_path) / "slurm" / uuid.uuid4().hex[:12]
        for sub in ("tasks", "results", "errors", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        _dump(folder / "work.pkl", work)
        for i, task in enumerate(tasks):
            _dump(folder / "tasks" / f"{i}.pkl", task)
        script = folder / "job.sh"
        command = " ".join(shlex.quote(c) for c in (sys.executable, "-m", "ipt_data.run.slurm_executor", str(folder)))
        script.write_text(f'#!/bin/bash\nexec {command} "$SLURM_ARRAY_TASK_ID"\n')
        job = _submit(self.sbatch_args(folder, len(tasks)), script)
        (folder / "job").write_text(job)
        log.info("submitted %d shards as Slurm job array %s (%s)", len(tasks), job, folder)
        taken: set[int] = set()
        finished = False
        try:
            while len(taken) < len(tasks):
                gone = not _queued(job)  # read before the results: a task that ended just now left its file
                for path in sorted((folder / "results").glob("*.json")):
                    i = int(path.stem)
                    if i not in taken:
                        taken.add(i)
                        yield ShardResult(**json.loads(path.read_text()))
                if len(taken) == len(tasks):
                    break
                if gone:
                    raise _failed(folder, tasks, taken, job)
                time.sleep(self.poll_seconds)
            finished = True
        finally:
            if not finished:
                subprocess.run(["scancel", job], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)  # every shard made: its logs say nothing more


def _cancel_orphans(root: Path) -> None:
    """Cancel the job arrays that earlier drivers of this work folder submitted and left (a driver killed with
    `kill -9` cannot cancel its own): this run holds the folder's lock, so no live run owns them (their tasks
    would write nothing anyway: they check the lock). Their folders go too."""
    for job in root.glob("*/job"):
        subprocess.run(["scancel", job.read_text().strip()], capture_output=True, check=False)
        log.info("cancelled Slurm job %s, left by an earlier run of this work folder", job.read_text().strip())
        shutil.rmtree(job.parent, ignore_errors=True)


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


def _queued(job: str) -> bool:
    """Whether any task of the array is still pending, running or completing."""
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True, check=False)
    return bool(done.stdout.strip()) if done.returncode == 0 else False


def _failed(folder: Path, tasks: list[ShardTask], taken: set[int], job: str) -> IptDataError:
    missing = [i for i in range(len(tasks)) if i not in taken]
    shards = [tasks[i].k for i in missing]
    errors = [(folder / "errors" / f"{i}.txt") for i in missing]
    said = next((p.read_text().strip() for p in errors if p.exists()), None)
    return SlurmTaskError(
        f"Slurm job {job}: {len(missing)} array task(s) ended without making their shards (shards "
        f"{', '.join(map(str, shards[:10]))}{', ...' if len(shards) > 10 else ''})"
        + (f": {said}" if said else "; killed, out of time or memory?")
        + f". Their logs: {folder / 'logs'}/<task>.log. Run the same command again: only their shards are made."
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
