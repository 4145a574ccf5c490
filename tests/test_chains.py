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


def _plain_rewrite_pairs(batch: dict, new_pairs: dict) -> tuple[dict, set]:
    """`rewrite_pairs` as first written: every run read and written again with `json` (the definition its
    shortcuts must keep to: a run with no row changed left as it is, a run's texts not written again)."""
    import json

    from ipt_data.schema import row_keys

    keys = row_keys(batch, batch["text"])
    alone = {k for k, old in zip(keys, batch["pairs"], strict=True) if old and k in new_pairs and not new_pairs[k]}
    where = {k: i for i, k in enumerate(keys)}
    pairs = [new_pairs.get(k, p) for k, p in zip(keys, batch["pairs"], strict=True)]
    continued, prefixes = list(batch["continued"]), list(batch["chain_prefix"])
    for i in range(len(keys)):
        if continued[i]:
            continue
        earlier = json.loads(prefixes[i]) if prefixes[i] else []
        run = [*earlier, {"key": keys[i]}]
        if not any(e.get("key") in new_pairs or e.get("key") in alone for e in run):
            continue
        for e in earlier:
            e["pairs"] = new_pairs.get(e["key"], e["pairs"])
        kept = [e for e in run if e["key"] not in alone]
        if not any(pairs[where[e["key"]]] for e in kept):
            kept = []
        for e in run:
            j = where[e["key"]]
            continued[j], prefixes[j] = bool(kept) and e in kept[:-1], ""
        if kept:
            prefixes[where[kept[-1]["key"]]] = json.dumps(kept[:-1], ensure_ascii=False) if len(kept) > 1 else ""
    return {**batch, "pairs": pairs, "continued": continued, "chain_prefix": prefixes}, alone


def _random_chains(rng: random.Random, ensure_ascii: bool = False, odd_first_row: bool = False) -> dict:
    """A batch of runs as `synthesize_batch` writes them (rows of one chain anywhere in it; each run's last row
    carries the earlier ones in `chain_prefix`), with texts and pairs that JSON must escape."""
    import json

    pieces = ["plain words", 'a "quote"', "back\\slash", "new\nline\ttab", "ctrl\x01char", "é ü ß", "😀",
              '", "pairs": [', '"}, {"text": "', "\\u0041", "/ \\/", "", " "]  # fmt: skip
    n = rng.randint(1, 14)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) + f" text {k}" for k in range(n)]
    pairs = [
        [
            {"instruction": f"{rng.choice(pieces)}Q{k}.{j}?", "response": rng.choice(pieces)}
            for j in range(rng.randint(1, 3))
        ]
        for k in range(n)
    ]
    rows = list(range(n))
    rng.shuffle(rows)
    chain, continued, prefix = [""] * n, [False] * n, [""] * n
    while rows:
        size = rng.randint(1, 4)
        run, rows = rows[:size], rows[size:]
        for m in run:
            chain[m] = f"{run[0]}:0"
        for m in run[:-1]:
            continued[m] = True
        if len(run) > 1:
            earlier = [{"text": texts[m], "pairs": pairs[m], "key": f"{m}:0"} for m in run[:-1]]
            prefix[run[-1]] = json.dumps(earlier, ensure_ascii=ensure_ascii)
            if odd_first_row:  # JSON still, but its first row not as json.dumps writes it (its later rows are)
                prefix[run[-1]] = prefix[run[-1]].replace('", "pairs": ', '" , "pairs": ', 1)
    return {"text": texts, "doc_id": list(range(n)), "chunk": [0] * n, "pairs": pairs, "chain": chain,
            "continued": continued, "chain_prefix": prefix}  # fmt: skip


def _random_drops(rng: random.Random, batch: dict) -> dict:
    new = {}
    for k, pairs in enumerate(batch["pairs"]):
        if pairs and rng.random() < 0.4:
            new[f"{k}:0"] = [p for p in pairs if rng.random() < 0.5]
    return new


def test_rewrite_pairs_is_its_plain_definition():
    """`rewrite_pairs` leaves the runs of chains with no row changed unread, and takes the texts of the runs it
    writes again from what it read: on random runs whose texts and pairs JSON must escape (quotes, backslashes,
    control characters, what a run's JSON looks like), rewritten twice over (as the pair filters, then
    decontamination, do), it gives what reading and writing every run gives, to the byte; a run written with
    other escapes (`ensure_ascii=True`), or whose first row has other separators, reads the same."""
    import json

    from ipt_data.method.chains import rewrite_pairs

    rng = random.Random(5)
    for case in range(400):
        batch = _random_chains(rng, ensure_ascii=case % 5 == 4, odd_first_row=case % 5 == 3)
        for _ in range(2):
            new = _random_drops(rng, batch)
            got, alone = rewrite_pairs(batch, new)
            want, alone_wanted = _plain_rewrite_pairs(batch, new)
            assert alone == alone_wanted and got["pairs"] == want["pairs"] and got["continued"] == want["continued"]
            if case % 5 >= 3:
                assert [json.loads(p) if p else p for p in got["chain_prefix"]] == [
                    json.loads(p) if p else p for p in want["chain_prefix"]
                ]
            else:
                assert got["chain_prefix"] == want["chain_prefix"]
            batch = got
