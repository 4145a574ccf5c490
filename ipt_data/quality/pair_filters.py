"""Pair quality filters: keep or drop each synthesized instruction-response pair, with a reason.

A pair is `{"instruction": str, "response": str}` as the synthesizer wrote it, about one text (its
chunk). The filters, applied in the order of `FILTERS` (the first that drops a pair gives its reason):

- `grounding` -> `ungrounded`: the share of the answer's distinct content words (runs of letters/digits,
  case-folded, in Unicode NFKC form as decontamination normalizes them; minus a built-in English stopword list)
  that occur among the text's words. A synthesizer that drifts off the text (world knowledge, hallucinated
  facts) writes answers whose words the text does not hold. What is checked depends on the pair's family
  (`pair_parse.parse_pair`): the answer (free form); the correct option's text (multiple choice); the rationale
  plus the final answer (chain of thought); the whole response (verbatim, a pair that did not parse). An answer
  with no content word is grounded when it is a yes/no/true/false answer or means "none of the options" /
  "cannot be answered" (an answer about the text, not from it), and ungrounded otherwise (e.g. "It is."). A
  number is a content word: a number absent from the text is not grounded. With `ngram: k > 1` the answer's word
  k-grams that hold a content word are looked up among the text's k-grams instead (stricter: word order must
  match too); an answer shorter than k words is measured by words. The answer words of a whole batch are looked
  up at once, in a compiled pass that puts each text's words in a table (words told apart by 64-bit hashes:
  `ngram_kernels.pair_stats`).
- `length` -> `question_too_short` / `question_too_long` / `answer_too_short` / `answer_too_long`: word
  counts of the question (its stem: without options and the chain-of-thought trigger) and of the
  whole response. Catches truncated generations and run-away ones.
- `repetition` -> `repetitive`: degenerate loops in the question stem or the response: the share of word
  3-grams that repeat an earlier 3-gram (texts of >= 10 words), one word making up most of a text (of
  >= 8 words), or a run of one non-space character (whitespace runs are layout, not degeneration).
- `duplicates` -> `duplicate_question`: a question equal, after `normalize_question`, to a kept
  question of an earlier chunk of the same document (`seen`) or of an earlier pair of the same list.

Everything here is pure and deterministic (no hashing of str, no randomness; bytes are hashed by fixed
arithmetic): the same inputs give the same verdicts in any process. `parse_filters` returns a canonical
mapping (fixed order, full parameters) fit for a fingerprint.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from ipt_data.errors import ConfigError
from ipt_data.method.pair_parse import Unanswerable, parse_pair

# ASCII bytes: letters lower-cased, digits kept, everything else a blank (`_words`' shortcut)
_ASCII_WORD_BYTES = bytes((ord(chr(b).lower()) if chr(b).isalnum() else 32) if b < 128 else 32 for b in range(256))

# Function words, plus the few words a synthesizer uses to point at the text or to reason ("the passage
# says", "therefore"): none of them says anything about whether the answer comes from the text.
STOPWORDS = frozenset(
    """
    a an the and or but nor if then else than as so because until while since therefore thus hence also too very just
    only of in on at to from by with without about into onto over under between through during before after
    above below up down out off again further once here there where when why how what which who whom whose
    this that these those it its itself i me my we us our you your he him his she her they them their
    is am are was were be been being have has had having do does did doing can could will would shall
    should may might must not all any both each few more most other some such own same
    text passage article paragraph document context says said states stated mentions mentioned according
    answer question option options step think let
    """.split()
)
YES_NO = frozenset({"yes", "no", "true", "false"})  # neither content words nor stopwords: answers in themselves

_MC = ("multiple_choice", "multiple_choice_cot")
_WORDS, _DISTINCT, _REPEATS, _TOP, _CONTENT, _FOUND, _YES_NO, _RUN = range(8)  # ngram_kernels.STATS' columns


@dataclass(frozen=True)
class FilterSpec:
    """One named filter: what it measures, its default parameters, and the reasons it drops with."""

    description: str
    defaults: Mapping[str, Any]
    reasons: tuple[str, ...]


FILTERS: Mapping[str, FilterSpec] = MappingProxyType(
    {
        "grounding": FilterSpec(
            "share of the answer's content words found in the text, per pair family",
            # Thresholds: an extractive or lightly rephrased answer reuses most of the text's words, so half
            # is a lenient bar for free-form answers and option texts. A rationale (chain of thought, and a
            # verbatim pair, often a malformed chain of thought) reasons in the synthesizer's own words:
            # connectives and inferences are not copied text, so only 0.3 is asked of it.
            MappingProxyType(
                {
                    "free_form": 0.5,
                    "multiple_choice": 0.5,
                    "chain_of_thought": 0.3,
                    "multiple_choice_cot": 0.3,
                    "verbatim": 0.3,
                    "ngram": 1,  # measure with word k-grams (k > 1: word order counts too)
                }
            ),
            ("ungrounded",),
        ),
        "length": FilterSpec(
            "word counts of the question stem and of the whole response",
            MappingProxyType(
                {"min_question_words": 3, "max_question_words": 256, "min_answer_words": 1, "max_answer_words": 512}
            ),
            ("question_too_short", "question_too_long", "answer_too_short", "answer_too_long"),
        ),
        "repetition": FilterSpec(
            "degenerate loops in the question stem or the response",
            MappingProxyType(
                {
                    "max_repeated_ngrams": 0.3,  # share of word 3-grams repeating an earlier one (>= 10 words)
                    "max_word_share": 0.5,  # share of the most frequent word (>= 8 words)
                    "max_char_run": 20,  # a run of this many of one non-space character
                }
            ),
            ("repetitive",),
        ),
        "duplicates": FilterSpec(
            "a question already asked (normalized) earlier in the document or the pair list",
            MappingProxyType({}),
            ("duplicate_question",),
        ),
    }
)

# the reasons a pair is dropped for on its own (duplicates depend on the pairs kept before): codes 1, 2, ...
_REASONS = (None, *(r for name, spec in FILTERS.items() if name != "duplicates" for r in spec.reasons))
_UNGROUNDED, _REPETITIVE = _REASONS.index("ungrounded"), _REASONS.index("repetitive")

_SHARES = {"free_form", "multiple_choice", "chain_of_thought", "multiple_choice_cot", "verbatim"}
_SHARES |= {"max_repeated_ngrams", "max_word_share"}  # numbers in [0, 1]; every other parameter: int >= 0
_POSITIVE = {"ngram", "max_char_run"}  # ints >= 1


def normalize_question(q: str) -> str:
    """The form questions are compared in: its words (`_words`: letters/digits, NFKC, case-folded) joined by
    single spaces, so case, punctuation, whitespace and compatibility forms do not matter."""
    return " ".join(_words(q))


def _words(text: str) -> list[str]:
    """The words of `ngrams.normalize(text)` (decontamination's: runs of letters/digits, NFKC, case-folded), so
    that the two stages hash a text's words alike and share them. An ASCII text (most) takes a byte-level
    shortcut, five times faster: its bytes lower-cased, every other byte a blank, split."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORD_BYTES).decode("ascii").split()
    from ipt_data.quality import ngrams

    return ngrams.normalize(text).split()


def _known(what: str, names) -> str:
    return f"known {what}: {', '.join(names) or '(none)'}"


def _check_value(name: str, key: str, value: Any) -> Any:
    where = f"pair filter {name!r} parameter {key!r}"
    if key in _SHARES:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"{where} must be a number from 0 to 1, not {value!r}")
        return float(value)
    low = 1 if key in _POSITIVE else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where} must be an integer >= {low}, not {value!r}")
    return value


