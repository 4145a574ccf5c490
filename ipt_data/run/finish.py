"""The end of a run, whatever executor ran its shards: mix the shards (with general data), compute the
corpus's statistics and figures, write the card and the report, publish (data, card, report, `stats.json`
and `images/` in one transaction)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa

from ipt_data.card import dataset_card
from ipt_data.corpus_stats import COLUMNS, CorpusStats
from ipt_data.plots import figures
from ipt_data.run.inputs import open_general
from ipt_data.run.report import dumps, stable
from ipt_data.run.workdir import WorkDir
from ipt_data.schema import KEPT_TYPE, SHARD_SCHEMA
from ipt_data.sources import as_dataset

log = logging.getLogger(__name__)


def mix_shards(config, work: WorkDir, n_shards: int, encoder):
    """The corpus: the shards' texts mixed with general data (if any), and the shards as one dataset."""
    import datasets

    from ipt_data.mixing import mix

    files = work.shard_files(n_shards)
    if files:
        shards = datasets.Dataset.from_parquet(files)
    else:  # no rows at all: an empty table with every column a shard would have
        schema = SHARD_SCHEMA
        for column in config.keep_columns:
            schema = schema.append(pa.field(column, KEPT_TYPE))
        shards = datasets.Dataset(schema.empty_table())
    general = as_dataset(open_general(config)) if config.general else None
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
    return corpus, shards


def corpus_stats(corpus, report: dict) -> dict[str, Any]:
    """`ipt_data.stats` of the mixed corpus, with the run report's synthesis numbers."""
    acc = CorpusStats()
    for batch in corpus.select_columns(list(COLUMNS)).iter(10_000):
        acc.add(batch)
    return acc.result(report)


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
    from ipt_data.sinks import publish

    t = time.perf_counter()
    corpus, shards = mix_shards(config, work, n_shards, encoder)
    report["seconds"]["mix"] = time.perf_counter() - t
    t = time.perf_counter()
    numbers = corpus_stats(corpus, stable(report))
    report["output_rows"], report["output_tokens"] = numbers["rows"], numbers["tokens"]
    if config.general:
        report["mix"] = achieved_mix(config, report)
    report["fingerprint"] = config.fingerprint()
    example = next((r["text"] for r in shards if r["kind"] == "augmented"), None) if len(shards) else None
    images = figures(numbers)
    report["seconds"]["stats"] = time.perf_counter() - t

    t = time.perf_counter()
    rejects = work.rejects(n_shards)
    (work.path / "rejects.jsonl").write_text(rejects)
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
