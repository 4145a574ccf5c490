import string

import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ipt_data import build_prompt, chunk_batch, prompt_budget
from ipt_data.method.tokenizer import PromptEncoder
from ipt_data.stages.chunk import chunk_text
from ipt_data.testing.fixtures import synthetic_texts

DEMOS = [("Anna is a baker.", [{"instruction": "Who is Anna?", "response": "A baker."}])]


def sentencepiece_style_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama/Mistral-style tokenizer (Metaspace, prefix only on the first piece), built offline."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=list(string.printable),
    )
    tok.train_from_iterator(synthetic_texts(300) + [build_prompt(t) for t in synthetic_texts(50)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module", params=["fixture", "sentencepiece-style"])
def any_encoder(request, encoder):
    return encoder if request.param == "fixture" else PromptEncoder(sentencepiece_style_tokenizer())


def test_prompt_budget():
    assert prompt_budget() == 3696
    with pytest.raises(ValueError):
        prompt_budget(400, 400)


@pytest.mark.parametrize("text", synthetic_texts(5) + ["Plain words, with 3 numbers: 1 2 3.\nNew line."])
def test_ids_equal_whole_prompt_tokenized_without_added_specials(any_encoder, text):
    tok = any_encoder.tokenizer
    for demos in ((), DEMOS, DEMOS * 2):
        expected = tok.encode(build_prompt(text, demos), add_special_tokens=False).ids
        assert any_encoder.encode_prompt(text, demos) == expected


@pytest.mark.parametrize("text", ["has <s> inside", "ends </s>", "<unk> and <s></s><s>", "</s>"])
def test_special_strings_in_text_stay_plain(any_encoder, text):
    ids = any_encoder.encode_prompt(text, [(text, [{"instruction": text, "response": text}])])
    assert ids[0] == any_encoder.bos_id
    assert ids.count(any_encoder.bos_id) == 2  # one per example, none from the text
    assert ids.count(any_encoder.eos_id) == 1  # the demo's closing </s> only
    assert ids.count(any_encoder.tokenizer.token_to_id("<unk>")) == 0
    single = any_encoder.encode_prompt(text)
    assert single.count(any_encoder.bos_id) == 1 and single[0] == any_encoder.bos_id
    assert text in any_encoder.decode(single)


def test_counts_are_batched_and_exact(encoder):
    texts = synthetic_texts(20)
    assert encoder.count_texts(texts) == [len(encoder.tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    assert [len(x) for x in encoder.context_ids(texts)] == [len(encoder.encode_prompt(t)) for t in texts]


def _fits(encoder, piece, budget):
    return len(encoder.encode_prompt(piece)) <= budget


def test_chunks_cut_at_paragraphs_first(encoder):
    paragraphs = [" ".join(synthetic_texts(3, seed=k)) for k in range(6)]
    text = "\n\n".join(paragraphs)
    budget = max(len(encoder.encode_prompt(p + "\n\n")) for p in paragraphs) + 5
    chunks = chunk_text(text, encoder, budget)
    assert "".join(chunks) == text and len(chunks) > 1
    assert all(_fits(encoder, c, budget) for c in chunks)
    assert all(c.endswith("\n\n") for c in chunks[:-1])  # every cut is at a paragraph break


def test_chunks_cut_at_sentences_then_mid_word_only_when_needed(encoder):
    sentences = " ".join(synthetic_texts(30))
    budget = 60
    chunks = chunk_text(sentences, encoder, budget)
    assert "".join(chunks) == sentences
    assert all(_fits(encoder, c, budget) for c in chunks)
    assert all(c.rstrip().endswith(".") for c in chunks[:-1])
    word = "x" * 3000
    chunks = chunk_text(f"Short start. {word} end.", encoder, budget)
    assert "".join(chunks) == f"Short start. {word} end." and all(_fits(encoder, c, budget) for c in chunks)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=600))
def test_chunks_reassemble_any_text(encoder, text):
    chunks = chunk_text(text, encoder, 40)
    assert "".join(chunks) == text
    assert all(_fits(encoder, c, 40) for c in chunks)


def test_chunk_batch_on_a_dataset(encoder, model_path):
    long_doc = "\n\n".join(" ".join(synthetic_texts(8, seed=k)) for k in range(10))
    ds = Dataset.from_dict({"text": ["short one.", long_doc, None, ""], "meta": [1, 2, 3, 4]})
    out = ds.map(
        chunk_batch,
        batched=True,
        batch_size=3,
        with_indices=True,
        fn_kwargs={"tokenizer": model_path, "max_model_len": 200, "max_new_tokens": 50},
    )
    assert set(out.column_names) == {"text", "meta", "doc_id", "chunk"}
    docs = out.filter(lambda r: r["doc_id"] == "1")
    assert len(docs) > 1 and "".join(docs["text"]) == long_doc
    assert docs["chunk"] == list(range(len(docs))) and set(docs["meta"]) == {2}
    assert all(len(encoder.encode_prompt(t)) <= 150 for t in docs["text"])
    assert out.filter(lambda r: r["doc_id"] in ("2", "3"))["text"] == [None, ""]  # passed through
    plain = Dataset.from_dict({"text": ["a b c"]}).map(chunk_batch, batched=True, fn_kwargs={"tokenizer": model_path})
    assert len(plain[0]["doc_id"]) == 16 and plain[0]["chunk"] == 0


def test_missing_text_column_names_the_columns(model_path):
    with pytest.raises(KeyError, match="body"):
        chunk_batch({"body": ["x"]}, tokenizer=model_path)
