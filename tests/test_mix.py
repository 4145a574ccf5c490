import random

import pytest
from datasets import Dataset, IterableDataset

from ipt_data import mix, split_for_conversion
from ipt_data.corpus.mixing import general_text, token_counter
from ipt_data.testing.fixtures import synthetic_example, synthetic_texts


def corpora(n_aug=400, n_raw=300, n_general=3000, seed=0):
    rng = random.Random(seed)
    aug = Dataset.from_dict(
        {
            "text": [" ".join(synthetic_texts(rng.randint(1, 6), seed=k)) for k in range(n_aug)],
            "kind": ["augmented"] * n_aug,
            "n_pairs": [2] * n_aug,
        }
    )
    raw = Dataset.from_dict({"text": synthetic_texts(n_raw, seed=seed + 1)})
    general = [synthetic_example(rng)[1][0] for _ in range(n_general)]
    gen = Dataset.from_dict(
        {
            "question": [p["instruction"] for p in general],
            "response": [p["response"] * rng.randint(1, 3) for p in general],
            "system_prompt": [""] * n_general,
        }
    )
    return aug, raw, gen


def ratio_of(rows, by="tokens"):
    size = {"augmented": 0, "general": 0}
    for r in rows:
        if r["kind"] in size:
            size[r["kind"]] += r["n_tokens"] if by == "tokens" else 1
    return size["general"] / size["augmented"]


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_general_ratio_in_tokens_within_two_percent(model_path, ratio):
    aug, raw, gen = corpora()
    out = mix(aug, raw=raw, general=gen, general_ratio=ratio, tokenizer=model_path, seed=0)
    kinds = out["kind"]
    assert kinds.count("augmented") == len(aug) and kinds.count("raw") == len(raw)
    assert abs(ratio_of(out) / ratio - 1) < 0.02
    count = token_counter(model_path)
    assert out["n_tokens"] == count(out["text"])  # real token counts of the synthesizer's tokenizer
    assert set(out.column_names) == {"text", "kind", "n_tokens", "source", "n_pairs", "layout", "inverted", "pairs"}


def test_general_examples_are_question_space_response_and_shuffled(model_path):
    aug, raw, gen = corpora(n_aug=50, n_raw=50, n_general=500)
    out = mix(aug, raw=raw, general=gen, tokenizer=model_path, seed=3)
    allowed = {general_text(q, r) for q, r in zip(gen["question"], gen["response"], strict=True)}
    general_rows = [t for t, k in zip(out["text"], out["kind"], strict=True) if k == "general"]
    assert general_rows and all(t in allowed for t in general_rows)
    assert general_text("Why?", "Because.") == "Why? Because."
    assert out["kind"][:20] != sorted(out["kind"][:20])  # interleaved, not concatenated
    again = mix(aug, raw=raw, general=gen, tokenizer=model_path, seed=3)
    assert again["text"] == out["text"]
    assert mix(aug, raw=raw, general=gen, tokenizer=model_path, seed=4)["text"] != out["text"]


def test_ratio_by_examples_and_word_counts_without_tokenizer():
    aug, raw, gen = corpora(n_aug=200, n_general=1000)
    out = mix(aug, general=gen, general_ratio=1.5, by="examples")
    assert out["kind"].count("general") == 300
    out = mix(aug, general=gen, general_ratio=1.0)
    assert abs(ratio_of(out) - 1) < 0.02
    with pytest.raises(ValueError):
        mix(aug, by="bytes")


def test_streaming_mix_keeps_ratio_and_every_row(model_path):
    aug, raw, gen = corpora()
    out = mix(
        aug.to_iterable_dataset(num_shards=2),
        raw=raw.to_iterable_dataset(),
        general=gen.to_iterable_dataset(),
        general_ratio=1.0,
        tokenizer=model_path,
        seed=0,
    )
    assert isinstance(out, IterableDataset)
    rows = list(out)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("augmented") == len(aug) and kinds.count("raw") == len(raw)
    assert abs(ratio_of(rows) - 1) < 0.02
    assert sorted(r["text"] for r in rows if r["kind"] == "raw") == sorted(raw["text"])
    assert [r["text"] for r in out] == [r["text"] for r in rows]  # seeded: the same every pass


def test_split_for_conversion_exact_and_streaming():
    ds = Dataset.from_dict({"text": [f"doc {i}" for i in range(1000)], "i": list(range(1000))})
    conv, rest = split_for_conversion(ds, 0.2, seed=1)
    assert len(conv) == 200 and len(rest) == 800
    assert sorted(list(conv["i"]) + list(rest["i"])) == list(range(1000))
    assert list(conv["i"]) == sorted(conv["i"])  # corpus order kept
    assert list(split_for_conversion(ds, 0.2, seed=2)[0]["i"]) != list(conv["i"])
    sconv, srest = split_for_conversion(ds.to_iterable_dataset(), 0.2, seed=1)
    a, b = [r["i"] for r in sconv], [r["i"] for r in srest]
    assert sorted(a + b) == list(range(1000)) and abs(len(a) / 1000 - 0.2) < 0.04
    with pytest.raises(ValueError):
        split_for_conversion(ds, 1.5)


def test_rows_already_in_the_mixed_form_are_taken_as_they_are(monkeypatch):
    """A run's shards already hold every mixed column: `mix` takes them without rewriting them, and gives what
    normalizing them row by row gives (a pair without its rendering makes that path run, and is dropped)."""
    from ipt_data.corpus.mixing import MIX_FEATURES

    rows = {
        "text": ["a b c", "d e"],
        "kind": ["augmented", "raw"],
        "n_tokens": [7, 3],
        "source": [["0:0"], ["1:0"]],
        "n_pairs": [1, 0],
        "layout": ["classic", "raw"],
        "inverted": [False, False],
        "pairs": [[{"instruction": "q", "response": "a", "task": "free_form", "copied": False}], []],
    }
    ready = Dataset.from_dict(rows, features=MIX_FEATURES)
    import ipt_data.corpus.mixing as mixing

    rows_normalized = []
    real = mixing._normalizer

    def spy(*args):
        normalize = real(*args)
        return lambda batch, indices: rows_normalized.extend(indices) or normalize(batch, indices)

    monkeypatch.setattr(mixing, "_normalizer", spy)
    out = mix(ready, seed=3)
    assert rows_normalized == [], "a dataset already in the mixed form is not rewritten"
    assert out.features == MIX_FEATURES and sorted(out["text"]) == ["a b c", "d e"]
    plain = Dataset.from_dict({**rows, "pairs": [[{"instruction": "q", "response": "a"}], []]})
    normalized = mix(plain, seed=3)
    assert rows_normalized == [0, 1], "rows in another form are normalized"
    assert normalized["pairs"] == [[], []]  # unrendered pairs are not rendered pairs
    assert [r for r in out.remove_columns("pairs")] == [r for r in normalized.remove_columns("pairs")]