def parse_filters(value: Any) -> dict[str, dict[str, Any]]:
    """The filters asked for, as `name -> full parameters` (given ones merged over the defaults) in the
    order of `FILTERS` whatever the order given: canonical, fit for a fingerprint.

    `value`: a CLI string of comma-separated names ("grounding,length"), a list of names, or a mapping
    name -> parameters mapping (or None for the defaults). None or "" asks for no filter. Raises
    `ConfigError` (one line naming the known ones) for an unknown filter or parameter or a bad value."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [n.strip() for n in value.split(",") if n.strip()]
    if isinstance(value, list | tuple):
        if not all(isinstance(n, str) for n in value):
            raise ConfigError(f"pair filters must be names, not {value!r}; {_known('filters', FILTERS)}")
        value = dict.fromkeys(value)
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"pair filters must be a list of names or a mapping name -> parameters, not {value!r}; "
            f"{_known('filters', FILTERS)}"
        )
    for name in value:
        if name not in FILTERS:
            raise ConfigError(f"unknown pair filter {name!r}; {_known('filters', FILTERS)}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in FILTERS.items():
        if name not in value:
            continue
        given = value[name] if value[name] is not None else {}
        if not isinstance(given, Mapping):
            raise ConfigError(
                f"pair filter {name!r} takes a mapping of parameters (or nothing), not {given!r}; "
                f"{_known('parameters', spec.defaults)}"
            )
        params = dict(spec.defaults)
        for key, v in given.items():
            if key not in spec.defaults:
                raise ConfigError(
                    f"unknown parameter {key!r} of pair filter {name!r}; {_known('parameters', spec.defaults)}"
                )
            params[key] = _check_value(name, key, v)
        for lo, hi in (("min_question_words", "max_question_words"), ("min_answer_words", "max_answer_words")):
            if lo in params and params[lo] > params[hi]:
                raise ConfigError(f"pair filter {name!r}: {lo} ({params[lo]}) is above {hi} ({params[hi]})")
        out[name] = params
    return out


def _grams(words: list[str], k: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(k)), strict=False))


class PairFilter:
    """Judges the pairs of one text with the filters of `parse_filters` (or any value it takes); `templates`
    is a template data file (default: the package's), whose "unanswerable" wordings say which answers mean
    "none of them"."""

    def __init__(self, filters: dict[str, dict], templates: str | None = None):
        from ipt_data.stages.templify import _unanswerable  # templify pulls in rendering; only needed here

        self.filters = parse_filters(filters)  # validated again, defaults filled in (idempotent on its output)
        self._unanswerable: Unanswerable = _unanswerable(templates)
        rep = self.filters.get("repetition")
        self._run = rep["max_char_run"] if rep else 0
        self._char_run = re.compile(rf"(\S)\1{{{self._run - 1},}}") if rep else None
        ground = self.filters.get("grounding")
        self._k = ground["ngram"] if ground else 1
        self._by_words = bool(ground) and self._k == 1  # grounding by words: measured in `_measure`
        self._tables = _word_tables()  # (its kernels compiled, or loaded, now: not in the first batch)
        # the filters that judge each pair on its own, in FILTERS order (duplicates, last, follows the kept ones)
        self._steps = [getattr(self, f"_{name}") for name in FILTERS if name in self.filters and name != "duplicates"]
        self._measured = self._by_words or "length" in self.filters or "repetition" in self.filters

    def judge(self, text: str, pairs: list[dict], seen: set[str] | None = None) -> list[str | None]:
        """Per pair, None (kept) or the reason of the first filter (in `FILTERS` order) that drops it.
        `seen`: normalized questions of earlier chunks of the same document; the kept pairs' questions
        are added to it (so a caller threads one set through a document's chunks in order)."""
        return self.judge_many([text], [pairs], [set() if seen is None else seen])[0]

    def judge_many(
        self, texts: list[str], pairs: list[list[dict]], seen: list[set[str]], words: dict | None = None
    ) -> list[list[str | None]]:
        """`judge` of each text with its pairs and its `seen` set, in order (texts of one document in chunk
        order, sharing one set): `reasons`, a list per text."""
        reasons = self.reasons(texts, pairs, seen, words)
        out, j = [], 0
        for row in pairs:
            out.append(reasons[j : j + len(row)])
            j += len(row)
        return out

    def reasons(
        self, texts: list[str], pairs: list[list[dict]], seen: list[set[str] | None], words: dict | None = None
    ) -> list[str | None]:
        """`judge_many`'s verdicts end to end (each text's pairs, text after text). The pairs are parsed into
        columns (`_parse`), their words counted and their answer words looked up in the texts all at once
        (`_measure`); each filter then judges every pair at once, and the duplicates follow pair by pair. A
        `seen` entry may be None: a text with no other chunk of its document here, whose questions are compared
        among themselves only (and kept in no set). `words`: texts already hashed (`id(text) -> (text, its word
        hashes)`, as `BenchmarkIndex.hits` leaves them): those are not hashed again."""
        if not len(texts) == len(pairs) == len(seen):
            raise ValueError(f"judge_many: {len(texts)} texts, {len(pairs)} lists of pairs, {len(seen)} sets")
        batch = self._parse(texts, pairs)
        if self._measured:
            self._measure(batch, words)
        codes = np.zeros(len(batch.kinds), np.int64)
        for step in reversed(self._steps):  # the first filter that drops a pair gives its reason
            dropped = step(batch)
            codes = np.where(dropped > 0, dropped, codes)
        reasons = [_REASONS[c] for c in codes.tolist()]
        dedupe, alone, j = "duplicates" in self.filters, set(), 0
        for row, seen_here in zip(pairs, seen, strict=True):
            if seen_here is None:  # its questions are compared among themselves only: none, with one kept
                kept = sum(reasons[k] is None for k in range(j, j + len(row)))
                if not dedupe or kept < 2:
                    j += len(row)
                    continue
                seen_here = alone
                alone.clear()
            for pair in row:
                if reasons[j] is None:
                    question = normalize_question(pair["instruction"])
                    if dedupe and question in seen_here:
                        reasons[j] = "duplicate_question"
                    else:
                        seen_here.add(question)
                j += 1
        return reasons

    def _parse(self, texts: list[str], pairs: list[list[dict]]) -> _Pairs:
        """Each pair parsed (`parse_pair`) into the columns of a `_Pairs` (no object kept per pair): its family,
        question stem, answer and response and, for grounding, what it measures (`measured`): the correct
        option's text (multiple choice) or the final answer (chain of thought), after the rationale, with whether
        that answer means "none of them" (`none`); None for the whole response (free form, verbatim: whether it
        means "none of them" is asked later, only where it decides the verdict). With `_measured`, the strings
        `_measure` counts the words of are laid out too, three per pair: its question stem, its response, and
        what grounding by words measures where that is not the response (else an empty string)."""
        batch = _Pairs(texts, pairs)
        unanswerable = self._unanswerable
        flat = [pair for row in pairs for pair in row]
        parsed = [parse_pair(pair, unanswerable)[0] for pair in flat]
        batch.kinds = [pp.kind for pp in parsed]
        batch.questions = [pp.question for pp in parsed]
        batch.answers = [pp.answer for pp in parsed]
        batch.responses = [pair["response"] for pair in flat]
        m = len(flat)
        batch.measured, batch.none = measured, none = [None] * m, [False] * m
        if "grounding" in self.filters:
            for j, pp in enumerate(parsed):
                kind = pp.kind
                if kind in _MC:
                    n = none[j] = pp.correct == len(pp.options)
                    measured[j] = pp.rationale + "\n" + ("" if n else pp.options[pp.correct])
                elif kind == "chain_of_thought":
                    n = none[j] = unanswerable(pp.answer)
                    measured[j] = pp.rationale + "\n" + ("" if n else pp.answer)
        if not self._measured:
            return batch
        by_words = self._by_words
        own = np.zeros(m, np.bool_)  # grounding measures a string of its own, not the response
        if by_words:
            own[[j for j, g in enumerate(measured) if g is not None]] = True
        strings = [""] * (3 * m)
        strings[0::3], strings[1::3] = batch.questions, batch.responses
        if own.any():
            strings[2::3] = [g or "" for g in measured]
        batch.strings = strings
        batch.owner = np.repeat(np.fromiter((t for t, row in enumerate(pairs) for _ in row), np.int64, m), 3)
        batch.at = np.arange(0, 3 * m, 3, dtype=np.int64)
        batch.answer = batch.at + 1 + own
        ground = np.zeros((m, 3), np.bool_)
        ground[:, 1], ground[:, 2] = by_words & ~own, own
        batch.ground = ground.reshape(-1)
        return batch

    def _measure(self, batch: _Pairs, words: dict | None) -> None:
        """The word statistics of the strings `_parse` laid out (`ngram_kernels.pair_stats`, in one compiled pass
        over every text and pair of the batch) into `batch.stats` (strings x `ngram_kernels.STATS`)."""
        from ipt_data.quality import ngram_kernels, ngrams

        strings = batch.strings
        if not strings:
            batch.stats = np.zeros((0, len(ngram_kernels.STATS)), np.int64)
            return
        joined = "".join(strings)
        if joined.isascii():
            raw, raw_lengths = joined.encode("ascii"), map(len, strings)
        else:
            encoded = [x.encode("utf-8") for x in strings]
            raw, raw_lengths = b"".join(encoded), map(len, encoded)
        batch.stats = ngram_kernels.pair_stats(
            *_text_words(batch.texts if self._by_words else [], words),
            *ngrams.pack_texts(strings, _joined_words),
            np.frombuffer(raw, np.uint8),
            np.cumsum(np.fromiter(raw_lengths, np.int64, len(strings))),
            batch.owner,
            batch.ground,
            *self._tables,
        )

    def _means_none(self, batch: _Pairs, j: int) -> bool:
        """Whether pair `j`'s answer means "none of them" (`_unanswerable`; already known for multiple choice
        and chain of thought)."""
        kind = batch.kinds[j]
        return batch.none[j] if kind in _MC or kind == "chain_of_thought" else self._unanswerable(batch.answers[j])

    def _grounding(self, batch: _Pairs) -> np.ndarray:
        """`_UNGROUNDED` where a pair's answer is not grounded in its text, else 0."""
        if not self._by_words:
            return self._grounding_by_grams(batch)
        params, answer = self.filters["grounding"], batch.answer
        content, found, yes_no = (batch.stats[answer, c] for c in (_CONTENT, _FOUND, _YES_NO))
        threshold = np.fromiter(map(params.__getitem__, batch.kinds), np.float64, len(batch.kinds))
        low = (content > 0) & (found / np.maximum(content, 1) < threshold)  # the share of content words found
        maybe = np.flatnonzero(low | ((content == 0) & (yes_no == 0)))
        dropped = []
        for j, has_content in zip(maybe.tolist(), content[maybe].tolist(), strict=True):
            if has_content:  # a free-form "none of them" is grounded outright: an answer about the text, not from it
                grounded = batch.kinds[j] == "free_form" and self._means_none(batch, j)
            else:  # no content word (nor a yes/no one): grounded when it means "none of them"
                grounded = self._means_none(batch, j)
            if not grounded:
                dropped.append(j)
        out = np.zeros(len(batch.kinds), np.int64)
        out[dropped] = _UNGROUNDED
        return out

    def _grounding_by_grams(self, batch: _Pairs) -> np.ndarray:
        """`_grounding` with `ngram: k > 1`: the answer's word k-grams that hold a content word looked up among
        the text's k-grams (by words when it has none), pair by pair."""
        params = self.filters["grounding"]
        out = np.zeros(len(batch.kinds), np.int64)
        contexts: dict[int, _Text] = {}
        j = 0
        for t, row in enumerate(batch.pairs):
            for _ in row:
                kind, measured = batch.kinds[j], batch.measured[j]
                words = _words(batch.responses[j] if measured is None else measured)
                content = {w for w in words if w not in STOPWORDS and w not in YES_NO}
                if not content:
                    grounded = bool(YES_NO.intersection(words)) or self._means_none(batch, j)
                else:
                    ctx = contexts.get(t) or contexts.setdefault(t, _Text(batch.texts[t], self._k))
                    grams = {g for g in _grams(words, self._k) if not content.isdisjoint(g)}
                    if grams:
                        share = len(grams & ctx.grams) / len(grams)
                    else:
                        share = len(content & set(ctx.words)) / len(content)
                    grounded = share >= params[kind] or (kind == "free_form" and self._means_none(batch, j))
                out[j] = 0 if grounded else _UNGROUNDED
                j += 1
        return out

    def _length(self, batch: _Pairs) -> np.ndarray:
        """The code of `question_too_short`, `question_too_long`, `answer_too_short` or `answer_too_long` (the
        first that holds), else 0: word counts of a pair's question stem and of its response."""
        params, words, at = self.filters["length"], batch.stats[:, _WORDS], batch.at
        q, a = words[at], words[at + 1]
        bounds = [
            q < params["min_question_words"],
            q > params["max_question_words"],
            a < params["min_answer_words"],
            a > params["max_answer_words"],
        ]
        return np.select(bounds, [_REASONS.index(r) for r in FILTERS["length"].reasons], 0)

    def _repetition(self, batch: _Pairs) -> np.ndarray:
        """`_REPETITIVE` where a pair's question stem or response loops, else 0: the share of its word 3-grams
        that repeat an earlier one (>= 10 words), the share of its most frequent word (>= 8 words), a run of one
        non-space character."""
        params, stats, at = self.filters["repetition"], batch.stats, batch.at
        rows = np.concatenate([at, at + 1])  # every question stem, then every response
        n, repeats, top, run = (stats[rows, c] for c in (_WORDS, _REPEATS, _TOP, _RUN))
        loops = (n >= 10) & (1 - (n - 2 - repeats) / np.maximum(n - 2, 1) > params["max_repeated_ngrams"])
        loops |= (n >= 8) & (top / np.maximum(n, 1) > params["max_word_share"])
        # a run of one character: of one byte in an ASCII string; searched for in any other
        raw = batch.questions + batch.responses
        ascii_ = np.fromiter(map(str.isascii, raw), np.bool_, len(raw))
        loops |= ascii_ & (run >= self._run)
        for i in np.flatnonzero(~ascii_ & ~loops).tolist():
            loops[i] = self._char_run.search(raw[i]) is not None
        m = len(batch.kinds)
        return np.where(loops[:m] | loops[m:], _REPETITIVE, 0)


def _text_words(texts: list[str], known: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """`(word hashes, each text's first word, then the word count)` of `texts` (`ngram_kernels.scan` of
    `ngrams.pack_texts(texts)`): those of a text in `known` (`id(text) -> (text, hashes)`, as
    `BenchmarkIndex.hits` leaves them) taken from it, the others hashed."""
    from ipt_data.quality import ngram_kernels, ngrams

    entries = [known.get(id(t)) for t in texts] if known else []
    found = [e[1] if e is not None and e[0] is t else None for e, t in zip(entries, texts, strict=False)]
    if not any(h is not None for h in found):
        hashes, _, first = ngram_kernels.scan(*ngrams.pack_texts(texts, _joined_words))
        return hashes, first
    missing = [i for i, h in enumerate(found) if h is None]
    if missing:
        hashes, _, first = ngram_kernels.scan(*ngrams.pack_texts([texts[i] for i in missing], _joined_words))
        bounds = first.tolist()
        for j, i in enumerate(missing):
            found[i] = hashes[bounds[j] : bounds[j + 1]]
    first = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, found), np.int64, len(found)), out=first[1:])
    return np.concatenate(found), first


