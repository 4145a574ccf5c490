"""Templify's breadth of tasks (inverse, question generation, open multiple choice, answer first), the
recognised "none of them" wordings, and the glitches no rendering may have (issue 14)."""

import itertools
import json
import random
import re
from collections import Counter

import pytest

from ipt_data import templify_batch
from ipt_data.method.pair_parse import normalize_answer, parse_pair
from ipt_data.method.render import LAYOUT_WEIGHTS, VALUES, ChainStyle, fill
from ipt_data.stages.templify import _unanswerable, load_templates
from ipt_data.testing.fixtures import synthetic_example

T = load_templates()
UNANSWERABLE = _unanswerable(None)
NONE_WORDINGS = ["None of these.", "It cannot be determined", "Not enough information", "NO ANSWER", "unanswerable"]


def varied_pairs(rng: random.Random, pairs: list[dict]) -> list[dict]:
    """The fixture world's pairs with what makes renderings go wrong: finals and answers that end a sentence,
    questions without a question mark, yes/no options, "none of them" answers in several wordings."""
    out = []
    for p in pairs:
        q, a = p["instruction"], p["response"]
        if "Therefore, the answer is " in a and rng.random() < 0.5:
            a += "."
        elif "Options:" not in q and rng.random() < 0.2:
            a = a.rstrip(".") + rng.choice(["!", "?", ""])
        if rng.random() < 0.1:
            q = q.replace("?", "", 1)
        out.append({"instruction": q, "response": a})
    if rng.random() < 0.3:
        yes = rng.random() < 0.5
        out.append(
            {"instruction": "Is this about a person?\nOptions:\n- yes\n- no", "response": "yes" if yes else "no"}
        )
    if rng.random() < 0.2:
        cot = rng.random() < 0.3
        q = "Which planet is named?\nOptions:\n- Mars\n- Venus\n- Jupiter" + (
            "\nLet's think step by step." if cot else ""
        )
        a = rng.choice(NONE_WORDINGS)
        out.append({"instruction": q, "response": f"No planet is named.\nTherefore, the answer is {a}" if cot else a})
    return out


