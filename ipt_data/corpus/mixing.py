"""`mix`: augmented texts + raw texts + general instructions into one pre-training corpus (SPEC 4).

- From scratch (paper): convert a fraction of the corpus (`split_for_conversion`, 1/5) and keep
  the rest raw.
- Domain-adaptive: convert everything and add general instruction data at `general_ratio`
  general : augmented, counted in tokens (default) or examples; a general example is its question
  and response joined by one space.

Every output row has `text`, `kind` (`augmented`, `raw`, `general`), `n_tokens` (tokens with
the given tokenizer, else whitespace-separated words; an `n_tokens` column already on the augmented
or raw data is kept) and `source` (the ids of the input rows it came from: the `source` column of the
augmented or raw data when it has one, else `<kind>:<row>`; `general:<row>` for general rows, the row being
`GENERAL_ROW` where the general data has that column), and how
it was rendered (`n_pairs`, `layout`, `inverted`, `pairs` as `templify_batch` wrote them; no pairs and
its kind as its layout for other rows). Only
rows of kind `augmented` count towards the ratio. A `Dataset` in gives a `Dataset` out, fully
shuffled with `seed`; an `IterableDataset` (streaming) gives an `IterableDataset`, with general
examples drawn in as the augmented tokens accrue and a seeded buffer shuffle.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, IterableDataset, concatenate_datasets

from ipt_data.hashing import unit_interval
from ipt_data.schema import published_features

MIX_FEATURES = published_features()  # the published rows (`schema.PUBLISHED_COLUMNS`)
GENERAL_COLUMNS = ("question", "response")
GENERAL_ROW = "__ipt_general_row__"  # a general row's number in the general data, when rows were left out


def token_counter(tokenizer: Any = None) -> Callable[[list[str]], list[int]]:
    """Batched token counts with `tokenizer` (object or model name); words when it is None."""
    if tokenizer is None:
        return lambda texts: [len(t.split()) for t in texts]
    from ipt_data.method.tokenizer import get_encoder

    return get_encoder(tokenizer).count_texts


def general_text(question: str, response: str) -> str:
    """A general instruction example as pre-training text: question and response, one space apart."""
    return f"{question} {response}"


def _normalizer(kind: str, count, text_column: str, general_columns: tuple[str, str], keep: dict):
    def normalize(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if kind == "general":
            q, r = general_columns
            missing = [c for c in general_columns if c not in batch]
            if missing:
                raise KeyError(f"general data needs columns {list(general_columns)}; it has {sorted(batch)}")
            texts = [general_text(a or "", b or "") for a, b in zip(batch[q], batch[r], strict=True)]
        else:
            if text_column not in batch:
                raise KeyError(f"no text column {text_column!r}; the columns are {sorted(batch)}")
            texts = [t if isinstance(t, str) else "" for t in batch[text_column]]
        kinds = batch["kind"] if kind == "augmented" and "kind" in batch else [kind] * len(texts)
        counted = batch["n_tokens"] if "n_tokens" in batch and kind != "general" else count(texts)
        if kind == "general":  # the row's number in the general data (before unusable rows were left out)
            source = [[f"general:{i}"] for i in batch.get(GENERAL_ROW, indices)]
        else:
            source = batch.get("source") or [[f"{kind}:{i}"] for i in indices]
        out = {"text": texts, "kind": list(kinds), "n_tokens": list(counted), "source": list(source)}
        out.update(_rendering(batch, kind, list(kinds)))
        for column in keep:  # carried columns; general rows have none
            out[column] = batch[column] if column in batch and kind != "general" else [[] for _ in texts]
        return out

    return normalize


def _rendering(batch: dict[str, list], kind: str, kinds: list[str]) -> dict[str, list]:
    """How each text was rendered, as templify wrote it; for rows without that (raw or general data, or
    augmented data from elsewhere): no pairs, its kind as its layout."""
    n = len(kinds)
    general = kind == "general"
    pairs = batch["pairs"] if "pairs" in batch and not general else [[] for _ in range(n)]
    pairs = [p if p and isinstance(p[0], dict) and "task" in p[0] else [] for p in pairs]  # rendered pairs only
    return {
        "n_pairs": batch["n_pairs"] if "n_pairs" in batch and not general else [len(p) for p in pairs],
        "layout": batch["layout"] if "layout" in batch and not general else kinds,
        "inverted": batch["inverted"] if "inverted" in batch and not general else [False] * n,
        "pairs": pairs,
    }


def _prepare(ds, kind: str, count, text_column: str, general_columns: tuple[str, str], keep: dict):
    fn = _normalizer(kind, count, text_column, general_columns, keep)
    features = Features({**MIX_FEATURES, **keep})
    if kind == "augmented" and text_column == "text" and _already_normalized(ds, features):
        return ds.select_columns(list(features))  # a run's shards: nothing to rewrite (no copy of the corpus)
    if ds.column_names is None:  # a stream whose schema is not known yet
        return ds.map(fn, batched=True, with_indices=True).select_columns(list(features))
    return ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names, features=features)


def _already_normalized(ds, features: Features) -> bool:
    """Whether `ds` holds every column `normalize` would write, with its type (the shards of a run do: their
    pairs are rendered pairs, their kinds and token counts set), so normalizing would copy it unchanged."""
    have = getattr(ds, "features", None)
    return isinstance(ds, Dataset) and have is not None and all(have.get(c) == t for c, t in features.items())


def mix(
    augmented: Dataset | IterableDataset,
    *,
    raw: Dataset | IterableDataset | None = None,
    general: Dataset | IterableDataset | None = None,
    general_ratio: float | None = None,
    by: str = "tokens",
    tokenizer: Any = None,
    seed: int = 0,
    text_column: str = "text",
    general_columns: tuple[str, str] = GENERAL_COLUMNS,
    shuffle_buffer: int = 10_000,
    keep_columns: tuple[str, ...] = (),
) -> Dataset | IterableDataset:
    """Interleave augmented, raw and general data (see module doc); `keep_columns` of the augmented (and raw)
    data are carried along (general rows get empty lists)."""
    if by not in ("tokens", "examples"):
        raise ValueError(f"by must be 'tokens' or 'examples', got {by!r}")
    if general is not None and general_ratio is None:
        general_ratio = 1.0
    if general_ratio is not None and general_ratio < 0:
        raise ValueError(f"general_ratio must be >= 0, got {general_ratio}")
    count = token_counter(tokenizer)
    parts = {"augmented": augmented, "raw": raw, "general": general}
    keep = {c: augmented.features[c] for c in keep_columns} if keep_columns else {}
    prepared = {k: _prepare(v, k, count, text_column, general_columns, keep) for k, v in parts.items() if v is not None}
    if isinstance(augmented, IterableDataset):
        return _mix_streaming(prepared, general_ratio, by, seed, shuffle_buffer, Features({**MIX_FEATURES, **keep}))
    aug = prepared["augmented"]
    out = [aug] + ([prepared["raw"]] if "raw" in prepared else [])
    if "general" in prepared and general_ratio:
        out.append(_take_general(prepared["general"], aug, general_ratio, by, seed))
    mixed = _flattened(concatenate_datasets(out).shuffle(seed=seed))
    features = Features({**MIX_FEATURES, **keep})
    return mixed if len(mixed) else Dataset.from_dict({c: [] for c in features}, features=features)


def _flattened(ds: Dataset, batch_size: int = 1000) -> Dataset:
    """`ds.flatten_indices()`, the same table (batches of `batch_size` rows, the same file beside `ds`'s own, or
    in memory), gathered as Arrow batches: `flatten_indices` turns every batch into Python objects and back
    (about 1,500 rows/s with the `pairs` column on one core)."""
    if ds._indices is None:
        return ds
    from datasets.arrow_writer import ArrowWriter
    from datasets.table import InMemoryTable

    fingerprint = hashlib.sha256(f"{ds._fingerprint}:flattened".encode()).hexdigest()[:16]
    path = None
    if ds.cache_files:
        path = os.path.join(os.path.dirname(ds.cache_files[0]["filename"]), f"cache-{fingerprint}-flat.arrow")
    stream = None if path else pa.BufferOutputStream()
    writer = ArrowWriter(path=path, stream=stream, features=ds.features, writer_batch_size=batch_size)
    try:
        for table in ds.with_format("arrow").iter(batch_size=batch_size):
            writer.write_table(table.combine_chunks())
        writer.finalize()
    finally:
        writer.close()
    if path:
        out = Dataset.from_file(path, info=ds.info.copy(), split=ds.split)
    else:
        out = Dataset(InMemoryTable.from_buffer(stream.getvalue()), info=ds.info.copy(), split=ds.split)
    out._fingerprint = fingerprint
    return out


def _take_general(general: Dataset, aug: Dataset, ratio: float, by: str, seed: int) -> Dataset:
    """The shortest seeded-shuffled prefix of `general` that reaches `ratio` x the augmented size."""
    general = general.shuffle(seed=seed + 1)
    if by == "examples":
        n_aug = sum(k == "augmented" for k in aug["kind"])
        return general.select(range(min(len(general), round(ratio * n_aug))))
    kinds = np.asarray(aug["kind"])
    target = ratio * float(np.sum(np.asarray(aug["n_tokens"], dtype=np.int64)[kinds == "augmented"]))
    cumulative = np.cumsum(np.asarray(general["n_tokens"], dtype=np.int64))
    k = int(np.searchsorted(cumulative, target))  # first prefix reaching the target
    if k > 0 and k < len(cumulative) and target - cumulative[k - 1] < cumulative[k] - target:
        k -= 1  # the shorter prefix is closer to the target
    return general.select(range(min(len(general), k + 1)))


def _mix_streaming(prepared: dict, ratio: float | None, by: str, seed: int, buffer: int, features) -> IterableDataset:
    def rows() -> Iterator[dict]:
        general = (
            iter(prepared["general"].shuffle(seed=seed + 1, buffer_size=buffer)) if "general" in prepared else None
        )
        raw = iter(prepared["raw"]) if "raw" in prepared else None
        aug_size = general_size = 0.0
        for row in prepared["augmented"]:
            yield row
            if row["kind"] == "augmented":
                aug_size += row["n_tokens"] if by == "tokens" else 1
            while general is not None and ratio and general_size < ratio * aug_size:
                g = next(general, None)
                if g is None:
                    general = None
                    break
                yield g
                general_size += g["n_tokens"] if by == "tokens" else 1
            if raw is not None:  # raw texts alternate with augmented ones until either runs out
                r = next(raw, None)
                if r is None:
                    raw = None
                else:
                    yield r
        if raw is not None:
            yield from raw

    return IterableDataset.from_generator(rows, features=features).shuffle(seed=seed, buffer_size=buffer)


def split_for_conversion(
    ds: Dataset | IterableDataset, fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset]:
    """`(to_convert, rest)`: a seeded `fraction` of the rows to augment, the others to keep raw.

    Both keep the corpus order. A `Dataset` splits exactly (round(fraction x rows)); a streaming
    `IterableDataset` keeps each row with probability `fraction` by a seeded hash of its index.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if isinstance(ds, IterableDataset):

        def chosen(_: dict, i: int) -> bool:
            return unit_interval(f"{seed}:{i}") < fraction

        return ds.filter(chosen, with_indices=True), ds.filter(lambda r, i: not chosen(r, i), with_indices=True)
    order = np.random.default_rng(seed).permutation(len(ds))
    k = round(fraction * len(ds))
    return ds.select(np.sort(order[:k])), ds.select(np.sort(order[k:]))
