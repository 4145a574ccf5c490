"""The column contract between stages, declared once (DESIGN "Columns"), and what a usable text is.

- `synthesis_features(input_features)`: `synthesize_batch`'s output columns and types.
- `TEMPLIFY_COLUMNS` / `SHARD_SCHEMA`: one pre-training text per row, as `templify_batch` writes it and as
  a run's shard files hold it (plus `n_tokens`).
- `PUBLISHED_COLUMNS` / `published_features()`: the published corpus's rows.
- `text_problem(value)`: why a value cannot be synthesized (`empty_text`, `invalid_text: int`, ...), or None.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

MISSING = type("Missing", (), {"__repr__": lambda self: "<missing>"})()  # a column a row lacks

# chunk_batch(ids_column=TEXT_IDS) -> Synthesizer: each chunk's own token ids, passed in memory so that a text
# is tokenized once (`array("i")` values: an in-process hand-over, never written; the Synthesizer drops it)
TEXT_IDS = "_ipt_text_ids"
TEMPLIFY_COLUMNS = ("text", "kind", "n_pairs", "layout", "inverted", "pairs", "source", "fallback_pairs")
# a rendered pair: the synthesizer's pair, the task it was rendered as, whether its answer is in its text
RENDERED_PAIR = pa.struct(
    [("instruction", pa.string()), ("response", pa.string()), ("task", pa.string()), ("copied", pa.bool_())]
)
SHARD_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("kind", pa.string()),  # augmented | raw
        ("n_pairs", pa.int32()),
        ("layout", pa.string()),
        ("inverted", pa.bool_()),
        ("pairs", pa.list_(RENDERED_PAIR)),  # the pairs rendered, each with its task (`task_rates` in the templates)
        ("source", pa.list_(pa.string())),  # the `doc_id:chunk` ids of the input rows the text came from
        ("fallback_pairs", pa.int32()),
        ("n_tokens", pa.int64()),  # tokens of the synthesizer's tokenizer
    ]
)

# the published rows' columns, in their order (plus any `--keep-columns`): what the mix writes, the statistics
# read and a kept column may not be named
PUBLISHED_COLUMNS = ("text", "kind", "n_tokens", "source", "n_pairs", "layout", "inverted", "pairs")
PUBLISHED_SCHEMA = pa.schema([SHARD_SCHEMA.field(c) for c in PUBLISHED_COLUMNS])
KEPT_TYPE = pa.list_(pa.string())  # a `--keep-columns` column: one value per source row, as text


def synthesis_features(features=None):
    """The `datasets.Features` of `synthesize_batch`'s output: `features` (the input's) plus ours.

    Pass it to `Dataset.map(..., features=...)`: without it, a first written batch in which no
    row got a pair would fix `pairs` as an Arrow null column and a later batch would fail to cast.
    """
    from datasets import Features, List, Value

    pair = {"instruction": Value("string"), "response": Value("string")}
    ours = {
        "pairs": List(pair),
        "chain": Value("string"),
        "shot": Value("int32"),
        "inherits": Value("bool"),
        "synth_status": Value("string"),
        "prompt_tokens": Value("int32"),
        "completion_tokens": Value("int32"),
        "invalid_pairs": Value("int32"),
        "continued": Value("bool"),
        "chain_prefix": Value("string"),
    }
    return Features({**(features or {}), **ours})


def templify_features():
    """The `datasets.Features` of `templify_batch`'s output: pass it to `Dataset.map(..., features=...)`, or a
    first written batch of rows without pairs fixes `pairs` as a null type."""
    from datasets import Features

    return Features.from_arrow_schema(pa.schema([f for f in SHARD_SCHEMA if f.name in TEMPLIFY_COLUMNS]))


def published_features():
    """The `datasets.Features` of a published corpus's rows (`PUBLISHED_COLUMNS`)."""
    from datasets import Features

    return Features.from_arrow_schema(PUBLISHED_SCHEMA)


def row_keys(batch: dict[str, list], texts: list) -> list[str]:
    """A readable id per row: `doc_id:chunk` after `chunk_batch` (the input row and the chunk of it), else a
    hash of the text."""
    from ipt_data.hashing import content_id

    if "doc_id" in batch:
        chunks = batch.get("chunk") or [0] * len(texts)
        return [f"{d}:{c}" for d, c in zip(batch["doc_id"], chunks, strict=True)]
    return [content_id(t) for t in texts]


def text_problem(value: Any) -> str | None:
    """Why `value` is not a usable text (the status or reject reason), or None when it is one."""
    if value is MISSING:
        return "missing_text_column"
    if value is None or (isinstance(value, str) and not value.strip()):
        return "empty_text"
    if not isinstance(value, str):
        return f"invalid_text: {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid_unicode: lone surrogate"
    return None
