"""Filtering synthesized rows without losing any: `relink` and `filter_synthesized`.

`templify_batch` renders a chain of inheriting rows from its LAST row, which carries the earlier rows in
`chain_prefix`; the earlier rows (`continued`) emit nothing. Dropping rows between `synthesize_batch`
and `templify_batch` (`filter`, `select`, dedup) therefore needs the chains re-linked, or a dropped last
row silently takes its chain with it, and a dropped middle row still appears through its successor's
prefix. `relink(ds)` fixes the chains of what is left:

- a last row that was kept renders only the kept rows of its prefix;
- the kept rows of a chain whose last row was dropped get a new last row (the latest of them, which now
  carries the others), so every kept row with text is rendered exactly once.

`filter_synthesized(ds, function, ...)` is `ds.filter(function, ...)` followed by `relink`.

Dropping PAIRS (not rows) within a batch is `rewrite_pairs`: the rows' pairs and the copies of them that later
rows carry in `chain_prefix` change together, so a demo never shows a pair its own text lost; a text left with
no pair is published alone, raw.
"""

from __future__ import annotations

import json
import json.scanner
import logging
from collections import defaultdict
from typing import Any

from datasets import Dataset

from ipt_data.schema import row_keys

log = logging.getLogger(__name__)
CHAIN_COLUMNS = ("chain", "shot", "continued", "chain_prefix")


def relink(ds: Dataset, text_column: str = "text", batch_size: int = 1000) -> Dataset:
    """`ds` (rows of `synthesize_batch`, some of them dropped) with `continued` / `chain_prefix` fixed so that
    `templify_batch` renders every row exactly once (see the module doc). Rows stay where they are."""
    if not isinstance(ds, Dataset):
        raise TypeError("relink needs a map-style Dataset: a chain's rows may be anywhere in it")
    if any(c not in ds.column_names for c in CHAIN_COLUMNS):
        return ds  # not chained (plain (text, pairs) rows): nothing to re-link
    key_columns = [c for c in (text_column, "doc_id", "chunk") if c in ds.column_names]
    keys: list[str] = []
    ends: dict[int, list[dict]] = {}  # a kept last row -> its prefix
    continued: list[int] = []
    chain_of: dict[int, tuple[str, int]] = {}
    view = ds.select_columns([*key_columns, *CHAIN_COLUMNS])
    for start in range(0, len(ds), batch_size):
        batch = view[start : start + batch_size]
        keys += row_keys(batch, batch[text_column])
        for j, (is_continued, prefix) in enumerate(zip(batch["continued"], batch["chain_prefix"], strict=True)):
            i = start + j
            if is_continued:
                continued.append(i)
                chain_of[i] = (batch["chain"][j], batch["shot"][j])
            elif prefix:
                ends[i] = json.loads(prefix)
    kept = set(keys)
    updates: dict[int, tuple[bool, str]] = {}
    covered: set[str] = set()
    for i, prefix in ends.items():
        left = [e for e in prefix if e.get("key") in kept]
        covered.update(e["key"] for e in left)
        if len(left) != len(prefix):
            updates[i] = (False, json.dumps(left, ensure_ascii=False) if left else "")
    orphans = [i for i in continued if keys[i] not in covered]
    runs = _runs(orphans, chain_of)
    if orphans:
        content = ds.select(orphans).select_columns([text_column, "pairs"])
        row = {i: content[k] for k, i in enumerate(orphans)}
        for run in runs:
            earlier = [{"text": row[i][text_column], "pairs": row[i]["pairs"], "key": keys[i]} for i in run[:-1]]
            updates[run[-1]] = (False, json.dumps(earlier, ensure_ascii=False) if earlier else "")
    if updates:
        log.info(
            "relink: %d chains lost rows from their prefix, %d rows lost their last row and were re-chained",
            len(updates) - len(runs),
            len(orphans),
        )
    if not updates:
        return ds
    return ds.map(_apply, fn_kwargs={"updates": updates}, with_indices=True, batched=True, features=ds.features)


def filter_synthesized(
    ds: Dataset, function: Any = None, *, text_column: str = "text", **filter_kwargs: Any
) -> Dataset:
    """`ds.filter(function, **filter_kwargs)` on `synthesize_batch`'s rows, then `relink`: the safe way to drop
    synthesized rows before `templify_batch`."""
    return relink(ds.filter(function, **filter_kwargs), text_column=text_column)