def varied_chains(n: int, rounds: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    cols: dict[str, list] = {k: [] for k in ("text", "pairs", "chain", "shot", "continued", "chain_prefix")}
    for c in range(n):
        members = []
        for _ in range(rounds):
            text, pairs = synthetic_example(rng)
            members.append((text + rng.choice(["", "", " ", "\n"]), varied_pairs(rng, pairs)))
        for s, (text, pairs) in enumerate(members):
            last = s == rounds - 1
            prefix = [{"text": t, "pairs": p} for t, p in members[:s]] if last and s else []
            for k, v in zip(
                cols, (text, pairs, f"c{c}", s, not last, json.dumps(prefix) if prefix else ""), strict=True
            ):
                cols[k].append(v)
    return cols


def family_of(task: str) -> str:
    return next((f for f, tasks in T["task_rates"].items() if task in tasks), task)


def test_task_data_is_complete_and_every_pattern_shows_the_pair():
    placeholder = re.compile(r"\{(\w+)\}")
    for family, rates in T["task_rates"].items():
        assert sum(rates.values()) == 100 and family in rates, family
        for task in rates:
            assert len(T[task]) >= 6, task
            for pattern in T[task]:
                both = pattern["q"] + pattern["a"]
                assert set(placeholder.findall(both)) <= set(VALUES), (task, pattern)
                assert "{question}" in both, (task, pattern)
                if task != "free_form_question":  # question generation shows the question only
                    assert "{answer}" in both or "{final}" in both or "{choice}" in both, (task, pattern)
                if "cot" in task or "chain" in task:
                    assert "{rationale}" in both, (task, pattern)
                if task.startswith("multiple_choice") and task != "multiple_choice_open":
                    assert "{options}" in both, (task, pattern)


@pytest.mark.parametrize(
    "wording",
    [
        "None of the above choices",
        "none of the above",
        "None of these",
        "NONE OF THESE!",
        "  none   of the  above. ",
        '"None of the above"',
        "(None of these)",
        "Unanswerable",
        "unanswerable.",
        "Not enough information",
        "not enough info",
        "It cannot be determined",
        "It can’t be determined.",
        "cannot be determined",
        "No answer",
        "No answer.",
        "There is no correct option",
        "Not one of the options fits",
        *T["none_of_the_above"],
    ],
)
def test_none_of_them_wordings_are_recognised(wording):
    assert UNANSWERABLE(wording)
    pair = {"instruction": "Which?\nOptions:\n- red\n- blue", "response": wording}
    parsed, fell = parse_pair(pair, UNANSWERABLE)
    assert not fell and parsed.correct == 2


@pytest.mark.parametrize("answer", ["yes", "No", "Paris", "blue", "Nobody", "There is no water on Mars", "Not in 1990"])
def test_real_answers_are_not_taken_for_none_of_them(answer):
    assert not UNANSWERABLE(answer)
    pair = {"instruction": "Which?\nOptions:\n- red\n- green", "response": answer}
    assert parse_pair(pair, UNANSWERABLE)[1]  # matches no option: rendered verbatim and counted


def test_normalize_answer():
    assert normalize_answer('  "None  of the Above."  ') == "none of the above"
    assert normalize_answer("It’s unclear!") == "it's unclear"


def test_rates_of_tasks_layouts_and_inversion_over_3000_chains():
    out = templify_batch(varied_chains(3000, 2), seed=0)
    assert len(out["text"]) == 3000
    by_family: dict[str, Counter] = {}
    for tasks in ([p["task"] for p in pairs] for pairs in out["pairs"]):
        for task in tasks:
            by_family.setdefault(family_of(task), Counter())[task] += 1
    for family, rates in T["task_rates"].items():
        counts = by_family[family]
        total = sum(counts.values())
        assert total > 400, family
        for task, rate in rates.items():
            share = 100 * counts[task] / total
            if family == "multiple_choice":
                continue  # "none of them" pairs are always listed with their options: checked below without them
            assert abs(share - rate) < 3, (task, share, rate)
    # SPEC 3's rates within three standard errors at this size (within 1 point over 20,000 chains: test_templify)
    layouts = Counter(out["layout"])
    for layout, weight in LAYOUT_WEIGHTS.items():
        error = 3 * 100 * ((weight / 100) * (1 - weight / 100) / 3000) ** 0.5
        assert abs(100 * layouts[layout] / 3000 - weight) < error, (layout, layouts)
    assert abs(100 * sum(out["inverted"]) / 3000 - 5) < 3 * 100 * (0.05 * 0.95 / 3000) ** 0.5


def test_open_multiple_choice_rate_among_pairs_with_a_listed_answer():
    rng = random.Random(1)
    tasks = Counter()
    for c in range(3000):
        text, pairs = synthetic_example(rng)
        out = templify_batch({"text": [text], "pairs": [pairs], "chain": [f"c{c}"]}, seed=0)
        tasks.update(
            p["task"] for p in out["pairs"][0] if p["task"].startswith("multiple_choice") and "cot" not in p["task"]
        )
    share = 100 * tasks["multiple_choice_open"] / sum(tasks.values())
    assert abs(share - T["task_rates"]["multiple_choice"]["multiple_choice_open"]) < 3, share


def test_every_multiple_choice_answer_names_the_correct_option_after_shuffling():
    checked = Counter()
    for s in range(3000):
        rng = random.Random(s)
        style = ChainStyle(T, rng, 2)
        n = rng.randint(2, 5)
        options = tuple(f"opt{k}" for k in range(n))
        correct = rng.randrange(n + 1)  # n: "none of them"
        answer = options[correct] if correct < n else "none of the above"
        parsed, _ = parse_pair(
            {"instruction": "Q?\nOptions:\n- " + "\n- ".join(options), "response": answer}, UNANSWERABLE
        )
        values = style._options(parsed)
        right = values["answer"]
        listed = [fill(style.labels["item"], label=style._label(k), option=right) for k in range(n + 1)]
        d = style.option_delim
        k = next(k for k, item in enumerate(listed) if f"{d}{item}{d}" in f"{d}{values['options']}{d}")
        label = style._label(k)
        named = (
            {right}
            if not label
            else {
                fill(style.labels["ref"], label=label),
                fill(style.labels["item"], label=label, option=right),
                right,
            }
        )
        assert values["choice"] in named, (values, style.labels)
        if correct == n:  # "none of them": one of our items, listed last
            assert UNANSWERABLE(right) and (k == n or not label) and values["options"].endswith(right)
        else:
            assert right == answer
        checked[style.labels["names"]] += 1
    assert len(checked) == 5


# --- glitches ---------------------------------------------------------------------------------------

GLITCHES = {
    "double period": re.compile(r"(?<!\.)\.\.(?!\.)"),
    "double question mark": re.compile(r"\?\?"),
    "question mark then period": re.compile(r"\?\."),
    "four newlines": re.compile(r"\n{4,}"),
    "unfilled placeholder": re.compile(
        r"\{{(?:{}|text|label|option|ref|item|n|body|speaker|turn|answerer)\}}".format("|".join(VALUES))
    ),
    "option word on a bare option": re.compile(r"\bOption (?:yes|no|Mars|Venus|Jupiter)\b"),
    # a period, then a lower-case word (item labels such as "b. yellow" or "ii. grey" aside)
    "a sentence cut by a period": re.compile(r"\b(?!(?:ii|iii|iv|vi|vii|viii|ix|xi|xii)\.)[a-z]{2,}\. [a-z]"),
    "first option on the line of its lead-in": re.compile(r": [-*+] "),
    "a period on both sides of a closing quote": re.compile(r"\.[\"”]\."),
    "a bracket opened around a column of options": re.compile(r"\([^()\n]*:\n"),
    "options labelled like dialog turns on one line": re.compile(r"\b[A-D]: [^\n]{1,30} [B-E]: "),
    "two answer labels": re.compile(
        r"\b(?:Answer|Key|Response|Output|A|Ans|Solution|Result|Completion|Reply)[:] "
        r"(?:Answer|My answer|Response|Reply|Output): "
    ),
}


def _instruction_lines() -> re.Pattern:
    """Every wording that introduces tasks; two of them in a row is a stacked instruction."""
    lines = {h for h in T["comprehension_headers"] + T["inverted_headers"] + T["dialog_openers"] if h}
    lines |= {h[0] for h in T["numbered_headers"] + T["inline_framings"] if h[0]}
    lines |= {i.split("{text}")[-1].strip() for i in T["intros"] if re.search("[A-Za-z]", i.split("{text}")[-1])}
    return re.compile("(?m)^(?:{})$".format("|".join(re.escape(x) for x in sorted(lines, key=len, reverse=True))))


def test_no_glitches_in_10000_rendered_chains():
    data = varied_chains(5000, 2, seed=3)
    data_one = varied_chains(5000, 1, seed=4)
    instructions = _instruction_lines()
    rendered = 0
    for batch, seed in ((data, 11), (data_one, 12)):
        out = templify_batch(batch, seed=seed)
        ends = [i for i, c in enumerate(batch["continued"]) if not c]
        for k, text in enumerate(out["text"]):
            i = ends[k]
            prefix = json.loads(batch["chain_prefix"][i]) if batch["chain_prefix"][i] else []
            inputs = [e["text"] for e in prefix] + [batch["text"][i]]
            pairs = [p for e in prefix for p in e["pairs"]] + batch["pairs"][i]
            inputs += [x for p in pairs for x in (p["instruction"], p["response"])]
            for name, glitch in GLITCHES.items():
                found = len(glitch.findall(text))
                assert found <= sum(len(glitch.findall(x)) for x in inputs), (name, text)
            assert text == text.strip(), text
            found = [m for m in instructions.finditer(text)]
            for a, b in itertools.pairwise(found):
                assert text[a.end() : b.start()].strip(), ("stacked instructions", a.group(), b.group(), text)
            options = {o for p in pairs for o in re.findall(r"\n- ([^\n]+)", p["instruction"])}
            style = ChainStyle(T, random.Random(f"{seed}/{batch['chain'][i]}/{batch['shot'][i]}"), 1)
            answer_prefix = style.qa_prefix[1]
            if answer_prefix.strip():
                for o in options:
                    assert f"{o} {answer_prefix}" not in text, ("answer on an option's line", text)
            rendered += 1
    assert rendered == 10000


def test_pairs_stand_apart_from_each_other_more_than_an_answer_from_its_question():
    for s in range(3000):
        style = ChainStyle(T, random.Random(s), 2)
        joiner = style.qa("Q\nx", "A").split("Q\nx")[1].split(style.qa_prefix[1] or "A")[0]
        assert style.pair_sep.count("\n") > max(style.joiner.count("\n"), 0 if style.qa_prefix[0] else 1)
        assert "\n" in joiner  # a multi-line question (options) never has its answer on its last line
        assert "\n" in style.qa("Where does Tara live", "In Perth.")  # nor a question that does not end a sentence
        if not style.example_sep.strip():  # a new passage stands apart more than a new pair
            assert style.example_sep.count("\n") > style.pair_sep.count("\n")