def _joined_words(text: str) -> str:
    """A non-ASCII text as `ngrams.pack_texts` takes it: its words (`_words`) joined by spaces, which is
    `ngrams.normalize(text)`."""
    from ipt_data.quality import ngrams

    return ngrams.normalize(text)


def _hashes(words) -> np.ndarray:
    """The sorted word hashes of `words` (as `ngram_kernels.scan` hashes them)."""
    from ipt_data.quality import ngram_kernels, ngrams

    data, starts = ngrams.pack([w.encode("utf-8") for w in sorted(words)])
    return np.unique(ngram_kernels.scan(data, starts)[0])


@functools.cache
def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """`(stopword hashes, yes/no hashes)`, sorted: what `pair_stats` tells content words by."""
    from ipt_data.quality import ngram_kernels

    ngram_kernels.warm()
    return _hashes(STOPWORDS), _hashes(YES_NO)


class _Text:
    """A text's words and k-grams (grounding by k-grams), on first use."""

    __slots__ = ("text", "k", "_words", "_grams")

    def __init__(self, text: str, k: int):
        self.text, self.k = text, k
        self._words: list[str] | None = None
        self._grams: set[tuple[str, ...]] | None = None

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = _words(self.text)
        return self._words

    @property
    def grams(self) -> set[tuple[str, ...]]:
        if self._grams is None:
            self._grams = set(_grams(self.words, self.k))
        return self._grams