def rewrite_pairs(batch: dict[str, list], new_pairs: dict[str, list]) -> tuple[dict[str, list], set[str]]:
    """`batch` (`synthesize_batch`'s columns, whole chains) with the pairs of the rows keyed (`row_keys`) in
    `new_pairs` replaced, in the rows and in the `chain_prefix` copies that later rows of their chain carry.
    A row that had pairs and has none left leaves its run and is rendered alone: its text, raw. The rest of a
    run stays whole (when its last row left, the latest row left becomes its last); a run left with no pair at
    all is split into its rows. Returns the new batch (the input is not changed) and the keys of the rows that
    had pairs and have none left."""
    keys = row_keys(batch, batch["text"])
    alone = {k for k, old in zip(keys, batch["pairs"], strict=True) if old and k in new_pairs and not new_pairs[k]}
    where = {k: i for i, k in enumerate(keys)}
    pairs = [new_pairs.get(k, p) for k, p in zip(keys, batch["pairs"], strict=True)]
    n = len(keys)
    continued = list(batch.get("continued") or [False] * n)
    prefixes = list(batch.get("chain_prefix") or [""] * n)
    chains = batch.get("chain")  # a run's rows are all of one chain: a chain with no row changed is left as it is
    changed = {chains[where[k]] for k in new_pairs if k in where} if chains else None
    for i in range(n):
        if continued[i]:
            continue  # a run is rendered from its last row, which carries the others
        if changed is not None and chains[i] not in changed and keys[i] not in new_pairs:
            continue
        earlier, texts = _read_run(prefixes[i]) if prefixes[i] else ([], None)
        run = [*earlier, {"key": keys[i]}]
        if not any(e.get("key") in new_pairs or e.get("key") in alone for e in run):
            continue
        for e in earlier:
            e["pairs"] = new_pairs.get(e["key"], e["pairs"])
        kept = [e for e in run if e["key"] not in alone]
        if not any(pairs[where[e["key"]]] for e in kept):
            kept = []  # no pair left: each row alone, raw
        for e in run:
            j = where[e["key"]]
            continued[j], prefixes[j] = bool(kept) and e in kept[:-1], ""
        if kept:
            last = where[kept[-1]["key"]]
            prefixes[last] = _write_run(kept[:-1], earlier, texts) if len(kept) > 1 else ""
    return {**batch, "pairs": pairs, "continued": continued, "chain_prefix": prefixes}, alone


_JSON = json.JSONEncoder(ensure_ascii=False)  # `json.dumps(value, ensure_ascii=False)` is `_JSON.encode(value)`
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # `json.loads`' own: (text, at) -> (the value there, its end)


def _read_run(prefix: str) -> tuple[list[dict], list[str] | None]:
    """The rows of a `chain_prefix` (the earlier rows of a run), and each row's text as `prefix` writes it (the
    JSON string) when `prefix` is `[{"text": T, "pairs": P, "key": K}, ...]` with the separators `json.dumps`
    writes (as `synthesize` and `rewrite_pairs` write it): `_write_run` takes those rather than write the texts
    again, and the rows then hold no "text" (it is not decoded). Else `(json.loads(prefix), None)`.

    A text's JSON string is taken as it stands where its first quote after the opening one is its closing one
    (no backslash before it: the text holds no quote), followed by `, "pairs": `; a text with quotes in it is
    decoded (`_SCAN`) to find its end. A malformed string is not looked into then: it is written back as it
    was, and templify's `json.loads` of the prefix says what is wrong with it."""
    rows, texts, at = [], [], 0
    try:
        while prefix.startswith(', {"text": "' if rows else '[{"text": "', at):
            start = at + (11 if rows else 10)
            end = prefix.find('"', start + 1) + 1
            if not end:
                break
            if prefix[end - 2] == "\\" or not prefix.startswith(', "pairs": ', end):
                text, end = _SCAN(prefix, start)  # a quote in the text (or not what json.dumps writes): decoded
                if not isinstance(text, str) or not prefix.startswith(', "pairs": ', end):
                    break
            texts.append(prefix[start:end])
            pairs, end = _SCAN(prefix, end + 11)
            if not prefix.startswith(', "key": ', end):
                break
            key, end = _SCAN(prefix, end + 9)
            if not prefix.startswith("}", end):
                break
            rows.append({"pairs": pairs, "key": key})
            at = end + 1
            if at == len(prefix) - 1 and prefix[at] == "]":
                return rows, texts
    except (StopIteration, ValueError):  # not JSON there: json.loads says why
        pass
    return json.loads(prefix), None


def _write_run(rows: list[dict], earlier: list[dict], texts: list[str] | None) -> str:
    """`json.dumps(rows, ensure_ascii=False)`: `rows` some of `earlier` (`_read_run`'s, their pairs since
    replaced), each text's JSON taken from `texts` (as `_read_run` found it) when it found them: the same
    string, and the same bytes where the prefix read was written by `json.dumps(..., ensure_ascii=False)`."""
    if texts is None:
        return _JSON.encode(rows)
    text_of = {id(e): t for e, t in zip(earlier, texts, strict=True)}
    return (
        "["
        + ", ".join(
            f'{{"text": {text_of[id(e)]}, "pairs": {_JSON.encode(e["pairs"])}, "key": {_JSON.encode(e["key"])}}}'
            for e in rows
        )
        + "]"
    )


def _runs(orphans: list[int], chain_of: dict[int, tuple[str, int]]) -> list[list[int]]:
    """Orphaned rows grouped into runs: same chain, consecutive shots, in shot order."""
    by_chain: dict[str, list[int]] = defaultdict(list)
    for i in orphans:
        by_chain[chain_of[i][0]].append(i)
    runs = []
    for rows in by_chain.values():
        rows.sort(key=lambda i: chain_of[i][1])
        run = [rows[0]]
        for i in rows[1:]:
            if chain_of[i][1] == chain_of[run[-1]][1] + 1:
                run.append(i)
            else:
                runs.append(run)
                run = [i]
        runs.append(run)
    return runs


def _apply(batch: dict[str, list], indices: list[int], updates: dict[int, tuple[bool, str]]) -> dict[str, list]:
    for j, i in enumerate(indices):
        if i in updates:
            batch["continued"][j], batch["chain_prefix"][j] = updates[i]
    return batch
