"""`pair_filter`: synthesized pairs judged before they are rendered (`--filters`): grounding in the text, length
bounds, degenerate repetition, duplicate questions within a document's chunks (`ipt_data.quality.pair_filters`).
A dropped pair is counted by reason (`filtered` in the report) and kept with its reason in the work folder's
`quality.jsonl`; the copies of it that later rows of its chain carry go too (`chains.rewrite_pairs`); a
text left with no pair is published raw (reason `filtered`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ipt_data.errors import ConfigError
from ipt_data.method.chains import rewrite_pairs
from ipt_data.options import SHARDS, option
from ipt_data.schema import row_keys
from ipt_data.stages.base import ShardContext, Stage, Stat


@dataclass
class PairFilterOptions:
    filters: Any = option(
        (),
        scope=SHARDS,
        added=True,
        help="pair filters between synthesis and templify, comma-separated: grounding,length,repetition,duplicates "
        "(their parameters in a recipe: `filters: {grounding: {free_form: 0.6}}`, or here as JSON); dropped pairs "
        "are counted by reason, a text left with none is published raw",
    )


def canonical(value: Any) -> Any:
    """The filters asked for, with every parameter (an empty tuple when none): what the fingerprint takes."""
    if not value:
        return ()
    from ipt_data.quality.pair_filters import parse_filters

    if isinstance(value, str) and value.lstrip().startswith("{"):  # the card's reproduce command gives JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"filters: not JSON: {exc.msg}") from exc
    return parse_filters(value)


def _prepare(options: PairFilterOptions, work_path: str | None):
    from ipt_data.quality.pair_filters import PairFilter

    return PairFilter(canonical(options.filters))


def filter_pairs(batch: dict[str, list], ctx: ShardContext) -> dict[str, list]:
    """`on_synthesized`: each row's pairs judged (`ctx.state`, a `PairFilter`); duplicate questions are looked
    for among the earlier chunks of the same document in the batch, in chunk order."""
    keys = row_keys(batch, batch["text"])
    new_pairs: dict[str, list] = {}
    order = sorted(range(len(keys)), key=lambda i: (batch["doc_id"][i], batch["chunk"][i]))
    order = [i for i in order if batch["pairs"][i]]
    texts = [batch["text"][i] for i in order]
    docs = Counter(batch["doc_id"][i] for i in order)  # a document with one chunk here needs no set of its own
    seen: dict[Any, set[str]] = {}
    seen_in = [seen.setdefault(batch["doc_id"][i], set()) if docs[batch["doc_id"][i]] > 1 else None for i in order]
    reasons = ctx.state.reasons(texts, [batch["pairs"][i] for i in order], seen_in, ctx.words)
    if ctx.words:  # taken: not wanted again
        for text in texts:
            ctx.words.pop(id(text), None)
    dropped: dict[str, int] = {}  # reason -> pairs (counted once per batch, in the order first met)
    j = 0
    for i in order:
        pairs = batch["pairs"][i]
        verdicts = reasons[j : j + len(pairs)]
        j += len(pairs)
        if not any(verdicts):
            continue
        new_pairs[keys[i]] = [p for p, why in zip(pairs, verdicts, strict=True) if why is None]
        for pair, why in zip(pairs, verdicts, strict=True):
            if why is not None:
                dropped[why] = dropped.get(why, 0) + 1
                ctx.record(stage="pair_filter", source=keys[i], reason=why, **pair)
    for why, n in dropped.items():
        ctx.count(("filtered", why), n)
    if not new_pairs:
        return batch
    batch, emptied = rewrite_pairs(batch, new_pairs)
    ctx.raw_because.update(dict.fromkeys(emptied, "filtered"))
    return batch


STAGE = Stage(
    name="pair_filter",
    doc=__doc__,
    reads=("text", "pairs", "doc_id", "chunk", "continued", "chain_prefix"),
    writes=("pairs", "continued", "chain_prefix"),
    options=PairFilterOptions,
    stats=(
        Stat(
            "filtered", "pairs dropped: {}", card="pairs dropped: {}", card_order=1, published=True, progress="dropped"
        ),
    ),
    canonical=lambda options: {"filters": canonical(options.filters)},
    enabled=lambda options: bool(options.filters),
    prepare=_prepare,
    on_synthesized=filter_pairs,
    takes_words=lambda options: (canonical(options.filters) or {}).get("grounding", {}).get("ngram") == 1,
)
