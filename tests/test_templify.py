import copy
import json
import random
from collections import Counter

import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_data import templify_batch
from ipt_data.method.pair_parse import Unanswerable, parse_pair
from ipt_data.method.render import FEW_PAIR_LAYOUTS, LAYOUT_WEIGHTS, ChainStyle, fill
from ipt_data.stages.templify import load_templates, render_chain
from ipt_data.testing.fixtures import synthetic_example

UNANSWERABLE = Unanswerable(["none of the above", "unanswerable"])


def chain_rows(n_chains, rounds, seed=0):
    """Synthesize-shaped rows: chains of `rounds` inheriting rows built from the fixture's world."""
    rng = random.Random(seed)
    rows = []
    for c in range(n_chains):
        members = [synthetic_example(rng) for _ in range(rounds)]
        for s, (text, pairs) in enumerate(members):
            last = s == rounds - 1
            prefix = [{"text": t, "pairs": p} for t, p in members[:s]] if last and s else []
            rows.append(
                {
                    "text": text,
                    "pairs": pairs,
                    "chain": f"c{c}",
                    "shot": s,
                    "inherits": s > 0,
                    "continued": not last,
                    "chain_prefix": json.dumps(prefix) if prefix else "",
                }
            )
    return rows


def batch_of(rows):
    return {k: [r[k] for r in rows] for k in rows[0]}


def parts_of(pair, task):
    """The parts of `pair` that its rendering as `task` must show: everything but the answer of a question
    generation task and the options of an open multiple-choice task."""
    parsed, fell_back = parse_pair(pair, UNANSWERABLE)
    if fell_back:
        return [pair["instruction"].strip(), pair["response"].strip()]
    if task == "free_form_question":
        return [parsed.question]
    options = [] if task == "multiple_choice_open" else list(parsed.options)
    return [parsed.question, parsed.answer, *options, *([parsed.rationale] if parsed.rationale else [])]


def test_every_text_and_pair_part_appears_and_one_text_per_chain():
    rows = chain_rows(300, 3)
    out = templify_batch(batch_of(rows), seed=1)
    assert len(out["text"]) == 300 and set(out["kind"]) == {"augmented"}
    for k, text in enumerate(out["text"]):
        members = rows[3 * k : 3 * k + 3]
        assert out["source"][k] == [f"c{k}:0", f"c{k}:1", f"c{k}:2"]
        assert out["n_pairs"][k] == sum(len(m["pairs"]) for m in members)
        tasks = iter(p["task"] for p in out["pairs"][k])
        for m in members:
            assert m["text"] in text
            for pair in m["pairs"]:
                for part in parts_of(pair, next(tasks)):
                    assert part.removesuffix(".") in text, (part, text)  # mid-sentence, its period goes


def test_cot_and_options_are_parsed():
    cot = {
        "instruction": "Is it big?\nLet's think step by step.",
        "response": "It is huge.\nTherefore, the answer is yes",
    }
    p, fell = parse_pair(cot, UNANSWERABLE)
    assert (p.kind, p.question, p.rationale, p.answer, fell) == (
        "chain_of_thought",
        "Is it big?",
        "It is huge",
        "yes",
        False,
    )
    mc = {"instruction": "Pick?\nOptions:\n- red\n- blue\n- green", "response": "Blue."}
    p, fell = parse_pair(mc, UNANSWERABLE)
    assert (p.kind, p.options, p.correct, fell) == ("multiple_choice", ("red", "blue", "green"), 1, False)
    mc_cot = {
        "instruction": "Pick?\nOptions:\n- red\n- blue\nLet's think step by step.",
        "response": "Because.\nTherefore, the answer is red",
    }
    assert parse_pair(mc_cot, UNANSWERABLE)[0].kind == "multiple_choice_cot"
    none = {"instruction": "Pick?\nOptions:\n- red\n- blue", "response": "None of the above"}
    p, fell = parse_pair(none, UNANSWERABLE)
    assert p.correct == 2 and not fell


