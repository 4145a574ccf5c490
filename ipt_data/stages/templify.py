"""`templify_batch`: synthesized rows -> pre-training texts, one per chain of inheriting rows (SPEC 3).

Each output text is rendered from ONE input row: the last row of a run of inheriting rows, which
carries the earlier rows in `chain_prefix` (see `ipt_data.stages.synthesize`); rows that a later row
continues emit nothing. So batch boundaries, shards and reordering never split a chain. Rows with
no pairs come out as their raw text, unchanged; rows with no usable text come out not at all.

Every template choice comes from a `random.Random` keyed by (seed, chain id, shot) of the emitting
row, so a rendering depends on the seed and the row, never on the batch. Inputs are not mutated.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ipt_data.hashing import content_id
from ipt_data.method.pair_parse import Unanswerable, answer_in_text, parse_pair
from ipt_data.method.render import ChainStyle
from ipt_data.schema import TEMPLIFY_COLUMNS, row_keys
from ipt_data.stages.base import ShardData, Stage, Stat

TEMPLATES = Path(__file__).parents[1] / "templates" / "patterns.yaml"


@functools.cache
def load_templates(path: str | None = None) -> dict[str, Any]:
    with open(path or TEMPLATES, encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.cache
def _unanswerable(path: str | None) -> Unanswerable:
    return Unanswerable(load_templates(path)["unanswerable_answers"])


def render_chain(
    examples: list[tuple[str, list[dict]]], rng: random.Random, templates: str | None = None
) -> dict[str, Any]:
    """One pre-training text from a chain of `(text, pairs)` examples (SPEC 3), plus its counts; `templates`
    is a template data file (default: the package's)."""
    t, unanswerable = load_templates(templates), _unanswerable(templates)
    parsed, fallbacks = [], 0
    for _, pairs in examples:
        rows = [parse_pair(p, unanswerable) for p in pairs]
        fallbacks += sum(fell for _, fell in rows)
        parsed.append([p for p, _ in rows])
    counts = [len(p) for p in parsed if p]
    style = ChainStyle(t, rng, min(counts) if counts else 0)
    rendered, pairs_out = [], []
    for (text, pairs), ps in zip(examples, parsed, strict=True):
        bodies = [style.body(p) for p in ps]
        lowered = text.lower() if ps else ""
        for pair, p, (task, _, _) in zip(pairs, ps, bodies, strict=True):
            copied = answer_in_text(p.answer, lowered)
            pairs_out.append(
                {"instruction": pair["instruction"], "response": pair["response"], "task": task, "copied": copied}
            )
        rendered.append(style.example(text, [(q, a) for _, q, a in bodies]))
    n_pairs = sum(counts)
    return {
        "text": style.example_sep.join(rendered),
        "kind": "augmented" if n_pairs else "raw",
        "n_pairs": n_pairs,
        "layout": style.layout if n_pairs else "raw",
        "inverted": bool(n_pairs) and style.inverted,
        "pairs": pairs_out,
        "fallback_pairs": fallbacks,
    }


def raw_row(text: str, source: str) -> dict[str, Any]:
    """A text kept raw, as a row of `templify_batch`'s output (`schema.TEMPLIFY_COLUMNS`)."""
    return {
        "text": text,
        "kind": "raw",
        "n_pairs": 0,
        "layout": "raw",
        "inverted": False,
        "pairs": [],
        "source": [source],
        "fallback_pairs": 0,
    }


def templify_batch(
    batch: dict[str, list],
    *,
    seed: int = 0,
    text_column: str = "text",
    templates: str | None = None,
) -> dict[str, list]:
    """`Dataset.map(batched=True, remove_columns=ds.column_names)` stage: pre-training texts.

    Needs `text_column` and `pairs`; uses `chain`, `shot`, `continued`, `chain_prefix` from
    `synthesize_batch` when present (a dataset of plain (text, pairs) rows works too). Output:
    `text`, `kind` (augmented|raw), `n_pairs`, `layout`, `inverted`, `source` (the `doc_id:chunk`
    ids of the rows rendered, or `chain:shot` without `doc_id`), `pairs` (the pairs rendered, in order, each
    with `instruction`, `response`, `task`: what it was rendered as, `free_form`, `free_form_inverse`,
    `multiple_choice_open`, ... see `task_rates` in the template data, `verbatim` for a fallback; and
    `copied`: its answer is found word for word in its text), `fallback_pairs` (option/CoT pairs that did
    not parse and were rendered with their original wording). Pass `features=templify_features()` to
    `Dataset.map`, or a first batch of rows without pairs fixes `pairs` as a null type.
    """
    for col in (text_column, "pairs"):
        if col not in batch:
            raise KeyError(f"templify needs a {col!r} column; the columns are {sorted(batch)}")
    texts, all_pairs = batch[text_column], batch["pairs"]
    n = len(texts)
    chains = batch.get("chain") or [content_id(x) for x in texts]
    shots = batch.get("shot") or [0] * n
    continued = batch.get("continued") or [False] * n
    prefixes = batch.get("chain_prefix") or [""] * n
    keys = row_keys(batch, texts) if "doc_id" in batch else None
    out: dict[str, list] = {c: [] for c in TEMPLIFY_COLUMNS}
    for i in range(n):
        text = texts[i]
        if continued[i] or not isinstance(text, str) or not text.strip():
            continue
        earlier = json.loads(prefixes[i]) if prefixes[i] else []
        examples = [(e["text"], e["pairs"]) for e in earlier] + [(text, all_pairs[i] or [])]
        rng = random.Random(f"{seed}/{chains[i]}/{shots[i]}")
        row = render_chain(examples, rng, templates)
        earlier_keys = [e.get("key") or f"{chains[i]}:{shots[i] - len(earlier) + k}" for k, e in enumerate(earlier)]
        row["source"] = [*earlier_keys, keys[i] if keys else f"{chains[i]}:{shots[i]}"]
        for c in TEMPLIFY_COLUMNS:
            out[c].append(row[c])
    return out


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
