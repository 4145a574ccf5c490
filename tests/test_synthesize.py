import math
import re

import pytest
from datasets import Dataset

from ipt_data import Synthesizer, build_prompt, synthesis_features, synthesize_batch
from ipt_data.engines import Completion, load_engine
from ipt_data.testing.fixtures import synthetic_texts


class Recording:
    """Wraps the real engine and records every prompt it is sent."""

    name = "recording"

    def __init__(self, inner):
        self.inner, self.max_model_len, self.prompts = inner, inner.max_model_len, []

    def generate(self, prompts, **kwargs):
        self.prompts += [list(p) for p in prompts]
        return self.inner.generate(prompts, **kwargs)


@pytest.fixture()
def recording(model_path):
    return Recording(load_engine(model_path, "hf"))


def kw(model_path, **extra):
    return {"model": model_path, "max_new_tokens": 160, **extra}


def test_in_distribution_texts_get_pairs(model_path):
    ds = Dataset.from_dict({"text": synthetic_texts(48, seed=123), "id": list(range(48))})
    out = ds.map(
        synthesize_batch,
        batched=True,
        batch_size=16,
        fn_kwargs=kw(model_path, rounds=1),
        features=synthesis_features(ds.features),
    )
    assert len(out) == 48 and out["id"] == list(range(48)) and out["text"] == ds["text"]
    assert sum(s == "ok" for s in out["synth_status"]) >= 0.9 * 48
    assert all(bool(p) == (s == "ok") for p, s in zip(out["pairs"], out["synth_status"], strict=True))
    assert all(t > 0 for t in out["prompt_tokens"]) and all(t > 0 for t in out["completion_tokens"])
    assert out["shot"] == [0] * 48 and not any(out["inherits"]) and set(out["chain_prefix"]) == {""}


