"""`decontaminate`: n-gram matches against benchmarks (`--decontaminate`), at three points of a shard:

- the input texts (`on_rows`): a text holding a benchmark n-gram is dropped (`--decontaminate-texts drop`:
  rejected with the reason `contaminated: <benchmark>`) or only counted (`flag`);
- the generated pairs (`on_synthesized`): a pair whose instruction or response holds one is dropped
  (`--decontaminate-pairs drop_pair`), or takes every pair of its text with it, the text published raw
  (`raw`), or is only counted (`flag`);
- the rendered texts (`on_rendered`): a template can join a question and its answer into an n-gram that
  neither held alone; such a text is published as its chunks' raw texts (`--decontaminate-rendered raw`) or
  only counted (`flag`).

Texts are normalized (case, punctuation, whitespace: `ipt_data.quality.ngrams`) and compared by n-grams of
`--decontaminate-ngram` words (13). The index (`ipt_data.quality.benchmarks`) is built once per run in the work
folder and memory-mapped by every worker; its content's digest joins the fingerprint. Counts per benchmark,
point and action go into the report (`decontamination`), `stats.json` and the card; every match, with its
n-gram, into the work folder's `quality.jsonl`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ipt_data.errors import InputError, IptDataError
from ipt_data.method.chains import rewrite_pairs
from ipt_data.options import SHARDS, option
from ipt_data.schema import row_keys
from ipt_data.stages.base import ShardContext, Stage, Stat
from ipt_data.stages.templify import raw_row

INDEX_FOLDER = "decontamination"


@dataclass
class DecontaminateOptions:
    decontaminate: Any = option(
        None,
        scope=SHARDS,
        added=True,
        help="benchmarks to decontaminate against, comma-separated; each a local file or folder, an fsspec URL or a "
        "Hub dataset, with ?name=..&config=..&split=..&question=..&answer=.. (column names; default: found by "
        "name); in a recipe, a list",
    )
    decontaminate_ngram: int = option(13, scope=SHARDS, added=True, help="words per n-gram compared")
    decontaminate_texts: str = option(
        "drop",
        scope=SHARDS,
        added=True,
        choices=("drop", "flag"),
        help="an input text that matches: drop (rejected, with its benchmark as the reason) or flag (counted only)",
    )
    decontaminate_pairs: str = option(
        "drop_pair",
        scope=SHARDS,
        added=True,
        choices=("drop_pair", "raw", "flag"),
        help="a generated pair that matches: drop_pair, raw (every pair of its text dropped: the text published "
        "raw) or flag (counted only)",
    )
    decontaminate_rendered: str = option(
        "raw",
        scope=SHARDS,
        added=True,
        choices=("raw", "flag"),
        help="a rendered text that matches (a template joined a question and its answer): raw (its texts "
        "published raw) or flag (counted only)",
    )


def index_folder(work_path: str) -> Path:
    return Path(work_path) / INDEX_FOLDER / "index"


def canonical(value: Any) -> list[str] | None:
    """The benchmarks asked for, one spec string each (None when none): what the fingerprint takes."""
    if not value:
        return None
    from ipt_data.quality.benchmarks import parse_specs

    specs = [spec.to_dict() for spec in parse_specs(value)]
    for spec in specs:  # one file, one fingerprint, however it is named (as --dataset)
        if "://" not in spec["source"] and os.path.exists(spec["source"]):
            spec["source"] = os.path.realpath(spec["source"])
    return [spec_string(spec) for spec in specs]


def spec_string(spec: dict) -> str:
    """A benchmark spec as the CLI takes it: `SOURCE?key=value&...` (its keys that are set, in a fixed order)."""
    from urllib.parse import quote, urlencode

    values = {k: v for k, v in spec.items() if k != "source" and v is not None}
    query = urlencode(values, safe="/:", quote_via=quote)
    return spec["source"] + (f"?{query}" if query else "")


def _setup(options: DecontaminateOptions, work_path: str) -> dict[str, Any]:
    """Once per run, in the driver: the index built into the work folder; its digest joins the fingerprint."""
    from ipt_data.quality.benchmarks import BenchmarkIndex, parse_specs

    try:
        index = BenchmarkIndex.build(
            parse_specs(options.decontaminate), index_folder(work_path), n=options.decontaminate_ngram
        )
    except IptDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable benchmark (an empty folder, no credentials): one line
        raise InputError(f"cannot read the benchmarks of --decontaminate: {type(exc).__name__}: {exc}") from exc
    summary = index.summary()
    against = [{k: b[k] for k in ("name", "items", "ngrams", "too_short") if k in b} for b in summary["benchmarks"]]
    return {"digest": index.digest, "ngram": index.n, "against": against}


def _prepare(options: DecontaminateOptions, work_path: str | None):
    from ipt_data.quality.benchmarks import BenchmarkIndex

    return BenchmarkIndex.load(index_folder(work_path))


def _count(ctx: ShardContext, hit, point: str, action: str, **where: Any) -> None:
    ctx.count(("decontamination", hit.benchmark, point, action))
    ctx.record(stage="decontaminate", point=point, action=action, benchmark=hit.benchmark, ngram=hit.ngram, **where)


def screen_texts(texts: list[str], ctx: ShardContext) -> list[str | None]:
    """`on_rows`: the reason to reject each input text (`contaminated: <benchmark>`), or None."""
    action = ctx.options.decontaminate_texts
    reasons: list[str | None] = [None] * len(texts)
    rows = ctx.rows or list(range(len(texts)))
    if len(rows) != len(texts):
        raise ValueError(f"screen_texts: {len(texts)} texts but {len(rows)} row numbers")
    for i, hits in sorted(ctx.state.hits(texts, ctx.words).items()):
        for hit in hits:
            _count(ctx, hit, "texts", action, row=rows[i])
        if action == "drop":
            reasons[i] = f"contaminated: {hits[0].benchmark}"
    return reasons


def screen_pairs(batch: dict[str, list], ctx: ShardContext) -> dict[str, list]:
    """`on_synthesized`: pairs holding a benchmark n-gram, handled as `--decontaminate-pairs` says."""
    action = ctx.options.decontaminate_pairs
    texts = [f"{p['instruction']}\n{p['response']}" for pairs in batch["pairs"] if pairs for p in pairs]
    found = ctx.state.hits(texts) if texts else {}
    if not found:
        return batch
    starts = np.cumsum([0] + [len(pairs or ()) for pairs in batch["pairs"]])  # each row's first pair in `texts`
    keys = row_keys(batch, batch["text"])
    dropped: dict[int, set[int]] = {}
    for k, hits in sorted(found.items()):
        i = int(np.searchsorted(starts, k, side="right")) - 1
        j = k - int(starts[i])
        for hit in hits:
            _count(ctx, hit, "pairs", action, source=keys[i], **batch["pairs"][i][j])
        dropped.setdefault(i, set()).add(j)
    if action == "flag" or not dropped:
        return batch
    new_pairs = {
        keys[i]: [] if action == "raw" else [p for j, p in enumerate(batch["pairs"][i]) if j not in js]
        for i, js in dropped.items()
    }
    batch, emptied = rewrite_pairs(batch, new_pairs)
    ctx.raw_because.update(dict.fromkeys(emptied, "contaminated"))
    return batch


def screen_rendered(rendered: dict[str, list], ctx: ShardContext) -> dict[str, list]:
    """`on_rendered`: augmented texts holding a benchmark n-gram that their own texts do not hold (a template
    joined a question and its answer, a text and a pair), published as their chunks' raw texts
    (`--decontaminate-rendered raw`) or counted (`flag`). The texts themselves were screened by `on_rows`, so
    only what lies outside them is hashed, with the n-1 words of text on either side (`outside_texts`)."""
    action = ctx.options.decontaminate_rendered
    synthesized = ctx.synthesized
    text_of = dict(zip(row_keys(synthesized, synthesized["text"]), synthesized["text"], strict=True))
    augmented = [i for i, kind in enumerate(rendered["kind"]) if kind == "augmented"]
    segments, owner = [], []
    for i in augmented:
        parts = outside_texts(rendered["text"][i], [text_of[k] for k in rendered["source"][i]], ctx.state.n)
        segments += parts
        owner += [i] * len(parts)
    found: dict[int, list] = {}
    for k, hits in sorted(ctx.state.hits(segments).items()):
        i = owner[k]
        known = {h.benchmark for h in found.get(i, [])}
        found.setdefault(i, []).extend(h for h in hits if h.benchmark not in known)
    hit_rows = {i for i, hits in found.items() if hits}
    for i in sorted(hit_rows):
        for hit in found[i]:
            _count(ctx, hit, "rendered", action, source=rendered["source"][i])
    if action == "flag" or not hit_rows:
        return rendered
    out: dict[str, list] = {c: [] for c in rendered}
    for i in range(len(rendered["text"])):
        if i not in hit_rows:
            for c in rendered:
                out[c].append(rendered[c][i])
            continue
        for key in rendered["source"][i]:
            ctx.raw_because[key] = "contaminated"
            for c, value in raw_row(text_of[key], key).items():
                out[c].append(value)
    return out


def outside_texts(rendered: str, texts: list[str], n: int) -> list[str]:
    """The parts of a rendered text that its chunk texts (found in it verbatim, in order) do not cover, each
    with the n-1 words of text on either side: every n-gram of the rendered text that is not inside one of
    its texts lies in one part. The whole text when a text is not found."""
    parts, start, search, carried = [], 0, 0, ""
    for text in texts:
        text = text.strip()
        k = _find(rendered, text, search)
        if not text or k < 0:
            return [rendered]
        search = k + len(text)
        head = _first_words(text, 2 * (n - 1) + 1)
        if len(head) <= 2 * (n - 1):
            continue  # a short text stays in its part: an n-gram may span it whole
        parts.append(carried + rendered[start:k] + " " + " ".join(head[: n - 1]))
        carried, start = " ".join(_last_words(text, n - 1)) + " ", search
    parts.append(carried + rendered[start:])
    return parts


_EDGE = 1024  # characters read at a text's edge for its first or last words; the whole text where too few


def _first_words(text: str, count: int) -> list[str]:
    """`text.split()[:count]`, the rest of the text left unsplit and uncopied (where its first `_EDGE` characters
    hold more than `count` words: the last one then may be cut, but not those before it)."""
    edge = text[:_EDGE].split(None, count)
    if len(edge) > count or len(text) <= _EDGE:
        return edge[:count]
    return text.split(None, count)[:count]


def _last_words(text: str, count: int) -> list[str]:
    """`text.split()[-count:]` (fewer when the text has fewer), read from its last `_EDGE` characters where they
    hold more than `count` words."""
    if count <= 0:
        return []
    edge = text[-_EDGE:].rsplit(None, count)
    if len(edge) > count or len(text) <= _EDGE:
        return edge[-count:] if len(edge) > count else edge
    words = text.rsplit(None, count)
    return words[1:] if len(words) > count else words


def _find(haystack: str, needle: str, start: int) -> int:
    """`haystack.find(needle, start)`, six times faster for a long needle (a text of a few KB): its first 64
    characters are searched for, the rest compared where they are found (`str.find` first studies the whole
    needle, at a cost that grows with it)."""
    if len(needle) <= 64:
        return haystack.find(needle, start)
    head = needle[:64]
    k = haystack.find(head, start)
    while k >= 0 and not haystack.startswith(needle, k):
        k = haystack.find(head, k + 1)
    return k


STAGE = Stage(
    name="decontaminate",
    doc=__doc__,
    reads=("<text column>", "pairs", "text"),
    writes=("pairs", "continued", "chain_prefix", "text", "kind"),
    options=DecontaminateOptions,
    stats=(
        Stat(
            "decontamination",
            "benchmark matches: {}",
            card=None,  # the card's own section says it, benchmark by benchmark
            published=True,
            progress="contaminated",
        ),
    ),
    canonical=lambda options: {"decontaminate": canonical(options.decontaminate)},
    enabled=lambda options: bool(options.decontaminate),
    setup=_setup,
    prepare=_prepare,
    on_rows=screen_texts,
    on_synthesized=screen_pairs,
    on_rendered=screen_rendered,
)
