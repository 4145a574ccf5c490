"""What one synthesized pair is: its family (SPEC 2), its parts, and whether its answer means "none of them".

`parse_pair` splits a pair written in the synthesizer's conventions into a `ParsedPair`: free-form,
multiple choice (`\\nOptions:\\n- a\\n- b`), chain of thought (`\\nLet's think step by step.` and
`\\nTherefore, the answer is X`), or both. An option answer that matches no option is "none of the
options" when `Unanswerable` recognises its wording (regular expressions in the template data), else
the pair falls back to `verbatim`: rendered with its original wording, and counted.
"""

from __future__ import annotations

import re
from typing import NamedTuple

COT_TRIGGER = "\nLet's think step by step."
COT_ANSWER = "\nTherefore, the answer is "
OPTIONS_MARK = "\nOptions:\n- "
OPTION_SEP = "\n- "

_QUOTES = "\"'`“”‘’«»()[]"
_FINAL_PUNCTUATION = ".!?;:,…。"


class ParsedPair(NamedTuple):  # a tuple: cheap to make (every pair is parsed by templify, and by the filters)
    kind: str  # free_form, multiple_choice, chain_of_thought, multiple_choice_cot; verbatim (a fallback)
    question: str  # the stem: without options or CoT trigger
    answer: str  # free-form answer, or the CoT final answer
    options: tuple[str, ...] = ()
    correct: int = -1  # index into options; len(options) means "none of the above"
    rationale: str = ""


def normalize_answer(s: str) -> str:
    """Lower-cased, surrounding whitespace, quotes and final punctuation removed, inner whitespace collapsed,
    typographic apostrophes made plain: the form option answers are compared in."""
    s = s.replace("’", "'").replace("‘", "'").lower()
    previous = None
    while previous != s:
        previous = s
        s = s.strip().strip(_QUOTES).rstrip(_FINAL_PUNCTUATION)
    return " ".join(s.split())


class Unanswerable:
    """Recognises answers that mean "none of the options" / "cannot be answered": each pattern is a regular
    expression matched in full against `normalize_answer(answer)`."""

    def __init__(self, patterns: list[str]):
        self.patterns = tuple(patterns)
        self._regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def __call__(self, answer: str) -> bool:
        return bool(self._regex and self._regex.fullmatch(normalize_answer(answer)))


def answer_in_text(answer: str, lowered_text: str) -> bool:
    """Whether `answer` (without its surrounding quotes and final punctuation) is found word for word in the
    text, ignoring case (`lowered_text`: the text lower-cased): an extractive answer."""
    core = answer.strip().strip(_QUOTES).rstrip(_FINAL_PUNCTUATION).strip()
    return bool(core) and core.lower() in lowered_text


def parse_pair(pair: dict, unanswerable: Unanswerable) -> tuple[ParsedPair, bool]:
    """`(parsed, fell_back)`: a pair's family and parts. A malformed CoT or an option answer
    that matches no option (and is not recognised as "none of them") falls back to a `verbatim` pair:
    the original texts, unpatterned."""
    question, answer = pair["instruction"].strip(), pair["response"].strip()
    stem, rationale, cot = question, "", False
    if question.endswith(COT_TRIGGER):
        if COT_ANSWER not in answer:
            return ParsedPair("verbatim", question, answer), True
        stem = question[: -len(COT_TRIGGER)]
        rationale, answer = answer.rsplit(COT_ANSWER, 1)
        rationale, answer = rationale.strip(), answer.strip()
        if rationale.endswith("."):
            rationale = rationale[:-1]
        if not rationale or not answer:
            return ParsedPair("verbatim", question, pair["response"].strip()), True
        cot = True
    if OPTIONS_MARK not in stem:
        return ParsedPair("chain_of_thought" if cot else "free_form", stem, answer, rationale=rationale), False
    stem, listed = stem.split(OPTIONS_MARK, 1)
    options = tuple(o.strip() for o in listed.split(OPTION_SEP) if o.strip())
    wanted = normalize_answer(answer)
    matches = [i for i, o in enumerate(options) if normalize_answer(o) == wanted]
    if len(options) < 2 or len(matches) > 1 or not stem.strip():
        return ParsedPair("verbatim", question, pair["response"].strip()), True
    if matches:
        correct = matches[0]
    elif unanswerable(answer):
        correct = len(options)
    else:
        return ParsedPair("verbatim", question, pair["response"].strip()), True
    kind = "multiple_choice_cot" if cot else "multiple_choice"
    return ParsedPair(kind, stem.strip(), answer, options, correct, rationale), False
