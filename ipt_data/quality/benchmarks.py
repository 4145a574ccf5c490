"""Benchmark decontamination: an index of the word n-grams of benchmark items, and a fast lookup of texts in it.

A corpus meant for pre-training should not hold the evaluation benchmarks' items: a text (or a synthesized
pair) that shares an n-gram of words (13 by default, after `ngrams.normalize`) with a benchmark item is
contaminated. This module holds the two halves of that check:

- `parse_specs` reads which benchmarks to use: `SOURCE[?name=..&config=..&split=..&question=..&answer=..]`,
  comma-separated on the command line, or a list of such strings or mappings (with `source`) in a recipe.
- `BenchmarkIndex.build` reads each benchmark (any source `ipt_data.corpus.sources.load_source` reads) and indexes,
  per item, the n-grams of its question, of each answer and of "question answer" joined (an n-gram running
  from the end of the question into the answer is caught). An item too short to have any n-gram is indexed
  whole (its normalized question, or "question answer", as one gram of its L words) when it has at least
  `min_words` words; shorter items are counted as `too_short` and not indexed. The folder holds sorted unique
  uint64 hashes with the benchmark each came from (the first, in spec order), the whole-item hashes apart
  (the lookup tries only the few lengths L present, and only where a text's gram starts with the first two
  words of such an item: a third bitmap, of those heads), a prefilter for each (a blocked Bloom filter for the
  n-grams, bitmaps for the others), and `index.json`
  (counts, and a `digest` of the content). Rows are read and hashed in chunks, and hashes merged as sorted arrays, so
  memory stays bounded; files are written as temporaries and renamed, `index.json` last, so a build that
  dies leaves no index.
- `BenchmarkIndex.load` memory-maps the arrays (worker processes share the pages) and `find(texts)` says, for
  each text, which benchmarks it shares a gram with, and the first such gram. The lookup hashes all texts at
  once, probes the prefilters, and only what they let through goes on to a binary search: a clean text costs its
  hashing and one probe (one random read) per gram.

Everything is deterministic: the same benchmarks give the same files and digest in any process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from ipt_data.errors import ConfigError, InputError, InputNotFoundError
from ipt_data.quality import ngram_kernels
from ipt_data.quality.ngrams import NgramHasher, _Batch, normalize

KEYS = ("name", "config", "split", "question", "answer")
QUESTION_COLUMNS = ("question", "prompt", "problem", "query", "input", "instruction", "text", "sentence", "context")
ANSWER_COLUMNS = ("answer", "answers", "solution", "output", "response", "target", "label", "completion", "choices")
EXTENSIONS = (".jsonl.gz", ".ndjson.gz", ".json.gz", ".txt.gz", ".jsonl", ".ndjson", ".json", ".parquet", ".txt")
EXTENSIONS += (".csv", ".md")

INDEX_FILE = "index.json"
FORMAT = 2  # 2: the n-grams' prefilter is a blocked Bloom filter (`_bloom`)
COUNTED = ("name", "items", "ngrams", "whole", "too_short")  # per benchmark, in the digest
ARRAYS = ("ngrams", "ngram_benchmarks", "ngram_bitmap", "whole", "whole_benchmarks", "whole_bitmap", "head_bitmap")
BITMAPS = ("ngram_bitmap", "whole_bitmap", "head_bitmap")  # of bitmap_bits' "ngrams", "whole", "heads"
HEAD_WORDS = 2  # a text's grams are looked up among whole items only where their first 2 words start one
CHUNK_ITEMS, CHUNK_CHARS = 4096, 4 << 20  # benchmark items hashed at once
MERGE_AT = 1 << 22  # hashes gathered before they are merged into the sorted unique array
_BIT = np.array([1 << i for i in range(8)], np.uint8)


# --- which benchmarks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: where it is, what to call it, which split and columns to read (None: auto-detect)."""

    source: str
    name: str
    config: str | None = None
    split: str = "test"
    question: str | None = None
    answer: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def default_name(source: str) -> str:
    """A benchmark's name when none is given: the file's stem, or the folder's or dataset repo's last part."""
    base = source.rstrip("/").rsplit("/", 1)[-1]
    for ext in EXTENSIONS:
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return base


