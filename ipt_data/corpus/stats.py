"""What an augmented corpus holds: one streaming pass over its rows, in constant memory (`stats`).

Computed from the columns `mix` publishes (`text`, `kind`, `n_tokens`, `source`, `n_pairs`, `layout`,
`inverted`, `pairs` with each pair's `task` and `copied`), plus the run report when there is one
(synthesis statuses, invalid pairs, rejects by reason):

- rows and tokens by kind, and the length distribution in tokens of each kind;
- pairs per augmented text, pairs by task and task family, layouts and inversion, shots per chain;
- synthesis: statuses, the invalid-pair rate (of what the synthesizer wrote), the fallback rate (pairs
  rendered verbatim), rejects by reason;
- diversity: the share of distinct questions, the 20 most common question openings (first three words)
  and the share of answers copied word for word from the text;
- duplicates: texts and pairs that occur more than once.

Exact at any size: distinct and repeated items are counted from 64-bit hashes spilled to 256 partition
files in a temporary folder (memory: one buffer and one partition at a time); question openings are counted
exactly up to `MAX_OPENINGS` distinct ones, then the rarest are pruned (the result says so).

Mergeable: a run's shards each take the statistics of their own rows as they are made (`CorpusStats.add`
batch by batch, saved next to the shard: `to_bytes`); the run merges them (`absorb`), adds its general rows, and reads
the result: the same numbers as one pass over the published corpus (every count is a sum, every distinct
count is taken from all the hashes together), without that pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ipt_data.schema import PUBLISHED_COLUMNS
from ipt_data.stages import CORE, PIPELINE
from ipt_data.stages import load as load_stages

log = logging.getLogger(__name__)

LENGTH_BINS = (0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)  # tokens; a bin is [edge, next edge)
TOP_OPENINGS = 20
MAX_OPENINGS = 200_000
_WORD = re.compile(r"[\w'’-]+")


def bin_label(k: int) -> str:
    lo = LENGTH_BINS[k]
    return f"{lo}-{LENGTH_BINS[k + 1] - 1}" if k + 1 < len(LENGTH_BINS) else f"{lo}+"


def opening(question: str) -> str:
    """A question's first three words, lower-cased."""
    return " ".join(_WORD.findall(question.lower())[:3])


