"""`augment(config)`: raw corpus -> chunk -> synthesize -> templify -> mix -> publish, sharded and resumable.

The input is read in shards of `shard_size` rows (streamed or not: the same shards either way).
Each row is routed by a seeded hash of its index: converted (with probability `fraction`), kept raw,
or rejected (no usable text; written to the shard's rejects with the reason). A finished shard is
written as parquet under a temporary name, renamed, and then marked done; a rerun (after a crash,
even `kill -9`) skips done shards and gives byte-identical output. The work folder records the
config's fingerprint and refuses shards made with other synthesis parameters.

After the last shard, the shards are mixed (general instruction data by token ratio, seeded
shuffle) and published with a dataset card and the run report. Memory holds one shard at a time
plus Arrow's memory-mapped files.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ipt_data.budget import chunk_batch, get_encoder, unit_interval
from ipt_data.card import dataset_card
from ipt_data.config import SHARD_FIELDS, AugmentConfig
from ipt_data.sources import REJECT_KEY, JsonlSource, as_dataset, load_source
from ipt_data.synthesize import Synthesizer
from ipt_data.templify import templify_batch

SHARD_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("kind", pa.string()),
        ("n_pairs", pa.int32()),
        ("layout", pa.string()),
        ("inverted", pa.bool_()),
        ("source", pa.list_(pa.string())),
        ("fallback_pairs", pa.int32()),
        ("n_tokens", pa.int64()),
    ]
)


class ModelUnavailableError(RuntimeError):
    pass


def ensure_model_available(model: str) -> None:
    """Fail fast, before any work, when the synthesizer cannot be loaded (offline, wrong name)."""
    if os.path.isdir(model):
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "config.json")
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise ModelUnavailableError(
            f"cannot load the synthesizer {model!r} ({type(exc).__name__}). "
            + (
                "HF_HUB_OFFLINE is set and the model is not in the local cache. "
                if offline
                else "Check the model name and your connection to the Hub (HF_ENDPOINT). "
            )
            + "Download it on a machine with internet access (huggingface-cli download MODEL), "
            "set MODEL=/path/to/a/local/copy (--model), or run `make demo` for the offline tiny fixture."
        ) from exc


def _rejection(value: Any) -> str | None:
    if value is MISSING:
        return "missing_text_column"
    if value is None or (isinstance(value, str) and not value.strip()):
        return "empty_text"
    if not isinstance(value, str):
        return f"invalid_text: {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid_unicode: lone surrogate"
    return None


class WorkDir:
    """Checkpoints: `run.json` (fingerprint), `shards/NNNNN.parquet` + `.rejects.jsonl` + `.done.json`."""

    def __init__(self, path: str, config: AugmentConfig):
        self.path = Path(path)
        (self.path / "shards").mkdir(parents=True, exist_ok=True)
        run = self.path / "run.json"
        fingerprint = config.fingerprint()
        if run.exists():
            old = json.loads(run.read_text())
            if old["fingerprint"] != fingerprint:
                changed = sorted(k for k in old["shard_config"] if old["shard_config"][k] != config.to_dict().get(k))
                raise ValueError(
                    f"{self.path} holds shards made with other parameters (changed: {changed}); "
                    "use another --work-dir, or delete that folder to start over"
                )
        else:
            shard_config = {k: config.to_dict()[k] for k in SHARD_FIELDS}
            run.write_text(json.dumps({"fingerprint": fingerprint, "shard_config": shard_config}, indent=1))

    def shard(self, k: int, suffix: str) -> Path:
        return self.path / "shards" / f"{k:05d}{suffix}"

    def done(self, k: int) -> dict | None:
        marker = self.shard(k, ".done.json")
        return json.loads(marker.read_text()) if marker.exists() else None

    def write(self, k: int, table: pa.Table, rejects: list[dict], stats: dict, done: bool = True) -> None:
        """Write shard `k`; with `done=False` (rows to retry) it is redone by the next run."""
        for suffix, write in (
            (".parquet", lambda p: pq.write_table(table, p)),
            (".rejects.jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rejects))),
        ):
            final = self.shard(k, suffix)
            tmp = final.with_name(final.name + ".tmp")
            write(tmp)
            os.replace(tmp, final)
        marker = self.shard(k, ".done.json")
        if not done:
            return
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, marker)

    def shard_files(self, n: int) -> list[str]:
        """The non-empty shard files (a shard whose rows were all rejected holds no rows)."""
        paths = [self.shard(k, ".parquet") for k in range(n)]
        return [str(p) for p in paths if pq.ParquetFile(p).metadata.num_rows]


def _iter_shards(ds, shard_size: int, limit: int | None) -> Iterator[tuple[int, int, Any]]:
    """`(k, first_row_index, rows)` where rows is a callable giving the shard's rows as dicts of lists."""
    from datasets import IterableDataset

    if isinstance(ds, IterableDataset | JsonlSource):
        stream = iter(ds if limit is None else itertools.islice(ds, limit))
        for k in itertools.count():
            rows = list(itertools.islice(stream, shard_size))
            if not rows:
                return
            yield k, k * shard_size, (lambda rows=rows: _columns(rows))
        return
    n = len(ds) if limit is None else min(limit, len(ds))
    for k, start in enumerate(range(0, n, shard_size)):
        yield k, start, (lambda start=start: ds.select(range(start, min(n, start + shard_size))).to_dict())


