"""Dropping synthesized rows before templify loses nothing once the chains are re-linked (issue 14)."""

import random
from collections import Counter

import pytest
from datasets import Dataset
from test_synthesize import Scripted

from ipt_data import Synthesizer, templify_batch
from ipt_data.method.chains import filter_synthesized, relink
from ipt_data.schema import templify_features


@pytest.fixture()
def synthesized(encoder):
    n = 60
    batch = {"text": [f"text {k} is here." for k in range(n)], "doc_id": list(range(n)), "chunk": [0] * n}
    # text k gets one pair unless k is a multiple of 3; with 60 texts in 4 rounds a chain is k, k+15, k+30, k+45,
    # so every chain either got pairs in all four rounds or in none
    out = Synthesizer(model="unused", tokenizer=encoder, rounds=4, engine=Scripted(encoder))(batch)
    return Dataset.from_dict(out)


def rendered_keys(ds, batch_size=None):
    if batch_size is None:
        out = templify_batch(ds[:], seed=0)
    else:
        features = templify_features()
        out = ds.map(
            templify_batch, batched=True, batch_size=batch_size, remove_columns=ds.column_names, features=features
        )[:]
    return Counter(k for keys in out["source"] for k in keys), out


def test_a_dropped_last_row_takes_its_chain_unless_relinked(synthesized):
    ends = [
        i
        for i, (c, p) in enumerate(zip(synthesized["continued"], synthesized["chain_prefix"], strict=True))
        if not c and p
    ]
    end = max(ends, key=lambda i: synthesized[i]["chain_prefix"].count('"key"'))
    dropped = f"{end}:0"
    kept = synthesized.filter(lambda r: r["doc_id"] != end)
    naive, _ = rendered_keys(kept)
    lost = [k for k in (f"{d}:0" for d in kept["doc_id"]) if k not in naive]
    assert len(lost) >= 3  # the issue: the earlier rows of that chain vanish without a count
    fixed, out = rendered_keys(filter_synthesized(synthesized, lambda r: r["doc_id"] != end))
    assert set(fixed) == {f"{d}:0" for d in kept["doc_id"]} and set(fixed.values()) == {1} and dropped not in fixed
    assert sum(out["n_pairs"]) == sum(len(p) for p in kept["pairs"])


@pytest.mark.parametrize("seed", range(25))
def test_any_filter_renders_every_kept_row_once_and_no_dropped_row(synthesized, seed):
    rng = random.Random(seed)
    keep = {d for d in synthesized["doc_id"] if rng.random() < 0.7}
    ds = filter_synthesized(synthesized, lambda r: r["doc_id"] in keep)
    for batch_size in (None, 7):
        counts, out = rendered_keys(ds, batch_size)
        assert set(counts) == {f"{d}:0" for d in keep} and set(counts.values()) <= {1}
        everything = "\n".join(out["text"])
        for d in synthesized["doc_id"]:
            assert (f"text {d} is here." in everything) == (d in keep), d


def test_relink_changes_nothing_when_nothing_was_dropped(synthesized):
    assert relink(synthesized) is synthesized
    plain = Dataset.from_dict({"text": ["a", "b"], "pairs": [[], []]})
    assert relink(plain) is plain


def _chain_of_three():
    import json

    pairs = [[{"instruction": f"Q{k}?", "response": f"A{k}."}] for k in range(3)]
    texts = ["alpha text here.", "beta text here.", "gamma text here."]
    prefix = [{"text": texts[k], "pairs": pairs[k], "key": f"{k}:0"} for k in range(2)]
    return {
        "text": texts,
        "doc_id": [0, 1, 2],
        "chunk": [0, 0, 0],
        "chain": ["c", "c", "c"],
        "shot": [0, 1, 2],
        "continued": [True, True, False],
        "chain_prefix": ["", "", json.dumps(prefix)],
        "pairs": pairs,
    }


@pytest.mark.parametrize(
    "emptied, texts",
    [
        ([], [["0:0", "1:0", "2:0"]]),
        (["1:0"], [["1:0"], ["0:0", "2:0"]]),  # the middle row leaves; the others stay one text
        (["2:0"], [["0:0", "1:0"], ["2:0"]]),  # the last row leaves: the middle one is the run's last now
        (["0:0", "1:0", "2:0"], [["0:0"], ["1:0"], ["2:0"]]),
    ],
)
def test_rewrite_pairs_keeps_runs_whole_and_sends_emptied_rows_alone(emptied, texts):
    from ipt_data.method.chains import rewrite_pairs

    batch = _chain_of_three()
    new = {k: [] for k in emptied}
    if "0:0" not in emptied:
        new["0:0"] = [{"instruction": "Q0 again?", "response": "A0 again."}]
    out, alone = rewrite_pairs(batch, new)
    assert alone == set(emptied) and batch == _chain_of_three()  # the input is not changed
    rendered = templify_batch(out, seed=0)
    assert sorted(rendered["source"]) == sorted(texts)  # every row rendered once, in the texts expected
    columns = (rendered["source"], rendered["kind"], rendered["pairs"], rendered["text"])
    for source, kind, pairs, text in zip(*columns, strict=True):
        assert kind == ("raw" if all(k in emptied for k in source) else "augmented")
        assert "A0." not in text.replace("A0 again.", "")  # the replaced pair shows nowhere, not even as a demo
        assert all(p["response"] in ("A0 again.", "A1.", "A2.") for p in pairs)
        if kind == "raw":
            assert text == batch["text"][int(source[0][0])]
