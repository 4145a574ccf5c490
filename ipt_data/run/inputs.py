"""Opening a run's input and cutting it into shards of `shard_size` rows (the same shards streamed or not);
reading the general data, each row usable or rejected with its reason."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ipt_data.corpus.sources import REJECT_KEY, JsonlSource, LineSpan, json_layout, load_source
from ipt_data.errors import ModelUnavailableError
from ipt_data.schema import MISSING, text_problem

GENERAL_FOLDER = "general"  # in the work folder: the general data's rejects


@dataclass
class ShardTask:
    """Shard `k`: input rows from `start` on, as columns (`rows`), or where a worker reads them (`where`, a
    `RowSource`: the driver never holds them)."""

    k: int
    start: int
    rows: dict[str, list] | None = None
    where: RowSource | None = None
    input_hash: str = ""  # of its rows: a rerun reuses the done shard only if its rows hash the same
    general: GeneralPortion | None = None  # its portion of the general data (`with_general`), if it mixes its own

    def read(self) -> dict[str, list]:
        """The shard's rows as columns (read once, then kept)."""
        if self.rows is None:
            self.rows = self.where.read()
        return self.rows


class RowSource(Protocol):
    """Where a shard's rows are, for whichever process runs it to read them (picklable, small)."""

    def read(self) -> dict[str, list]: ...


@dataclass(frozen=True)
class GeneralPortion:
    """A shard's portion of the general data: where its rows are, the number of its first row in the general
    data, and what identifies the general data read (a change makes the shards' files again)."""

    where: RowSource | None  # None: no rows (more shards than general rows)
    first_row: int
    size: int  # rows in a portion (the last one may have fewer): the general rows / the shards
    source_id: str


@dataclass(frozen=True)
class LineRows:
    """Rows of JSON Lines files, by byte spans (`JsonlSource.spans`)."""

    spans: tuple[LineSpan, ...]
    bad_lines: str

    def read(self) -> dict[str, list]:
        return columns(list(JsonlSource([], self.bad_lines).read_spans(list(self.spans))))


@dataclass(frozen=True)
class ArrowRows:
    """Rows `start` .. `stop - 1` of a dataset held in Arrow files (memory-mapped where they are)."""

    files: tuple[str, ...]
    start: int
    stop: int

    def read(self) -> dict[str, list]:
        from datasets import Dataset, concatenate_datasets

        parts = [Dataset.from_file(f) for f in self.files]
        data = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
        return data.select(range(self.start, self.stop)).to_dict()


def ensure_model_available(model: str, what: str = "the synthesizer", flag: str = "--model") -> None:
    """Fail fast, before any work, when a model cannot be loaded (offline, wrong name)."""
    if os.path.isdir(model):
        return
    if model.startswith((".", "/", "~")) or model.count("/") > 1:  # a path, not a Hub id
        raise ModelUnavailableError(f"{what} folder {model!r} does not exist ({flag})")
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "config.json")
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise ModelUnavailableError(
            f"cannot load {what} {model!r} ({type(exc).__name__}). "
            + (
                "HF_HUB_OFFLINE is set and the model is not in the local cache. "
                if offline
                else "Check the model name and your connection to the Hub (HF_ENDPOINT). "
            )
            + "Download it on a machine with internet access (huggingface-cli download MODEL), "
            f"give a local copy ({flag} /path/to/it), or run `make demo` for the offline tiny fixture."
        ) from exc


def open_input(config):
    """The run's input (a Dataset, IterableDataset or JsonlSource), as the config names it."""
    return load_source(
        config.dataset,
        config=config.dataset_config,
        split=config.split,
        streaming=config.streaming,
        trust_remote_code=config.trust_remote_code,
        bad_lines=config.bad_lines,
        text_files=config.text_files,
    )


def read_general(config):
    """The general instruction data as `load_source` opens it (read lazily where the reader allows)."""
    return load_source(
        config.general,
        config=config.general_config,
        split=config.general_split,
        trust_remote_code=config.trust_remote_code,
        bad_lines=config.bad_lines,
    )


def general_problem(row: dict, columns: tuple[str, str]) -> str | None:
    """Why a row of the general data is not usable (a reject reason, as for input rows), or None."""
    if REJECT_KEY in row:  # a line the reader could not make a row of (with --bad-lines skip)
        return row[REJECT_KEY]
    for column in columns:
        value = row.get(column, MISSING)
        problem = text_problem(value)
        if problem:
            return {
                "missing_text_column": f"missing_column: {column!r}",
                "empty_text": f"empty_text: {column!r} is empty",
                "invalid_text": f"invalid_text: {column!r} holds {type(value).__name__}, not text",
                "invalid_unicode": f"invalid_unicode: lone surrogate in {column!r}",
            }[problem.split(":")[0]]
    return None


