"""Pair quality filters (ipt_data.quality.pair_filters): each filter on planted pairs, the order of reasons,
the `seen` threading, parse_filters' canonical form and errors, determinism."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from ipt_data.errors import ConfigError
from ipt_data.quality.ngrams import normalize
from ipt_data.quality.pair_filters import FILTERS, PairFilter, _words, normalize_question, parse_filters

TEXT = (
    "The Great Barrier Reef is the world's largest coral reef system, composed of over 2,900 individual reefs "
    "and 900 islands stretching for over 2,300 kilometres. The reef is located in the Coral Sea, off the coast "
    "of Queensland, Australia. It can be seen from outer space and is the world's biggest single structure made "
    "by living organisms. The reef was selected as a World Heritage Site in 1981. Climate change, pollution and "
    "crown-of-thorns starfish threaten the health of the reef, causing coral bleaching."
)
COT = "\nLet's think step by step."
THEREFORE = "\nTherefore, the answer is "


def pair(q: str, a: str) -> dict:
    return {"instruction": q, "response": a}


def mc(stem: str, options: list[str], answer: str) -> dict:
    return pair(stem + "\nOptions:\n- " + "\n- ".join(options), answer)


def judge(filters, pairs, text=TEXT, seen=None):
    return PairFilter(parse_filters(filters)).judge(text, pairs, seen)


# --- grounding -------------------------------------------------------------------------------------------


def test_grounding_extractive_kept_and_offtext_dropped():
    pairs = [
        pair("Where is the Great Barrier Reef located?", "In the Coral Sea, off the coast of Queensland, Australia."),
        pair("When did the reef become a World Heritage Site?", "1981"),
        pair("Who discovered the reef?", "Captain James Cook charted it during his voyage aboard Endeavour."),
        pair("When did the reef become a World Heritage Site?", "1975"),  # a number absent from the text
        pair("What is the reef?", "It is."),  # no content word, not yes/no
    ]
    assert judge("grounding", pairs) == [None, None, "ungrounded", "ungrounded", "ungrounded"]


def test_grounding_yes_no_and_unanswerable_are_grounded_by_definition():
    pairs = [
        pair("Can the reef be seen from space?", "Yes"),
        pair("Is the reef in the Atlantic?", "No, it is not."),
        pair("Is the reef in the Coral Sea?", "True"),
        pair("How many fish live on the reef?", "It cannot be determined from the passage."),
        mc("Which country's coast is the reef off?", ["Brazil", "Chile"], "None of the options"),
    ]
    assert judge("grounding", pairs) == [None] * 5


def test_grounding_multiple_choice_checks_the_option_text():
    good = mc("Where is the reef?", ["Mediterranean Sea", "Coral Sea"], "Coral Sea")
    bad = mc("Who threatens the reef?", ["sharks and dolphins", "starfish"], "sharks and dolphins")
    assert judge("grounding", [good, bad]) == [None, "ungrounded"]
    # the other options do not count, whatever they hold
    bad2 = mc(
        "Who threatens the reef?", ["Coral Sea reef starfish pollution", "sharks and dolphins"], "sharks and dolphins"
    )
    assert judge("grounding", [bad2]) == ["ungrounded"]


def test_grounding_cot_rationale_paraphrase_passes_its_lower_threshold_only():
    rationale = (
        "The passage says climate change, pollution and starfish threaten the health of the reef; warming oceans "
        "and dirty runoff stress corals until they lose colour. So the threats are climate change and pollution"
    )
    # 7 of its 16 content words are in the text (climate, change, pollution, starfish, threaten, health, reef),
    # the others paraphrase (warming, oceans, dirty, runoff, stress, corals, lose, colour, threats): 0.44
    p = pair("What threatens the reef?" + COT, rationale + "." + THEREFORE + "climate change and pollution")
    assert judge("grounding", [p]) == [None]
    assert judge({"grounding": {"chain_of_thought": 0.5}}, [p]) == ["ungrounded"]
    # multiple choice with a chain of thought: rationale plus the correct option's text
    q = mc("What threatens the reef?", ["climate change and pollution", "tourism"], "climate change and pollution")
    q = pair(q["instruction"] + COT, rationale + "." + THEREFORE + "climate change and pollution")
    assert judge("grounding", [q]) == [None]
    assert judge({"grounding": {"multiple_choice_cot": 0.5}}, [q]) == ["ungrounded"]


def test_grounding_ngrams_need_word_order():
    p = pair("Where is the reef?", "Queensland coast Australia off")  # words in the text, order not
    assert judge("grounding", [p]) == [None]
    assert judge({"grounding": {"ngram": 2}}, [p]) == ["ungrounded"]
    q = pair("Where is the reef?", "off the coast of Queensland")
    assert judge({"grounding": {"ngram": 2}}, [q]) == [None]
    # shorter than k words: measured by words
    assert judge({"grounding": {"ngram": 3}}, [pair("Which sea is it in?", "Coral")]) == [None]


def test_word_shortcut_on_unicode_texts_and_non_latin_grounding():
    for text in [TEXT, "Ça coûte 3€ — “très” cher… naïve_user STRASSE straße (x²) 東京は日本の首都です。 a\u00a0b", ""]:
        assert _words(text) == re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold())
        assert " ".join(_words(text)) == normalize(text)  # decontamination's words: the two stages share them
    assert _words("(x²) ﬁne ＡＢＣ") == ["x2", "fine", "abc"]  # NFKC: compatibility forms are their plain letters
    # a non-Latin text is grounded by its own words
    assert judge(
        "grounding",
        [pair("Où est le récif ?", "Près du Queensland, en Australie")],
        text="Le récif est près du Queensland, en Australie.",
    ) == [None]


# --- length ----------------------------------------------------------------------------------------------


def test_length_bounds_at_the_edges():
    f = {"length": {"min_question_words": 3, "max_question_words": 5, "min_answer_words": 2, "max_answer_words": 4}}
    pairs = [
        pair("Where is it?", "Coral Sea"),  # 3 and 2: kept
        pair("Where is it reef now?", "in the Coral Sea"),  # 5 and 4: kept
        pair("Where is?", "Coral Sea"),
        pair("Where is it the reef now?", "Coral Sea"),
        pair("Where is it?", "Coral."),
        pair("Where is it?", "in the Coral Sea today"),
    ]
    assert judge(f, pairs) == [
        None,
        None,
        "question_too_short",
        "question_too_long",
        "answer_too_short",
        "answer_too_long",
    ]
    # the question is its stem: options and the CoT trigger do not count
    assert judge(f, [mc("Where?", ["Coral Sea", "Red Sea"], "Coral Sea")]) == ["question_too_short"]
    assert judge("length", [pair("Where is it?", "")]) == ["answer_too_short"]  # default min 1


# --- repetition ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "the the the the the the the the the the",
        "blah blah blah blah blah blah blah blah",
        "I think that I think that I think that I think that I think that the reef",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "The reef is big!!!!!!!!!!!!!!!!!!!!!!!!",
    ],
)
def test_repetition_drops_degenerate_answers(answer):
    assert judge("repetition", [pair("Describe the reef please.", answer)]) == ["repetitive"]


def test_repetition_keeps_normal_prose_and_checks_the_question():
    prose = (
        "The Great Barrier Reef is the largest coral reef system in the world. It lies off the coast of "
        "Queensland, and the reef was made a World Heritage Site in 1981. Pollution and the warming of the "
        "sea threaten the reef and the life of the reef."
    )
    indented = "Steps:\n" + " " * 30 + "first, read the text; then answer the question in a few words"
    assert judge("repetition", [pair("Describe the reef please.", prose), pair("Steps?", indented)]) == [None, None]
    loop = "what is what is what is what is what is what is the reef"
    assert judge("repetition", [pair(loop, "A coral reef.")]) == ["repetitive"]
    assert judge({"repetition": {"max_char_run": 30}}, [pair("Describe it.", "a" * 24)]) == [None]


# --- duplicates ------------------------------------------------------------------------------------------


def test_normalize_question():
    assert (
        normalize_question("  Where IS the reef?? ")
        == normalize_question("where is, the   reef")
        == "where is the reef"
    )


def test_duplicates_across_seen_and_within_a_list():
    seen = {normalize_question("Where is the reef?")}
    pairs = [
        pair("WHERE is the reef", "Coral Sea"),  # seen in an earlier chunk
        pair("When was it listed?", "1981"),
        pair("when was it listed ?!", "In 1981."),  # earlier in this list
    ]
    assert judge("duplicates", pairs, seen=seen) == ["duplicate_question", None, "duplicate_question"]
    assert seen == {"where is the reef", "when was it listed"}


def test_dropped_question_does_not_enter_seen():
    seen: set[str] = set()
    pairs = [
        pair("Who discovered the reef?", "Captain James Cook aboard Endeavour"),  # ungrounded
        pair("Who discovered the reef?", "It cannot be determined from the text."),  # asked again: kept
        pair("Where is the reef?", "Coral Sea"),
    ]
    assert judge("grounding,duplicates", pairs, seen=seen) == ["ungrounded", None, None]
    assert seen == {"who discovered the reef", "where is the reef"}
    # the next chunk of the document sees them
    assert judge("duplicates", [pair("Where is the reef?", "Coral Sea")], seen=seen) == ["duplicate_question"]


# --- ordering, parse_filters, determinism ---------------------------------------------------------------


def test_first_filter_in_filters_order_wins():
    # ungrounded, too short a question and repetitive at once: grounding comes first in FILTERS
    p = pair("Why?", "zebra zebra zebra zebra zebra zebra zebra zebra zebra zebra")
    assert judge(["duplicates", "repetition", "length", "grounding"], [p]) == ["ungrounded"]
    assert judge(["repetition", "length"], [p]) == ["question_too_short"]
    assert judge(["repetition"], [p]) == ["repetitive"]
    assert judge([], [p]) == [None]
    # PairFilter takes partial parameters too (filled from the defaults) and keeps the FILTERS order
    assert PairFilter({"repetition": {}, "length": {"min_question_words": 1}}).judge(TEXT, [p]) == ["repetitive"]
    with pytest.raises(ConfigError):
        PairFilter({"lenght": {}})


def test_parse_filters_forms_and_canonical_order():
    names = list(FILTERS)
    assert names == ["grounding", "length", "repetition", "duplicates"]
    full = parse_filters("duplicates, grounding,length,repetition")
    assert list(full) == names
    assert full == parse_filters(["length", "repetition", "grounding", "duplicates"])
    assert full == parse_filters({n: None for n in reversed(names)})
    assert full["length"] == {
        "min_question_words": 3,
        "max_question_words": 256,
        "min_answer_words": 1,
        "max_answer_words": 512,
    }
    g = parse_filters({"repetition": {}, "grounding": {"free_form": 1, "ngram": 2}})
    assert list(g) == ["grounding", "repetition"]
    assert g["grounding"]["free_form"] == 1.0 and isinstance(g["grounding"]["free_form"], float)
    assert g["grounding"]["ngram"] == 2 and g["grounding"]["chain_of_thought"] == 0.3
    assert parse_filters("") == {} == parse_filters(None)
    # canonical: the same filters give the same JSON whatever the order given
    assert json.dumps(parse_filters("length,grounding")) == json.dumps(parse_filters(["grounding", "length"]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("grounding,lenght", "unknown pair filter 'lenght'; known filters: grounding, length, repetition, duplicates"),
        ({"length": {"min_words": 3}}, "unknown parameter 'min_words' of pair filter 'length'; known parameters:"),
        ({"length": {"min_question_words": "3"}}, "must be an integer >= 0"),
        ({"length": {"min_question_words": True}}, "must be an integer >= 0"),
        ({"grounding": {"free_form": 1.5}}, "must be a number from 0 to 1"),
        ({"grounding": {"ngram": 0}}, "must be an integer >= 1"),
        ({"length": {"min_answer_words": 600}}, "min_answer_words (600) is above max_answer_words (512)"),
        ({"length": 3}, "takes a mapping of parameters"),
        (42, "must be a list of names or a mapping"),
        ([1, 2], "must be names"),
    ],
)
def test_parse_filters_errors(value, message):
    with pytest.raises(ConfigError) as e:
        parse_filters(value)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_judge_does_not_mutate_inputs_and_is_deterministic_across_processes():
    pairs = [
        pair("Where is the reef?", "Coral Sea"),
        pair("Who discovered the reef?", "Captain Cook"),
        pair("where is the reef", "off Queensland"),
        pair("Describe it.", "blah blah blah blah blah blah blah blah"),
        pair("Is it alive?", "Yes"),
    ]
    before = json.dumps(pairs)
    seen = {"is it alive"}
    here = judge(list(FILTERS), pairs, seen=set(seen))
    assert json.dumps(pairs) == before
    assert here == [None, "ungrounded", "duplicate_question", "ungrounded", "duplicate_question"]
    code = (
        "import json,sys\n"
        "from ipt_data.quality.pair_filters import PairFilter, parse_filters\n"
        "a = json.load(sys.stdin)\n"
        "print(json.dumps(PairFilter(parse_filters(a['f'])).judge(a['t'], a['p'], set(a['s']))))\n"
    )
    for hashseed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps({"f": list(FILTERS), "t": TEXT, "p": pairs, "s": sorted(seen)}),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hashseed, "PATH": ""},
        )
        assert json.loads(out.stdout) == here


def test_the_word_shortcut_equals_the_regular_expression():
    """`_words` (a byte-level shortcut for ASCII texts) gives what the regular expression does, on random texts
    of every ASCII character and some others."""
    import random

    rng = random.Random(3)
    alphabets = ["".join(map(chr, range(128))), "ab c_d-é1 ß'.\n\u00a0ΩxK\u212a"]
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _words(text) == re.findall(r"[^\W_]+", text.casefold()), text


def test_pair_word_statistics_are_those_of_their_definitions():
    """The filters count words, repeated 3-grams and answer words found in the text in one compiled pass over
    hashed words (`ngram_kernels.pair_stats`): on random texts and strings, ASCII and not, every count equals
    its definition on the word lists."""
    import random
    from collections import Counter

    from ipt_data.quality import ngram_kernels, ngrams
    from ipt_data.quality.pair_filters import STOPWORDS, YES_NO, _joined_words, _word_tables

    rng = random.Random(4)
    vocab = ["the", "Reef", "reef", "is", "yes", "No", "coral", "été", "ÉTÉ", "x1", "it's", "a_b", "—", "Straße"]
    vocab += ["!!!", "aaaa", "\x1c", "\t", "..", "zz"]  # runs of one character, and white space
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    strings, owner, ground = [], [], []
    for t in range(len(texts)):
        for _ in range(rng.randint(0, 4)):
            words = [rng.choice(vocab) + rng.choice([" ", ", ", "! ", "\n"]) for _ in range(rng.randint(0, 25))]
            strings.append("".join(words))
            owner.append(t)
            ground.append(rng.random() < 0.6)
    raw = [x.encode("utf-8") for x in strings]
    text_hash, _, text_first = ngram_kernels.scan(*ngrams.pack_texts(texts, _joined_words))
    stats = ngram_kernels.pair_stats(
        text_hash,
        text_first,
        *ngrams.pack_texts(strings, _joined_words),
        np.frombuffer(b"".join(raw), np.uint8),
        np.cumsum([len(r) for r in raw], dtype=np.int64),
        np.asarray(owner, np.int64),
        np.asarray(ground, np.bool_),
        *_word_tables(),
    ).tolist()
    assert len(stats) == len(strings) and len(ngram_kernels.STATS) == 8
    for string, t, grounded, row in zip(strings, owner, ground, stats, strict=True):
        words = _words(string)
        grams = list(zip(words, words[1:], words[2:], strict=False))
        distinct = set(words)
        expected = [len(words), len(distinct), len(grams) - len(set(grams)), max(Counter(words).values(), default=0)]
        content = distinct - STOPWORDS - YES_NO
        found = content & set(_words(texts[t]))
        expected += [len(content), len(found), len(distinct & YES_NO)] if grounded else [0] * 3
        runs = [len(m.group(0)) for m in re.finditer(r"(\S)\1*", string)]
        if string.isascii():
            expected.append(max(runs, default=0))  # the longest run of one character that is not white space
            assert row == expected, (string, texts[t])
        else:
            assert row[:7] == expected, (string, texts[t])
    assert sum(row[5] for row in stats) > 300  # answer words were found
    assert max(row[7] for row in stats) >= 4  # runs of one character were found


def _plain_verdicts(filters: dict, texts: list[str], pairs: list[list[dict]], seen: list[set[str]]) -> list:
    """The verdicts as the module doc defines them, pair by pair on word lists (grounding by words): what the
    filters' columns of counts, judged all at once, must give."""
    from collections import Counter

    from ipt_data.method.pair_parse import parse_pair
    from ipt_data.quality.pair_filters import STOPWORDS, YES_NO
    from ipt_data.stages.templify import _unanswerable

    unanswerable, out = _unanswerable(None), []
    for text, row, seen_here in zip(texts, pairs, seen, strict=True):
        verdicts = []
        for p in row:
            pp, reason = parse_pair(p, unanswerable)[0], None
            if "grounding" in filters:
                params = filters["grounding"]
                if pp.kind in ("multiple_choice", "multiple_choice_cot"):
                    none = pp.correct == len(pp.options)
                    measured = pp.rationale + "\n" + ("" if none else pp.options[pp.correct])
                elif pp.kind == "chain_of_thought":
                    none = unanswerable(pp.answer)
                    measured = pp.rationale + "\n" + ("" if none else pp.answer)
                else:
                    none, measured = unanswerable(pp.answer), p["response"]
                words = set(_words(measured))
                content = words - STOPWORDS - YES_NO
                if not content:
                    grounded = bool(words & YES_NO) or none
                else:
                    share = len(content & set(_words(text))) / len(content)
                    grounded = share >= params[pp.kind] or (pp.kind == "free_form" and none)
                reason = None if grounded else "ungrounded"
            if reason is None and "length" in filters:
                params, q, a = filters["length"], len(_words(pp.question)), len(_words(p["response"]))
                bounds = (
                    (q < params["min_question_words"], "question_too_short"),
                    (q > params["max_question_words"], "question_too_long"),
                    (a < params["min_answer_words"], "answer_too_short"),
                    (a > params["max_answer_words"], "answer_too_long"),
                )
                reason = next((why for out_of, why in bounds if out_of), None)
            if reason is None and "repetition" in filters:
                params = filters["repetition"]
                for raw in (pp.question, p["response"]):
                    words = _words(raw)
                    n, grams = len(words), list(zip(words, words[1:], words[2:], strict=False))
                    repeated = (
                        n >= 10
                        and 1 - (n - 2 - (len(grams) - len(set(grams)))) / (n - 2) > params["max_repeated_ngrams"]
                    )
                    common = n >= 8 and max(Counter(words).values()) / n > params["max_word_share"]
                    run = re.search(rf"(\S)\1{{{params['max_char_run'] - 1},}}", raw)
                    if repeated or common or run:
                        reason = "repetitive"
            if reason is None:
                question = normalize_question(p["instruction"])
                if "duplicates" in filters and question in seen_here:
                    reason = "duplicate_question"
                else:
                    seen_here.add(question)
            verdicts.append(reason)
        out.append(verdicts)
    return out