def _hash64(item: str) -> int:
    return int.from_bytes(hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class DistinctCounter:
    """How many items, how many distinct, how many distinct ones occur more than once: exact, in bounded memory
    (hashes are buffered, then spilled to partition files by their top byte)."""

    def __init__(self, folder: str, name: str, buffer: int = 1 << 16):
        self.folder, self.name, self.limit = folder, name, buffer
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.total = 0

    def add(self, items: Iterable[str]) -> None:
        self.add_hashes(np.fromiter(map(_hash64, items), dtype=np.uint64))

    def add_hashes(self, hashes: np.ndarray) -> None:
        """Items by their hashes (as `hashes()` gives them: another counter's, merged into this one)."""
        if len(hashes):
            self.buffer.append(np.asarray(hashes, dtype=np.uint64))
            self.buffered += len(hashes)
        if self.buffered >= self.limit:
            self._spill()

    def hashes(self) -> np.ndarray:
        """Every item's hash so far (one per item, repeats included, in no particular order)."""
        self._spill()
        paths = [os.path.join(self.folder, f"{self.name}-{p:03d}.bin") for p in range(256)]
        parts = [np.fromfile(path, dtype=np.uint64) for path in paths if os.path.exists(path)]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    def _spill(self) -> None:
        if not self.buffer:
            return
        hashes = np.concatenate(self.buffer)
        self.total += len(hashes)
        self.buffer, self.buffered = [], 0
        parts = (hashes >> np.uint64(56)).astype(np.uint8)
        order = np.argsort(parts, kind="stable")
        hashes, parts = hashes[order], parts[order]
        bounds = np.searchsorted(parts, np.arange(257))
        for p in np.nonzero(np.diff(bounds))[0]:
            with open(os.path.join(self.folder, f"{self.name}-{p:03d}.bin"), "ab") as f:
                f.write(hashes[bounds[p] : bounds[p + 1]].tobytes())

    def result(self) -> dict[str, int]:
        self._spill()
        distinct = repeated = 0
        for p in range(256):
            path = os.path.join(self.folder, f"{self.name}-{p:03d}.bin")
            if os.path.exists(path):
                _, counts = np.unique(np.fromfile(path, dtype=np.uint64), return_counts=True)
                distinct += len(counts)
                repeated += int(np.count_nonzero(counts > 1))
        return {"total": self.total, "distinct": distinct, "repeated": repeated, "extra_copies": self.total - distinct}


class CorpusStats:
    """The statistics of a corpus, fed batch by batch (`add`) and read with `result`."""

    def __init__(self, family_of: dict[str, str] | None = None):
        self.family_of = family_of if family_of is not None else task_families()
        self._tmp = tempfile.TemporaryDirectory(prefix="ipt-stats-")
        self.rows: Counter = Counter()
        self.tokens: Counter = Counter()
        self.lengths: dict[str, np.ndarray] = {}
        self.extremes: dict[str, list[int]] = {}
        self.pairs_per_text: Counter = Counter()
        self.shots: Counter = Counter()
        self.layouts: Counter = Counter()
        self.inverted = 0
        self.tasks: Counter = Counter()
        self.copied = 0
        self.openings: Counter = Counter()
        self.openings_exact = True
        self.questions = DistinctCounter(self._tmp.name, "questions")
        self.texts = DistinctCounter(self._tmp.name, "texts")
        self.pairs = DistinctCounter(self._tmp.name, "pairs")

    def add(self, batch: dict[str, list]) -> None:
        kinds, n_tokens = batch["kind"], batch["n_tokens"]
        self.rows.update(kinds)
        for kind in set(kinds):
            lengths = np.asarray([t for k, t in zip(kinds, n_tokens, strict=True) if k == kind], dtype=np.int64)
            self.tokens[kind] += int(lengths.sum())
            bins = np.searchsorted(LENGTH_BINS, lengths, side="right") - 1
            self.lengths[kind] = self.lengths.get(kind, np.zeros(len(LENGTH_BINS), np.int64)) + np.bincount(
                bins, minlength=len(LENGTH_BINS)
            )
            low, high = self.extremes.get(kind, [int(lengths.min()), int(lengths.max())])
            self.extremes[kind] = [min(low, int(lengths.min())), max(high, int(lengths.max()))]
        self.texts.add(batch["text"])
        names = ("n_pairs", "source", "layout", "inverted", "pairs")
        columns = zip(kinds, *(batch[c] for c in names), strict=True)
        for kind, n_pairs, source, layout, inverted, pairs in columns:
            if kind != "augmented":
                continue
            self.pairs_per_text[n_pairs] += 1
            self.shots[len(source)] += 1
            self.layouts[layout] += 1
            self.inverted += bool(inverted)
            for pair in pairs:
                self.tasks[pair["task"]] += 1
                self.copied += bool(pair["copied"])
                self.openings[opening(pair["instruction"])] += 1
            self.questions.add(" ".join(p["instruction"].lower().split()) for p in pairs)
            self.pairs.add(f"{p['instruction']}\x00{p['response']}" for p in pairs)
        self._prune_openings()

    # --- merging: what a shard saves, and what the run adds up --------------------------------------------------

    FORMAT = 1  # of a saved partial: one of another format is not read (its shard's statistics are taken anew)
    _COUNTERS = ("rows", "tokens", "pairs_per_text", "shots", "layouts", "tasks", "openings")
    _DISTINCT = ("questions", "texts", "pairs")

    def to_bytes(self) -> bytes:
        """These statistics so far, as the bytes of one file (`.npz`) that `absorb` reads."""
        state = {
            "format": self.FORMAT,
            **{name: [[k, n] for k, n in getattr(self, name).items()] for name in self._COUNTERS},
            "lengths": {kind: bins.tolist() for kind, bins in self.lengths.items()},
            "extremes": self.extremes,
            "inverted": self.inverted,
            "copied": self.copied,
            "openings_exact": self.openings_exact,
        }
        arrays = {name: getattr(self, name).hashes() for name in self._DISTINCT}
        out = io.BytesIO()
        np.savez(out, state=np.frombuffer(json.dumps(state).encode(), np.uint8), **arrays)
        return out.getvalue()

    def absorb(self, path: str | os.PathLike) -> bool:
        """Add the statistics `to_bytes` gave, written to `path`; False (nothing added) when there is no such file
        or it is of another format."""
        try:
            with np.load(path) as saved:
                state = json.loads(saved["state"].tobytes())
                if state.get("format") != self.FORMAT:
                    return False
                arrays = {name: saved[name] for name in self._DISTINCT}
        except (OSError, ValueError, KeyError):
            return False
        for name in self._COUNTERS:
            getattr(self, name).update({k: n for k, n in state[name]})
        for kind, bins in state["lengths"].items():
            self.lengths[kind] = self.lengths.get(kind, np.zeros(len(LENGTH_BINS), np.int64)) + np.asarray(bins)
        for kind, (low, high) in state["extremes"].items():
            old = self.extremes.get(kind, [low, high])
            self.extremes[kind] = [min(old[0], low), max(old[1], high)]
        self.inverted += state["inverted"]
        self.copied += state["copied"]
        self.openings_exact = self.openings_exact and state["openings_exact"]
        self._prune_openings()
        for name, hashes in arrays.items():
            getattr(self, name).add_hashes(hashes)
        return True

    def _prune_openings(self) -> None:
        if len(self.openings) > MAX_OPENINGS:
            self.openings = Counter(dict(self.openings.most_common(MAX_OPENINGS // 2)))
            self.openings_exact = False

    def close(self) -> None:
        """Remove the temporary folder (`result` does it too)."""
        self._tmp.cleanup()

    def result(self, report: dict[str, Any] | None = None, stages: tuple[str, ...] = PIPELINE) -> dict[str, Any]:
        """The statistics as a dict of plain numbers (JSON-ready)."""
        n_pairs = sum(self.tasks.values())
        augmented = self.rows.get("augmented", 0)
        families: Counter = Counter()
        for task, n in self.tasks.items():
            families[self.family_of.get(task, task)] += n
        questions = self.questions.result()
        out = {
            "rows": dict(sorted(self.rows.items())),
            "tokens": dict(sorted(self.tokens.items())),
            "length_tokens": {
                kind: {
                    "min": self.extremes[kind][0],
                    "max": self.extremes[kind][1],
                    "mean": round(self.tokens[kind] / self.rows[kind], 2),
                    "bins": {bin_label(k): int(n) for k, n in enumerate(self.lengths[kind])},
                }
                for kind in sorted(self.lengths)
            },
            "pairs": n_pairs,
            "pairs_per_text": {str(k): n for k, n in sorted(self.pairs_per_text.items())},
            "mean_pairs_per_text": round(n_pairs / augmented, 3) if augmented else 0.0,
            "tasks": dict(sorted(self.tasks.items())),
            "task_families": dict(sorted(families.items())),
            "layouts": dict(sorted(self.layouts.items())),
            "inverted": self.inverted,
            "shots_per_chain": {str(k): n for k, n in sorted(self.shots.items())},
            "diversity": {
                "questions": questions["total"],
                "distinct_questions": questions["distinct"],
                "distinct_question_share": _share(questions["distinct"], questions["total"]),
                "top_openings": [
                    [text, n, _share(n, n_pairs)]
                    for text, n in sorted(self.openings.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_OPENINGS]
                ],
                "openings_exact": self.openings_exact,
                "copied_answer_share": _share(self.copied, n_pairs),
            },
            "duplicates": {"texts": self.texts.result(), "pairs": self.pairs.result()},
            "synthesis": _synthesis(report, self.tasks.get("verbatim", 0), n_pairs, stages),
        }
        self.close()
        return out


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _synthesis(
    report: dict[str, Any] | None, fallback: int, rendered: int, stages: tuple[str, ...] = PIPELINE
) -> dict[str, Any]:
    """What the run report says about synthesis (absent when there is no report): the statistics the stages
    declare `published` (`ipt_data.stages`), the invalid-pair rate; and the fallback rate."""
    out: dict[str, Any] = {"fallback_pairs": fallback, "fallback_pair_rate": _share(fallback, rendered)}
    if report:
        for stage in load_stages(stages):
            for stat in stage.stats:
                key = stat.key.split(".")[0]
                if stat.published and (key in report or stage.name in CORE):  # the method's, even when 0
                    out[key] = report.get(key, {} if "." in stat.key or "{}" in stat.label else 0)
        written = report.get("pairs", 0) + report.get("invalid_pairs", 0)
        out["invalid_pair_rate"] = _share(report.get("invalid_pairs", 0), written)
    return out


def task_families() -> dict[str, str]:
    """task -> family, from the template data's `task_rates`; a fallback pair is its own family."""
    from ipt_data.stages.templify import load_templates

    families = {task: family for family, tasks in load_templates()["task_rates"].items() for task in tasks}
    return families | {"verbatim": "verbatim"}


# --- reading a corpus ---------------------------------------------------------------------------------------


def iter_batches(source: Any, batch_size: int = 10_000) -> tuple[Iterator[dict[str, list]], int | None, dict | None]:
    """`(batches, number of rows or None, run report or None)` of a Dataset, an IterableDataset, or a published
    corpus: a folder, an fsspec URL or `hf://datasets/<repo>` holding `data/*.parquet` (and `run_report.json`)."""
    if not isinstance(source, str):
        if hasattr(source, "iter") and hasattr(source, "__len__"):
            return source.select_columns(list(PUBLISHED_COLUMNS)).iter(batch_size), len(source), None
        return _rows_to_batches(iter(source), batch_size), None, None
    import fsspec
    import pyarrow.parquet as pq

    from ipt_data.errors import InputError, InputNotFoundError

    if source.startswith("hf://") and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise InputError(f"{source}: HF_HUB_OFFLINE is set, so the Hub cannot be read; unset it, or give a local copy")
    try:
        fs, root = fsspec.core.url_to_fs(source)
        root = root.rstrip("/")
        if not fs.exists(root):
            raise InputNotFoundError(f"{source} does not exist")
        files = sorted(fs.glob(f"{root}/data/*.parquet")) or sorted(fs.glob(f"{root}/*.parquet"))
        files = files or ([root] if root.endswith(".parquet") else [])
        if not files:
            raise InputNotFoundError(f"{source}: no data/*.parquet files (is it a corpus ipt_data published?)")
        report_path = f"{root}/run_report.json" if fs.isdir(root) else None
        report = json.loads(fs.cat_file(report_path)) if report_path and fs.exists(report_path) else None
        total = 0
        for path in files:
            with fs.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                missing = sorted(set(PUBLISHED_COLUMNS) - set(parquet.schema_arrow.names))
                if missing:
                    raise InputError(f"{path}: no column {missing}: not a corpus published by ipt_data 0.3 or later")
                total += parquet.metadata.num_rows
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, unreadable, not parquet: one line for the user
        raise InputError(f"{source}: cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc

    def batches() -> Iterator[dict[str, list]]:
        for path in files:
            with fs.open(path, "rb") as f:
                batches = pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=list(PUBLISHED_COLUMNS))
                for record_batch in batches:
                    yield record_batch.to_pydict()

    return batches(), total, report


def _rows_to_batches(rows: Iterator[dict], batch_size: int) -> Iterator[dict[str, list]]:
    batch: dict[str, list] = {c: [] for c in PUBLISHED_COLUMNS}
    for row in rows:
        for c in PUBLISHED_COLUMNS:
            batch[c].append(row[c])
        if len(batch["text"]) == batch_size:
            yield batch
            batch = {c: [] for c in PUBLISHED_COLUMNS}
    if batch["text"]:
        yield batch


def summary(s: dict[str, Any]) -> str:
    """The statistics as a plain-text table (what `ipt-data stats` prints)."""
    d, synthesis = s["diversity"], s["synthesis"]
    lines: list[tuple[str, Any]] = [(f"rows {k}", n) for k, n in s["rows"].items()]
    lines += [(f"tokens {k}", n) for k, n in s["tokens"].items()]
    lines += [(f"mean length {k} (tokens)", f"{v['mean']:,.1f}") for k, v in s["length_tokens"].items()]
    lines += [("pairs", s["pairs"]), ("pairs per augmented text (mean)", f"{s['mean_pairs_per_text']:.2f}")]
    lines += [(f"pairs {k}", f"{100 * n / (s['pairs'] or 1):.1f}%") for k, n in s["task_families"].items()]
    lines += [(f"layout {k}", n) for k, n in s["layouts"].items()]
    lines += [("texts with their tasks before the text", s["inverted"])]
    lines += [(f"texts rendered from {k} rows (shots)", n) for k, n in s["shots_per_chain"].items()]
    lines += [(f"chunks synthesized: {k}", n) for k, n in synthesis.get("status", {}).items()]
    lines += [(f"rejected {k}", n) for k, n in synthesis.get("rejects", {}).items()]
    if "invalid_pair_rate" in synthesis:
        lines.append(("pairs malformed (dropped)", f"{100 * synthesis['invalid_pair_rate']:.1f}%"))
    lines += [
        ("pairs rendered verbatim", f"{100 * synthesis['fallback_pair_rate']:.1f}%"),
        ("distinct questions", f"{100 * d['distinct_question_share']:.1f}%"),
        ("answers copied from the text", f"{100 * d['copied_answer_share']:.1f}%"),
        ("texts occurring more than once", s["duplicates"]["texts"]["repeated"]),
        ("pairs occurring more than once", s["duplicates"]["pairs"]["repeated"]),
    ]
    lines += [(f'opening "{text}"', f"{100 * share:.1f}%") for text, _, share in d["top_openings"]]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v:>12,}" if isinstance(v, int) else f"{k:<{width}}  {v:>12}" for k, v in lines)


def stats(source: Any, *, report: dict | None = None, progress: bool = True, batch_size: int = 10_000) -> dict:
    """The statistics of a corpus (see the module doc): `source` is a published folder, an fsspec URL,
    `hf://datasets/<repo>`, or a `Dataset` / `IterableDataset` with `mix`'s columns. `report`: the run report
    (read from `run_report.json` next to the data when `source` is a path)."""
    from tqdm.auto import tqdm

    batches, total, found = iter_batches(source, batch_size)
    acc = CorpusStats()
    with tqdm(total=total, unit="rows", desc="stats", disable=not progress) as bar:
        for batch in batches:
            acc.add(batch)
            bar.update(len(batch["text"]))
    return acc.result(report if report is not None else found)
