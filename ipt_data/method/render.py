"""How a chain's pairs are written around its texts: `ChainStyle` holds every template choice of one chain.

A pair becomes a task (`task_rates` in the template data: for a free-form pair, answering it, its
inverse or question generation; for a multiple-choice pair, with or without its options; for CoT,
reasoning first, answer first or inverse), drawn per pair; the pattern of each task, the layout and
every wording are drawn once per chain, so the examples of a chain read alike (SPEC 3).
"""

from __future__ import annotations

import random
import re

from ipt_data.method.pair_parse import ParsedPair

# SPEC 3: layout weights (percent) by number of pairs, and the share of texts with tasks first.
FEW_PAIR_LAYOUTS = {"classic": 95, "dialog": 5}
LAYOUT_WEIGHTS = {"classic": 80, "dialog": 5, "numbered": 5, "inline": 5, "next_turn": 5}
INVERSION_RATE = 0.05
FAMILIES = ("free_form", "multiple_choice", "chain_of_thought", "multiple_choice_cot")
VALUES = ("question", "answer", "final", "rationale", "cot_trigger", "conclusion", "options_intro", "options", "choice")

SENTENCE_END = (".", "?", "!", "…")
_PLACEHOLDER = re.compile(r"\{(\w+)\}([.?!]?)")
_QUOTES = "\"'”’"
_NEWLINES = re.compile(r"\n+")
_GOES_ON = re.compile(r" [a-z]|[,;:)]")
_ANSWER_LABEL = re.compile(r"(?:Answer|My answer|Response|Reply|Output): ")
_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii"]


def fill(template: str, **values: str) -> str:
    """Fill `{name}` placeholders in one pass: values are inserted literally, never re-read. A `.`, `?` or
    `!` right after a placeholder is left out when the value already ends a sentence (no `..`, no `?.`), and
    a value's final `.` is left out where the sentence goes on after it ("the answer Korea and ...")."""

    def one(m: re.Match) -> str:
        name, mark = m.group(1), m.group(2)
        if name not in values:
            return m.group(0)
        value = values[name]
        if mark:
            return value if value.endswith(SENTENCE_END) else value + mark
        if value.endswith(".") and not value.endswith("..") and _goes_on(template, m.end()):
            return value[:-1]
        return value

    return _PLACEHOLDER.sub(one, template)


def _goes_on(template: str, at: int) -> bool:
    """Whether the sentence goes on after position `at` of `template` (past a closing quote): a lower-case
    word, a comma, a colon, a closing bracket, or a sentence mark after the quote."""
    quoted = template[at : at + 1] in _QUOTES and at < len(template)
    after = at + 1 if quoted else at
    return bool(_GOES_ON.match(template, after)) or (quoted and template[after : after + 1] in (".", "?", "!"))


def join(parts: list[str], sep: str) -> str:
    return sep.join(p for p in parts if p)


def _unlabelled(answer: str) -> str:
    """An answer body without an answer label of its own ("Answer: X" -> "X") where the layout labels it."""
    m = _ANSWER_LABEL.match(answer)
    return answer[m.end() :] if m else answer


def _ends_with_instruction(intro: str) -> bool:
    """An intro such as "{text}\\n\\nAnswer some questions about this text." already introduces the tasks."""
    return bool(re.search(r"[A-Za-z]", intro.split("{text}")[-1]))