def parse_specs(value: str | list | None) -> list[BenchmarkSpec]:
    """The benchmarks named by `value`: a comma-separated string of `SOURCE[?key=value&...]` (the command line),
    or a list of such strings or of mappings with `source` and the same keys (a recipe). Raises `ConfigError`
    for an unknown key, an item without a source, or two benchmarks of one name."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"benchmarks must be a comma-separated string or a list, got {type(value).__name__}")
    specs = [_spec(item) for item in items]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(
                f"two benchmarks are named {spec.name!r} ({seen[spec.name]} and {spec.source}); give one another "
                "name with ?name=NAME"
            )
        seen[spec.name] = spec.source
    return specs


def _spec(item) -> BenchmarkSpec:
    if isinstance(item, str):
        source, _, query = item.strip().partition("?")
        fields: dict[str, str] = {}
        for pair in filter(None, query.split("&")):
            key, eq, val = pair.partition("=")
            if not eq:
                raise ConfigError(f"benchmark {item!r}: {pair!r} is not key=value")
            if key in fields:
                raise ConfigError(f"benchmark {item!r}: {key!r} given twice")
            fields[key] = unquote(val)
        what = item
    elif isinstance(item, Mapping):
        fields = {str(k): v for k, v in item.items()}
        source = fields.pop("source", None)
        what = repr(dict(item))
    else:
        raise ConfigError(f"a benchmark is a string or a mapping, got {type(item).__name__}: {item!r}")
    unknown = sorted(set(fields) - set(KEYS))
    if unknown:
        raise ConfigError(f"benchmark {what}: unknown key {unknown[0]!r}; the keys are source, {', '.join(KEYS)}")
    values = {k: None if v is None else str(v).strip() for k, v in fields.items()}
    empty = sorted(k for k, v in values.items() if not v)
    if empty:
        raise ConfigError(f"benchmark {what}: {empty[0]!r} is empty")
    source = str(source or "").strip()
    if not source:
        raise ConfigError(f"benchmark {what}: no source (a file, folder, URL or Hub dataset)")
    return BenchmarkSpec(
        source=source,
        name=values.get("name") or default_name(source),
        config=values.get("config"),
        split=values.get("split") or "test",
        question=values.get("question"),
        answer=values.get("answer"),
    )


# --- reading a benchmark ----------------------------------------------------------------------------------


def strings(value, in_mapping: bool = False) -> list[str]:
    """Every string inside `value` (lists and mappings recursively), and numbers that are not inside a mapping
    (a numeric answer; a mapping's numbers are offsets or ids, like SQuAD's `answer_start`)."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in strings(v, True)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings(v, in_mapping)]
    if isinstance(value, int | float) and not isinstance(value, bool) and not in_mapping and value == value:
        return [str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)]
    return []


def _first_row(source, spec: BenchmarkSpec) -> tuple[Iterator[dict], list[str]]:
    """The rows of `source` (its first row read ahead) and its column names, the keys of its first row."""
    rows = iter(source)
    first = next(rows, None)
    if first is None:
        raise InputError(f"benchmark {spec.name!r} ({spec.source}): no rows in the split {spec.split!r}")
    _check_row(first, spec)

    def chained():
        yield first
        yield from rows

    return chained(), list(first)


def _check_row(row: dict, spec: BenchmarkSpec) -> None:
    from ipt_data.corpus.sources import REJECT_KEY

    if REJECT_KEY in row:
        raise InputError(f"benchmark {spec.name!r} ({spec.source}): a row cannot be read: {row[REJECT_KEY]}")


def _pick(spec: BenchmarkSpec, present: list[str]) -> tuple[str, str | None]:
    """The question and answer columns: as the spec says, else the first present of the usual names."""

    def missing(what: str, tried) -> ConfigError:
        return ConfigError(
            f"benchmark {spec.name!r} ({spec.source}): no {what} column {tried}; its columns are {present}"
            f" (set ?{what}=COLUMN)"
        )

    if spec.question:
        if spec.question not in present:
            raise missing("question", repr(spec.question))
        question = spec.question
    else:
        question = next((c for c in QUESTION_COLUMNS if c in present), None)
        if question is None:
            raise missing("question", f"(tried {', '.join(QUESTION_COLUMNS)})")
    if spec.answer:
        if spec.answer not in present:
            raise missing("answer", repr(spec.answer))
        return question, spec.answer
    return question, next((c for c in ANSWER_COLUMNS if c in present and c != question), None)


