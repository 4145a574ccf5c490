from hypothesis import given
from hypothesis import strategies as st

from ipt_data import build_prompt, parse_pairs, render_pairs
from ipt_data.method.wire import parse_completion

MARKUP = ("<QUE>", "<ANS>", "</END>")
field = st.text(min_size=1, max_size=40).map(str.strip).filter(lambda s: s and not any(m in s for m in MARKUP))
pair = st.builds(lambda q, a: {"instruction": q, "response": a}, field, field)
unique_pairs = st.lists(pair, max_size=6, unique_by=lambda p: p["instruction"].lower())


def test_single_prompt_is_exact():
    assert build_prompt("A text.") == "<s> <CON> A text. </CON>\n\n"
    assert build_prompt("") == "<s> <CON>  </CON>\n\n"


def test_three_shot_prompt_written_out_by_hand():
    p1 = [{"instruction": "Q1?", "response": "A1."}, {"instruction": "Q2?", "response": "A2."}]
    p2 = [{"instruction": "Q3?", "response": "A3."}]
    expected = (
        "<s> <CON> First. </CON>\n\n<QUE> Q1? <ANS> A1. </END>\n\n<QUE> Q2? <ANS> A2. </END></s>"
        "<s> <CON> Second. </CON>\n\n<QUE> Q3? <ANS> A3. </END></s>"
        "<s> <CON> Third. </CON>\n\n"
    )
    assert build_prompt("Third.", [("First.", p1), ("Second.", p2)]) == expected


@given(unique_pairs)
def test_parse_gives_rendered_pairs_back(pairs):
    assert parse_pairs(render_pairs(pairs)) == pairs
    assert parse_pairs(" " + render_pairs(pairs) + "\n\n") == pairs


@given(st.text())
def test_parse_never_raises(s):
    out = parse_pairs(s)
    assert all(p["response"] and set(p) == {"instruction", "response"} for p in out)


@given(unique_pairs.filter(bool), field)
def test_unterminated_last_pair_is_dropped(pairs, cut):
    completion = render_pairs(pairs) + "\n\n<QUE> " + cut + " <ANS> partial answer"
    out, invalid = parse_completion(completion)
    assert out == pairs and invalid == 1


def test_duplicates_keep_the_first_case_insensitively():
    c = "<QUE> What is it? <ANS> one </END>\n\n<QUE> WHAT IS IT? <ANS> two </END>\n\n<QUE> Other <ANS> x </END>"
    assert parse_pairs(c) == [
        {"instruction": "What is it?", "response": "one"},
        {"instruction": "Other", "response": "x"},
    ]


def test_invalid_pieces_are_skipped_and_counted():
    c = (
        "<QUE> ok <ANS> fine </END>"  # valid
        "\n\n<QUE> two <ANS> a <ANS> b </END>"  # two <ANS>
        "\n\nno marker <ANS> x </END>"  # no <QUE>
        "\n\n<QUE> empty answer <ANS>   </END>"  # empty answer
        "\n\n<QUE> kept <ANS> yes </END>"
    )
    pairs, invalid = parse_completion(c)
    assert [p["instruction"] for p in pairs] == ["ok", "kept"]
    assert invalid == 3
    assert parse_pairs("") == [] and parse_pairs(None) == []


def test_every_que_marker_is_removed_from_a_question():
    completion = "<QUE> Who <QUE> is Anna? <ANS> A baker. </END>\n\n<QUE><QUE> Where? <ANS> Oslo. </END>"
    assert parse_pairs(completion) == [
        {"instruction": "Who  is Anna?", "response": "A baker."},
        {"instruction": "Where?", "response": "Oslo."},
    ]