class ChainStyle:
    """Every template choice for one chain, drawn up front from its RNG (the per-pair task and option order
    are drawn from the same RNG as the pairs are rendered, in order)."""

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
        # a pair must be set apart from the next more than its answer is from its question (a one-line joiner
        # becomes a newline after a multi-line question)
        needed = max(2, self.joiner.count("\n") + 1)
        if self.pair_sep.count("\n") < needed:
            self.pair_sep = "\n" * needed
        if not self.example_sep.strip() and self.example_sep.count("\n") <= self.pair_sep.count("\n"):
            # a new passage must stand apart more than a new pair: use a visible separator
            self.example_sep = rng.choice([s for s in t["example_separators"] if s.strip()])
        self.tasks_of = {f: t["task_rates"][f] for f in FAMILIES}
        self.pattern = {task: pick(t[task]) for f in FAMILIES for task in self.tasks_of[f]}
        self.cot_trigger, self.conclusion = pick(t["cot_triggers"]), pick(t["conclusions"])
        self.options_intro, self.labels = pick(t["options_intros"]), pick(t["option_labels"])
        self.option_delim, self.choice_form = pick(t["option_delimiters"]), pick(t["choice_forms"])
        self.speakers, self.speaker_fmt = pick(t["speakers"]), pick(t["speaker_formats"])
        self.dialog_opener, self.next_turn = pick(t["dialog_openers"]), pick(t["next_turn_prompts"])
        self.numbered, self.numbered_headers = pick(t["numbered_styles"]), pick(t["numbered_headers"])
        self.inline, self.inline_label = pick(t["inline_framings"]), pick(t["inline_example_labels"])
        if self.labels["names"] == "none" and "\n" not in self.option_delim:  # bullets only as a column
            self.labels = {"names": "none", "item": "{option}", "ref": ""}
        if ": " in self.labels["item"] and "\n" not in self.option_delim:  # "A: x B: y" reads as dialog turns
            self.option_delim = "\n"
        answer_marks = {self.qa_prefix[1].strip().rstrip(":"), self.speakers[1]}
        if self.labels["names"] == "upper" and answer_marks & {"A", "B", "C", "D"}:  # "A. no" beside "A: no"
            self.labels = {**self.labels, "names": "lower"}
        # the words before the tasks already introduce them: no second instruction on top
        self.introduced = bool(self.inv_header) if self.inverted else _ends_with_instruction(self.intro)

    def _label(self, k: int) -> str:
        names = self.labels["names"]
        if names == "upper":
            return chr(ord("A") + k) if k < 26 else str(k + 1)
        if names == "lower":
            return chr(ord("a") + k) if k < 26 else str(k + 1)
        if names == "roman":
            return _ROMAN[k] if k < len(_ROMAN) else str(k + 1)
        return "" if names == "none" else str(k + 1)

    def body(self, p: ParsedPair) -> tuple[str, str, str]:
        """`(task, question, answer)`: one pair as a task drawn from its family's rates, in this chain's
        pattern for that task."""
        if p.kind == "verbatim":  # a fallback keeps the synthesizer's own wording
            return "verbatim", p.question, p.answer
        rates = self.tasks_of[p.kind]
        task = self.rng.choices(list(rates), weights=list(rates.values()))[0]
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
            if p.correct >= len(p.options) and "{options}" not in str(self.pattern[task]):
                task = p.kind  # "none of them" is only an answer beside the options
            values.update(self._options(p))
        q, a = self.pattern[task]["q"], self.pattern[task]["a"]
        if "\n" in self.option_delim:  # a list of one option per line starts on its own line, unbracketed
            q = q.replace("({options_intro} {options})", "\n{options_intro}\n{options}")
            q, a = q.replace(" {options}", "\n{options}"), a.replace(" {options}", "\n{options}")
        return task, fill(q, **values), fill(a, **values)

    def _options(self, p: ParsedPair) -> dict[str, str]:
        """The listed options (shuffled; an added "none of them" item stays last), the correct one's text as
        `answer` and how the answer names it as `choice`."""
        options = list(p.options)
        if p.correct < len(options):
            order = self._shuffled(len(options))
        else:
            options.append(self.rng.choice(self.t["none_of_the_above"]))
            order = [*self._shuffled(len(options) - 1), len(options) - 1]
        correct = options[p.correct]
        items, choice = [], correct  # unlabelled items are named by their text
        for k, j in enumerate(order):
            label = self._label(k)
            item = fill(self.labels["item"], label=label, option=options[j])
            items.append(item)
            if j == p.correct and label:
                choice = fill(self.choice_form, ref=fill(self.labels["ref"], label=label), item=item, option=correct)
        return {"options": self.option_delim.join(items), "choice": choice.strip(), "answer": correct}

    def _shuffled(self, n: int) -> list[int]:
        order = list(range(n))
        self.rng.shuffle(order)
        return order

    def qa(self, q: str, a: str) -> str:
        # on one line only with an answer label, after a question that ends a sentence; never after an option
        one_line = "\n" not in q and q.endswith((*SENTENCE_END, ":")) and bool(self.qa_prefix[1].strip())
        joiner = "\n" if self.joiner == " " and not one_line else self.joiner
        if self.qa_prefix[1].strip():  # "Key: Answer: B": one label is enough
            a = _unlabelled(a)
        return f"{self.qa_prefix[0]}{q}{joiner}{self.qa_prefix[1]}{a}"

    def turn(self, speaker: str, text: str) -> str:
        return fill(self.speaker_fmt, speaker=speaker, turn=text)

    def tasks(self, bodies: list[tuple[str, str]]) -> str:
        """The tasks about one text, in this chain's layout."""
        asker, answerer = self.speakers
        lead = (lambda s: "") if self.introduced else (lambda s: s)
        if self.layout in ("dialog", "numbered", "next_turn"):  # a speaker or a number already marks the answer
            bodies = [(q, _unlabelled(a)) for q, a in bodies]
        if self.layout == "classic":
            pairs = [self.qa(q, a) for q, a in bodies]
            inside = max((len(run) for p in pairs for run in _NEWLINES.findall(p)), default=0)
            sep = self.pair_sep if self.pair_sep.count("\n") > inside else "\n" * min(3, inside + 1)
            return join([lead(self.header), sep.join(pairs)], "\n")
        if self.layout == "dialog":
            lines = [line for q, a in bodies for line in (self.turn(asker, q), self.turn(answerer, a))]
            return join([lead(self.dialog_opener), "\n".join(lines)], "\n")
        if self.layout == "numbered":
            qs = "\n".join(fill(self.numbered["question"], n=str(k), body=q) for k, (q, _) in enumerate(bodies, 1))
            ans = "\n".join(fill(self.numbered["answer"], n=str(k), body=a) for k, (_, a) in enumerate(bodies, 1))
            return join(
                [join([lead(self.numbered_headers[0]), qs], "\n"), join([self.numbered_headers[1], ans], "\n")], "\n\n"
            )
        if self.layout == "inline":
            shots = [
                join([fill(self.inline_label, n=str(k)), self.qa(q, a)], "\n")
                for k, (q, a) in enumerate(bodies[:-1], 1)
            ]
            return join(
                [
                    join([lead(self.inline[0]), "\n\n".join(shots)], "\n"),
                    join([self.inline[1], self.qa(*bodies[-1])], "\n"),
                ],
                "\n\n",
            )
        # next_turn: earlier pairs as the dialog history, the last pair as the turn to produce
        history = "\n".join(line for q, a in bodies[:-1] for line in (self.turn(asker, q), self.turn(answerer, a)))
        q, a = bodies[-1]
        prompt = fill(self.next_turn, answerer=answerer)
        return join(
            [
                join([lead(self.dialog_opener), history], "\n"),
                join([prompt, self.turn(asker, q)], "\n"),
                self.turn(answerer, a),
            ],
            "\n",
        )

    def example(self, text: str, bodies: list[tuple[str, str]]) -> str:
        if not bodies:
            return text
        text = text.strip()
        if self.inverted:
            return join([join([self.inv_header, self.tasks(bodies)], "\n"), fill(self.inv_intro, text=text)], "\n\n")
        return join([fill(self.intro, text=text), self.tasks(bodies)], "\n\n")