def read_items(spec: BenchmarkSpec) -> tuple[Iterator[tuple[str, list[str]]], str, str | None]:
    """`(items, question column, answer column)`: the benchmark's items as `(question, answers)`, read lazily
    (the question's strings joined by a line break; a .txt or .md file is one item per line)."""
    from ipt_data.corpus.sources import load_source

    source = load_source(spec.source, config=spec.config, split=spec.split, text_files="line")
    present = getattr(source, "column_names", None)
    if present is not None and hasattr(source, "select_columns"):  # a dataset: only these columns, in batches
        question, answer = _pick(spec, list(present))
        wanted = [question] + ([answer] if answer else [])
        batches = source.select_columns(wanted).iter(batch_size=1000)
        rows = (dict(zip(wanted, v, strict=True)) for b in batches for v in zip(*(b[c] for c in wanted), strict=True))
    else:  # our JSON Lines reader (or a stream without a schema): rows as dicts
        rows, present = _first_row(source, spec)
        question, answer = _pick(spec, present)

    def items():
        for row in rows:
            _check_row(row, spec)
            answers = strings(row.get(answer)) if answer else []
            yield "\n".join(strings(row.get(question))), answers

    return items(), question, answer


# --- building -------------------------------------------------------------------------------------------


class _Unique:
    """Sorted unique uint64 values, gathered in chunks and merged now and then (bounded memory, no Python set)."""

    def __init__(self):
        self.merged, self.pending, self.size = np.zeros(0, np.uint64), [], 0

    def add(self, values: np.ndarray) -> None:
        self.pending.append(np.unique(values))
        self.size += len(self.pending[-1])
        if self.size >= MERGE_AT:
            self.result()

    def result(self) -> np.ndarray:
        if self.pending:
            values = np.concatenate([self.merged, *self.pending])
            self.merged, self.pending, self.size = None, [], 0  # freed before the sort
            values.sort(kind="stable")  # in place; sorted runs (the merged array, each chunk) merge in O(n)
            keep = np.empty(len(values), bool)
            keep[:1] = True
            np.not_equal(values[1:], values[:-1], out=keep[1:])
            self.merged = values[keep]
        return self.merged


def _index_benchmark(spec: BenchmarkSpec, hasher: NgramHasher, min_words: int) -> tuple[dict, list[np.ndarray]]:
    """`(summary, [n-gram hashes, whole-item hashes, whole items' head hashes])` of one benchmark, each sorted
    unique (a head: the gram of an item's first `HEAD_WORDS` words, or `min_words` if fewer)."""
    items, question, answer = read_items(spec)
    grams, wholes, heads = _Unique(), _Unique(), _Unique()
    counts, lengths = {"items": 0, "too_short": 0}, set()

    def flush(batch: list[tuple[str, list[str]]]) -> None:
        texts, text_item, candidates, candidate_item = [], [], [], []
        for i, (q, answers) in enumerate(batch):
            joined = [f"{q}\n{a}" for a in answers] if q and answers else ([q] if q else answers)
            texts += joined
            text_item += [i] * len(joined)
            whole = ([q] if q and answers else []) + joined
            candidates += whole
            candidate_item += [i] * len(whole)
        hashes, text_of, _ = hasher.hashes(texts)
        grams.add(hashes)
        indexed = np.zeros(len(batch), bool)
        indexed[np.asarray(text_item, np.int64)[text_of]] = True
        whole_hashes, words, head_hashes = hasher.wholes(candidates, head=min(HEAD_WORDS, min_words))
        fits = (words >= min_words) & (words < hasher.n)
        wholes.add(whole_hashes[fits])
        heads.add(head_hashes[fits])
        lengths.update(np.unique(words[fits]).tolist())
        indexed[np.asarray(candidate_item, np.int64)[fits]] = True
        counts["items"] += len(batch)
        counts["too_short"] += int((~indexed).sum())

    batch, chars = [], 0
    for item in items:
        batch.append(item)
        chars += len(item[0]) + sum(map(len, item[1]))
        if len(batch) >= CHUNK_ITEMS or chars >= CHUNK_CHARS:
            flush(batch)
            batch, chars = [], 0
    if batch:
        flush(batch)
    if not counts["items"]:
        raise InputError(f"benchmark {spec.name!r} ({spec.source}): no rows in the split {spec.split!r}")
    gram_set, whole_set = grams.result(), wholes.result()
    summary = {
        "name": spec.name,
        "spec": spec.to_dict(),
        "question": question,
        "answer": answer,
        "items": counts["items"],
        "ngrams": len(gram_set),
        "whole": len(whole_set),
        "too_short": counts["too_short"],
        "_lengths": sorted(lengths),
    }
    return summary, [gram_set, whole_set, heads.result()]


