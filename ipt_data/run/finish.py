"""The end of a run, whatever executor ran its shards: mix the shards (with general data), compute the
corpus's statistics and figures, write the card and the report, publish (data, card, report, `stats.json`
and `images/` in one transaction)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ipt_data.corpus.card import dataset_card
from ipt_data.corpus.plots import figures
from ipt_data.corpus.sources import as_dataset
from ipt_data.corpus.stats import CorpusStats
from ipt_data.errors import InputError
from ipt_data.run import outputs
from ipt_data.run.inputs import GENERAL_FOLDER, general_rejects, open_general
from ipt_data.run.report import dumps, stable
from ipt_data.run.workdir import GENERAL_REJECTS, GENERAL_STATS, WorkDir
from ipt_data.schema import KEPT_TYPE, PUBLISHED_COLUMNS, SHARD_SCHEMA
from ipt_data.sinks.base import DataFiles, shard_name
from ipt_data.stages import PIPELINE

log = logging.getLogger(__name__)


MIX_FOLDER = "mix-"  # the run's mixing tables, inside the work folder, removed when the run ends


@contextlib.contextmanager
def mixing_folder(work: WorkDir):
    """A fresh folder inside the work folder for the Arrow tables of the mix (the shards as one memory-mapped
    table, the shuffled corpus), removed when the run ends, however it ends. Nothing goes to the Hugging Face
    datasets cache. A folder a killed run left is removed too."""
    for stale in work.path.glob(f"{MIX_FOLDER}*"):  # a killed run's (this run holds the work folder's lock)
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=MIX_FOLDER, dir=work.path))
    try:
        yield folder  # a full disk here is one line, as anywhere in a run (`augment`)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shards_table(files: list[str], schema: pa.Schema, folder: Path):
    """The shards' parquet files as one Arrow file in `folder`, written batch by batch (bounded memory), and
    that file as a memory-mapped `Dataset` (whose later tables, the shuffled corpus, `datasets` writes beside
    it)."""
    import datasets

    path = folder / "shards.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=10_000):
                writer.write_batch(batch)
    return datasets.Dataset.from_file(str(path))


def published_files(config, work: WorkDir, n_shards: int) -> DataFiles | None:
    """The corpus as the files the shards' workers wrote (`ipt_data.run.outputs`), named in shard order, for the
    sink to publish as they are. None when the corpus is mixed here instead (general data the workers could not
    read themselves), or holds no row."""
    made = []
    for k in range(n_shards):
        listed = work.outputs(k)
        if listed is None or listed[0]["max_rows"] != config.publish_shard_rows:
            return None
        if (listed[0].get("general") is None) != (not config.general):
            return None
        made += [(str(work.shard(k, f.suffix)), f) for f in listed[1]]
    if not made:
        return None
    files = [(shard_name(i, len(made), path, f.digest), path) for i, (path, f) in enumerate(made)]
    rows, nbytes = sum(f.rows for _, f in made), sum(f.nbytes for _, f in made)
    return DataFiles(files, outputs.features(config.keep_columns), rows, nbytes)


def gather_general_rejects(work: WorkDir, n_shards: int) -> None:
    """The rejected rows of the shards' portions of the general data, in order, as `general/rejects.jsonl` (where
    the end-of-run mix would have listed them)."""
    folder = work.path / GENERAL_FOLDER
    folder.mkdir(exist_ok=True)
    parts = (work.shard(k, GENERAL_REJECTS) for k in range(n_shards))
    (folder / "rejects.jsonl").write_text("".join(p.read_text() for p in parts if p.exists()))


def first_augmented(work: WorkDir, n_shards: int) -> str | None:
    """The first augmented text of the shards, in shard order (the card shows it)."""
    for k in range(n_shards):
        for batch in pq.ParquetFile(work.shard(k, ".parquet")).iter_batches(1000, columns=["kind", "text"]):
            kinds = batch.column("kind")
            hits = pc.indices_nonzero(pc.equal(kinds, "augmented"))
            if len(hits):
                return batch.column("text")[hits[0].as_py()].as_py()
    return None


def mix_shards(config, work: WorkDir, n_shards: int, encoder, folder: Path):
    """The corpus: the shards' texts mixed with general data (if any); its Arrow tables are in `folder` (see
    `mixing_folder`)."""
    from ipt_data.corpus.mixing import mix

    files = work.shard_files(n_shards)
    schema = pq.read_schema(files[0]) if files else SHARD_SCHEMA
    if not files:  # no rows at all: an empty table with every column a shard would have
        for column in config.keep_columns:
            schema = schema.append(pa.field(column, KEPT_TYPE))
    shards = shards_table(files, schema.remove_metadata(), folder)
    general = as_dataset(open_general(config, folder)) if config.general else None
    corpus = mix(
        shards,
        general=general,
        general_ratio=config.general_ratio,
        by=config.mix_by,
        tokenizer=encoder,
        seed=config.seed,
        general_columns=config.general_columns,
        keep_columns=config.keep_columns,
    )
    return corpus


def corpus_stats(
    corpus, work: WorkDir, n_shards: int, report: dict, stages: tuple[str, ...] = PIPELINE
) -> dict[str, Any]:
    """`ipt_data.stats` of the mixed corpus, with the run report's synthesis numbers (those `stages` declare),
    without a pass over it: the statistics each shard took of its rows (`shards/NNNNN.stats.npz`), added up, plus
    those of the general rows: each shard's (`corpus` None: the shards' own files were published) or those the
    end-of-run mix took in (`corpus`). A shard without them (done by an earlier ipt_data) is read."""
    acc = CorpusStats()
    for k in range(n_shards):
        saved = work.corpus_stats_file(k)
        if saved is None or not acc.absorb(saved):
            for batch in pq.ParquetFile(work.shard(k, ".parquet")).iter_batches(10_000, columns=PUBLISHED_COLUMNS):
                acc.add(batch.to_pydict())
    if corpus is None:  # the shards' own files: the general rows each took in, if any, counted by its worker
        for k in range(n_shards):
            general = work.shard(k, GENERAL_STATS)
            if general.exists() and not acc.absorb(general):
                raise InputError(f"{general}: cannot be read; delete the shard's done marker to make it again")
        return acc.result(report, stages)
    kinds = corpus.with_format("arrow")["kind"] if len(corpus) else pa.array([], pa.string())
    general = np.flatnonzero(pc.equal(kinds, "general").to_numpy(zero_copy_only=False))
    if len(general):
        for batch in corpus.select(general).select_columns(list(PUBLISHED_COLUMNS)).iter(10_000):
            acc.add(batch)
    return acc.result(report, stages)


def statistics(corpus, work: WorkDir, n_shards: int, report: dict, config) -> tuple[dict, list, float]:
    """`(numbers, figures, seconds taken)`: `corpus_stats` (`corpus` None: the shards' rows are all there is) and
    the figures drawn from them."""
    t = time.perf_counter()
    numbers = corpus_stats(corpus, work, n_shards, report, config.stages)
    return numbers, figures(numbers), time.perf_counter() - t


def achieved_mix(config, report: dict) -> dict[str, Any]:
    """The general : augmented ratio asked for and the one reached (general data can run short)."""
    counts = report["output_tokens"] if config.mix_by == "tokens" else report["output_rows"]
    augmented, general = counts.get("augmented", 0), counts.get("general", 0)
    requested = 1.0 if config.general_ratio is None else config.general_ratio
    achieved = round(general / augmented, 4) if augmented else 0.0
    if achieved < 0.95 * requested:
        log.warning(
            "the general data ran short: general : augmented is %.3f by %s, %s was asked for",
            achieved,
            config.mix_by,
            requested,
        )
    return {"by": config.mix_by, "requested": requested, "achieved": achieved, "short": achieved < 0.95 * requested}


def finish(config, work: WorkDir, report: dict[str, Any], n_shards: int, encoder, fingerprint: str) -> dict[str, Any]:
    """Mix, card, report and publish; fills in the report's output counts and `output`. `fingerprint` names
    the published data: the options that shape it and the hashes of the input rows of every shard."""
    with mixing_folder(work) as folder:
        return _finish(config, work, report, n_shards, encoder, fingerprint, folder)


QUALITY_RECORDS = "quality.jsonl"


def _finish(config, work: WorkDir, report: dict[str, Any], n_shards: int, encoder, fingerprint: str, folder: Path):
    from ipt_data.sinks import publish

    t = time.perf_counter()
    corpus = published_files(config, work, n_shards)  # the shards' own files, as their workers wrote them
    if corpus is not None:
        report["seconds"]["mix"] = time.perf_counter() - t
        numbers, images, report["seconds"]["stats"] = statistics(None, work, n_shards, stable(report), config)
        if config.general:
            gather_general_rejects(work, n_shards)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="ipt-stats") as pool:
            # without general data the statistics are the shards' alone: added up and drawn while they are mixed
            early = None if config.general else pool.submit(statistics, None, work, n_shards, stable(report), config)
            corpus = mix_shards(config, work, n_shards, encoder, folder)
            report["seconds"]["mix"] = time.perf_counter() - t
            numbers, images, report["seconds"]["stats"] = (
                early.result() if early else statistics(corpus, work, n_shards, stable(report), config)
            )
    report["output_rows"], report["output_tokens"] = numbers["rows"], numbers["tokens"]
    if config.general:
        report["mix"] = achieved_mix(config, report)
        report["general_rejects"] = general_rejects(work.path)  # rows of the general data left out, by reason
    report["fingerprint"] = config.fingerprint()
    example = first_augmented(work, n_shards)

    t = time.perf_counter()
    rejects = work.rejects(n_shards)
    (work.path / "rejects.jsonl").write_text(rejects)
    quality = work.path / QUALITY_RECORDS
    records = work.records(n_shards)
    if records:  # every pair the filters dropped and every benchmark match, with its reason, for inspection
        quality.write_text(records, encoding="utf-8")
    else:
        quality.unlink(missing_ok=True)
    extra_files: dict[str, str | bytes] = {
        "run_report.json": dumps(stable(report)),
        "stats.json": dumps(numbers),
        **{f"images/{f.name}": f.png for f in images},
    }
    if config.publish_rejects:
        extra_files["rejects.jsonl"] = rejects
    card = dataset_card(config.to_dict(), report, example, numbers, images)
    report["output"] = publish(
        corpus,
        config.output,
        card=card,
        overwrite=config.overwrite,
        private=config.private,
        max_shard_rows=config.publish_shard_rows,
        fingerprint=fingerprint,
        extra_files=extra_files,
    )
    report["seconds"]["publish"] = time.perf_counter() - t
    return report
