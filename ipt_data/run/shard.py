"""One shard of a run, through the stages `ipt_data.stages` declares: route its rows (converted / kept raw /
rejected), chunk, synthesize and templify the converted ones (with the stages that act between, e.g. pair
filters and decontamination), count tokens, and write the shard to the work folder. `ShardWork` is what
executors call, in this process or another: `work(task, rank)` -> `ShardResult`."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from ipt_data.corpus.stats import CorpusStats
from ipt_data.errors import EngineUnavailableError, RunStoppedError
from ipt_data.method.tokenizer import get_encoder
from ipt_data.run import outputs
from ipt_data.run.inputs import ShardTask
from ipt_data.run.report import merge
from ipt_data.run.workdir import WorkDir, rows_hash
from ipt_data.schema import KEPT_TYPE, MISSING, PUBLISHED_COLUMNS, SHARD_SCHEMA, TEMPLIFY_COLUMNS, TEXT_IDS
from ipt_data.sinks import send_ahead
from ipt_data.stages import ShardContext, ShardData, Stage, load
from ipt_data.stages.chunk import chunk_batch
from ipt_data.stages.route import route
from ipt_data.stages.synthesize import Synthesizer
from ipt_data.stages.templify import raw_row, templify_batch

log = logging.getLogger(__name__)


@dataclass
class ShardResult:
    k: int
    stats: dict
    live: bool = False  # its pairs and tokens were already reported batch by batch
    input_hash: str = ""  # of the rows it was made from
    reused: bool = False  # done by an earlier run from the same rows: taken as it was


class ShardOutput(NamedTuple):
    """What `process_shard` makes of a shard."""

    table: pa.Table  # `schema.SHARD_SCHEMA` (and the kept columns)
    rejects: list[dict]
    stats: dict  # what the run report adds up
    first_error: str | None  # the first engine error, if any
    records: list[dict]  # what its stages kept for inspection
    corpus_stats: CorpusStats  # the statistics of its rows, as published (taken batch by batch)


@dataclass
class ActiveStage:
    """A stage of the shard's pipeline that acts on this run, with its options and its per-process state."""

    stage: Stage
    options: object
    state: object = None


def acting(config) -> Iterator[tuple[Stage, object]]:
    """`(stage, its options)` for the stages of `config.stages` that act on this run (enabled by their options)."""
    for stage in load(config.stages):
        options = stage.option_values(config)
        if stage.enabled(options):
            yield stage, options


def active_stages(config, work_path: str | None = None) -> list[ActiveStage]:
    """The acting stages, prepared."""
    return [
        ActiveStage(stage, options, stage.prepare(options, work_path) if stage.prepare is not None else None)
        for stage, options in acting(config)
    ]


def active_stats(config) -> tuple:
    """The statistics of the acting stages."""
    return tuple(stat for stage, _ in acting(config) for stat in stage.stats)


def setup_stages(config, work_path: str) -> dict:
    """Once per run, in the driver, before any shard: each acting stage's `setup` (e.g. a benchmark index built
    into the work folder), by stage name: what the shards depend on besides the options."""
    return {stage.name: stage.setup(options, work_path) for stage, options in acting(config) if stage.setup}


