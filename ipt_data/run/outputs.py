"""Each shard's published files, written by the worker that made the shard: no pass over the whole corpus in one
process at the run's end.

A run without general data publishes its shards' rows as they are: shard k's rows (the published columns and
the kept ones) in an order drawn from `(seed, k)`, in files of at most `publish_shard_rows` rows. The worker
writes them into the work folder with the shard (`shards/NNNNN.out-J.parquet`), and its done marker lists them
with their rows, in-memory bytes and content hash; the run's end only names them (`data/train-I-of-N-<hash>`,
in shard order) and hands them to the sink. The published corpus is then the shards' rows in shard order, each
shard's rows shuffled: a reader that wants them mixed across the corpus shuffles at load time (as
`load_dataset(...).shuffle(seed)` or a streaming shuffle buffer do), as pre-training loaders do anyway.

With general data, each shard mixes its own portion of it in (`inputs.with_general`: the general rows cut into
as many equal runs as there are shards): the shortest prefix of its portion, shuffled with the seed, that reaches
`general_ratio` x the shard's augmented tokens (or examples), as `mix` takes it from the whole general data. The
ratio then holds shard by shard, so over the corpus too, unless a portion runs short (the card says what was
reached). The shard's worker counts the portion's tokens and keeps the statistics of the general rows it took
(`.general.npz`) and its rejected rows (`.general-rejects.jsonl`) beside the files. When the workers cannot read
the input or the general data themselves (a stream, a compressed file), the run's end mixes the whole corpus
instead (`finish.mix_shards`).

A shard whose files were made for another layout (another `publish_shard_rows`, other general data or ratio: a
rerun that changed them) gets them made again by the worker that finds it done, without synthesis."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ipt_data.corpus.stats import CorpusStats
from ipt_data.schema import KEPT_TYPE, MISSING, PUBLISHED_COLUMNS, PUBLISHED_SCHEMA

FORMAT = 1  # of the files and of how rows are ordered in them: a change makes every shard's files again


@dataclass(frozen=True)
class OutputFile:
    """One published file of a shard, as its done marker lists it."""

    suffix: str  # beside the shard: `.out-J.parquet`
    rows: int
    nbytes: int  # of its table in memory (the card's `dataset_size` adds them up)
    digest: str  # sha256 of the file's bytes (the published name carries it)


@dataclass
class Published:
    """What a worker writes beside its shard for publishing: the files' tables, the layout they were made for,
    and with general data the statistics of the general rows taken and the rejected ones."""

    tables: list[pa.Table]
    layout: dict
    general_stats: CorpusStats | None = None
    general_rejects: list[dict] = field(default_factory=list)


def layout(config, task=None) -> dict:
    """What a shard's files depend on besides the shard itself (the seed and the kept columns are the shard's)."""
    general = None
    if config.general and task is not None and task.general is not None:
        general = {
            "data": task.general.source_id,
            "portion": [task.general.first_row, task.general.size],  # another count of shards: other portions
            **{k: getattr(config, k) for k in ("general", "general_config", "general_split", "general_ratio")},
            "mix_by": config.mix_by,
            "columns": list(config.general_columns),
        }
    return {"format": FORMAT, "max_rows": config.publish_shard_rows, "general": general}


def published(table: pa.Table, task, config, encoder) -> Published | None:
    """Shard `task.k`'s files (`table`: the shard as written), or None when the run's end mixes the corpus."""
    if config.general and task.general is None:
        return None
    if not config.general:
        return Published(tables(table, task.k, config), layout(config, task))
    mixed, rejects = _mixed(table, task, config, encoder)
    taken = mixed.filter(pc.equal(mixed.column("kind"), "general"))
    stats = CorpusStats()
    stats.add(taken.select(list(PUBLISHED_COLUMNS)).to_pydict())
    return Published(tables(mixed, task.k, config), layout(config, task), stats, rejects)


def _mixed(table: pa.Table, task, config, encoder) -> tuple[pa.Table, list[dict]]:
    """The shard's rows with the general rows its portion gives (`mix`), and the portion's rejected rows."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    from ipt_data.corpus.mixing import GENERAL_ROW, mix
    from ipt_data.corpus.sources import REJECT_KEY
    from ipt_data.run.inputs import general_problem, general_reject

    q, r = config.general_columns
    usable: dict[str, list] = {q: [], r: [], GENERAL_ROW: []}
    rejects = []
    columns = task.general.where.read() if task.general.where is not None else {}
    for i in range(len(next(iter(columns.values()))) if columns else 0):
        row = {c: v[i] for c, v in columns.items() if v[i] is not MISSING}
        if REJECT_KEY in row and row[REJECT_KEY] is None:  # an Arrow column of that name, empty here
            del row[REJECT_KEY]
        number = task.general.first_row + i
        reason = general_problem(row, config.general_columns)
        if reason is not None:
            rejects.append(general_reject(number, row, reason, config.general_columns))
            continue
        for column, value in ((q, row[q]), (r, row[r]), (GENERAL_ROW, number)):
            usable[column].append(value)
    general = Dataset.from_dict(usable)
    mixed = mix(
        Dataset(InMemoryTable(table)), general=general, general_ratio=config.general_ratio, by=config.mix_by,
        tokenizer=encoder, seed=config.seed, general_columns=config.general_columns, keep_columns=config.keep_columns,
    )  # fmt: skip
    return mixed.data.table, rejects


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

    from ipt_data.sinks.base import file_sha256

    Dataset(InMemoryTable(table), info=DatasetInfo(features=features(keep_columns))).to_parquet(str(path))
    return table.num_rows, int(table.nbytes), file_sha256(path)