def general_reject(number: int, row: dict, reason: str, columns: tuple[str, str]) -> dict:
    """A rejected row of the general data as `general/rejects.jsonl` lists it (its values shown short, secrets
    redacted)."""
    from ipt_data.redact import redact

    value = ascii({c: row[c] for c in columns if c in row})[:200]
    return redact({"row": number, "reason": reason, "value": value})


def general_rows(source, columns: tuple[str, str]) -> Iterator[tuple[int, dict, str | None]]:
    """`(row number, row, reject reason or None)` for every row of the general data, streamed (a `Dataset` a
    batch of its two columns at a time). A corrupt line raises, unless --bad-lines skip made it a reject."""
    from datasets import Dataset

    if isinstance(source, Dataset) and all(c in source.column_names for c in columns):
        rows = (
            dict(zip(columns, values, strict=True))
            for batch in source.select_columns(list(columns)).iter(batch_size=10_000)
            for values in zip(*(batch[c] for c in columns), strict=True)
        )
    else:
        rows = iter(source)
    for number, row in enumerate(rows):
        yield number, row, general_problem(row, columns)


def open_general(config, rows_folder: Path):
    """The general data's usable rows, for the mix: a memory-mapped `Dataset` of the two `general_columns`
    and `GENERAL_ROW` (each row's number in the general data), written batch by batch to `rows.arrow` in
    `rows_folder` (the run's mixing folder, removed when the run ends),
    in bounded memory; the other rows go to `general/rejects.jsonl` in the work folder, each with its reason
    (counted by `general_rejects`). Rows keep their order: general data without rejects mixes as before."""
    import json
    import shutil

    import pyarrow as pa
    from datasets import Dataset

    from ipt_data.corpus.mixing import GENERAL_ROW

    folder = Path(config.resolved_work_dir()) / GENERAL_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's rejects (and rows, before they moved out)
    folder.mkdir(parents=True)
    rows_folder = Path(rows_folder)
    q, r = config.general_columns
    schema = pa.schema([(q, pa.string()), (r, pa.string()), (GENERAL_ROW, pa.int64())])
    batch: dict[str, list] = {q: [], r: [], GENERAL_ROW: []}
    with (
        pa.OSFile(str(rows_folder / "rows.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, schema) as writer,
        open(folder / "rejects.jsonl", "w", encoding="utf-8") as rejects,
    ):
        for number, row, reason in general_rows(read_general(config), config.general_columns):
            if reason is not None:
                rejects.write(json.dumps(general_reject(number, row, reason, config.general_columns)) + "\n")
                continue
            for column, value in ((q, row[q]), (r, row[r]), (GENERAL_ROW, number)):
                batch[column].append(value)
            if len(batch[q]) == 10_000:
                writer.write_batch(pa.record_batch(batch, schema=schema))
                batch = {c: [] for c in batch}
        writer.write_batch(pa.record_batch(batch, schema=schema))
    return Dataset.from_file(str(rows_folder / "rows.arrow"))


def general_rejects(work_path) -> dict[str, int]:
    """The general data's rejected rows by reason (as `open_general` wrote them), for the run report."""
    import json

    path = Path(work_path) / GENERAL_FOLDER / "rejects.jsonl"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        counts = Counter(json.loads(line)["reason"].split(":")[0] for line in f)
    return dict(sorted(counts.items()))


def first_row(source) -> dict | None:
    """The first readable row of an input, without reading the rest of it (None when there is none)."""
    from datasets import Dataset

    rows = (source[i] for i in range(min(len(source), 1))) if isinstance(source, Dataset) else iter(source)
    return next((row for row in itertools.islice(rows, 100) if REJECT_KEY not in row), None)


def input_size(source, limit: int | None) -> int | None:
    """Rows the run will read, when known cheaply: a Dataset's length, or the lines of local JSON Lines files."""
    from datasets import Dataset

    if isinstance(source, Dataset):
        n = len(source)
    elif isinstance(source, JsonlSource) and all(_lines_file(f) for f in source.files):
        n = sum(_count_rows(f) for f in source.files)
    else:
        return None
    return n if limit is None else min(limit, n)


def _lines_file(path: str) -> bool:
    """A local, uncompressed file of one row per line (not a .json array)."""
    return os.path.isfile(path) and not path.endswith(".gz") and json_layout(path) != "array"


def _count_rows(path: str) -> int:
    """Non-blank lines of a file, read in 4 MB blocks (a progress total, not a row count to rely on)."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            count += block.count(b"\n") - block.count(b"\n\n") - block.count(b"\n\r\n")
            last = block[-1:]
    return count + (last != b"\n")


def iter_shards(source, shard_size: int, limit: int | None) -> Iterator[ShardTask]:
    """The shards of the input, each a `ShardTask` with `where` its rows are when a worker can read them itself
    (local JSON Lines files, a dataset in Arrow files), else with the rows."""
    from datasets import Dataset

    if isinstance(source, JsonlSource):
        parts = source.spans(shard_size, limit)
        if parts is not None:
            for k, spans in enumerate(parts):
                yield ShardTask(k, k * shard_size, where=LineRows(tuple(spans), source.bad_lines))
            return
    files = _arrow_files(source) if isinstance(source, Dataset) else None
    if files is not None:
        n = input_size(source, limit)
        for k, start in enumerate(range(0, n, shard_size)):
            yield ShardTask(k, start, where=ArrowRows(files, start, min(n, start + shard_size)))
        return
    for k, start, rows in _row_shards(source, shard_size, limit):
        yield ShardTask(k, start, rows())


def with_general(tasks: Iterator[ShardTask], config) -> Iterator[ShardTask]:
    """`tasks`, each with its portion of the general data (`ShardTask.general`: the general data's rows cut into
    as many equal runs as there are shards, in order), when the workers can read both the input and the general
    data themselves: each shard then mixes its own portion in, and no process mixes the whole corpus. The shards
    are all listed first (where their rows are, not the rows), to know how many there are. Otherwise (a stream,
    a compressed file) the tasks as they are: the run's end mixes the general data in."""
    from datasets import Dataset

    first = next(tasks, None)
    if first is None:
        return
    if first.where is None:
        yield first
        yield from tasks
        return
    listed = [first, *tasks]
    source, n = read_general(config), len(listed)
    if isinstance(source, JsonlSource) and (total := source.count()) is not None:
        size = max(1, -(-total // n))
        parts = [LineRows(tuple(spans), source.bad_lines) for spans in source.spans(size)]
        source_id = _files_id(source.files)
    elif isinstance(source, Dataset) and (files := _arrow_files(source)) is not None:
        total = len(source)
        size = max(1, -(-total // n))
        parts = [ArrowRows(files, start, min(total, start + size)) for start in range(0, total, size)]
        source_id = source._fingerprint
    else:
        yield from listed
        return
    parts += [None] * (n - len(parts))
    for i, (task, part) in enumerate(zip(listed, parts, strict=True)):
        task.general = GeneralPortion(part, i * size, size, source_id)
        yield task


def _files_id(files: list[str]) -> str:
    """What identifies local files' content cheaply: their paths, sizes and modification times."""
    import hashlib
    import json

    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def _arrow_files(source) -> tuple[str, ...] | None:
    """The Arrow files that hold a dataset's rows in order, when it is read straight from them (no indices
    mapping, files that add up to it): a worker can then open them itself."""
    from datasets import Dataset

    files = tuple(f["filename"] for f in source.cache_files)
    if not files or source._indices is not None or not all(os.path.isfile(f) for f in files):
        return None
    if sum(len(Dataset.from_file(f)) for f in files) != len(source):
        return None
    return files


def _row_shards(source, shard_size: int, limit: int | None) -> Iterator[tuple[int, int, Any]]:
    """`(k, first_row_index, rows)` where `rows()` gives the shard's rows as columns (read only when called)."""
    from datasets import IterableDataset

    if isinstance(source, IterableDataset | JsonlSource):
        stream = iter(source if limit is None else itertools.islice(source, limit))
        for k in itertools.count():
            rows = list(itertools.islice(stream, shard_size))
            if not rows:
                return
            yield k, k * shard_size, (lambda rows=rows: columns(rows))
        return
    n = input_size(source, limit)
    for k, start in enumerate(range(0, n, shard_size)):
        yield k, start, (lambda start=start: source.select(range(start, min(n, start + shard_size))).to_dict())


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows (dicts whose keys may differ) as columns; a value a row lacks is `MISSING`."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {c: [r.get(c, MISSING) for r in rows] for c in names}