def _first_owner(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All values of the sorted unique arrays `sets`, sorted unique, each with the index of the first set
    holding it (uint16)."""
    if len(sets) == 1:
        return sets[0], np.zeros(len(sets[0]), np.uint16)
    values = np.concatenate([np.zeros(0, np.uint64), *sets])
    owners = np.repeat(np.arange(len(sets), dtype=np.uint16), [len(s) for s in sets])
    order = np.argsort(values, kind="stable")  # equal values keep their set order
    values, owners = values[order], owners[order]
    first = np.ones(len(values), bool)
    first[1:] = values[1:] != values[:-1]
    return values[first], owners[first]


def _bitmap_bits(count: int, low: int) -> int:
    """log2 of a bitmap's size in bits: about 64 bits per value (1.5% of them set), at least 2**low, at most
    2**29 (64 MiB)."""
    return min(29, max(low, math.ceil(math.log2(max(count, 1) * 64))))


def _bitmap(values: np.ndarray, bits: int) -> np.ndarray:
    """A bitmap (uint8) of `2**bits` bits: for each value, bit `value & 7` of the byte its top
    `bits - 3` bits say (see `_Bitmap.probe`)."""
    out = np.zeros(1 << (bits - 3), np.uint8)
    for start in range(0, len(values), 1 << 20):  # in parts: a few MiB of temporaries
        part = values[start : start + (1 << 20)]
        np.bitwise_or.at(out, part >> np.uint64(67 - bits), _BIT[part & np.uint64(7)])
    return out


def _bloom_bits(count: int) -> int:
    """log2 of a blocked Bloom filter's size in bits: about 32 bits per value (4 MiB for a million; with
    `ngram_kernels.bloom_mask`'s 4 bits per value, a few in ten thousand values not in the set get through), at
    least 2**16, at most 2**29 (64 MiB)."""
    return min(29, max(16, math.ceil(math.log2(max(count, 1) * 32))))


def _bloom(values: np.ndarray, bits: int) -> np.ndarray:
    """A blocked Bloom filter (uint64 words, `2**bits` bits): for each value, the bits of
    `ngram_kernels.bloom_mask(value)` set in the word its top `bits - 6` bits say (see `_Bloom`)."""
    out = np.zeros(1 << (bits - 6), np.uint64)
    for start in range(0, len(values), 1 << 20):  # in parts: a few MiB of temporaries
        part = values[start : start + (1 << 20)]
        np.bitwise_or.at(out, part >> np.uint64(70 - bits), _bloom_masks(part))
    return out


def _bloom_masks(h: np.ndarray) -> np.ndarray:
    """`ngram_kernels.bloom_mask` of each value of `h`."""
    one, low = np.uint64(1), np.uint64(63)
    out = np.zeros(len(h), np.uint64)
    for shift in (0, 6, 12, 18):
        out |= one << ((h >> np.uint64(shift)) & low)
    return out


def _digest(info: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 of what decides the index's answers: n, min_words, the benchmarks' names and counts, and the
    hashes with their benchmarks (not where the benchmarks were read from)."""
    digest = hashlib.sha256()
    head = {
        "format": FORMAT,
        "n": info["n"],
        "min_words": info["min_words"],
        "benchmarks": [{k: b[k] for k in COUNTED} for b in info["benchmarks"]],
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for name in ("ngrams", "ngram_benchmarks", "whole", "whole_benchmarks"):
        array = arrays[name]
        digest.update(f"{name}:{len(array)}:".encode())
        digest.update(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).data)  # no copy on little-endian
    return digest.hexdigest()


# --- the index --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """A text shares a gram with benchmark `benchmark`: the first such gram of the text, normalized."""

    benchmark: str
    ngram: str


@dataclass(frozen=True)
class _Bitmap:
    """A prefilter: a value not in the set is let through with a chance of about the share of bits set."""

    bitmap: np.ndarray
    bits: int

    def probe(self, h: np.ndarray) -> np.ndarray:
        """The positions in `h` of the hashes that may be in the set: their byte first (one random read each),
        then, where the byte is not 0 (a few in a hundred), their bit."""
        byte = self.bitmap[h >> np.uint64(67 - self.bits)]
        maybe = np.flatnonzero(byte)
        return maybe[(byte[maybe] & _BIT[h[maybe] & np.uint64(7)]) != 0]

    def grams(self, batch: _Batch, length: int) -> np.ndarray:
        """The word indexes in `batch` whose gram of `length` words lies within one piece and may be in the set
        (one compiled pass over the batch's words)."""
        return ngram_kernels.probe(batch.prefix, batch.piece_of_word, length, self.bitmap, 67 - self.bits)


@dataclass(frozen=True)
class _Bloom:
    """A blocked Bloom filter (`_bloom`): a value is let through when every bit of its `bloom_mask` is set in
    its word (one random read); a value not in the set, with a chance of a few in ten thousand."""

    bitmap: np.ndarray  # uint64 words
    bits: int

    def probe(self, h: np.ndarray) -> np.ndarray:
        """The positions in `h` of the hashes that may be in the set."""
        masks = _bloom_masks(h)
        return np.flatnonzero(self.bitmap[h >> np.uint64(70 - self.bits)] & masks == masks)


@dataclass(frozen=True)
class _Table:
    """Sorted unique hashes, the benchmark id of each, and their bitmap."""

    hashes: np.ndarray
    ids: np.ndarray
    prefilter: _Bitmap | _Bloom

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(positions in h, benchmark ids)` of the hashes of `h` that are in the table."""
        if not len(self.hashes) or not len(h):
            return np.zeros(0, np.int64), np.zeros(0, np.uint16)
        maybe = self.prefilter.probe(h)
        at, ids = self._exact(h[maybe])
        return maybe[at], ids

    def grams(self, batch: _Batch, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`(word indexes, benchmark ids)` of the grams of `length` words of `batch` (each within one piece) that
        are in the table (its prefilter a `_Bloom`)."""
        if not len(self.hashes):
            return np.zeros(0, np.int64), np.zeros(0, np.uint16)
        bloom = self.prefilter
        k, at = ngram_kernels.find(
            batch.prefix, batch.piece_of_word, length, bloom.bitmap, 70 - bloom.bits, self.hashes
        )
        return k, self.ids[at]

    def _exact(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(positions in wanted, benchmark ids)` of the hashes that are in the table."""
        if not len(wanted):
            return np.zeros(0, np.int64), np.zeros(0, np.uint16)
        at = np.minimum(np.searchsorted(self.hashes, wanted), len(self.hashes) - 1)
        found = np.flatnonzero(self.hashes[at] == wanted)
        return found, self.ids[at[found]]


class BenchmarkIndex:
    """The n-grams of benchmarks, memory-mapped from a folder written by `build` (see the module doc)."""

    def __init__(self, folder: Path, info: dict, arrays: dict[str, np.ndarray]):
        self.folder, self.info = folder, info
        self.hasher = NgramHasher(info["n"])
        bits = info["bitmap_bits"]
        self.ngrams = _Table(
            arrays["ngrams"], arrays["ngram_benchmarks"], _Bloom(arrays["ngram_bitmap"], bits["ngrams"])
        )
        self.whole = _Table(arrays["whole"], arrays["whole_benchmarks"], _Bitmap(arrays["whole_bitmap"], bits["whole"]))
        self.heads = _Bitmap(arrays["head_bitmap"], bits["heads"])

    def __reduce__(self):  # to another process: by its folder (the arrays are mapped there, not copied)
        return type(self).load, (str(self.folder),)

    @property
    def digest(self) -> str:
        return self.info["digest"]

    @property
    def names(self) -> list[str]:
        return [b["name"] for b in self.info["benchmarks"]]

    @property
    def n(self) -> int:
        return self.info["n"]

    @property
    def min_words(self) -> int:
        return self.info["min_words"]

    def summary(self) -> dict:
        """What index.json says: n, min_words, the digest, and per benchmark its name, spec, columns, items,
        n-grams, whole-item grams and too_short."""
        return json.loads(json.dumps(self.info))

    @classmethod
    def build(cls, specs, folder: str | os.PathLike, n: int = 13, min_words: int = 8) -> BenchmarkIndex:
        """Index `specs` (`BenchmarkSpec`s, or what `parse_specs` reads) into `folder` (created; an index there is
        replaced) and return the index."""
        if isinstance(specs, str) or not all(isinstance(s, BenchmarkSpec) for s in specs):
            specs = parse_specs(specs)
        specs = list(specs)
        if not specs:
            raise ConfigError("no benchmark to index")
        if len({s.name for s in specs}) < len(specs):
            raise ConfigError(f"two benchmarks share a name: {[s.name for s in specs]}")
        if len(specs) > np.iinfo(np.uint16).max:
            raise ConfigError(f"at most {np.iinfo(np.uint16).max} benchmarks in one index")
        if not isinstance(n, int) or not isinstance(min_words, int) or n < 1 or min_words < 1:
            raise ConfigError(f"n and min_words must be positive integers, got n={n!r}, min_words={min_words!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.tmp-*"):  # left by a build that was killed
            stale.unlink(missing_ok=True)
        hasher = NgramHasher(n)
        summaries, sets = [], []
        for spec in specs:
            summary, found = _index_benchmark(spec, hasher, min_words)
            summaries.append(summary)
            sets.append(found)
        arrays: dict[str, np.ndarray] = {}
        arrays["ngrams"], arrays["ngram_benchmarks"] = _first_owner([s[0] for s in sets])
        arrays["whole"], arrays["whole_benchmarks"] = _first_owner([s[1] for s in sets])
        heads = np.unique(np.concatenate([s[2] for s in sets]))
        del sets
        bits = {
            "ngrams": _bloom_bits(len(arrays["ngrams"])),
            "whole": _bitmap_bits(len(arrays["whole"]), 10),
            "heads": _bitmap_bits(len(heads), 10),
        }
        arrays["ngram_bitmap"] = _bloom(arrays["ngrams"], bits["ngrams"])
        arrays["whole_bitmap"] = _bitmap(arrays["whole"], bits["whole"])
        arrays["head_bitmap"] = _bitmap(heads, bits["heads"])
        info = {
            "format": FORMAT,
            "n": n,
            "min_words": min_words,
            "benchmarks": summaries,
            "ngrams": len(arrays["ngrams"]),
            "whole": len(arrays["whole"]),
            "whole_lengths": sorted({length for s in summaries for length in s.pop("_lengths", [])}),
            "head_words": min(HEAD_WORDS, min_words),
            "bitmap_bits": bits,
            "sizes": {name: len(a) for name, a in arrays.items()},
        }
        info["digest"] = _digest(info, arrays)
        _write(folder, info, arrays)
        return cls.load(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> BenchmarkIndex:
        """The index in `folder`, its arrays memory-mapped (read-only)."""
        folder = Path(folder)
        try:
            info = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputNotFoundError(f"{folder}: no benchmark index here ({INDEX_FILE} is missing)") from None
        if info.get("format") != FORMAT:
            raise InputError(f"{folder}: a benchmark index of format {info.get('format')!r}; rebuild it")
        arrays = {}
        for name in ARRAYS:
            path = folder / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r" if info["sizes"][name] else None)
            except (FileNotFoundError, ValueError) as exc:
                raise InputError(f"{path}: cannot be read ({exc}); rebuild the benchmark index") from exc
            if len(array) != info["sizes"][name]:
                raise InputError(f"{path}: {len(array)} values where {INDEX_FILE} says {info['sizes'][name]}; rebuild")
            arrays[name] = array.view(np.ndarray)  # the mapped pages, without np.memmap's slow indexing
        for bitmap, bits in zip(BITMAPS, (info["bitmap_bits"][k] for k in ("ngrams", "whole", "heads")), strict=True):
            unit = 64 if bitmap == "ngram_bitmap" else 8  # a Bloom filter's uint64 words, a bitmap's bytes
            if len(arrays[bitmap]) * unit != 1 << bits or arrays[bitmap].itemsize * 8 != unit:
                # the compiled probes read where a hash says: no bound check
                raise InputError(
                    f"{folder / bitmap}.npy: {len(arrays[bitmap])} {unit}-bit words for 2**{bits} bits; rebuild"
                )
        ngram_kernels.warm()  # compiled (or loaded) now, not in the first batch
        return cls(folder, info, arrays)

    def find(self, texts: list[str]) -> list[list[Hit]]:
        """For each text, the benchmarks it shares a gram with: at most one `Hit` per benchmark (the text's first
        gram of that benchmark), in the order of the text."""
        hits = self.hits(texts)
        return [hits.get(t, []) for t in range(len(texts))]

    def hits(self, texts: list[str], words: dict[int, tuple] | None = None) -> dict[int, list[Hit]]:
        """`find`'s answer for the texts that share a gram with a benchmark only (most share none): text index ->
        its hits. `words`, when given, takes the word hashes of the texts hashed whole (not in pieces): `id(text) ->
        (text, `ngram_kernels.scan`'s hashes of its words)` (those of `ngrams.pack_texts([text])`: of
        `normalize(text)`), for a later stage that needs them (the pair filters' grounding) not to hash the text
        again. Keyed by the text object (a text of a few KB is not hashed as a key), which the entry holds."""
        out: dict[int, list[Hit]] = {}
        n, head = self.info["n"], self.info["head_words"]
        lengths = np.asarray(self.info["whole_lengths"], np.int64)
        found = []

        def keep(batch, k: np.ndarray, ids: np.ndarray, length) -> None:
            inside = batch.within(k, length)
            if inside.any():
                text, pos = batch.locate(k[inside])
                length = np.broadcast_to(length, len(k))[inside]
                found.append((text, pos, ids[inside].astype(np.int64), length))

        for batch in self.hasher.batches(texts):
            if words is not None:
                _leave_words(words, texts, batch)
            k, ids = self.ngrams.grams(batch, n)
            keep(batch, k, ids, n)
            if len(lengths):  # whole items: only where a text's gram starts as one does, for each length L present
                starts = self.heads.grams(batch, head)
                k, length = np.repeat(starts, len(lengths)), np.tile(lengths, len(starts))
                fits = k + length <= batch.words
                k, length = k[fits], length[fits]
                at, ids = self.whole.lookup(batch.hash_spans(k, length))
                keep(batch, k[at], ids, length[at])
        if not found:
            return out
        text, pos, ids, length = (np.concatenate(column) for column in zip(*found, strict=True))
        order = np.lexsort((length, pos, ids, text))  # per (text, benchmark): the first gram first
        text, pos, ids, length = text[order], pos[order], ids[order], length[order]
        first = np.ones(len(text), bool)
        first[1:] = (text[1:] != text[:-1]) | (ids[1:] != ids[:-1])
        text, pos, ids, length = text[first], pos[first], ids[first], length[first]
        order = np.lexsort((ids, pos, text))  # each text's hits in the order of the text
        names, words = self.names, {}
        for t, p, i, size in zip(*(a[order].tolist() for a in (text, pos, ids, length)), strict=True):
            if t not in words:
                words[t] = normalize(texts[t]).split(" ")
            out.setdefault(t, []).append(Hit(names[i], " ".join(words[t][p : p + size])))
        return out


def _leave_words(words: dict[int, tuple[str, np.ndarray]], texts: list[str], batch: _Batch) -> None:
    """Each text of `batch` hashed whole (in one piece), with its words' hashes, into `words` by its `id`."""
    bounds = batch.piece_first_word.tolist()
    whole = [True] * len(bounds) if batch.whole is None else batch.whole.tolist()
    for p, t in enumerate(batch.piece_text.tolist()):
        if whole[p]:
            words[id(texts[t])] = (texts[t], batch.word_hash[bounds[p] : bounds[p + 1]])


def _write(folder: Path, info: dict, arrays: dict[str, np.ndarray]) -> None:
    """The arrays and index.json into `folder`, each written as a temporary then renamed, index.json last (and
    removed first): an index is there whole, or not at all."""
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporaries = []
    try:
        for name, array in arrays.items():
            temporaries.append(folder / f"{name}.npy{tag}")
            with open(temporaries[-1], "wb") as f:
                np.save(f, array)
        temporaries.append(folder / f"{INDEX_FILE}{tag}")
        temporaries[-1].write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        (folder / INDEX_FILE).unlink(missing_ok=True)
        for name in arrays:
            os.replace(folder / f"{name}.npy{tag}", folder / f"{name}.npy")
        os.replace(temporaries[-1], folder / INDEX_FILE)
    finally:
        for path in temporaries:
            path.unlink(missing_ok=True)