MISSING = type("Missing", (), {"__repr__": lambda self: "<missing>"})()


def _columns(rows: list[dict]) -> dict[str, list]:
    """Rows (dicts whose keys may differ) as columns; a value a row lacks is `MISSING`."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {c: [r.get(c, MISSING) for r in rows] for c in names}


def process_shard(
    rows: dict[str, list], start: int, config: AugmentConfig, synth: Synthesizer, encoder, progress=None
) -> tuple[pa.Table, list[dict], dict]:
    """One shard: route rows, chunk/synthesize/templify the converted ones, keep the raw ones."""
    columns = sorted(c for c in rows if c != REJECT_KEY)
    if config.text_column not in rows and columns:
        raise KeyError(f"no text column {config.text_column!r} in the input; its columns are {columns}")
    n = len(next(iter(rows.values())))
    texts = rows.get(config.text_column, [MISSING] * n)
    unreadable = rows.get(REJECT_KEY, [None] * n)
    seconds: Counter = Counter()
    rejects, convert, raw = [], [], []
    for i, text in enumerate(texts):
        reason = unreadable[i] if isinstance(unreadable[i], str) else _rejection(text)
        if reason:
            rejects.append({"row": start + i, "reason": reason, "value": ascii(text)[:200]})
        elif unit_interval(f"route:{config.seed}:{start + i}") < config.fraction:
            convert.append(i)
        else:
            raw.append(i)

    t = time.perf_counter()
    chunks = chunk_batch(
        {"text": [texts[i] for i in convert]},
        [start + i for i in convert],
        tokenizer=encoder,
        max_model_len=config.max_model_len,
        max_new_tokens=config.max_new_tokens,
    )
    seconds["chunk"] += time.perf_counter() - t
    synthesized: dict[str, list] = {}
    t = time.perf_counter()
    for b in range(0, len(chunks["text"]), config.batch_size):
        part = synth({k: v[b : b + config.batch_size] for k, v in chunks.items()})
        for key, values in part.items():
            synthesized.setdefault(key, []).extend(values)
        if progress is not None:
            progress.update_synth(part)
    seconds["synthesize"] += time.perf_counter() - t

    t = time.perf_counter()
    out = templify_batch(synthesized, seed=config.seed) if synthesized else {c: [] for c in SHARD_SCHEMA.names}
    seconds["templify"] += time.perf_counter() - t
    for i in raw:
        for col, value in (
            ("text", texts[i]),
            ("kind", "raw"),
            ("n_pairs", 0),
            ("layout", "raw"),
            ("inverted", False),
            ("source", [f"{start + i}:0:0"]),
            ("fallback_pairs", 0),
        ):
            out[col].append(value)
    t = time.perf_counter()
    out["n_tokens"] = encoder.count_texts(out["text"])
    seconds["count"] += time.perf_counter() - t
    table = pa.table({c: out[c] for c in SHARD_SCHEMA.names}, schema=SHARD_SCHEMA)

    status = Counter(s.split(":")[0] for s in synthesized.get("synth_status", []))
    docs_with_pairs = {d for d, p in zip(synthesized.get("doc_id", []), synthesized.get("pairs", []), strict=True) if p}
    stats = {
        "rows": {
            "in": len(texts),
            "converted": len(convert),
            "raw": len(raw),
            "rejected": len(rejects),
            "converted_with_pairs": len(docs_with_pairs),
        },
        "rejects": dict(Counter(r["reason"].split(":")[0] for r in rejects)),
        "chunks": len(chunks["text"]),
        "status": dict(status),
        "pairs": sum(len(p) for p in synthesized.get("pairs", [])),
        "invalid_pairs": sum(synthesized.get("invalid_pairs", [])),
        "fallback_pairs": sum(out["fallback_pairs"]),
        "prompt_tokens": sum(synthesized.get("prompt_tokens", [])),
        "completion_tokens": sum(synthesized.get("completion_tokens", [])),
        "texts": dict(Counter(out["kind"])),
        "layouts": dict(Counter(lay for lay, k in zip(out["layout"], out["kind"], strict=True) if k == "augmented")),
        "seconds": dict(seconds),
    }
    return table, rejects, stats


def _synthesizer(config: AugmentConfig) -> Synthesizer:
    engine_options = dict(config.engine_options)
    if config.trust_remote_code:
        engine_options["trust_remote_code"] = True
    return Synthesizer(
        model=config.model,
        rounds=config.rounds,
        chain_order=config.chain_order,
        engine=config.engine,
        max_model_len=config.max_model_len,
        max_new_tokens=config.max_new_tokens,
        text_column="text",
        tokenizer=config.tokenizer,
        temperature=config.temperature,
        seed=config.seed,
        engine_options=engine_options,
    )


_WORKER_RANK: int | None = None  # set in each worker process of a multi-GPU run


def run_shard(config: AugmentConfig, work: WorkDir, k: int, start: int, rows: dict, progress=None) -> tuple[dict, bool]:
    """Process and write shard `k`; `(stats, failed)` where failed means "retry it on the next run"."""
    synth = _synthesizer(config)
    encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
    rank_synth = (lambda batch: synth(batch, _WORKER_RANK)) if _WORKER_RANK is not None else synth
    table, rejects, stats = process_shard(rows, start, config, rank_synth, encoder, progress)
    failed = bool(config.on_engine_error == "retry" and stats["status"].get("engine_error"))
    t = time.perf_counter()
    work.write(k, table, rejects, stats, done=not failed)
    stats["seconds"]["write"] = time.perf_counter() - t
    return stats, failed


def _init_worker(ranks) -> None:
    global _WORKER_RANK
    _WORKER_RANK = ranks.get()


def _worker_run(config: AugmentConfig, work_path: str, k: int, start: int, rows: dict) -> tuple[int, dict, bool]:
    return (k, *run_shard(config, WorkDir(work_path, config), k, start, rows))


class _ShardPool:
    """`--gpus N`: N worker processes, each pinned to one device (rank r -> GPU r) with its own engine.

    At most 2N shards are in flight, so memory stays bounded; results are written by the workers.
    """

    def __init__(self, config: AugmentConfig, work_path: Path):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        context = mp.get_context("spawn")  # CUDA cannot be forked
        ranks = context.Queue()
        for r in range(config.gpus):
            ranks.put(r)
        self.config, self.work_path, self.limit = config, str(work_path), 2 * config.gpus
        self.executor = ProcessPoolExecutor(
            config.gpus, mp_context=context, initializer=_init_worker, initargs=(ranks,)
        )
        self.pending: set = set()

    def submit(self, k: int, start: int, rows: dict, finished) -> None:
        if len(self.pending) >= self.limit:
            self._collect(finished)
        self.pending.add(self.executor.submit(_worker_run, self.config, self.work_path, k, start, rows))

    def drain(self, finished) -> None:
        while self.pending:
            self._collect(finished)

    def _collect(self, finished) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, self.pending = wait(self.pending, return_when=FIRST_COMPLETED)
        for future in done:
            finished(*future.result())

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _merge(total: dict, part: dict) -> dict:
    for key, value in part.items():
        if isinstance(value, dict):
            _merge(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


class _Progress:
    """One tqdm bar over input rows, with pairs and generated tokens/s."""

    def __init__(self, total: int | None, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="rows", desc="augment", disable=not enabled, dynamic_ncols=True)
        self.pairs = self.tokens = 0
        self.start = time.perf_counter()

    def update_synth(self, part: dict) -> None:
        """Live counts from one synthesized batch."""
        self._count(sum(len(p) for p in part["pairs"]), sum(part["completion_tokens"]))

    def add_shard(self, stats: dict, counted_live: bool) -> None:
        """A finished shard: its rows, and its pairs and tokens unless they were counted live."""
        if not counted_live:
            self._count(stats.get("pairs", 0), stats.get("completion_tokens", 0))
        self.bar.update(stats["rows"]["in"])

    def _count(self, pairs: int, tokens: int) -> None:
        self.pairs += pairs
        self.tokens += tokens
        rate = self.tokens / max(1e-9, time.perf_counter() - self.start)
        self.bar.set_postfix(pairs=self.pairs, tok_s=f"{rate:,.0f}")

    def close(self) -> None:
        self.bar.close()


def open_run(config: AugmentConfig):
    """`(input, work folder)` for a run, failing early on a missing model, input or tokenizer."""
    ensure_model_available(config.model)
    source = load_source(
        config.dataset,
        config=config.dataset_config,
        split=config.split,
        streaming=config.streaming,
        trust_remote_code=config.trust_remote_code,
        bad_lines=config.bad_lines,
    )
    work = WorkDir(config.resolved_work_dir(), config)
    get_encoder(config.tokenizer or config.model, config.trust_remote_code)
    return source, work


def augment(config: AugmentConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole job; returns the run report (also written next to the output)."""
    import datasets

    started = time.perf_counter()
    datasets.disable_progress_bars()
    ds, work = open_run(config)
    setup_s = time.perf_counter() - started  # model check, input opened, tokenizer loaded
    total = len(ds) if isinstance(ds, datasets.Dataset) else None
    total = total if total is None or config.limit is None else min(config.limit, total)
    bar = _Progress(total, progress)
    report: dict[str, Any] = {}
    n_shards = resumed = 0
    retry_later = []

    def finished(k: int, stats: dict, failed: bool, live: bool = False) -> None:
        _merge(report, stats)
        bar.add_shard(stats, counted_live=live)
        if failed:
            retry_later.append(k)

    pool = _ShardPool(config, work.path) if config.gpus > 1 else None
    try:
        for k, start, rows in _iter_shards(ds, config.shard_size, config.limit):
            n_shards = k + 1
            stats = work.done(k)
            if stats is not None:
                resumed += 1
                finished(k, stats, False)
            elif pool is not None:
                pool.submit(k, start, rows(), finished)
            else:
                finished(k, *run_shard(config, work, k, start, rows(), bar), live=True)
        if pool is not None:
            pool.drain(finished)
    finally:
        if pool is not None:
            pool.close()
        bar.close()
    retry_later.sort()
    report.setdefault("seconds", {})["setup"] = setup_s
    return finish(config, work, report, n_shards, resumed, retry_later, started)


