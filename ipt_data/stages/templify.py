"""`templify`: each chain of synthesized rows rendered into one pre-training text in varied templates (SPEC 3);
the `Dataset.map` function is `ipt_data.templify.templify_batch`."""

from __future__ import annotations

from collections import Counter

from ipt_data.schema import TEMPLIFY_COLUMNS, row_keys
from ipt_data.stages.base import ShardData, Stage, Stat
from ipt_data.templify import templify_batch

__all__ = ["RAW_WHY", "STAGE", "templify_batch"]

RAW_WHY = {  # why a published text is raw (the run report's `raw_texts`), in the card's words
    "not_selected": "not selected for conversion (--fraction)",
    "no_pairs": "no pair parsed from the synthesizer's output",
    "engine_error": "the engine failed on them (--on-engine-error raw)",
    "filtered": "every pair dropped by the pair filters (--filters)",
    "contaminated": "its pairs matched a benchmark (--decontaminate-pairs raw)",
}


def _summarize(d: ShardData) -> dict:
    out, kept = d.out, d.kept
    keys = row_keys(kept, kept["text"]) if kept else []
    failed = {k for k, s in zip(keys, kept.get("synth_status", []), strict=True) if s.startswith("engine_error")}
    chunks, why = set(keys), Counter()
    for kind, source in zip(out["kind"], out["source"], strict=True):
        if kind == "raw" and source[-1] in chunks:  # a converted row's text, published raw
            why["engine_error" if source[-1] in failed else d.raw_because.get(source[-1], "no_pairs")] += 1
    rendered = {key for source in out["source"] for key in source}
    raw_texts = {"not_selected": len(d.raw), "no_pairs": why.pop("no_pairs", 0)}
    raw_texts["engine_error"] = why.pop("engine_error", 0)
    return {
        "fallback_pairs": sum(out["fallback_pairs"]),
        "tasks": dict(Counter(pair["task"] for pairs in out["pairs"] for pair in pairs)),
        # chunks rendered into no text (never expected: the chains of a shard are whole); counted, not hidden
        "unrendered_chunks": sum(key not in rendered for key in keys),
        "texts": dict(Counter(out["kind"])),
        # why a published text is raw: its row was not selected for conversion (--fraction), it got no pairs that
        # parse, the engine failed on it (kept raw only with --on-engine-error raw), or a stage made it raw
        "raw_texts": raw_texts | {k: n for k, n in sorted(why.items()) if n},
        "layouts": dict(Counter(lay for lay, k in zip(out["layout"], out["kind"], strict=True) if k == "augmented")),
    }


STAGE = Stage(
    name="templify",
    doc=__doc__,
    reads=("text", "pairs", "chain", "shot", "continued", "chain_prefix"),
    writes=TEMPLIFY_COLUMNS,
    stats=(
        Stat("fallback_pairs", "pairs rendered verbatim"),
        Stat("raw_texts", "output raw: {}", card="texts raw: {}", card_order=1, published=True, names=RAW_WHY),
        Stat("tasks", ""),
        Stat("texts", ""),
        Stat("layouts", ""),
        Stat("unrendered_chunks", ""),
    ),
    summarize=_summarize,
)
