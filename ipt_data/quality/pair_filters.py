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
  (stricter: word order must match too); an answer shorter than k words is measured by words.
- `length` -> `question_too_short` / `question_too_long` / `answer_too_short` / `answer_too_long`: word
  counts of the question (its stem: without options and the chain-of-thought trigger) and of the
  whole response. Catches truncated generations and run-away ones.
- `repetition` -> `repetitive`: degenerate loops in the question stem or the response: the share of word
  3-grams that repeat an earlier 3-gram (texts of >= 10 words), one word making up most of a text (of
  >= 8 words), or a run of one non-space character (whitespace runs are layout, not degeneration).
- `duplicates` -> `duplicate_question`: a question equal, after `normalize_question`, to a kept
  question of an earlier chunk of the same document (`seen`) or of an earlier pair of the same list.

Everything here is pure and deterministic (no hashing of str, no randomness): the same inputs give the
same verdicts in any process. `parse_filters` returns a canonical mapping (fixed order, full parameters)
fit for a fingerprint.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ipt_data.errors import ConfigError
from ipt_data.method.pair_parse import Unanswerable, parse_pair

_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits (Unicode), matched on case-folded text
_ASCII_BLANKS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})

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
    return " ".join(_WORD.findall(q.casefold()))


def _alnum(char: str) -> bool:
    return char.isalnum() and char != "_"


def _word_set(text: str) -> set[str]:
    """`set(_WORD.findall(text.casefold()))`, four times faster on long texts: ASCII punctuation becomes
    blanks and the text is split on whitespace; only the tokens that still hold a non-alphanumeric character
    (Unicode punctuation) go through the regular expression. (`[^\\W_]` matches exactly what `str.isalnum`
    accepts.)"""
    words = set(text.casefold().translate(_ASCII_BLANKS).split())
    odd = [w for w in words if not w.isalnum()]
    if odd:
        words.difference_update(odd)
        for w in odd:
            words.update(_WORD.findall(w))
    return words


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
        # the judging steps, in FILTERS order
        self._steps = [getattr(self, f"_{name}") for name in FILTERS if name in self.filters]

    def judge(self, text: str, pairs: list[dict], seen: set[str] | None = None) -> list[str | None]:
        """Per pair, None (kept) or the reason of the first filter (in `FILTERS` order) that drops it.
        `seen`: normalized questions of earlier chunks of the same document; the kept pairs' questions
        are added to it (so a caller threads one set through a document's chunks in order)."""
        seen = set() if seen is None else seen
        ctx = _Text(text, self._k)
        verdicts: list[str | None] = []
        for pair in pairs:
            p = _Pair(pair, self._unanswerable)
            reason = None
            for step in self._steps:
                reason = step(p, ctx, seen)
                if reason:
                    break
            if reason is None:
                seen.add(p.normalized)
            verdicts.append(reason)
        return verdicts

    def _grounding(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        pp, params = p.parsed, self.filters["grounding"]
        if pp.kind in _MC:
            none = pp.correct == len(pp.options)
            words = _WORD.findall((pp.rationale + "\n" + ("" if none else pp.options[pp.correct])).casefold())
        elif pp.kind == "chain_of_thought":
            none = self._unanswerable(pp.answer)
            words = _WORD.findall((pp.rationale + "\n" + ("" if none else pp.answer)).casefold())
        else:  # free form, verbatim: the whole response (a free-form "none of them" is grounded outright)
            none = self._unanswerable(pp.answer)
            words = [] if none and pp.kind == "free_form" else p.response_words
        content = {w for w in words if w not in STOPWORDS and w not in YES_NO}
        if not content:
            return None if none or YES_NO.intersection(words) else "ungrounded"
        k = self._k
        grams = {g for g in _grams(words, k) if not content.isdisjoint(g)} if k > 1 else set()
        if grams:
            share = len(grams & ctx.grams) / len(grams)
        else:
            share = sum(map(ctx.has, content)) / len(content)
        return None if share >= params[pp.kind] else "ungrounded"

    def _length(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        params, q, a = self.filters["length"], len(p.question_words), len(p.response_words)
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
        for raw, words in ((p.parsed.question, p.question_words), (p.response, p.response_words)):
            n = len(words)
            if n >= 10:
                grams = _grams(words, 3)
                if 1 - len(set(grams)) / len(grams) > params["max_repeated_ngrams"]:
                    return "repetitive"
            # a word above the share leaves fewer than n * (1 - share) + 1 distinct words: count only then
            if n >= 8 and len(set(words)) < n * (1 - params["max_word_share"]) + 1:
                if Counter(words).most_common(1)[0][1] / n > params["max_word_share"]:
                    return "repetitive"
            # a run of non-space characters lies within one whitespace-separated token: search only long ones
            if len(raw) >= self._run and max(map(len, raw.split()), default=0) >= self._run:
                if self._char_run.search(raw):
                    return "repetitive"
        return None

    def _duplicates(self, p: _Pair, ctx: _Text, seen: set[str]) -> str | None:
        return "duplicate_question" if p.normalized in seen else None


class _Text:
    """The text's words (and k-grams), computed once per `judge` call, on first use."""

    def __init__(self, text: str, k: int):
        self.text, self.k = text, k
        self._words: set[str] | None = None
        self._grams: set[tuple[str, ...]] | None = None
        self._lowered: str | None = None

    def has(self, word: str) -> bool:
        """Whether `word` (case-folded letters/digits) is one of the text's words: an occurrence bounded by no
        letter or digit on either side. The same answer as `word in self.words`, without building the set: a
        few answer words are looked up in a text of hundreds."""
        if self._lowered is None:
            self._lowered = self.text.casefold()
        text, at = self._lowered, 0
        while (at := text.find(word, at)) >= 0:
            end = at + len(word)
            if (at == 0 or not _alnum(text[at - 1])) and (end == len(text) or not _alnum(text[end])):
                return True
            at += 1
        return False

    @property
    def words(self) -> set[str]:
        if self._words is None:
            self._words = _word_set(self.text)
        return self._words

    @property
    def grams(self) -> set[tuple[str, ...]]:
        if self._grams is None:
            self._grams = set(_grams(_WORD.findall(self.text.casefold()), self.k))
        return self._grams


class _Pair:
    """One pair's parse and word lists, shared by the filters."""

    def __init__(self, pair: dict, unanswerable: Unanswerable):
        self.parsed, _ = parse_pair(pair, unanswerable)
        self.response = pair["response"]
        self.question_words = _WORD.findall(self.parsed.question.casefold())
        self.response_words = _WORD.findall(self.response.casefold())
        # a free-form or verbatim question is the whole instruction: its normalized form is at hand
        self._normalized = " ".join(self.question_words) if self.parsed.kind in ("free_form", "verbatim") else None
        self._instruction = pair["instruction"]

    @property
    def normalized(self) -> str:
        if self._normalized is None:
            self._normalized = normalize_question(self._instruction)
        return self._normalized
