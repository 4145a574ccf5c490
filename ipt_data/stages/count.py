"""`count`: each published text's length in tokens of the synthesizer's tokenizer (`n_tokens`), which the mix
counts by (`--mix-by tokens`) and the statistics report."""

from __future__ import annotations

from ipt_data.method.tokenizer import get_encoder
from ipt_data.stages.base import Stage


def count_batch(batch: dict[str, list], *, tokenizer: str, text_column: str = "text") -> dict[str, list]:
    """`Dataset.map(batched=True)` stage: `n_tokens` of each text (`tokenizer`: a model id or folder)."""
    return {"n_tokens": get_encoder(tokenizer).count_texts(batch[text_column])}


STAGE = Stage(name="count", doc=__doc__, reads=("text",), writes=("n_tokens",))
