"""`chunk`: each converted text cut into chunks that fit the synthesizer's prompt (SPEC 1), tokenized once;
the `Dataset.map` function is `ipt_data.chunk.chunk_batch`."""

from __future__ import annotations

from ipt_data.chunk import chunk_batch
from ipt_data.schema import TEXT_IDS
from ipt_data.stages.base import Stage, Stat

__all__ = ["STAGE", "chunk_batch"]

STAGE = Stage(
    name="chunk",
    doc=__doc__,
    reads=("text",),
    writes=("text", "doc_id", "chunk", TEXT_IDS),
    stats=(Stat("chunks", "chunks", card="chunks synthesized", published=True),),
    summarize=lambda d: {"chunks": len(d.synthesized.get("text", []))},
)