def test_the_verdicts_judged_in_columns_are_those_of_their_definitions():
    """`judge_many` judges a batch's pairs filter by filter, all at once, from compiled word counts; on random
    pairs of every family (options, chains of thought, "none of them", loops, runs of one character, repeated
    questions across a document's chunks), with several parameter sets, its verdicts and the questions it keeps
    in `seen` are those of the definitions, pair by pair; and `reasons`, with no set for a text that is its
    document's only one, gives the same verdicts."""
    import random
    from collections import Counter

    rng = random.Random(6)
    vocab = (
        "the reef coral sea is it yes no true false none fish water 1620 été Straße Ωmega ﬁsh because "
        "cannot be answered therefore aaaa zzzzzzzzzzzzzzzzzzzzzzzzz it's a_b — !!!"
    ).split()

    def words(k: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(k))

    def random_pair(text: str) -> dict:
        question = rng.choice([words(rng.randint(0, 12)) + "?", "Where is the reef?", words(30)])
        answer = rng.choice(
            [
                words(rng.randint(0, 15)),
                "None of the above",
                "It cannot be determined.",
                "Yes.",
                "a" * rng.randint(1, 30),
            ]
            + ([" ".join(text.split()[: rng.randint(1, 8)])] if text else [])
        )
        options = [words(rng.randint(1, 4)) for _ in range(rng.randint(1, 4))]
        stem = question + "\nOptions:\n- " + "\n- ".join(options)
        chosen = rng.choice([*options, "none of the options", words(2)])
        return rng.choice(
            [
                pair(question, answer),
                pair(stem, chosen),
                pair(stem + COT, words(rng.randint(0, 20)) + "." + THEREFORE + chosen),
                pair(question + COT, words(rng.randint(0, 25)) + rng.choice(["", THEREFORE + answer])),
                pair(question, answer + " " + answer * 3),
            ]
        )

    configs = [
        "grounding,length,repetition,duplicates",
        {"grounding": {"free_form": 0.9, "chain_of_thought": 0.1}, "repetition": {"max_char_run": 5}},
        {
            "length": {"min_question_words": 5, "max_question_words": 10, "max_answer_words": 6},
            "repetition": {"max_word_share": 0.2},
        },
        ["duplicates", "length"],
    ]
    reasons_seen = Counter()
    for config in configs:
        filters = parse_filters(config)
        judge = PairFilter(filters)
        for _ in range(150):
            docs = [d for d in range(rng.randint(1, 5)) for _ in range(rng.randint(1, 3))]
            texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 60))) for _ in docs]
            pairs = [[random_pair(t) for _ in range(rng.randint(0, 5))] for t in texts]
            sets, plain_sets = {}, {}
            got = judge.judge_many(texts, pairs, [sets.setdefault(d, set()) for d in docs])
            want = _plain_verdicts(filters, texts, pairs, [plain_sets.setdefault(d, set()) for d in docs])
            assert got == want and sets == plain_sets
            chunks, alone_sets = Counter(docs), {}
            seen = [alone_sets.setdefault(d, set()) if chunks[d] > 1 else None for d in docs]
            assert judge.reasons(texts, pairs, seen) == [v for row in want for v in row]
            assert alone_sets == {d: s for d, s in plain_sets.items() if chunks[d] > 1}
            reasons_seen.update(v for row in got for v in row)
    assert set(reasons_seen) == {None, *(r for spec in FILTERS.values() for r in spec.reasons)}
