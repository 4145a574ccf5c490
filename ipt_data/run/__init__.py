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

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from ipt_data.errors import storage_error
from ipt_data.method.tokenizer import get_encoder
from ipt_data.redact import collect_secrets
from ipt_data.run.executors import Executor, get_executor, register_executor
from ipt_data.run.finish import finish
from ipt_data.run.inputs import ShardTask, ensure_model_available, input_size, iter_shards, open_input, with_general
from ipt_data.run.lock import FolderLock, check_held
from ipt_data.run.logs import run_log
from ipt_data.run.preflight import preflight, probe_engine
from ipt_data.run.progress import Progress
from ipt_data.run.report import dumps, merged
from ipt_data.run.shard import ShardWork, active_stats, setup_stages
from ipt_data.run.workdir import WorkDir

__all__ = ["augment", "open_run", "register_executor"]
log = logging.getLogger(__name__)


def open_run(config, locks: contextlib.ExitStack):
    """`(input, work folder, encoder)`, failing early on a missing model, input or tokenizer, and on what the
    pre-flight checks find (a refused run leaves nothing behind: the folders its locks made are removed with
    them). The work folder, and a local output folder, are locked for this run first, until `locks` closes: a
    second run on either stops at once with one line naming this one."""
    lock = locks.enter_context(FolderLock(config.resolved_work_dir()))  # first: a second run stops at once
    if "://" not in config.output:  # a folder on this machine (or a shared filesystem): two runs must not publish it
        locks.enter_context(FolderLock(config.output, what="the output folder", name=".ipt-run.lock"))
    ensure_model_available(config.model)
    source = open_input(config)
    encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
    preflight(config, source)
    config.stage_inputs = setup_stages(config, config.resolved_work_dir())  # e.g. a benchmark index: fingerprinted
    work = WorkDir.open(config.resolved_work_dir(), config, lock_token=lock.token)
    return source, work, encoder


def augment(config, *, progress: bool = True, executor: Executor | None = None) -> dict[str, Any]:
    """Run the whole job; returns the run report (also written to the work folder and published)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    started = time.perf_counter()
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    model_bars_were_on = transformers_logging.is_progress_bar_enabled()
    if not progress:  # nor the engine's "Loading weights" bar
        transformers_logging.disable_progress_bar()
    try:
        with contextlib.ExitStack() as locks:
            source, work, encoder = open_run(config, locks)
            executor = executor or get_executor(config)
            with run_log(work.path, collect_secrets(config.to_dict())):
                log.info("run started: %s -> %s (work folder %s)", config.dataset, config.output, work.path)
                try:
                    work.remove_stale_temporaries(older_than=0.0)  # the lock is ours: no other writer is left
                    if executor.in_process or config.engine == "openai":
                        probe_engine(config)
                    return _run(config, source, work, encoder, progress, executor, started)
                except BaseException as exc:
                    log.error("run stopped: %s: %s", type(exc).__name__, exc)  # in run.log too, scrubbed
                    raise
    except OSError as exc:  # a full disk, a read-only folder: one line, not a traceback
        one_line = storage_error(exc)
        if one_line is None or one_line is exc:
            raise
        raise one_line from exc
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        if model_bars_were_on:
            transformers_logging.enable_progress_bar()


def _run(config, source, work: WorkDir, encoder, progress: bool, executor: Executor, started: float) -> dict:
    setup_s = time.perf_counter() - started  # model check, input opened, tokenizer loaded
    bar = Progress(input_size(source, config.limit), progress, active_stats(config))
    stats: dict[int, dict] = {}
    counts = {"total": 0, "reused": 0, "redone": 0, "added": 0, "dropped": 0}
    hashes: dict[int, str] = {}  # shard -> hash of its input rows
    known = work.known()  # shards an earlier run wrote

    def tasks() -> Iterator[ShardTask]:  # where each shard's rows are: the executor's workers read them
        planned = iter_shards(source, config.shard_size, config.limit)
        for task in with_general(planned, config) if config.general else planned:
            counts["total"] = task.k + 1
            yield task

    work_fn = ShardWork(config, str(work.path), bar.update_synth if executor.in_process else None, work.lock_token)
    shards_started = time.perf_counter()
    try:
        for result in executor.run(work_fn, tasks()):
            stats[result.k], hashes[result.k] = result.stats, result.input_hash
            if result.reused:
                counts["reused"] += 1
                bar.skip_shard(result.stats)
            else:
                counts["redone" if result.k in known else "added"] += 1
                bar.add_shard(result.stats, counted_live=result.live, shard=result.k)
    finally:
        bar.close()
    for k in sorted(k for k in known if k >= counts["total"]):  # their input rows are gone
        work.drop(k)
        counts["dropped"] += 1
    log.info("shards: %s", counts)
    report = merged(stats)
    # a shard stage's seconds add up its shards, which may run at once (two streaming, or one per GPU):
    # `shards_wall` is how long the shard phase took on the clock
    report.setdefault("seconds", {}).update(setup=setup_s, shards_wall=time.perf_counter() - shards_started)
    report["shards"] = dict(counts)
    if config.stage_inputs:
        report["inputs"] = config.stage_inputs  # what the stages read besides the options (benchmarks, ...)
    check_held(work.path / "run.lock", work.lock_token, "publishing")  # a run that lost its lock publishes nothing
    data_fingerprint = hashlib.sha256(
        json.dumps([config.output_fingerprint(), [hashes[k] for k in sorted(hashes)]]).encode()
    ).hexdigest()[:16]
    report = finish(config, work, report, counts["total"], encoder, data_fingerprint)
    report["seconds"]["total"] = time.perf_counter() - started
    (work.path / "run_report.json").write_text(dumps(report))
    log.info("run finished: %s", report["output"])
    return report
