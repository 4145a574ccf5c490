"""`templify_batch`: synthesized rows -> pre-training texts, one per chain of inheriting rows (SPEC 3).

Each output text is rendered from ONE input row: the last row of a run of inheriting rows, which
carries the earlier rows in `chain_prefix` (see `ipt_data.synthesize`); rows that a later row
continues emit nothing. So batch boundaries, shards and reordering never split a chain. Rows with
no pairs come out as their raw text, unchanged; rows with no usable text come out not at all.

Every template choice comes from a `random.Random` keyed by (seed, chain id, shot) of the emitting
row, so a rendering depends on the seed and the row, never on the batch. Inputs are not mutated.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ipt_data.hashing import content_id
from ipt_data.schema import TEMPLIFY_COLUMNS, row_keys

TEMPLATES = Path(__file__).parent / "templates" / "patterns.yaml"

# SPEC 3: layout weights (percent) by number of pairs, and the share of texts with tasks first.
FEW_PAIR_LAYOUTS = {"classic": 95, "dialog": 5}
LAYOUT_WEIGHTS = {"classic": 80, "dialog": 5, "numbered": 5, "inline": 5, "next_turn": 5}
INVERSION_RATE = 0.05

COT_TRIGGER = "\nLet's think step by step."
COT_ANSWER = "\nTherefore, the answer is "
OPTIONS_MARK = "\nOptions:\n- "
OPTION_SEP = "\n- "

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii"]


def fill(template: str, **values: str) -> str:
    """Fill `{name}` placeholders in one pass: values are inserted literally, never re-read."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@functools.cache