def finish(
    config: AugmentConfig,
    work: WorkDir,
    report: dict,
    n_shards: int,
    resumed: int,
    retry_later: list[int],
    started: float,
) -> dict[str, Any]:
    """After the shards (from any executor): mix, write the card and report, publish."""
    import datasets

    from ipt_data.mix import mix
    from ipt_data.publish import publish

    if retry_later:
        report["retry_shards"] = sorted(retry_later)
        report["output"] = None
        (work.path / "run_report.json").write_text(json.dumps(report, indent=1))
        return report  # nothing is published until a rerun has retried the failed rows

    encoder = get_encoder(config.tokenizer or config.model, config.trust_remote_code)
    t = time.perf_counter()
    files = work.shard_files(n_shards)
    shards = datasets.Dataset.from_parquet(files) if files else datasets.Dataset(SHARD_SCHEMA.empty_table())
    general = None
    if config.general:
        general = as_dataset(
            load_source(
                config.general,
                config=config.general_config,
                split=config.general_split,
                trust_remote_code=config.trust_remote_code,
                bad_lines=config.bad_lines,
            )
        )
    corpus = mix(
        shards,
        general=general,
        general_ratio=config.general_ratio,
        by=config.mix_by,
        tokenizer=encoder,
        seed=config.seed,
        general_columns=config.general_columns,
    )
    report.setdefault("seconds", {})["mix"] = time.perf_counter() - t
    by_kind = corpus.data.table.group_by("kind").aggregate([("kind", "count"), ("n_tokens", "sum")]).to_pylist()
    by_kind.sort(key=lambda r: r["kind"])  # corpus is flattened: its table holds exactly its rows
    report["output_rows"] = {r["kind"]: r["kind_count"] for r in by_kind}
    report["output_tokens"] = {r["kind"]: r["n_tokens_sum"] for r in by_kind}
    report["shards"] = {"total": n_shards, "resumed": resumed}
    report["fingerprint"] = config.fingerprint()
    example = next((r["text"] for r in shards if r["kind"] == "augmented"), None) if len(shards) else None

    t = time.perf_counter()
    rows = report.get("rows", {})
    report["accounted"] = rows.get("in", 0) == rows.get("converted", 0) + rows.get("raw", 0) + rows.get("rejected", 0)
    rejects = "".join(p.read_text() for p in sorted((work.path / "shards").glob("*.rejects.jsonl")))
    card = dataset_card(config.to_dict(), report, example)
    report["output"] = publish(
        corpus,
        config.output,
        card=card,
        overwrite=config.overwrite,
        private=config.private,
        max_shard_rows=config.publish_shard_rows,
        fingerprint=config.output_fingerprint(),
        extra_files={"run_report.json": json.dumps(_stable(report), indent=1), "rejects.jsonl": rejects},
    )
    report["seconds"]["publish"] = time.perf_counter() - t
    report["seconds"]["total"] = time.perf_counter() - started
    (work.path / "run_report.json").write_text(json.dumps(report, indent=1))
    return report


def _stable(report: dict) -> dict:
    """The report without timings and resume counts, so that reruns publish byte-identical files."""
    return {k: v for k, v in report.items() if k not in ("seconds", "shards")}
