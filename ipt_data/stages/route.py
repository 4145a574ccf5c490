"""`route`: a shard's rows split into converted (a seeded hash of the row's index below `--fraction`), kept
raw, and rejected (no usable text: `schema.text_problem`, or unreadable in the input). Driven by the shard
(`ipt_data.run.shard`); later stages' `on_rows` may reject more rows, with their reason."""

from __future__ import annotations

from collections import Counter

from ipt_data.corpus.sources import REJECT_KEY
from ipt_data.hashing import unit_interval
from ipt_data.schema import MISSING, text_problem
from ipt_data.stages.base import ShardData, Stage, Stat


def route(rows: dict[str, list], start: int, config) -> tuple[list[int], list[int], list[dict]]:
    """`(converted, raw, rejects)`: row positions by a seeded hash of the row index, and the rejected rows."""
    n = len(next(iter(rows.values()))) if rows else 0
    texts = rows.get(config.text_column, [MISSING] * n)
    unreadable = rows.get(REJECT_KEY, [None] * n)
    convert, raw, rejects = [], [], []
    for i, text in enumerate(texts):
        reason = unreadable[i] if isinstance(unreadable[i], str) else text_problem(text)
        if reason:
            rejects.append({"row": start + i, "reason": reason, "value": ascii(text)[:200]})
        elif unit_interval(f"route:{config.seed}:{start + i}") < config.fraction:
            convert.append(i)
        else:
            raw.append(i)
    return convert, raw, rejects


def _summarize(d: ShardData) -> dict:
    docs_with_pairs = {
        doc for doc, pairs in zip(d.kept.get("doc_id", []), d.kept.get("pairs", []), strict=True) if pairs
    }
    return {
        "rows": {
            "in": d.n,
            "converted": len(d.convert),
            "raw": len(d.raw),
            "rejected": len(d.rejects),
            "converted_with_pairs": len(docs_with_pairs),
        },
        "rejects": dict(Counter(r["reason"].split(":")[0] for r in d.rejects)),
    }


STAGE = Stage(
    name="route",
    doc=__doc__,
    reads=("<text column>",),
    writes=(),
    stats=(
        Stat("rows.in", "input rows", card="input rows", published=True),
        Stat("rows.converted", "converted", card="rows converted", published=True),
        Stat("rows.raw", "kept raw", card="rows kept raw", published=True),
        Stat("rows.rejected", "rejected", card="rows rejected", published=True),
        Stat("rejects", "rejected: {}", card="rejected: {}", card_order=2, published=True),
    ),
    summarize=_summarize,
)