class _Pairs:
    """The pairs of a batch being judged (`PairFilter.judge_many`), in columns of one value per pair (each text's
    pairs in order): `kinds`, `questions` (the stems), `answers`, `responses`, `measured` and `none` (what
    grounding measures, `PairFilter._parse`); the strings whose words are counted (`strings`, each about text
    `owner[i]`, `ground[i]`: measured against it) with each pair's rows among them (arrays of one value per
    pair), `at` (its question stem), `at + 1` (its response) and `answer` (what grounding measures); their
    statistics once `PairFilter._measure` has run (`stats`: strings x `ngram_kernels.STATS`)."""

    __slots__ = (
        "texts", "pairs", "kinds", "questions", "answers", "responses", "measured", "none",
        "strings", "owner", "ground", "at", "answer", "stats",
    )  # fmt: skip

    def __init__(self, texts: list[str], pairs: list[list[dict]]):
        self.texts, self.pairs = texts, pairs
        self.kinds: list[str] = []
        self.questions: list[str] = []
        self.answers: list[str] = []
        self.responses: list[str] = []
        self.measured: list[str | None] = []
        self.none: list[bool] = []
        self.strings: list[str] = []
        self.owner = np.zeros(0, np.int64)
        self.ground = np.zeros(0, np.bool_)
        self.at = np.zeros(0, np.int64)
        self.answer = np.zeros(0, np.int64)
        self.stats = np.zeros((0, 8), np.int64)
