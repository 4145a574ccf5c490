"""Executors only schedule: they take shard tasks and a `ShardWork`, run `work(task, rank)` somewhere, and
yield each `ShardResult` as it finishes (any order: the report is merged in shard order). Registered by name,
as engines are: `register_executor(name, build)` where `build(config)` returns an `Executor`.

- `local`: in this process (`--gpus 1`): one shard after another, or two at a time in threads when the
  engine streams (`ShardWork.shards_at_once`), so the next shard's prompts keep it busy while the current
  shard's last chains finish.
- `processes`: N worker processes, worker r always passed rank r (GPU r), each with its own engine
  (`--gpus N`); at most 2N shards in flight, so memory stays bounded.
- `ray`: a Ray Data actor pool (`ipt_data.run.ray_executor`).
- `slurm`: one Slurm job array, a task per shard (`ipt_data.run.slurm_executor`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Protocol

from ipt_data.registry import Registry
from ipt_data.run.inputs import ShardTask
from ipt_data.run.shard import ShardResult, ShardWork

log = logging.getLogger(__name__)


class Executor(Protocol):
    name: str
    in_process: bool  # whether `work` runs here (progress can then be reported batch by batch)

    def run(self, work: ShardWork, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]: ...


class LocalExecutor:
    name, in_process = "local", True

    def run(self, work: ShardWork, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
        at_once = 0  # known once a shard is to be made: every shard done already needs no engine
        busy: dict[Future, int] = {}
        try:
            for task in tasks:
                reused = work.reused(task)
                if reused is not None:
                    yield reused
                    continue
                at_once = at_once or work.shards_at_once()
                if at_once == 1:
                    yield work(task)
                    continue
                busy[_in_daemon_thread(work, task)] = task.k
                yield from _finished(busy, below=at_once)  # before reading the next shard: at most `at_once` held
            yield from _finished(busy, below=1)
        finally:
            if busy:  # the run stopped (an error, Ctrl-C): the other shard stops too, writing nothing
                work.stop()


def _finished(busy: dict[Future, int], below: int) -> Iterator[ShardResult]:
    """Wait until fewer than `below` of the `busy` futures are running; yield the results of those that
    finished, removed from `busy`."""
    while busy and len(busy) >= below:
        done, _ = wait(busy, return_when=FIRST_COMPLETED)
        for future in done:
            busy.pop(future)
            yield future.result()


def _in_daemon_thread(fn: Callable, *args) -> Future:
    """`fn(*args)` in a daemon thread: the process never waits for it at exit (the shard it runs is written
    whole or not at all, so stopping mid-shard loses nothing)."""
    future: Future = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            future.set_exception(exc)

    threading.Thread(target=run, name="ipt-shard", daemon=True).start()
    return future


class ProcessExecutor:
    name, in_process = "processes", False

    def __init__(self, processes: int):
        self.processes = processes

    def run(self, work: ShardWork, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        context = mp.get_context("spawn")  # CUDA cannot be forked
        pools = [ProcessPoolExecutor(1, mp_context=context, initializer=_ignore_ctrl_c) for _ in range(self.processes)]
        busy: dict[Future, int] = {}  # future -> rank
        try:
            for task in tasks:
                yield from _finished(busy, below=2 * self.processes)
                load = [sum(r == rank for r in busy.values()) for rank in range(self.processes)]
                rank = load.index(min(load))
                busy[pools[rank].submit(work, task, rank)] = rank
            yield from _finished(busy, below=1)
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)


def _ignore_ctrl_c() -> None:
    """In a worker process: Ctrl-C is the driver's to handle (it stops the workers); a worker that took it too
    would print its own traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ray(config):
    from ipt_data.run.ray_executor import RayExecutor

    return RayExecutor(address=config.ray_address, workers=config.workers, gpus_per_worker=config.gpus_per_worker)


def _slurm(config):
    import shlex

    from ipt_data.run.slurm_executor import SlurmExecutor

    return SlurmExecutor(
        partition=config.slurm_partition,
        gpus_per_task=config.slurm_gpus,
        cpus_per_task=config.slurm_cpus,
        mem=config.slurm_mem,
        time_limit=config.slurm_time,
        parallel=config.slurm_parallel,
        extra_args=tuple(shlex.split(config.slurm_args or "")),
    )


EXECUTORS: Registry[Callable] = Registry(
    "executor",
    {
        "local": lambda config: LocalExecutor() if config.gpus <= 1 else ProcessExecutor(config.gpus),
        "ray": _ray,
        "slurm": _slurm,
    },
)


def register_executor(name: str, build: Callable) -> None:
    """Make `executor=name` (`--executor name`) run shards on `build(config)`."""
    EXECUTORS.register(name, build)


def unregister_executor(name: str) -> None:
    """Forget the executor `name`."""
    EXECUTORS.unregister(name)


def available_executors() -> list[str]:
    return EXECUTORS.names()


def get_executor(config) -> Executor:
    return EXECUTORS.get(config.executor)(config)