def test_unmatched_options_and_malformed_cot_fall_back_and_are_counted():
    pairs = [
        {"instruction": "Pick?\nOptions:\n- red\n- blue", "response": "purple"},  # matches no option
        {"instruction": "Why?\nLet's think step by step.", "response": "no marker here"},  # malformed CoT
        {"instruction": "Fine?", "response": "Yes."},
    ]
    out = render_chain([("Some text.", pairs)], random.Random(0))
    assert out["fallback_pairs"] == 2 and out["n_pairs"] == 3
    for p in pairs:
        assert p["instruction"] in out["text"] and p["response"] in out["text"]


def plain_mc_style(seed: int, labels: dict) -> ChainStyle:
    """A chain style with a bare multiple-choice pattern, one item per line, and the answer = the item's ref."""
    style = ChainStyle(load_templates(), random.Random(seed), 1)
    style.tasks_of["multiple_choice"] = {"multiple_choice": 100}
    style.pattern["multiple_choice"] = {"q": "{question}\n{options}", "a": "{choice}"}
    style.labels, style.option_delim, style.choice_form = labels, "\n", "{ref}"
    return style


def test_answers_are_remapped_to_the_shuffled_item_names():
    pair = {"instruction": "Which colour?\nOptions:\n- red\n- blue\n- green\n- white", "response": "green"}
    parsed, _ = parse_pair(pair, UNANSWERABLE)
    orders = set()
    for s in range(200):
        style = plain_mc_style(s, {"names": "upper", "item": "{label}. {option}", "ref": "{label}"})
        _, q, a = style.body(parsed)
        items = dict(line.split(". ", 1) for line in q.split("\n")[1:])
        assert items[a] == "green" and sorted(items.values()) == ["blue", "green", "red", "white"]
        orders.add(tuple(items.values()))
    assert len(orders) > 10  # shuffled per question


def test_unanswerable_maps_to_a_none_of_the_above_item():
    pair = {"instruction": "Which?\nOptions:\n- red\n- blue", "response": "unanswerable"}
    parsed, _ = parse_pair(pair, UNANSWERABLE)
    nones = {s.lower() for s in load_templates()["none_of_the_above"]}
    for s in range(50):
        style = plain_mc_style(s, {"names": "digits", "item": "({label}) {option}", "ref": "({label})"})
        _, q, a = style.body(parsed)
        items = dict(line.split(" ", 1) for line in q.split("\n")[1:])
        assert items[a].lower() in nones and a == "(3)"  # the none option comes last


def test_option_order_differs_between_questions_of_one_text():
    pairs = [
        {"instruction": f"Q{k}?\nOptions:\n- a{k}\n- b{k}\n- c{k}\n- d{k}\n- e{k}", "response": f"c{k}"}
        for k in range(8)
    ]
    text = render_chain([("T.", pairs)], random.Random(5))["text"]
    listed = [k for k in range(8) if f"a{k}" in text]  # half are asked without their options
    positions = {tuple(sorted("abcde", key=lambda x, k=k: text.index(f"{x}{k}"))) for k in listed}
    assert len(positions) > 1


def test_layout_frequencies_and_inversion_over_20000_chains():
    rng = random.Random(0)
    many = [
        (f"text {k}", [{"instruction": f"q{k}a?", "response": "a"}, {"instruction": f"q{k}b?", "response": "b"}])
        for k in range(20000)
    ]
    few = [(f"text {k}", [{"instruction": f"q{k}?", "response": "a"}]) for k in range(20000)]
    for examples, weights in ((many, LAYOUT_WEIGHTS), (few, FEW_PAIR_LAYOUTS)):
        rendered = [render_chain([ex], random.Random(rng.random())) for ex in examples]
        freq = Counter(r["layout"] for r in rendered)
        for layout, w in weights.items():
            assert abs(100 * freq[layout] / len(rendered) - w) < 1.0, (layout, freq)
        inverted = sum(r["inverted"] for r in rendered) / len(rendered)
        assert abs(inverted - 0.05) < 0.01


