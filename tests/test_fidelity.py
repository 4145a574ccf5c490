"""Fidelity (SPEC 1): the synthesizer gets exactly the token ids it was tuned on.

`tests/data/tokenizer_goldens.json` holds the ids of 264 prompts (0, 1 and 2 demos; special-token strings,
markup, CRLF, tabs, NBSP, emoji, CJK, RTL, 20,000-character words) and 89 decoded completions, made once with
transformers 4.44 `LlamaTokenizerFast(legacy=True)` from Mistral-7B-v0.1's `tokenizer.model` by
`scripts/make_tokenizer_goldens.py` in a throwaway environment. Whatever transformers is installed, our ids
must equal them.
"""

from pathlib import Path

import pytest
from conftest import GOLDENS, REAL_TOKENIZER

from ipt_data import Synthesizer, build_prompt, parse_pairs, render_pairs
from ipt_data.method.tokenizer import PromptEncoder
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

SPECIAL_STRINGS = ("<s>", "</s>", "<unk>")


def demos(case):
    return [(text, pairs) for text, pairs in case["demos"]]


def strings(case):
    return [
        case["text"],
        *(t for t, _ in case["demos"]),
        *(v for _, ps in case["demos"] for p in ps for v in p.values()),
    ]


@pytest.fixture(scope="module")
def real():
    return PromptEncoder(str(REAL_TOKENIZER))


def test_the_fixture_uses_the_real_tokenizer():
    assert (Path(TINY_SYNTHESIZER) / "tokenizer.json").read_bytes() == (REAL_TOKENIZER / "tokenizer.json").read_bytes()
    assert len(GOLDENS["prompts"]) >= 200 and {len(c["demos"]) for c in GOLDENS["prompts"]} == {0, 1, 2}


def test_spec_example(real):
    ids = real.encode_prompt("Hello world.")
    tokens = [real.tokenizer.id_to_token(i) for i in ids]
    assert ids[:5] == [1, 28705, 523, 3185, 28767]
    assert tokens == ["<s>", "▁", "▁<", "CON", ">", "▁Hello", "▁world", ".", "▁</", "CON", ">", "<0x0A>", "<0x0A>"]


@pytest.mark.parametrize("source", ["real", "fixture"])
def test_prompt_ids_equal_the_goldens(real, encoder, source):
    enc = real if source == "real" else encoder
    prompts = GOLDENS["prompts"]
    ours = enc.encode_parts_batch([[*_parts(c)] for c in prompts])
    wrong = [c["name"] for c, ids in zip(prompts, ours, strict=True) if ids != c["ids"]]
    assert not wrong, f"{len(wrong)} of {len(prompts)} differ: {wrong[:10]}"
    for case in prompts[:40]:  # the one-prompt path gives the same
        assert enc.encode_prompt(case["text"], demos(case)) == case["ids"]


def _parts(case):
    from ipt_data.method.wire import prompt_parts

    return prompt_parts(case["text"], demos(case))


def test_one_bos_per_example_and_clean_texts_equal_the_whole_string(real):
    for case in GOLDENS["prompts"]:
        ids = case["ids"]
        assert ids[0] == real.bos_id and ids.count(real.bos_id) == len(case["demos"]) + 1
        assert ids.count(real.eos_id) == len(case["demos"])
        if not any(s in x for x in strings(case) for s in SPECIAL_STRINGS):
            prompt = build_prompt(case["text"], demos(case))
            assert real.tokenizer.encode(prompt, add_special_tokens=False).ids == ids, case["name"]


def test_decoding_equals_the_goldens(real):
    for case in GOLDENS["decode"]:
        assert real.decode(case["ids"]) == case["text"], case["name"]
    assert real.decode_batch([c["ids"] for c in GOLDENS["decode"]]) == [c["text"] for c in GOLDENS["decode"]]


def test_prompt_text_for_text_only_servers_round_trips(real):
    for case in GOLDENS["prompts"]:
        if not any(s in x for x in strings(case) for s in (*SPECIAL_STRINGS, "▁")):  # "▁" decodes as a space
            assert real.decode_prompt(case["ids"]) == build_prompt(case["text"], demos(case)), case["name"]


class Recording:
    """Answers each text with the pairs of `answers` (text -> pairs) and records the prompts."""

    name = "recording"
    max_model_len = 100_000

    def __init__(self, encoder, answers):
        self.encoder, self.answers, self.prompts = encoder, answers, []

    def generate(self, prompts, **kwargs):
        from ipt_data.engines import Completion

        self.prompts += [list(p) for p in prompts]
        texts = [self.encoder.decode_prompt(p).rsplit(" <CON> ", 1)[1][: -len(" </CON>\n\n")] for p in prompts]
        return [
            Completion(render_pairs(self.answers.get(t, [])), "stop", len(p), 0)
            for t, p in zip(texts, prompts, strict=True)
        ]


@pytest.mark.parametrize("n_demos", [0, 1])
def test_synthesize_sends_the_goldens_ids(encoder, n_demos):
    """Golden cases as rows of a batch: a 0-demo case alone, a 1-demo case as a chain of two whose first row
    gets the golden pairs. The engine receives exactly the golden ids."""
    cases = [c for c in GOLDENS["prompts"] if len(c["demos"]) == n_demos and _round_trips(c)]
    rows, answers = [], {}
    for c in cases:
        rows += [t for t, _ in c["demos"]] + [c["text"]]
        answers.update({t: p for t, p in c["demos"]})
    engine = Recording(encoder, answers)
    Synthesizer(
        model=TINY_SYNTHESIZER, engine=engine, rounds=n_demos + 1, chain_order="adjacent", max_model_len=100_000
    )({"text": rows})
    assert len(cases) >= 20
    assert engine.prompts[-len(cases) :] == [c["ids"] for c in cases]


def _round_trips(case):
    """The case's texts survive `decode_prompt` and its pairs survive render + parse (so the fake engine can
    answer with them)."""
    usable = all(t.strip() for t in [case["text"], *(t for t, _ in case["demos"])])  # blank texts are not sent
    texts_ok = usable and not any(s in x for x in strings(case) for s in (*SPECIAL_STRINGS, "▁", "<CON>", "</CON>"))
    return texts_ok and all(parse_pairs(render_pairs(pairs)) == pairs for _, pairs in case["demos"])