def process_shard(
    task: ShardTask, config, synth: Callable, encoder, on_batch=None, stop=None, stages: list[ActiveStage] | None = None
) -> ShardOutput:
    """The shard's table (`schema.SHARD_SCHEMA`), its rejects, its stats, its first engine error (or None), the
    records its stages kept for inspection, and the statistics of its rows (`ShardOutput`).

    `synth(batches)` yields each batch's synthesized columns in order (`Synthesizer.stream`): the shard's
    batches of `batch_size` chunks go to it together, so a streaming engine is kept busy across them. Nothing
    of ours keeps the engine waiting longer than it must: rows are chunked a batch at a time as the synthesizer
    asks for them (the first prompts go out after one batch is chunked, not the whole shard), the rows kept raw
    are counted a share after each batch handed over (the engine then has work), and each batch is filtered,
    rendered and counted as soon as it is back, while the engine works on the others; the statistics of its
    published rows are taken then too, so none are left to take after the last batch.

    `stages` (`active_stages`; default: those of `config`) act at their points: `on_rows` on the usable rows
    (a reason rejects one), `on_synthesized` on each batch back from the engine, `on_rendered` on its texts.

    With `on_engine_error="retry"`, a batch the engine failed on is sent again (the same chunks, so the same
    prompts) up to `engine_retries` times, waiting `engine_retry_wait` seconds, doubled each time (`stop` cuts
    the wait short); the batches keep their place, so the shard is the one an engine that never failed makes."""
    start, rows = task.start, task.read()
    stages = active_stages(config, config.resolved_work_dir()) if stages is None else stages
    words = {} if any(a.stage.takes_words(a.options) for a in stages) else None
    shared = ShardContext(task.k, start, None, words=words)
    contexts = [
        (
            a.stage,
            ShardContext(
                task.k, start, a.options, a.state, shared.stats, shared.records, shared.raw_because, words=words
            ),
        )
        for a in stages
    ]
    convert, raw, rejects = route(rows, start, config)
    n = len(next(iter(rows.values()))) if rows else 0
    texts = rows.get(config.text_column, [MISSING] * n)
    # "synthesize" is the rest of the synthesis loop's time: the engine's, and the synthesizer's own work
    seconds: Counter = Counter(dict.fromkeys(("chunk", "synthesize", "templify", "count", "shard_stats"), 0.0))
    corpus = CorpusStats()
    for stage, ctx in contexts:
        if stage.on_rows is not None:
            with _timed(seconds, stage.name):
                convert, raw, rejects = _screen(stage, ctx, texts, convert, raw, rejects, start)
    if words:  # the word hashes of texts that are not synthesized are not wanted
        _forget(words, texts, raw)
    raw_tokens: list[int] = []
    size = config.batch_size
    raw_share = -(-len(raw) // max(1, -(-len(convert) // size)))  # raw rows counted after each batch handed over
    retrying = config.on_engine_error == "retry"
    handed: list[dict | None] = []  # each batch as handed over, kept until it is back without an engine error

    def count_raw(limit: int) -> None:
        with _timed(seconds, "count"):
            done = len(raw_tokens)
            raw_tokens.extend(encoder.count_texts([texts[i] for i in raw[done : done + limit]]))

    def batches() -> Iterator[dict[str, list]]:
        """Batches of exactly `batch_size` chunks (the last one shorter), in order, chunked when asked for."""
        pending: dict[str, list] = {}
        for b in range(0, len(convert), size):
            rows_in = convert[b : b + size]
            with _timed(seconds, "chunk"):
                chunks = chunk_batch(
                    {"text": [texts[i] for i in rows_in]},
                    [start + i for i in rows_in],
                    tokenizer=encoder,
                    max_model_len=config.max_model_len,
                    max_new_tokens=config.max_new_tokens,
                    ids_column=TEXT_IDS,  # each chunk's ids, counted here, are the ones its prompt and demo use
                )
            if words:  # nor are those of texts cut into chunks (a chunk is not its text)
                cut = [int(d) - start for d, c in zip(chunks["doc_id"], chunks["chunk"], strict=True) if c == 1]
                _forget(words, texts, cut)
            for key, values in chunks.items():
                pending.setdefault(key, []).extend(values)
            while len(pending["text"]) >= size:
                yield _handed({k: v[:size] for k, v in pending.items()})
                pending = {k: v[size:] for k, v in pending.items()}
                count_raw(raw_share)  # a share at a time: the engine has work, and the stream is never held long
        if pending.get("text"):
            yield _handed(pending)

    def _handed(batch: dict[str, list]) -> dict[str, list]:
        handed.append(batch if retrying else None)
        return batch

    parts: dict[int, dict[str, list]] = {}  # batch -> its synthesized columns
    kept: dict[int, dict[str, list]] = {}  # batch -> the same after the stages' on_synthesized
    rendered: dict[int, dict[str, list]] = {}  # batch -> its rendered rows
    failing: dict[int, dict[str, list]] = {}  # batch -> what came back, with engine errors
    records: dict[int, list[dict]] = {}  # batch -> what its stages kept for inspection (in batch order at the end)

    def take(i: int, part: dict[str, list], final: bool = False) -> None:
        if retrying and not final and any(str(s).startswith("engine_error") for s in part["synth_status"]):
            failing[i] = part  # sent again below; rendered as it is if it never succeeds
            return
        parts[i], handed[i] = part, None
        if on_batch is not None:
            on_batch(part)
        before = len(shared.records)
        for stage, ctx in contexts:
            if stage.on_synthesized is not None:
                with _timed(seconds, stage.name):
                    part = stage.on_synthesized(part, ctx)
        kept[i] = part
        with _timed(seconds, "templify"):
            rendered[i] = templify_batch(part, seed=config.seed)
        for stage, ctx in contexts:
            if stage.on_rendered is not None:
                ctx.synthesized = part
                with _timed(seconds, stage.name):
                    rendered[i] = stage.on_rendered(rendered[i], ctx)
        with _timed(seconds, "count"):
            rendered[i]["n_tokens"] = encoder.count_texts(rendered[i]["text"])
        with _timed(seconds, "shard_stats"):  # its rows are final now (a retried batch is taken when it is back)
            corpus.add({c: rendered[i][c] for c in PUBLISHED_COLUMNS})
        records[i] = shared.records[before:]
        del shared.records[before:]  # kept by batch: a retried batch's come in its place, not last

    t, before = time.perf_counter(), sum(seconds.values())
    for i, part in enumerate(synth(batches())):
        take(i, part)
    for attempt in range(1, config.engine_retries + 1 if retrying else 1):
        if not failing or (stop is not None and stop.is_set()):
            break
        wait = config.engine_retry_wait * 2 ** (attempt - 1)
        log.warning(
            "shard %d: the engine failed on %d batch(es); sending them again in %.0f s (retry %d of %d)",
            task.k, len(failing), wait, attempt, config.engine_retries,
        )  # fmt: skip
        if stop is not None:
            stop.wait(wait)
        else:
            time.sleep(wait)
        again = sorted(failing)
        failing.clear()
        for i, part in zip(again, synth(iter([handed[i] for i in again])), strict=True):
            take(i, part)
    for i, part in sorted(failing.items()):  # the engine stayed down: counted as they came back
        take(i, part, final=True)
    seconds["synthesize"] += time.perf_counter() - t - (sum(seconds.values()) - before)  # the rest of the loop's
    synthesized: dict[str, list] = {}
    filtered: dict[str, list] = {}
    out: dict[str, list] = {c: [] for c in (*TEMPLIFY_COLUMNS, "n_tokens")}
    for i in sorted(parts):  # in batch order, whichever came back first
        for key, values in parts.pop(i).items():
            synthesized.setdefault(key, []).extend(values)
        for key, values in kept.pop(i).items():
            filtered.setdefault(key, []).extend(values)
        for key, values in rendered.pop(i).items():
            out[key].extend(values)
    count_raw(len(raw))  # what is left
    first_raw = len(out["text"])
    for i, n_tokens in zip(raw, raw_tokens, strict=True):
        for col, value in raw_row(texts[i], f"{start + i}:0").items():
            out[col].append(value)
        out["n_tokens"].append(n_tokens)
    with _timed(seconds, "shard_stats"):
        corpus.add({c: out[c][first_raw:] for c in PUBLISHED_COLUMNS})
    table = pa.table({c: out[c] for c in SHARD_SCHEMA.names}, schema=SHARD_SCHEMA)
    for column in config.keep_columns:  # provenance: the chosen input columns of every source row, in order
        values = rows.get(column, [None] * n)
        kept_values = [[_value(values, int(key.split(":")[0]) - start) for key in keys] for keys in out["source"]]
        table = table.append_column(column, pa.array(kept_values, type=KEPT_TYPE))

    data = ShardData(n, convert, raw, rejects, synthesized, filtered, out, shared.raw_because)
    stats: dict = {}
    for stage in load(config.stages):
        if stage.summarize is not None:
            stats.update(stage.summarize(data))
    merge(stats, shared.stats)  # what the acting stages counted
    stats["seconds"] = dict(seconds)
    first_error = next((s for s in synthesized.get("synth_status", []) if s.startswith("engine_error")), None)
    records_in_order = shared.records + [r for i in sorted(records) for r in records[i]]
    return ShardOutput(table, rejects, stats, first_error, records_in_order, corpus)


def _screen(
    stage: Stage, ctx: ShardContext, texts: list, convert: list[int], raw: list[int], rejects: list[dict], start: int
):
    """`stage.on_rows` on the usable rows: those it gives a reason for move from converted or raw to rejects."""
    usable = sorted(convert + raw)
    ctx.rows = [start + i for i in usable]
    reasons = dict(zip(usable, stage.on_rows([texts[i] for i in usable], ctx), strict=True))
    out = [{"row": start + i, "reason": r, "value": ascii(texts[i])[:200]} for i, r in reasons.items() if r]
    if not out:
        return convert, raw, rejects
    rejects = sorted(rejects + out, key=lambda r: r["row"])
    return [i for i in convert if not reasons[i]], [i for i in raw if not reasons[i]], rejects


def _forget(words: dict, texts: list, rows) -> None:
    """The word hashes of the texts of `rows` out of `words` (`ShardContext.words`)."""
    for i in rows:
        words.pop(id(texts[i]), None)


@contextlib.contextmanager
def _timed(seconds: Counter, stage: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - t


def _value(values: list, i: int) -> str | None:
    """A kept input value as text (one type whatever the input holds: strings as they are, others as JSON)."""
    value = values[i] if 0 <= i < len(values) else None
    if value is None or value is MISSING:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def check_engine_errors(k: int, stats: dict, first_error: str | None, config) -> None:
    """Stop the run, the shard not written, when the engine failed on prompts of it: with
    `on_engine_error="retry"` (the default) on any, after its retries; with `raw`, on more than
    `max_engine_errors` of them (and more than 2), or on every one. A dead or broken engine must not publish
    raw texts as if synthesized."""
    errors, prompts = stats["status"].get("engine_error", 0), stats["chunks"]
    if not errors:
        return
    again = "run the same command again once the engine is back (the shards done are kept; only the others are made)"
    if config.on_engine_error == "retry":
        raise EngineUnavailableError(
            f"shard {k}: the engine still failed on {errors} of {prompts} prompts after {config.engine_retries} "
            f"retries, e.g. {first_error}. Nothing was published and the shard is not done: {again}. If it fails "
            "on the same prompts every time (one it cannot serve), --on-engine-error raw publishes their texts raw"
        )
    share = config.max_engine_errors
    if errors > max(2, share * prompts) or errors == prompts:
        raise EngineUnavailableError(
            f"shard {k}: the engine failed on {errors} of {prompts} prompts (more than {share:.0%}; "
            f"--max-engine-errors sets it), e.g. {first_error}. Nothing was published and the shard is not done: "
            f"{again}"
        )


class ShardWork:
    """Processes and writes one shard: `work(task, rank=None)`. Picklable (sent to worker processes and Ray
    actors); `on_batch`, a progress hook for in-process runs, is not sent."""

    def __init__(self, config, work_path: str, on_batch: Callable | None = None, lock_token: str | None = None):
        self.config, self.work_path, self.on_batch = config, work_path, on_batch
        self.lock_token = lock_token  # the run's hold on the work folder: checked before each shard is written
        self.stopping = threading.Event()  # set by an executor whose run stopped: shards under way write nothing

    def __getstate__(self):
        return {**self.__dict__, "on_batch": None, "stopping": None, "_stages": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stopping=threading.Event())

    def stages(self) -> list[ActiveStage]:
        """The acting stages, prepared once in this process (an index loaded, ...)."""
        if getattr(self, "_stages", None) is None:
            self._stages = active_stages(self.config, self.work_path)
        return self._stages

    def stop(self) -> None:
        """Make the shards under way in this process stop within a second, writing nothing."""
        self.stopping.set()

    def synthesizer(self) -> Synthesizer:
        return Synthesizer(**{**self.config.synthesis_options(), "text_column": "text"})

    def shards_at_once(self) -> int:
        """Shards worth running at the same time in one process: 2 when the engine streams (the next shard's
        prompts fill the engine while the current one's last chains drain), else 1."""
        synth = self.synthesizer()
        return 2 if synth.streams(synth.load_engine()) else 1

    def reused(self, task: ShardTask) -> ShardResult | None:
        """Reads the task's rows (where a worker reads them: here) and hashes them; the result of the shard an
        earlier run made from the same rows, when it can be taken as it is, else None (the shard is to be made).
        A shard made with `--on-engine-error raw` whose engine failed on some rows is made again under `retry`."""
        task.input_hash = rows_hash(task.read())
        work = WorkDir(self.work_path, self.lock_token)
        done = work.done(task.k, task.input_hash)
        if done is not None and self.config.on_engine_error == "retry" and done["status"].get("engine_error"):
            done = None
        if done is None:
            return None
        listed = work.outputs(task.k)
        if self.config.general and task.general is None:  # the run's end mixes the corpus: no files of its own
            if listed is not None:
                work.remake_outputs(task.k, None, ())
        elif listed is None or listed[0] != outputs.layout(self.config, task):
            config = self.config  # its files were made for another layout (or by an earlier ipt_data): made again
            encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
            made = outputs.published(pq.read_table(work.shard(task.k, ".parquet")), task, config, encoder)
            work.remake_outputs(task.k, made, config.keep_columns)
            self._send_ahead(work, task.k)
        return ShardResult(task.k, done, input_hash=task.input_hash, reused=True)

    def _send_ahead(self, work: WorkDir, k: int) -> None:
        """The shard's published files to the sink ahead of publishing (the Hub: their content sent from here, and
        the run's one commit names it)."""
        listed = enumerate(work.outputs(k)[1])
        send_ahead(
            self.config.output, [(f"data/shard-{k:05d}-{j}.parquet", work.shard(k, f.suffix)) for j, f in listed]
        )

    def __call__(self, task: ShardTask, rank: int | None = None) -> ShardResult:
        """The shard made and written (or the done one taken, when `reused` was not asked first)."""
        if not task.input_hash and (reused := self.reused(task)) is not None:
            return reused
        config = self.config
        synth = self.synthesizer()
        encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
        on_batch = functools.partial(self.on_batch, shard=task.k) if self.on_batch is not None else None
        made = process_shard(
            task,
            config,
            lambda batches: synth.stream(batches, rank, self.stopping),
            encoder,
            on_batch,
            self.stopping,
            self.stages(),
        )
        stats = made.stats
        try:
            if self.stopping.is_set():
                raise RunStoppedError(f"shard {task.k}: the run was stopped; not written")
            check_engine_errors(task.k, stats, made.first_error, config)
            t = time.perf_counter()
            published = outputs.published(made.table, task, config, encoder)
            work = WorkDir(self.work_path, self.lock_token)
            work.write(
                task.k, made.table, made.rejects, stats, task.input_hash, made.records, made.corpus_stats, published,
                config.keep_columns,
            )  # fmt: skip
            if published is not None:
                self._send_ahead(work, task.k)
            stats["seconds"]["write"] = time.perf_counter() - t
        finally:
            made.corpus_stats.close()
        return ShardResult(task.k, stats, live=self.on_batch is not None, input_hash=task.input_hash)