def test_inverted_texts_put_tasks_first():
    for s in range(400):
        out = render_chain([("THE READING MATERIAL.", [{"instruction": "QQQ?", "response": "AAA"}])], random.Random(s))
        if out["inverted"]:
            assert out["text"].index("QQQ?") < out["text"].index("THE READING MATERIAL.")
        else:
            assert out["text"].index("QQQ?") > out["text"].index("THE READING MATERIAL.")


def test_deterministic_seeded_and_input_not_mutated():
    rows = chain_rows(50, 2)
    batch = batch_of(rows)
    before = copy.deepcopy(batch)
    a = templify_batch(batch, seed=7)
    assert batch == before
    assert templify_batch(batch, seed=7) == a
    b = templify_batch(batch, seed=8)
    assert sum(x != y for x, y in zip(a["text"], b["text"], strict=True)) > 40


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 7])
def test_batches_that_cut_chains_change_nothing(batch_size):
    rows = chain_rows(20, 3)
    ds = Dataset.from_list(rows)
    whole = templify_batch(batch_of(rows), seed=0)
    out = ds.map(
        templify_batch, batched=True, batch_size=batch_size, remove_columns=ds.column_names, fn_kwargs={"seed": 0}
    )
    assert out["text"] == whole["text"] and len(out) == 20
    shuffled = ds.shuffle(seed=1).map(
        templify_batch, batched=True, batch_size=batch_size, remove_columns=ds.column_names
    )
    assert sorted(shuffled["text"]) == sorted(whole["text"])  # reordering does not split chains either


def test_rows_without_pairs_stay_raw_and_empty_rows_vanish():
    batch = {"text": ["Raw text, untouched.\n", "", None, "   "], "pairs": [[], [], [], []]}
    out = templify_batch(batch)
    assert out["text"] == ["Raw text, untouched.\n"] and out["kind"] == ["raw"] and out["layout"] == ["raw"]
    empty = templify_batch({"text": [], "pairs": []})
    assert empty["text"] == []
    all_empty = templify_batch({"text": ["", None], "pairs": [[], None]})
    assert all_empty["text"] == []


def test_markup_and_braces_render_literally():
    nasty = "{question} {{ }} {answer} <QUE> </END> %s {0}"
    pairs = [
        {"instruction": nasty + "?", "response": nasty},
        {"instruction": "x?\nOptions:\n- {a}\n- {{b}}", "response": "{a}"},
    ]
    for s in range(30):
        out = render_chain([(nasty, pairs)], random.Random(s))
        shown = 2 if out["pairs"][0]["task"] == "free_form_question" else 3  # the text, the question, the answer
        assert out["text"].count(nasty) >= shown and "{a}" in out["text"]
        assert "{{b}}" in out["text"] or out["pairs"][1]["task"] == "multiple_choice_open"
    assert fill("{x} and {y}", x="{y}", y="Y") == "{y} and Y"


def test_template_set_breadth():
    t = load_templates()
    for family in ("free_form", "multiple_choice", "chain_of_thought", "multiple_choice_cot", "qa_prefixes", "intros"):
        assert len(t[family]) >= 24, family
    assert len(t["option_labels"]) >= 12 and len(t["speakers"]) >= 12


@settings(max_examples=60, deadline=None)
@given(
    st.text(min_size=1),
    st.lists(st.tuples(st.text(min_size=1), st.text(min_size=1)), max_size=4),
    st.integers(0, 10**6),
)
def test_any_unicode_renders_and_contains_its_input(text, qa, seed):
    if not text.strip():
        return
    pairs = [{"instruction": q, "response": a} for q, a in qa]
    out = templify_batch({"text": [text], "pairs": [pairs]}, seed=seed)
    # a raw text comes out as it is; around tasks, its surrounding whitespace is trimmed
    assert len(out["text"]) == 1 and (text if not pairs else text.strip()) in out["text"][0]
