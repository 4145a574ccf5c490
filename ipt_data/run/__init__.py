"""`augment(config)`: raw corpus -> chunk -> synthesize -> templify -> mix -> publish, sharded and resumable.

A run is: open it (model check, input, work folder, tokenizer), iterate the shards not yet done, hand them
to the executor, finish (mix, card, report, publish). The input is read in shards of `shard_size` rows
(streamed or not: the same shards either way). A finished shard is written under a temporary name,
renamed, then marked done; a rerun (after a crash, even `kill -9`) skips done shards and gives
byte-identical output. The work folder records the config's fingerprint and refuses shards made with other
synthesis parameters. Memory holds one shard at a time (2 per process with `--gpus N`) plus Arrow's
memory-mapped files. The run logs to `run.log` in the work folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from ipt_data.budget import get_encoder
from ipt_data.redact import collect_secrets
from ipt_data.run.executors import Executor, get_executor, register_executor
from ipt_data.run.finish import finish
from ipt_data.run.inputs import ShardTask, ensure_model_available, input_size, iter_shards, open_input
from ipt_data.run.logs import run_log
from ipt_data.run.progress import Progress
from ipt_data.run.report import dumps, merged
from ipt_data.run.shard import ShardWork
from ipt_data.run.workdir import WorkDir

__all__ = ["augment", "open_run", "register_executor"]
log = logging.getLogger(__name__)


def open_run(config):
    """`(input, work folder, encoder)`, failing early on a missing model, input or tokenizer."""
    ensure_model_available(config.model)
    source = open_input(config)
    work = WorkDir(config.resolved_work_dir(), config)
    encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
    return source, work, encoder


def augment(config, *, progress: bool = True, executor: Executor | None = None) -> dict[str, Any]:
    """Run the whole job; returns the run report (also written to the work folder and published)."""
    import datasets

    started = time.perf_counter()
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        source, work, encoder = open_run(config)
        with run_log(work.path, collect_secrets(config.to_dict())):
            log.info("run started: %s -> %s (work folder %s)", config.dataset, config.output, work.path)
            return _run(config, source, work, encoder, progress, executor or get_executor(config), started)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _run(config, source, work: WorkDir, encoder, progress: bool, executor: Executor, started: float) -> dict:
    setup_s = time.perf_counter() - started  # model check, input opened, tokenizer loaded
    bar = Progress(input_size(source, config.limit), progress)
    stats: dict[int, dict] = {}
    retry: list[int] = []
    counts = {"total": 0, "resumed": 0}

    def unfinished() -> Iterator[ShardTask]:
        for k, start, rows in iter_shards(source, config.shard_size, config.limit):
            counts["total"] = k + 1
            done = work.done(k)
            if done is None:
                yield ShardTask(k, start, rows())
            else:
                counts["resumed"] += 1
                stats[k] = done
                bar.skip_shard(done)

    work_fn = ShardWork(config, str(work.path), bar.update_synth if executor.in_process else None)
    try:
        for result in executor.run(work_fn, unfinished()):
            stats[result.k] = result.stats
            bar.add_shard(result.stats, counted_live=result.live)
            if result.failed:
                retry.append(result.k)
                log.warning("shard %d: the engine failed on some rows; it is left for the next run", result.k)
    finally:
        bar.close()
    report = merged(stats)
    report.setdefault("seconds", {})["setup"] = setup_s
    report["shards"] = dict(counts)
    if retry:
        report["retry_shards"], report["output"] = sorted(retry), None
        (work.path / "run_report.json").write_text(dumps(report))
        return report  # nothing is published until a rerun has retried the failed rows
    report = finish(config, work, report, counts["total"], encoder)
    report["seconds"]["total"] = time.perf_counter() - started
    (work.path / "run_report.json").write_text(dumps(report))
    log.info("run finished: %s", report["output"])
    return report
