"""Opening a run's input and cutting it into shards of `shard_size` rows (the same shards streamed or not)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ipt_data.errors import ModelUnavailableError
from ipt_data.schema import MISSING
from ipt_data.sources import REJECT_KEY, JsonlSource, load_source


@dataclass
class ShardTask:
    """Shard `k`: input rows `start` .. `start + len(rows) - 1`, as columns."""

    k: int
    start: int
    rows: dict[str, list]
    input_hash: str = ""  # of `rows`: a rerun reuses the done shard only if its rows hash the same


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


def open_general(config):
    """The general instruction data, as the config names it (read lazily where the reader allows)."""
    return load_source(
        config.general,
        config=config.general_config,
        split=config.general_split,
        trust_remote_code=config.trust_remote_code,
        bad_lines=config.bad_lines,
    )


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
    elif isinstance(source, JsonlSource) and all(os.path.isfile(f) and not f.endswith(".gz") for f in source.files):
        n = sum(_count_rows(f) for f in source.files)
    else:
        return None
    return n if limit is None else min(limit, n)


def _count_rows(path: str) -> int:
    """Non-blank lines of a file, read in 4 MB blocks (a progress total, not a row count to rely on)."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            count += block.count(b"\n") - block.count(b"\n\n") - block.count(b"\n\r\n")
            last = block[-1:]
    return count + (last != b"\n")


def iter_shards(source, shard_size: int, limit: int | None) -> Iterator[tuple[int, int, Any]]:
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
