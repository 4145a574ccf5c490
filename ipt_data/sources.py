"""Open an input corpus: a Hub dataset name, a local file or folder, or any fsspec URL.

Files are read by extension (.jsonl/.json, .parquet, .txt one text per line, .csv); a folder or
URL prefix is searched recursively for such files. `streaming=True` gives an `IterableDataset`.

JSON Lines files are read by our own line reader (`JsonlSource`) rather than Arrow's, because real
corpora break Arrow's reader: a corrupt line (reported with its file and line number, or skipped and
counted with `bad_lines="skip"`), values of mixed types in one column, lone surrogate escapes. Rows
come out as Python dicts, one per non-blank line; a line that cannot be a row carries the reason in
`REJECT_KEY`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from datasets import Dataset, IterableDataset, load_dataset

from ipt_data.errors import ConfigError, InputError, InputNotFoundError

BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".txt.gz": "text",
    ".csv": "csv",
}


def _builder(path: str) -> str | None:
    name = path.lower()
    for ext in sorted(BUILDERS, key=len, reverse=True):
        if name.endswith(ext):
            return BUILDERS[ext]
    return None


def _data_files(fs, root: str, protocol: str) -> tuple[str, list[str]]:
    files = sorted(p for p in fs.find(root) if _builder(p))
    if not files:
        raise InputNotFoundError(f"{root}: no .jsonl, .json, .parquet, .txt or .csv files found")
    kinds = {_builder(p) for p in files}
    if len(kinds) > 1:
        raise InputError(f"{root}: mixed file types {sorted(kinds)}; point at one kind of file")
    prefix = f"{protocol}://" if protocol not in ("file", "local") else ""
    return kinds.pop(), [prefix + p for p in files]


REJECT_KEY = "__ipt_reject__"


class CorruptInputError(InputError):
    """A line of a JSON Lines file is not JSON."""


class JsonlSource:
    """Iterates the rows of JSON Lines files (see module doc). Reiterable; reads lazily."""

    def __init__(self, files: list[str], bad_lines: str = "error", storage_options: dict | None = None):
        if bad_lines not in ("error", "skip"):
            raise ConfigError(f"bad_lines must be 'error' or 'skip', got {bad_lines!r}")
        self.files, self.bad_lines, self.storage_options = files, bad_lines, storage_options or {}

    def __iter__(self):
        import fsspec

        for path in self.files:
            with fsspec.open(
                path, "rt", encoding="utf-8", errors="surrogateescape", compression="infer", **self.storage_options
            ) as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        where = f"{path}:{number}"
                        if self.bad_lines == "error":
                            raise CorruptInputError(
                                f"{where}: corrupt JSON ({exc.msg} at column {exc.colno}); "
                                "fix the line, or pass --bad-lines skip to skip and count such lines"
                            ) from exc
                        yield {REJECT_KEY: f"corrupt_json: {where}: {exc.msg}"}
                        continue
                    yield row if isinstance(row, dict) else {REJECT_KEY: f"not_an_object: {type(row).__name__}"}


def as_dataset(source) -> Dataset | IterableDataset:
    """A `JsonlSource` as a `Dataset` (unreadable lines dropped); datasets pass through."""
    if not isinstance(source, JsonlSource):
        return source
    return Dataset.from_list([row for row in source if REJECT_KEY not in row])


def _is_jsonl(files: list[str]) -> bool:
    return all(f.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson")) for f in files)


def load_source(
    path: str,
    *,
    config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    storage_options: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    bad_lines: str = "error",
) -> Dataset | IterableDataset | JsonlSource:
    import fsspec

    is_url = "://" in path and not path.startswith("hf://")
    if is_url or os.path.exists(path):
        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if fs.isdir(root):
            builder, files = _data_files(fs, root, protocol)
        else:
            builder = _builder(path)
            if builder is None:
                raise InputError(f"{path}: unknown file type; use .jsonl, .json, .parquet, .txt or .csv")
            files = [path]
        if _is_jsonl(files):
            return JsonlSource(files, bad_lines, storage_options)
        return load_dataset(
            builder, data_files=files, split=split, streaming=streaming, storage_options=storage_options
        )
    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        return load_dataset(path, config, split=split, streaming=streaming, **kwargs)
    except FileNotFoundError as exc:  # datasets' DatasetNotFoundError, and missing files
        raise InputNotFoundError(f"cannot open the dataset {path!r}: {exc}") from exc
