"""The end of a run, whatever executor ran its shards: mix the shards (with general data), write the card
and the report, publish."""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa

from ipt_data.card import dataset_card
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
    if len(corpus):
        by_kind = corpus.data.table.group_by("kind").aggregate([("kind", "count"), ("n_tokens", "sum")]).to_pylist()
    else:
        by_kind = []
    by_kind.sort(key=lambda r: r["kind"])  # corpus is flattened: its table holds exactly its rows
    report["output_rows"] = {r["kind"]: r["kind_count"] for r in by_kind}
    report["output_tokens"] = {r["kind"]: r["n_tokens_sum"] for r in by_kind}
    if config.general:
        report["mix"] = achieved_mix(config, report)
    report["fingerprint"] = config.fingerprint()
    example = next((r["text"] for r in shards if r["kind"] == "augmented"), None) if len(shards) else None

    t = time.perf_counter()
    rejects = work.rejects(n_shards)
    (work.path / "rejects.jsonl").write_text(rejects)
    extra_files = {"run_report.json": dumps(stable(report))}
    if config.publish_rejects:
        extra_files["rejects.jsonl"] = rejects
    card = dataset_card(config.to_dict(), report, example)
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
