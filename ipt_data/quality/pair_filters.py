"""Pair quality filters: keep or drop each synthesized instruction-response pair, with a reason.

A pair is `{"instruction": str, "response": str}` as the synthesizer wrote it, about one text (its
chunk). The filters, applied in the order of `FILTERS` (the first that drops a pair gives its reason):

- `grounding` -> `ungrounded`: the share of the answer's distinct content words (case-folded runs of
  letters/digits, minus a built-in English stopword list) that occur among the text's words. A
  synthesizer that drifts off the text (world knowledge, hallucinated facts) writes answers whose
  words the text does not hold. What is checked depends on the pair's family (`pair_parse.parse_pair`):
  the answer (free form); the correct option's text (multiple choice); the rationale plus the final
  answer (chain of thought); the whole response (verbatim, a pair that did not parse). An answer with
  no content word is grounded when it is a yes/no/true/false answer or means "none of the options" /
  "cannot be answered" (an answer about the text, not from it), and ungrounded otherwise (e.g. "It is.").
  A number is a content word: a number absent from the text is not grounded. With `ngram: k > 1` the
  answer's word k-grams that hold a content word are looked up among the text's k-grams instead
  (stricter: word order must match too); an answer shorter than k words is measured by words. The answer
  words of a whole batch are looked up at once, in a compiled pass that puts each text's words in a table
  (words told apart by 64-bit hashes: `ngram_kernels.pair_stats`).
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

_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits (Unicode), matched on case-folded text
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

_SHARES = {"free_form", "multiple_choice", "chain_of_thought", "multiple_choice_cot", "verbatim"}
_SHARES |= {"max_repeated_ngrams", "max_word_share"}  # numbers in [0, 1]; every other parameter: int >= 0
_POSITIVE = {"ngram", "max_char_run"}  # ints >= 1


def normalize_question(q: str) -> str:
    """The form questions are compared in: case-folded, its words (letters/digits) joined by single
    spaces, so case, punctuation and whitespace do not matter."""
    return " ".join(_words(q))


def _words(text: str) -> list[str]:
    """`_WORD.findall(text.casefold())`; an ASCII text (most) takes a byte-level shortcut, five times faster:
    its bytes lower-cased, every other byte a blank, split."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORD_BYTES).decode("ascii").split()
    return _WORD.findall(text.casefold())


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
        # the judging steps, in FILTERS order
        self._steps = [getattr(self, f"_{name}") for name in FILTERS if name in self.filters]

    def judge(self, text: str, pairs: list[dict], seen: set[str] | None = None) -> list[str | None]:
        """Per pair, None (kept) or the reason of the first filter (in `FILTERS` order) that drops it.
        `seen`: normalized questions of earlier chunks of the same document; the kept pairs' questions
        are added to it (so a caller threads one set through a document's chunks in order)."""
        return self.judge_many([text], [pairs], [set() if seen is None else seen])[0]

    def judge_many(self, texts: list[str], pairs: list[list[dict]], seen: list[set[str]]) -> list[list[str | None]]:
        """`judge` of each text with its pairs and its `seen` set, in order (texts of one document in chunk
        order, sharing one set). The pairs' words are counted, and their answer words looked up in the texts,
        all at once (`_measure`)."""
        parsed = [[_Pair(pair, self._unanswerable) for pair in row] for row in pairs]
        self._measure(texts, parsed)
        out = []
        for text, row, seen_here in zip(texts, parsed, seen, strict=True):
            ctx = _Text(text, self._k)
            verdicts: list[str | None] = []
            for p in row:
                reason = None
                for step in self._steps:
                    reason = step(p, ctx, seen_here)
                    if reason:
                        break
                if reason is None:
                    seen_here.add(p.normalized)
                verdicts.append(reason)
            out.append(verdicts)
        return out

    def _measure(self, texts: list[str], parsed: list[list[_Pair]]) -> None:
        """Each pair's word statistics (`ngram_kernels.pair_stats`, in one compiled pass over every text and
        pair of the batch): of its question stem, its response and, for grounding, the words grounding
        measures (`_grounded_text`; the response itself for a free-form or verbatim pair). Few Python objects
        are made per pair: the statistics stay in columns, each pair holds its rows' indexes."""
        from ipt_data.quality import ngram_kernels, ngrams

        strings, owner, ground = [], [], []
        for t, row in enumerate(parsed):
            for p in row:
                answer = self._grounded_text(p) if self._by_words else None
                p.at = len(strings)
                strings += (p.parsed.question, p.response)
                owner += (t, t)
                ground += (False, answer is p.response)
                if answer is None or answer is p.response:
                    p.answer = p.at + 1
                else:
                    p.answer = p.at + 2
                    strings.append(answer)
                    owner.append(t)
                    ground.append(True)
        if not strings:
            return
        joined = "".join(strings)
        if joined.isascii():
            raw, raw_lengths = joined.encode("ascii"), map(len, strings)
        else:
            encoded = [x.encode("utf-8") for x in strings]
            raw, raw_lengths = b"".join(encoded), map(len, encoded)
        columns = ngram_kernels.pair_stats(
            *ngrams.pack_texts(texts if self._by_words else [], _joined_words),
            *ngrams.pack_texts(strings, _joined_words),
            np.frombuffer(raw, np.uint8),
            np.cumsum(np.fromiter(raw_lengths, np.int64, len(strings))),
            np.asarray(owner, np.int64),
            np.asarray(ground, np.bool_),
            *self._tables,
        ).T.tolist()
        for row in parsed:
            for p in row:
                p.stats = columns

    def _grounded_text(self, p: _Pair) -> str:
        """What grounding measures of a pair, by its family: the correct option's text (multiple choice) or the
        final answer (chain of thought), after the rationale; the whole response (free form, verbatim), returned
        as `p.response` itself. Sets `p.none` (the answer means "none of them") where it decides what is
        measured; for a free-form or verbatim pair it is asked later, only where it decides the verdict."""
        pp = p.parsed
        if pp.kind in _MC:
            p.none = pp.correct == len(pp.options)
            return pp.rationale + "\n" + ("" if p.none else pp.options[pp.correct])
        if pp.kind == "chain_of_thought":
            p.none = self._unanswerable(pp.answer)
            return pp.rationale + "\n" + ("" if p.none else pp.answer)
        return p.response

    def _means_none(self, p: _Pair) -> bool:
        """Whether the pair's answer means "none of them" (`_unanswerable`; already known for multiple choice
        and chain of thought)."""
        kind = p.parsed.kind
        return p.none if kind in _MC or kind == "chain_of_thought" else self._unanswerable(p.parsed.answer)

    def _grounding(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        kind = p.parsed.kind
        if self._by_words:
            content, found, yes_no = (p.stats[c][p.answer] for c in (_CONTENT, _FOUND, _YES_NO))
            if not content:
                return None if yes_no or self._means_none(p) else "ungrounded"
            share = found / content
        else:
            words = _words(self._grounded_text(p))
            content = {w for w in words if w not in STOPWORDS and w not in YES_NO}
            if not content:
                return None if YES_NO.intersection(words) or self._means_none(p) else "ungrounded"
            grams = {g for g in _grams(words, self._k) if not content.isdisjoint(g)}
            if grams:
                share = len(grams & ctx.grams) / len(grams)
            else:
                share = len(content & set(ctx.words)) / len(content)
        if share >= self.filters["grounding"][kind]:
            return None
        # a free-form "none of them" is grounded outright: an answer about the text, not from it
        return None if kind == "free_form" and self._means_none(p) else "ungrounded"

    def _length(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        params, words = self.filters["length"], p.stats[_WORDS]
        q, a = words[p.at], words[p.at + 1]
        if q < params["min_question_words"]:
            return "question_too_short"
        if q > params["max_question_words"]:
            return "question_too_long"
        if a < params["min_answer_words"]:
            return "answer_too_short"
        if a > params["max_answer_words"]:
            return "answer_too_long"
        return None

    def _repetition(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        params = self.filters["repetition"]
        words, repeats, top, run = p.stats[_WORDS], p.stats[_REPEATS], p.stats[_TOP], p.stats[_RUN]
        for raw, i in ((p.parsed.question, p.at), (p.response, p.at + 1)):
            n = words[i]
            if n >= 10 and 1 - (n - 2 - repeats[i]) / (n - 2) > params["max_repeated_ngrams"]:
                return "repetitive"
            if n >= 8 and top[i] / n > params["max_word_share"]:
                return "repetitive"
            # a run of one character: of one byte in an ASCII string; searched for in any other
            if run[i] >= self._run if raw.isascii() else self._char_run.search(raw):
                return "repetitive"
        return None

    def _duplicates(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        return "duplicate_question" if p.normalized in seen else None


def _joined_words(text: str) -> str:
    """A non-ASCII text as `ngrams.pack_texts` takes it: its words (`_words`) joined by spaces."""
    return " ".join(_words(text))


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


class _Pair:
    """One pair's parse, and where its word statistics are once `PairFilter._measure` has run: the columns
    `stats` (`ngram_kernels.STATS`), rows `at` (its question stem), `at + 1` (its response) and `answer` (what
    grounding measures; -1: nothing)."""

    __slots__ = ("parsed", "response", "_instruction", "_normalized", "stats", "at", "answer", "none")

    def __init__(self, pair: dict, unanswerable: Unanswerable):
        self.parsed, _ = parse_pair(pair, unanswerable)
        self.response = pair["response"]
        self._instruction = pair["instruction"]
        self._normalized: str | None = None
        self.stats: list[list[int]] = []
        self.at = self.answer = -1
        self.none = False

    @property
    def normalized(self) -> str:
        """The question as duplicates compares it (`normalize_question` of the whole instruction)."""
        if self._normalized is None:
            self._normalized = normalize_question(self._instruction)
        return self._normalized
