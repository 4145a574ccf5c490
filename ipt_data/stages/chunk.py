"""`chunk_batch`: texts too long for one prompt cut into chunks at paragraph, sentence, then word boundaries.

Chunks join back to their text exactly, and each one's single-text prompt fits the prompt budget,
counted in real tokens of the synthesizer's tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ipt_data.errors import ConfigError
from ipt_data.hashing import content_id
from ipt_data.method.tokenizer import (
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MAX_NEW_TOKENS,
    WINDOW,
    PromptEncoder,
    get_encoder,
    prompt_budget,
)
from ipt_data.schema import TEXT_IDS
from ipt_data.stages.base import Stage, Stat

# Boundaries, coarsest first: blank lines (paragraphs), sentence ends, whitespace (words).
_BOUNDARIES = [
    re.compile(r"\n[^\S\n]*\n\s*"),
    re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])[\"')\]\u201d\u2019]*\s+"),
    re.compile(r"\s+"),
]


def _split_after(text: str, pattern: re.Pattern) -> list[str]:
    """Pieces of `text` cut after each match of `pattern`; they join back to `text` exactly."""
    pieces, start = [], 0
    for m in pattern.finditer(text):
        if m.end() > start and m.end() < len(text):
            pieces.append(text[start : m.end()])
            start = m.end()
    pieces.append(text[start:])
    return [p for p in pieces if p]


def chunk_text(text: str, encoder: PromptEncoder, budget: int) -> list[str]:
    """Cut `text` into slices whose single-text prompts fit `budget` tokens; they join to `text`.

    Cuts at paragraph breaks, then sentence ends, then whitespace; mid-word only when one word
    alone exceeds the budget.
    """
    if len(text) > WINDOW:  # bounded memory: never tokenize more than a window at once
        return [chunk for window in _windows(text) for chunk in chunk_text(window, encoder, budget)]
    overhead = len(encoder.context_ids([""])[0])
    if budget <= overhead:
        raise ConfigError(f"a prompt budget of {budget} tokens leaves no room for text (markup: {overhead})")

    def fits_all(pieces: list[str]) -> list[bool]:
        return [len(ids) <= budget for ids in encoder.context_ids(pieces)]

    def chunk(piece: str, level: int) -> list[str]:
        if fits_all([piece])[0]:
            return [piece]
        if level == len(_BOUNDARIES):
            return _cut_chars(piece, lambda s: fits_all([s])[0])
        units = _split_after(piece, _BOUNDARIES[level])
        if len(units) == 1:
            return chunk(piece, level + 1)
        return pack(units, level)

    def pack(units: list[str], level: int) -> list[str]:
        room = budget - overhead
        groups: list[list[str]] = []
        current: list[str] = []
        used = 0
        for unit, n in zip(units, encoder.count_texts(units), strict=True):
            if current and used + n > room:
                groups.append(current)
                current, used = [], 0
            current.append(unit)
            used += n
        groups.append(current)
        joined = ["".join(g) for g in groups]
        out: list[str] = []
        for group, text_, ok in zip(groups, joined, fits_all(joined), strict=True):
            if ok:
                out.append(text_)
            elif len(group) == 1:
                out += chunk(text_, level + 1)
            else:  # merges across units made the sum an underestimate: halve and retry
                half = len(group) // 2
                out += pack(group[:half], level) + pack(group[half:], level)
        return out

    return chunk(text, 0)


def _windows(text: str) -> list[str]:
    """`text` cut into pieces of at most `WINDOW` characters at the coarsest boundary found in the second half
    of each window (paragraph, sentence end, whitespace; anywhere as a last resort); they join to `text`."""
    pieces, start = [], 0
    while len(text) - start > WINDOW:
        end = start + WINDOW
        cut = end
        for pattern in _BOUNDARIES:
            found = [m.end() for m in pattern.finditer(text, start + WINDOW // 2, end) if m.end() < end]
            if found:
                cut = found[-1]
                break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _cut_chars(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Longest prefixes that fit, found by doubling then bisecting (never encoding much more than a
    chunk's length); the last resort for one huge word."""
    out = []
    while text:
        lo, hi = 0, min(len(text), 4096)  # text[:lo] fits; text[:hi] is still to be tried
        while fits(text[:hi]):
            lo = hi
            if hi == len(text):
                break
            hi = min(len(text), hi * 2)
        if lo == len(text):
            out.append(text)
            break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(text[:mid]):
                lo = mid
            else:
                hi = mid
        lo = max(lo, 1)  # a single character always goes, whatever it costs
        out.append(text[:lo])
        text = text[lo:]
    return out


def chunk_batch(
    batch: dict[str, list],
    indices: Sequence[int] | None = None,
    *,
    tokenizer: Any,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_prompt_tokens: int | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    ids_column: str | None = None,
) -> dict[str, list]:
    """`Dataset.map(batched=True)` stage: split texts too long for one prompt into chunks.

    Adds `doc_id` (the `id_column` value, else the row index when mapped `with_indices=True`,
    else a hash of the text) and `chunk` (index within the document); `text_column` holds the
    chunk. Other columns are repeated on every chunk of their row. Values that are not
    non-empty strings pass through as one chunk, for `synthesize_batch` to give a status.
    `ids_column` (`schema.TEXT_IDS`, in memory only: `augment` uses it) also gives each chunk's own token ids,
    the ones its length was counted with, for the `Synthesizer` to build its prompt and demo from (None where
    the encoder cannot reuse them, and for the chunks of a text that was cut: the Synthesizer encodes those).
    """
    if text_column not in batch:
        raise KeyError(f"no text column {text_column!r}; the columns are {sorted(batch)}")
    encoder = get_encoder(tokenizer)
    budget = max_prompt_tokens or prompt_budget(max_model_len, max_new_tokens)
    texts = batch[text_column]
    if id_column is not None:
        doc_ids = [str(x) for x in batch[id_column]]
    elif indices is not None:
        doc_ids = [str(i) for i in indices]
    else:
        doc_ids = [content_id(t) for t in texts]
    valid = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip() and len(t) <= WINDOW]
    valid_texts = [texts[i] for i in valid]
    text_ids = encoder.text_ids(valid_texts) if encoder.reuses_ids else None  # tokenized once, here
    lengths = dict(zip(valid, encoder.context_lengths(valid_texts, text_ids), strict=True))
    lengths.update({i: budget + 1 for i, t in enumerate(texts) if isinstance(t, str) and len(t) > WINDOW})
    own_ids = dict(zip(valid, text_ids or [], strict=False))
    out: dict[str, list] = {k: [] for k in batch}
    out.update(doc_id=[], chunk=[], **({ids_column: []} if ids_column else {}))
    for row, text in enumerate(texts):
        pieces = chunk_text(text, encoder, budget) if lengths.get(row, 0) > budget else [text]
        for k, piece in enumerate(pieces):
            for col, values in batch.items():
                out[col].append(piece if col == text_column else values[row])
            out["doc_id"].append(doc_ids[row])
            out["chunk"].append(k)
        if ids_column:  # a text cut into chunks: None, each chunk encoded later with its batch (bounded memory)
            out[ids_column] += [own_ids.get(row)] if len(pieces) == 1 else [None] * len(pieces)
    return out


STAGE = Stage(
    name="chunk",
    doc=__doc__,
    reads=("text",),
    writes=("text", "doc_id", "chunk", TEXT_IDS),
    stats=(Stat("chunks", "chunks", card="chunks synthesized", published=True),),
    summarize=lambda d: {"chunks": len(d.synthesized.get("text", []))},
)
