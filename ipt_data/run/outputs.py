"""Each shard's published files, written by the worker that made the shard: no pass over the whole corpus in one
process at the run's end.

A run without general data publishes its shards' rows as they are: shard k's rows (the published columns and
the kept ones) in an order drawn from `(seed, k)`, in files of at most `publish_shard_rows` rows. The worker
writes them into the work folder with the shard (`shards/NNNNN.out-J.parquet`), and its done marker lists them
with their rows, in-memory bytes and content hash; the run's end only names them (`data/train-I-of-N-<hash>`,
in shard order) and hands them to the sink. The published corpus is then the shards' rows in shard order, each
shard's rows shuffled: a reader that wants them mixed across the corpus shuffles at load time (as
`load_dataset(...).shuffle(seed)` or a streaming shuffle buffer do), as pre-training loaders do anyway.

Files made for another `publish_shard_rows` (a rerun that changed it) are made again from the shard, by the run's
end. A run with general data mixes the whole corpus at its end instead (`finish.mix_shards`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ipt_data.schema import KEPT_TYPE, PUBLISHED_COLUMNS, PUBLISHED_SCHEMA

FORMAT = 1  # of the files and of how rows are ordered in them: a change makes every shard's files again


@dataclass(frozen=True)
class OutputFile:
    """One published file of a shard, as its done marker lists it."""

    suffix: str  # beside the shard: `.out-J.parquet`
    rows: int
    nbytes: int  # of its table in memory (the card's `dataset_size` adds them up)
    digest: str  # sha256 of the file's bytes (the published name carries it)


def layout(config) -> dict:
    """What a shard's files depend on besides the shard itself (the seed and the kept columns are the shard's)."""
    return {"format": FORMAT, "max_rows": config.publish_shard_rows}


def features(keep_columns: tuple[str, ...]):
    """The published rows' `datasets.Features`: the published columns and the kept ones."""
    from datasets import Features

    return Features.from_arrow_schema(pa.schema([*PUBLISHED_SCHEMA, *((c, KEPT_TYPE) for c in keep_columns)]))


def tables(table: pa.Table, k: int, config) -> list[pa.Table]:
    """Shard `k`'s published rows, in the order drawn from `(seed, k)`, cut into tables of at most
    `publish_shard_rows` rows (none for a shard without rows)."""
    columns = [*PUBLISHED_COLUMNS, *config.keep_columns]
    wanted = features(tuple(config.keep_columns)).arrow_schema
    table = table.select(columns)
    if not table.schema.equals(wanted):  # a kept column with no value anywhere, say
        table = table.cast(wanted)
    order = np.random.default_rng([config.seed % 2**64, k]).permutation(table.num_rows)
    table = table.take(order)
    size = config.publish_shard_rows
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def write(table: pa.Table, path: Path, keep_columns: tuple[str, ...]) -> tuple[int, int, str]:
    """`table` as a parquet file at `path`, as `Dataset.to_parquet` writes one (the features in its metadata);
    returns `(rows, in-memory bytes, sha256 of the file)`."""
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    Dataset(InMemoryTable(table), info=DatasetInfo(features=features(keep_columns))).to_parquet(str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return table.num_rows, int(table.nbytes), digest.hexdigest()
