"""Open an input corpus: a Hub dataset name, a local file or folder, or any fsspec URL.

Files are read by extension (.jsonl/.ndjson/.json, .parquet, .txt/.md, .csv); a folder or URL prefix is
searched recursively for such files. A folder is split-aware as the Hub is: a `configs:` block in its
README.md, else file names (`data/train-*`, `test.jsonl`, `validation/`...) say which files are which
split, and only `split`'s are read (all files are "train" when nothing names a split). A folder written
by `Dataset.save_to_disk` is read with `load_from_disk`. `.txt`/`.md` files are one document per file
(`text_files="document"`, the default) or one per line (`"line"`). `streaming=True` gives an
`IterableDataset`.

JSON Lines files (and `.json` files whose first line is a JSON object) are read by our own line reader
(`JsonlSource`) rather than Arrow's, because real corpora break Arrow's reader: a corrupt line (reported
with its file and line number, or skipped and counted with `bad_lines="skip"`), values of mixed types in
one column, lone surrogate escapes, a UTF-8 byte order mark. Rows come out as Python dicts, one per
non-blank line; a line that cannot be a row carries the reason in `REJECT_KEY`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from datasets import Dataset, IterableDataset, load_dataset

from ipt_data.errors import ConfigError, InputError, InputNotFoundError

BUILDERS = {
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".ndjson.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".txt.gz": "text",
    ".md": "text",
    ".csv": "csv",
}
KINDS = ".jsonl, .ndjson, .json, .parquet, .txt, .md or .csv"


def _builder(path: str) -> str | None:
    name = path.lower()
    for ext in sorted(BUILDERS, key=len, reverse=True):
        if name.endswith(ext):
            return BUILDERS[ext]
    return None


def _data_files(fs, root: str, protocol: str, split: str, config: str | None) -> tuple[str, list[str]]:
    prefix = f"{protocol}://" if protocol not in ("file", "local") else ""
    by_split = _split_files(fs, root, prefix, config)
    if split not in by_split:
        raise InputError(f"{prefix}{root} has no split {split!r}; its splits are {sorted(by_split)} (set --split)")
    files = sorted(p for p in by_split[split] if _builder(p))
    if not files:
        raise InputNotFoundError(f"{prefix}{root}: no {KINDS} files found for the split {split!r}")
    kinds = {_builder(p) for p in files}
    if len(kinds) > 1:
        raise InputError(f"{prefix}{root}: mixed file types {sorted(kinds)}; point at one kind of file")
    return kinds.pop(), files


def _split_files(fs, root: str, prefix: str, config: str | None) -> dict[str, list[str]]:
    """Files by split: the README's `configs:` block, else the Hub's file-name conventions."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    readme = f"{root}/README.md"
    if fs.exists(readme):
        import yaml

        text = fs.cat_file(readme).decode("utf-8", "replace")
        if text.startswith("---"):
            header = yaml.safe_load(text.split("---", 2)[1]) or {}
            configs = header.get("configs") or []
            chosen = [c for c in configs if c.get("config_name") == (config or "default")] or configs[:1]
            if chosen:
                entries = chosen[0].get("data_files") or []
                if isinstance(entries, str) or (entries and not isinstance(entries[0], dict)):
                    entries = [{"split": "train", "path": entries}]  # files without split names: all train
                out: dict[str, list[str]] = {}
                for entry in entries:
                    paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
                    out[entry["split"]] = sorted(prefix + p for pat in paths for p in fs.glob(f"{root}/{pat}"))
                return out
    patterns = get_data_patterns(prefix + root)
    return {str(k): sorted(v) for k, v in DataFilesDict.from_patterns(patterns, base_path=prefix + root).items()}


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
                    if number == 1:
                        line = line.removeprefix("\ufeff")  # a byte order mark
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        where = f"{path}:{number}"
                        if self.bad_lines == "error":
                            raise CorruptInputError(
                                f"{where}: corrupt JSON at column {exc.colno} ({exc.msg.removesuffix(' at')}); "
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
    """JSON Lines by name, or `.json` files whose first non-blank line is a whole JSON object."""
    return all(
        f.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")) or _first_line_object(f) for f in files
    )


def _first_line_object(path: str) -> bool:
    import fsspec

    if not path.lower().endswith((".json", ".json.gz")):
        return False
    with fsspec.open(path, "rt", encoding="utf-8-sig", errors="replace", compression="infer") as f:
        for line in f:
            if line.strip():
                try:
                    return isinstance(json.loads(line), dict)
                except json.JSONDecodeError:
                    return False
    return False


def _saved_to_disk(fs, root: str) -> bool:
    return fs.isdir(root) and (fs.exists(f"{root}/state.json") or fs.exists(f"{root}/dataset_dict.json"))


def _from_disk(path: str, split: str):
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(path)
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise InputError(f"{path} has no split {split!r}; its splits are {sorted(loaded)} (set --split)")
        return loaded[split]
    return loaded


def load_source(
    path: str,
    *,
    config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    storage_options: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    bad_lines: str = "error",
    text_files: str = "document",
) -> Dataset | IterableDataset | JsonlSource:
    import fsspec

    is_url = "://" in path and not path.startswith("hf://")
    if is_url or os.path.exists(path):
        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if _saved_to_disk(fs, root):
            return _from_disk(path, split)
        if fs.isdir(root):
            builder, files = _data_files(fs, root.rstrip("/"), protocol, split, config)
        else:
            builder = _builder(path)
            if builder is None:
                raise InputError(f"{path}: unknown file type; use {KINDS}")
            files = [path]
        if _is_jsonl(files):
            return JsonlSource(files, bad_lines, storage_options)
        extra = {"sample_by": "document" if text_files == "document" else "line"} if builder == "text" else {}
        import datasets

        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # our one-line error says it, not datasets' too
        try:
            return load_dataset(
                builder, data_files=files, split="train", streaming=streaming, storage_options=storage_options, **extra
            )
        except Exception as exc:  # noqa: BLE001 - a file Arrow cannot parse: say which, in one line
            cause = exc.__cause__ or exc.__context__ or exc
            if isinstance(cause, UnicodeDecodeError) or isinstance(exc, UnicodeDecodeError):
                raise InputError(
                    f"{path}: not UTF-8 text ({cause}); convert it first, e.g. iconv -f latin1 -t utf-8"
                ) from exc
            raise InputError(f"{path}: cannot be read as {builder}: {type(cause).__name__}: {cause}") from exc
        finally:
            datasets.logging.set_verbosity(verbosity)
    if path.startswith((".", "/", "~")) or path.endswith("/") or _builder(path):  # a local path, not a Hub id
        raise InputNotFoundError(f"{path}: no such file or folder")
    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        return load_dataset(path, config, split=split, streaming=streaming, **kwargs)
    except (FileNotFoundError, ConnectionError) as exc:  # not on the Hub, or the Hub unreachable (offline)
        raise InputNotFoundError(f"cannot open the dataset {path!r}: {str(exc).splitlines()[0]}") from exc