def load_templates(path: str | None = None) -> dict[str, Any]:
    with open(path or TEMPLATES, encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- parsing a pair into its parts ----------------------------------------------------------------


@dataclass(frozen=True)
class ParsedPair:
    kind: str  # free_form, multiple_choice, chain_of_thought, multiple_choice_cot; verbatim (a fallback)
    question: str  # the stem: without options or CoT trigger
    answer: str  # free-form answer, or the CoT final answer
    options: tuple[str, ...] = ()
    correct: int = -1  # index into options; len(options) means "none of the above"
    rationale: str = ""


def _norm(s: str) -> str:
    return " ".join(s.lower().strip().rstrip(".!").split())


def parse_pair(pair: dict, unanswerable: frozenset[str]) -> tuple[ParsedPair, bool]:
    """`(parsed, fell_back)`: a pair's family and parts. A malformed CoT or an option answer
    that matches no option falls back to a `verbatim` pair: the original texts, unpatterned."""
    question, answer = pair["instruction"], pair["response"]
    free = ParsedPair("verbatim", question, answer)
    stem, rationale, cot = question, "", False
    if question.endswith(COT_TRIGGER):
        if COT_ANSWER not in answer:
            return free, True
        stem = question[: -len(COT_TRIGGER)]
        rationale, answer = answer.rsplit(COT_ANSWER, 1)
        rationale, answer = rationale.strip(), answer.strip()
        if rationale.endswith("."):
            rationale = rationale[:-1]
        if not rationale or not answer:
            return free, True
        cot = True
    if OPTIONS_MARK not in stem:
        return ParsedPair("chain_of_thought" if cot else "free_form", stem, answer, rationale=rationale), False
    stem, listed = stem.split(OPTIONS_MARK, 1)
    options = tuple(o.strip() for o in listed.split(OPTION_SEP) if o.strip())
    matches = [i for i, o in enumerate(options) if _norm(o) == _norm(answer)]
    if len(options) < 2 or len(matches) > 1:
        return free, True
    if matches:
        correct = matches[0]
    elif _norm(answer) in unanswerable:
        correct = len(options)
    else:
        return free, True
    kind = "multiple_choice_cot" if cot else "multiple_choice"
    return ParsedPair(kind, stem, answer, options, correct, rationale), False


# --- rendering ------------------------------------------------------------------------------------


class _Style:
    """Every template choice for one chain, drawn up front from its RNG."""

    def __init__(self, t: dict, rng: random.Random, min_pairs: int):
        weights = FEW_PAIR_LAYOUTS if min_pairs < 2 else LAYOUT_WEIGHTS
        self.layout = rng.choices(list(weights), weights=list(weights.values()))[0]
        self.inverted = rng.random() < INVERSION_RATE
        pick = rng.choice
        self.t, self.rng = t, rng
        self.intro, self.inv_intro, self.inv_header = (
            pick(t["intros"]),
            pick(t["inverted_intros"]),
            pick(t["inverted_headers"]),
        )
        self.header, self.example_sep = pick(t["comprehension_headers"]), pick(t["example_separators"])
        self.qa_prefix, self.joiner, self.pair_sep = (
            pick(t["qa_prefixes"]),
            pick(t["qa_joiners"]),
            pick(t["pair_separators"]),
        )
        if self.qa_prefix[0].endswith("\n"):  # "Question:\n..." reads best with the answer on its own line
            self.joiner = "\n"
        self.family = {
            f: pick(t[f]) for f in ("free_form", "multiple_choice", "chain_of_thought", "multiple_choice_cot")
        }
        self.cot_trigger, self.conclusion = pick(t["cot_triggers"]), pick(t["conclusions"])
        self.options_intro, self.labels = pick(t["options_intros"]), pick(t["option_labels"])
        self.option_delim, self.choice_form = pick(t["option_delimiters"]), pick(t["choice_forms"])
        self.speakers, self.speaker_fmt = pick(t["speakers"]), pick(t["speaker_formats"])
        self.dialog_opener, self.next_turn = pick(t["dialog_openers"]), pick(t["next_turn_prompts"])
        self.numbered, self.numbered_headers = pick(t["numbered_styles"]), pick(t["numbered_headers"])
        self.inline, self.inline_label = pick(t["inline_framings"]), pick(t["inline_example_labels"])

    def _label(self, k: int) -> str:
        names = self.labels["names"]
        if names == "upper":
            return chr(ord("A") + k) if k < 26 else str(k + 1)
        if names == "lower":
            return chr(ord("a") + k) if k < 26 else str(k + 1)
        if names == "roman":
            return _ROMAN[k] if k < len(_ROMAN) else str(k + 1)
        return "" if names == "none" else str(k + 1)

    def body(self, p: ParsedPair) -> tuple[str, str]:
        """The (question, answer) body of one pair in its family's pattern for this chain."""
        if p.kind == "verbatim":  # a fallback keeps the synthesizer's own wording
            return p.question, p.answer
        pattern = self.family[p.kind]
        values = {
            "question": p.question,
            "answer": p.answer,
            "final": p.answer,
            "rationale": p.rationale,
            "cot_trigger": self.cot_trigger,
            "conclusion": self.conclusion,
            "options_intro": self.options_intro,
        }
        if p.options:
            options = list(p.options)
            correct = options[p.correct] if p.correct < len(options) else None
            if correct is None:
                correct = self.rng.choice(self.t["none_of_the_above"])
                options.append(correct)
                order = [*self._shuffled(len(options) - 1), len(options) - 1]  # "none" stays last
            else:
                order = self._shuffled(len(options))
            items, choice = [], ""
            for k, j in enumerate(order):
                label = self._label(k)
                items.append(fill(self.labels["item"], label=label, option=options[j]))
                if options[j] == correct:
                    ref = fill(self.labels["ref"], label=label)
                    choice = fill(self.choice_form, ref=ref, option=options[j]) if ref else options[j]
            values.update(options=self.option_delim.join(items), choice=choice.strip())
        return fill(pattern["q"], **values), fill(pattern["a"], **values)

    def _shuffled(self, n: int) -> list[int]:
        order = list(range(n))
        self.rng.shuffle(order)
        return order

    def qa(self, q: str, a: str) -> str:
        return f"{self.qa_prefix[0]}{q}{self.joiner}{self.qa_prefix[1]}{a}"

    def turn(self, speaker: str, text: str) -> str:
        return fill(self.speaker_fmt, speaker=speaker, turn=text)

    def tasks(self, bodies: list[tuple[str, str]]) -> str:
        """The tasks about one text, in this chain's layout."""
        asker, answerer = self.speakers
        if self.layout == "classic":
            return _join([self.header, self.pair_sep.join(self.qa(q, a) for q, a in bodies)], "\n")
        if self.layout == "dialog":
            lines = [line for q, a in bodies for line in (self.turn(asker, q), self.turn(answerer, a))]
            return _join([self.dialog_opener, "\n".join(lines)], "\n")
        if self.layout == "numbered":
            qs = "\n".join(fill(self.numbered["question"], n=str(k), body=q) for k, (q, _) in enumerate(bodies, 1))
            ans = "\n".join(fill(self.numbered["answer"], n=str(k), body=a) for k, (_, a) in enumerate(bodies, 1))
            return _join(
                [_join([self.numbered_headers[0], qs], "\n"), _join([self.numbered_headers[1], ans], "\n")], "\n\n"
            )
        if self.layout == "inline":
            shots = [
                _join([fill(self.inline_label, n=str(k)), self.qa(q, a)], "\n")
                for k, (q, a) in enumerate(bodies[:-1], 1)
            ]
            return _join(
                [
                    _join([self.inline[0], "\n\n".join(shots)], "\n"),
                    _join([self.inline[1], self.qa(*bodies[-1])], "\n"),
                ],
                "\n\n",
            )
        # next_turn: earlier pairs as the dialog history, the last pair as the turn to produce
        history = "\n".join(line for q, a in bodies[:-1] for line in (self.turn(asker, q), self.turn(answerer, a)))
        q, a = bodies[-1]
        prompt = fill(self.next_turn, answerer=answerer)
        return _join(
            [
                _join([self.dialog_opener, history], "\n"),
                _join([prompt, self.turn(asker, q)], "\n"),
                self.turn(answerer, a),
            ],
            "\n",
        )

    def example(self, text: str, bodies: list[tuple[str, str]]) -> str:
        if not bodies:
            return text
        if self.inverted:
            return _join([_join([self.inv_header, self.tasks(bodies)], "\n"), fill(self.inv_intro, text=text)], "\n\n")
        return _join([fill(self.intro, text=text), self.tasks(bodies)], "\n\n")


def _join(parts: list[str], sep: str) -> str:
    return sep.join(p for p in parts if p)


def render_chain(
    examples: list[tuple[str, list[dict]]], rng: random.Random, templates: dict | None = None
) -> dict[str, Any]:
    """One pre-training text from a chain of `(text, pairs)` examples (SPEC 3), plus its counts."""
    t = templates or load_templates()
    unanswerable = frozenset(_norm(s) for s in t["unanswerable_answers"])
    parsed, fallbacks = [], 0
    for _, pairs in examples:
        rows = [parse_pair(p, unanswerable) for p in pairs]
        fallbacks += sum(fell for _, fell in rows)
        parsed.append([p for p, _ in rows])
    counts = [len(p) for p in parsed if p]
    style = _Style(t, rng, min(counts) if counts else 0)
    rendered = [
        style.example(text, [style.body(p) for p in ps]) for (text, _), ps in zip(examples, parsed, strict=True)
    ]
    n_pairs = sum(counts)
    return {
        "text": style.example_sep.join(rendered),
        "kind": "augmented" if n_pairs else "raw",
        "n_pairs": n_pairs,
        "layout": style.layout if n_pairs else "raw",
        "inverted": bool(n_pairs) and style.inverted,
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
    ids of the rows rendered, or `chain:shot` without `doc_id`), `fallback_pairs` (option/CoT pairs
    that did not parse and were rendered free-form with their original wording).
    """
    for col in (text_column, "pairs"):
        if col not in batch:
            raise KeyError(f"templify needs a {col!r} column; the columns are {sorted(batch)}")
    t = load_templates(templates)
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
        row = render_chain(examples, rng, t)
        earlier_keys = [e.get("key") or f"{chains[i]}:{shots[i] - len(earlier) + k}" for k, e in enumerate(earlier)]
        row["source"] = [*earlier_keys, keys[i] if keys else f"{chains[i]}:{shots[i]}"]
        for c in TEMPLIFY_COLUMNS:
            out[c].append(row[c])
    return out
