"""Open an input corpus: a Hub dataset name, a local file or folder, or any fsspec URL.

Files are read by extension (.jsonl/.json, .parquet, .txt one text per line, .csv); a folder or
URL prefix is searched recursively for such files. `streaming=True` gives an `IterableDataset`.
"""

from __future__ import annotations

import os
from typing import Any

from datasets import Dataset, IterableDataset, load_dataset

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
        raise FileNotFoundError(f"{root}: no .jsonl, .json, .parquet, .txt or .csv files found")
    kinds = {_builder(p) for p in files}
    if len(kinds) > 1:
        raise ValueError(f"{root}: mixed file types {sorted(kinds)}; point at one kind of file")
    prefix = f"{protocol}://" if protocol not in ("file", "local") else ""
    return kinds.pop(), [prefix + p for p in files]


def load_source(
    path: str,
    *,
    config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    storage_options: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> Dataset | IterableDataset:
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
                raise ValueError(f"{path}: unknown file type; use .jsonl, .json, .parquet, .txt or .csv")
            files = [path]
        return load_dataset(
            builder, data_files=files, split=split, streaming=streaming, storage_options=storage_options
        )
    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    return load_dataset(path, config, split=split, streaming=streaming, **kwargs)
