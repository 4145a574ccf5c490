"""`synthesize`: each chunk through the synthesizer in few-shot chains (SPEC 2); the `Dataset.map` function is
`ipt_data.synthesize.synthesize_batch` (or a configured `Synthesizer`)."""

from __future__ import annotations

from collections import Counter

from ipt_data.stages.base import ShardData, Stage, Stat
from ipt_data.synthesize import Synthesizer, synthesize_batch

__all__ = ["STAGE", "Synthesizer", "synthesize_batch"]


def _summarize(d: ShardData) -> dict:
    s = d.synthesized
    return {
        "status": dict(Counter(status.split(":")[0] for status in s.get("synth_status", []))),
        "pairs": sum(len(p) for p in s.get("pairs", [])),
        "invalid_pairs": sum(s.get("invalid_pairs", [])),
        "prompt_tokens": sum(s.get("prompt_tokens", [])),
        "completion_tokens": sum(s.get("completion_tokens", [])),
    }


STAGE = Stage(
    name="synthesize",
    doc=__doc__,
    reads=("text", "doc_id", "chunk"),
    writes=(
        "pairs",
        "chain",
        "shot",
        "inherits",
        "synth_status",
        "prompt_tokens",
        "completion_tokens",
        "invalid_pairs",
        "continued",
        "chain_prefix",
    ),
    stats=(
        Stat("pairs", "pairs", card="pairs", published=True, help="pairs that parse, as the synthesizer wrote them"),
        Stat("invalid_pairs", "pairs invalid (not parsed)", published=True),
        Stat("prompt_tokens", "prompt tokens", card="prompt tokens", published=True),
        Stat("completion_tokens", "completion tokens", card="completion tokens", published=True),
        Stat("status", "status {}", card="chunks synthesized: {}", card_order=1, published=True),
    ),
    summarize=_summarize,
)