def check_chains(out, rounds, batch_size, order):
    """Chains group rows as `chain_order` says (SPEC 2), shots count up, inherits follows SPEC 2, and no
    chain leaves its map batch."""
    rows = out.to_list()
    by_chain = {}
    for i, r in enumerate(rows):
        by_chain.setdefault(r["chain"], []).append(i)
    for members in by_chain.values():
        batch = members[0] // batch_size
        n = min(batch_size, len(rows) - batch * batch_size)
        step = 1 if order == "adjacent" else math.ceil(n / rounds)
        assert len(members) <= rounds
        assert [rows[i]["shot"] for i in members] == list(range(len(members)))
        assert members == list(range(members[0], members[0] + step * len(members), step))
        assert len({i // batch_size for i in members}) == 1
        for prev, cur in zip(members, members[1:], strict=False):
            assert rows[cur]["inherits"] == (bool(rows[prev]["pairs"]) and bool(rows[cur]["pairs"]))
            assert rows[prev]["continued"] == rows[cur]["inherits"]
        assert not rows[members[0]]["inherits"]
    return rows


@pytest.mark.parametrize("rounds,batch_size,order", [(2, 5, "reference"), (3, 7, "reference"), (3, 4, "adjacent")])
def test_rounds_give_shots_and_inheritance(model_path, rounds, batch_size, order):
    ds = Dataset.from_dict({"text": synthetic_texts(17, seed=rounds)})
    out = ds.map(
        synthesize_batch,
        batched=True,
        batch_size=batch_size,
        fn_kwargs=kw(model_path, rounds=rounds, chain_order=order),
        features=synthesis_features(ds.features),
    )
    rows = check_chains(out, rounds, batch_size, order)
    assert max(r["shot"] for r in rows) == rounds - 1
    assert sum(r["inherits"] for r in rows) >= 3
    assert sum(r["synth_status"] == "ok" for r in rows) >= 0.8 * len(rows)


class Scripted:
    """A fake engine: text k (`"text k ..."`) gets one pair unless k is a multiple of 3; records every call."""

    name = "scripted"
    max_model_len = 100_000

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []

    def generate(self, prompts, **kwargs):
        self.calls.append([list(p) for p in prompts])
        out = []
        for p in prompts:
            k = int(re.findall(r"<CON> text (\d+)", self.encoder.decode(p))[-1])
            body = "" if k % 3 == 0 else f"<QUE> What is {k}? <ANS> It is {k}. </END>"
            out.append(Completion(body, "stop", len(p), 5))
        return out


def reference_rounds(texts, rounds, encoder, budget):
    """The reference loop as its README describes it (SPEC 2), written independently of ours: the texts cut
    into M consecutive parts of ceil(n/M); part r's k-th text follows part r-1's k-th text; a text's prompt
    carries what its predecessor carried plus the predecessor, when the predecessor got pairs. Returns the
    prompts of each round."""
    size = math.ceil(len(texts) / rounds)
    parts = [texts[r * size : (r + 1) * size] for r in range(rounds)]
    carried = [[] for _ in range(size)]
    calls = []
    for r, part in enumerate(parts):
        if not part:
            continue
        prompts = []
        for k, text in enumerate(part):
            demos = carried[k] if r else []
            ids = encoder.encode_prompt(text, demos)
            if len(ids) > budget:
                demos, ids = [], encoder.encode_prompt(text)
            prompts.append(ids)
            n = int(text.split()[1])
            pairs = [] if n % 3 == 0 else [{"instruction": f"What is {n}?", "response": f"It is {n}."}]
            carried[k] = [*demos, (text, pairs)] if pairs else []
        calls.append(prompts)
    return calls


@pytest.mark.parametrize("rounds", [2, 3, 4])
def test_demos_are_those_of_the_reference_loop(encoder, rounds):
    for n in range(1, 41):
        texts = [f"text {k} " + "word " * (k % 7 * 9) for k in range(n)]
        engine = Scripted(encoder)
        out = Synthesizer(
            model="unused", tokenizer=encoder, rounds=rounds, engine=engine, max_new_tokens=10, max_model_len=210
        )({"text": texts})
        assert engine.calls == reference_rounds(texts, rounds, encoder, 200), (n, rounds)
        assert out["synth_status"] == ["no_pairs" if k % 3 == 0 else "ok" for k in range(n)]


def test_adjacent_chains_keep_consecutive_texts(encoder):
    texts = [f"text {k} about something" for k in range(1, 8)]
    engine = Scripted(encoder)
    out = Synthesizer(model="unused", tokenizer=encoder, rounds=3, engine=engine, chain_order="adjacent")(
        {"text": texts}
    )
    assert out["shot"] == [0, 1, 2, 0, 1, 2, 0]
    # texts 1 and 2 get pairs, 3 gets none, so 4 (the next chain's first) and the rest start afresh
    assert engine.calls[1][0] == encoder.encode_prompt(texts[1], [(texts[0], out["pairs"][0])])
    assert engine.calls[2][0] == encoder.encode_prompt(
        texts[2], [(texts[0], out["pairs"][0]), (texts[1], out["pairs"][1])]
    )
    assert out["inherits"] == [False, True, False, False, True, False, False]
    with pytest.raises(ValueError, match="chain_order"):
        Synthesizer(model="unused", chain_order="random")


def test_three_shot_prompt_equals_the_spec_formula(model_path, recording, encoder):
    texts = synthetic_texts(3, seed=11)
    out = Synthesizer(model=model_path, rounds=3, engine=recording, max_new_tokens=160)({"text": texts})
    assert out["synth_status"] == ["ok"] * 3 and out["shot"] == [0, 1, 2]
    assert out["inherits"] == [False, True, True] and out["continued"] == [True, True, False]
    (p1, p2) = out["pairs"][:2]

    def pairs_text(pairs):
        return "\n\n".join(f"<QUE> {p['instruction']} <ANS> {p['response']} </END>" for p in pairs)

    by_hand = (
        f"<s> <CON> {texts[0]} </CON>\n\n{pairs_text(p1)}</s>"
        f"<s> <CON> {texts[1]} </CON>\n\n{pairs_text(p2)}</s>"
        f"<s> <CON> {texts[2]} </CON>\n\n"
    )
    assert build_prompt(texts[2], [(texts[0], p1), (texts[1], p2)]) == by_hand
    third = recording.prompts[2]
    assert third == encoder.tokenizer.encode(by_hand, add_special_tokens=False).ids
    assert third.count(encoder.bos_id) == 3 and third[0] == encoder.bos_id


def test_an_overlong_demo_breaks_the_chain(model_path, recording, encoder):
    texts = synthetic_texts(2, seed=5)
    single = max(len(x) for x in encoder.context_ids(texts))
    max_new = 100
    out = Synthesizer(
        model=model_path, rounds=2, engine=recording, max_new_tokens=max_new, max_model_len=single + 10 + max_new
    )({"text": texts})
    assert out["synth_status"][0] == "ok"  # the first text got pairs: it would be carried ...
    assert out["shot"] == [0, 0] and out["chain"][0] != out["chain"][1]  # ... but does not fit
    assert not any(out["inherits"])
    assert recording.prompts[1] == encoder.encode_prompt(texts[1])
    assert all(len(p) <= single + 10 for p in recording.prompts)


def test_bad_texts_get_a_status_and_no_engine_call(model_path, recording):
    texts = [None, "", "   \n", 42, "Anna is a baker who lives in Oslo.", "x " * 5000]
    out = Synthesizer(model=model_path, rounds=2, engine=recording, max_new_tokens=80)({"text": texts})
    st = out["synth_status"]
    assert st[:4] == ["empty_text", "empty_text", "empty_text", "invalid_text: int"]
    assert st[4] in ("ok", "no_pairs") and st[5].startswith("too_long")
    assert len(recording.prompts) == 1
    assert out["pairs"][:4] == [[]] * 4 and out["prompt_tokens"][:4] == [0] * 4
    assert Synthesizer(model=model_path, engine=recording)({"text": []})["pairs"] == []


def test_with_rank_and_two_processes_match_one(model_path):
    ds = Dataset.from_dict({"text": synthetic_texts(16, seed=3)})  # 2 shards of 8: the same batches of 4
    args = dict(
        batched=True, batch_size=4, fn_kwargs=kw(model_path, rounds=2), features=synthesis_features(ds.features)
    )
    one = ds.map(synthesize_batch, **args)
    two = ds.map(synthesize_batch, with_rank=True, num_proc=2, **args)
    assert two.to_list() == one.to_list()


def test_synthesizer_object_is_the_function(model_path):
    batch = {"text": synthetic_texts(4, seed=9)}
    assert Synthesizer(model=model_path, rounds=2, max_new_tokens=160)(batch) == synthesize_batch(
        batch, model=model_path, rounds=2, max_new_tokens=160
    )
    with pytest.raises(KeyError, match="content"):
        synthesize_batch({"content": ["x"]}, model=model_path)
    with pytest.raises(ValueError):
        Synthesizer(model=model_path, rounds=0)
