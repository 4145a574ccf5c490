"""One shard of a run: route its rows (converted / kept raw / rejected), chunk, synthesize and templify the
converted ones, count tokens, and write the shard to the work folder. `ShardWork` is what executors call,
in this process or another: `work(task, rank)` -> `ShardResult`."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from ipt_data.budget import get_encoder
from ipt_data.chunk import chunk_batch
from ipt_data.errors import EngineUnavailableError, RunStoppedError
from ipt_data.hashing import unit_interval
from ipt_data.run.inputs import ShardTask
from ipt_data.run.workdir import WorkDir
from ipt_data.schema import KEPT_TYPE, MISSING, SHARD_SCHEMA, TEMPLIFY_COLUMNS, TEXT_IDS, row_keys, text_problem
from ipt_data.sources import REJECT_KEY
from ipt_data.synthesize import Synthesizer
from ipt_data.templify import raw_row, templify_batch


@dataclass
class ShardResult:
    k: int
    stats: dict
    failed: bool  # rows the engine failed on are to be retried by the next run: the shard is not done
    live: bool = False  # its pairs and tokens were already reported batch by batch


def route(rows: dict[str, list], start: int, config) -> tuple[list[int], list[int], list[dict]]:
    """`(converted, raw, rejects)`: row positions by a seeded hash of the row index, and the rejected rows."""
    n = len(next(iter(rows.values()))) if rows else 0
    texts = rows.get(config.text_column, [MISSING] * n)
    unreadable = rows.get(REJECT_KEY, [None] * n)
    convert, raw, rejects = [], [], []
    for i, text in enumerate(texts):
        reason = unreadable[i] if isinstance(unreadable[i], str) else text_problem(text)
        if reason:
            rejects.append({"row": start + i, "reason": reason, "value": ascii(text)[:200]})
        elif unit_interval(f"route:{config.seed}:{start + i}") < config.fraction:
            convert.append(i)
        else:
            raw.append(i)
    return convert, raw, rejects


def process_shard(task: ShardTask, config, synth: Callable, encoder, on_batch=None) -> tuple:
    """The shard's table (`schema.SHARD_SCHEMA`), its rejects, its stats, and its first engine error (or None).

    `synth(batches)` yields each batch's synthesized columns in order (`Synthesizer.stream`): the shard's
    batches of `batch_size` chunks go to it together, so a streaming engine is kept busy across them. Nothing
    of ours keeps the engine waiting longer than it must: rows are chunked a batch at a time as the synthesizer
    asks for them (the first prompts go out after one batch is chunked, not the whole shard), the rows kept raw
    are counted a share after each batch handed over (the engine then has work), and each batch is rendered and
    counted as soon as it is back, while the engine works on the others."""
    start, rows = task.start, task.rows
    convert, raw, rejects = route(rows, start, config)
    n = len(next(iter(rows.values()))) if rows else 0
    texts = rows.get(config.text_column, [MISSING] * n)
    # "synthesize" is the rest of the synthesis loop's time: the engine's, and the synthesizer's own work
    seconds: Counter = Counter(dict.fromkeys(("chunk", "synthesize", "templify", "count"), 0.0))
    raw_tokens: list[int] = []
    size = config.batch_size
    raw_share = -(-len(raw) // max(1, -(-len(convert) // size)))  # raw rows counted after each batch handed over

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
            for key, values in chunks.items():
                pending.setdefault(key, []).extend(values)
            while len(pending["text"]) >= size:
                yield {k: v[:size] for k, v in pending.items()}
                pending = {k: v[size:] for k, v in pending.items()}
                count_raw(raw_share)  # a share at a time: the engine has work, and the stream is never held long
        if pending.get("text"):
            yield pending

    synthesized: dict[str, list] = {}
    out: dict[str, list] = {c: [] for c in (*TEMPLIFY_COLUMNS, "n_tokens")}
    t = time.perf_counter()
    for part in synth(batches()):
        for key, values in part.items():
            synthesized.setdefault(key, []).extend(values)
        if on_batch is not None:
            on_batch(part)
        with _timed(seconds, "templify"):
            rendered = templify_batch(part, seed=config.seed)
        with _timed(seconds, "count"):
            rendered["n_tokens"] = encoder.count_texts(rendered["text"])
        for key, values in rendered.items():
            out[key].extend(values)
    seconds["synthesize"] += time.perf_counter() - t - sum(seconds.values())  # the rest of the loop's time
    count_raw(len(raw))  # what is left
    for i, n_tokens in zip(raw, raw_tokens, strict=True):
        for col, value in raw_row(texts[i], f"{start + i}:0").items():
            out[col].append(value)
        out["n_tokens"].append(n_tokens)
    table = pa.table({c: out[c] for c in SHARD_SCHEMA.names}, schema=SHARD_SCHEMA)
    for column in config.keep_columns:  # provenance: the chosen input columns of every source row, in order
        values = rows.get(column, [None] * n)
        kept = [[_value(values, int(key.split(":")[0]) - start) for key in keys] for keys in out["source"]]
        table = table.append_column(column, pa.array(kept, type=KEPT_TYPE))

    status = Counter(s.split(":")[0] for s in synthesized.get("synth_status", []))
    docs_with_pairs = {d for d, p in zip(synthesized.get("doc_id", []), synthesized.get("pairs", []), strict=True) if p}
    stats = {
        "rows": {
            "in": n,
            "converted": len(convert),
            "raw": len(raw),
            "rejected": len(rejects),
            "converted_with_pairs": len(docs_with_pairs),
        },
        "rejects": dict(Counter(r["reason"].split(":")[0] for r in rejects)),
        "chunks": len(synthesized.get("text", [])),
        "status": dict(status),
        "pairs": sum(len(p) for p in synthesized.get("pairs", [])),
        "invalid_pairs": sum(synthesized.get("invalid_pairs", [])),
        "fallback_pairs": sum(out["fallback_pairs"]),
        "tasks": dict(Counter(pair["task"] for pairs in out["pairs"] for pair in pairs)),
        # chunks rendered into no text (never expected: the chains of a shard are whole); counted, not hidden
        "unrendered_chunks": _unrendered(synthesized, out),
        "prompt_tokens": sum(synthesized.get("prompt_tokens", [])),
        "completion_tokens": sum(synthesized.get("completion_tokens", [])),
        "texts": dict(Counter(out["kind"])),
        # why a published text is raw: its row was not selected for conversion (--fraction), or it got no
        # pairs (the synthesizer wrote none that parse, or the engine failed on it)
        "raw_texts": {"not_selected": len(raw), "no_pairs": sum(k == "raw" for k in out["kind"]) - len(raw)},
        "layouts": dict(Counter(lay for lay, k in zip(out["layout"], out["kind"], strict=True) if k == "augmented")),
        "seconds": dict(seconds),
    }
    first_error = next((s for s in synthesized.get("synth_status", []) if s.startswith("engine_error")), None)
    return table, rejects, stats, first_error


@contextlib.contextmanager
def _timed(seconds: Counter, stage: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - t


def _unrendered(synthesized: dict[str, list], out: dict[str, list]) -> int:
    if not synthesized:
        return 0
    rendered = {key for keys in out["source"] for key in keys}
    return sum(key not in rendered for key in row_keys(synthesized, synthesized["text"]))


def _value(values: list, i: int) -> str | None:
    """A kept input value as text (one type whatever the input holds: strings as they are, others as JSON)."""
    value = values[i] if 0 <= i < len(values) else None
    if value is None or value is MISSING:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def check_engine_errors(k: int, stats: dict, first_error: str | None, share: float) -> None:
    """Stop the run, the shard not written, when the engine failed on more than `share` of its prompts (and
    on more than 2), or on every one of them: a dead or broken engine must not publish raw texts as if
    synthesized."""
    errors, prompts = stats["status"].get("engine_error", 0), stats["chunks"]
    if errors > max(2, share * prompts) or (errors and errors == prompts):
        raise EngineUnavailableError(
            f"shard {k}: the engine failed on {errors} of {prompts} prompts (more than {share:.0%}; "
            f"--max-engine-errors sets it), e.g. {first_error}. Nothing was published and the shard is not "
            "done: run the same command again once the engine is back"
        )


class ShardWork:
    """Processes and writes one shard: `work(task, rank=None)`. Picklable (sent to worker processes and Ray
    actors); `on_batch`, a progress hook for in-process runs, is not sent."""

    def __init__(self, config, work_path: str, on_batch: Callable | None = None, lock_token: str | None = None):
        self.config, self.work_path, self.on_batch = config, work_path, on_batch
        self.lock_token = lock_token  # the run's hold on the work folder: checked before each shard is written
        self.stopping = threading.Event()  # set by an executor whose run stopped: shards under way write nothing

    def __getstate__(self):
        return {**self.__dict__, "on_batch": None, "stopping": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stopping=threading.Event())

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

    def __call__(self, task: ShardTask, rank: int | None = None) -> ShardResult:
        config = self.config
        synth = self.synthesizer()
        encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
        on_batch = functools.partial(self.on_batch, shard=task.k) if self.on_batch is not None else None
        table, rejects, stats, first_error = process_shard(
            task, config, lambda batches: synth.stream(batches, rank, self.stopping), encoder, on_batch
        )
        if self.stopping.is_set():
            raise RunStoppedError(f"shard {task.k}: the run was stopped; not written")
        check_engine_errors(task.k, stats, first_error, config.max_engine_errors)
        failed = bool(config.on_engine_error == "retry" and stats["status"].get("engine_error"))
        t = time.perf_counter()
        WorkDir(self.work_path, self.lock_token).write(task.k, table, rejects, stats, task.input_hash, done=not failed)
        stats["seconds"]["write"] = time.perf_counter() - t
        return ShardResult(task.k, stats, failed, live=self.on_batch is not None)
