"""The exact piecewise path (`ipt_data.method.pieces`) against the tokenizer file's own pipeline.

Differential: the goldens (264 prompts, 89 decodes), and 100,000 generated strings full of what could make
the two disagree: runs of spaces, leading and trailing spaces, tabs, CRLF, NBSP and other Unicode spaces, `▁`
itself, special-token strings, characters only byte fallback can encode, CJK, emoji and very long words.
Plain ids and counts, and prompts assembled from a text's own ids, must all equal the file's pipeline.
"""

import json
import random

import pytest
from conftest import GOLDENS, REAL_TOKENIZER
from tokenizers import Tokenizer

from ipt_data.method import wire
from ipt_data.method.pieces import PieceEncoder, _keys, piecewise_problem
from ipt_data.method.tokenizer import PromptEncoder

SPACES = [" ", "  ", "   ", "\t", "\r\n", "\n", "\n\n", "\u00a0", "\u2002", "\u2009", "\u200b", "\u202f", "\u3000",
          "\u1680"]  # fmt: skip
WORDS = [
    "the", "The", "tokenizer", "don't", "e.g.", "3.14", "1,000", "naïve", "Ünïcödé", "東京", "中文文本", "日本語",
    "한국어", "עברית", "العربية", "🎉", "👩‍👩‍👧", "🇳🇴", "∑", "ℏ", "\u0301", "\x00", "\x07", "\ufffd", "\ue000",
    "\U0010fffd", "𝔘𝔫𝔦", "▁", "▁▁", "a▁b", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<CON>", "</CON>", "<QUE>",
    "<ANS>", "</END>", "<0x0A>", "https://example.org/a?b=c",
]  # fmt: skip
LONG = ["x" * 300, "ab" * 700, "supercalifragilistic" * 40, "é" * 250]  # words longer than the memo keeps


def generated(n: int, seed: int = 0) -> list[str]:
    """`n` strings made of the words and spaces above, with leading and trailing spaces, of 0 to 40 parts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [
            rng.choice(LONG if rng.random() < 0.005 else WORDS) if rng.random() < 0.6 else rng.choice(SPACES)
            for _ in range(rng.randint(0, 40))
        ]
        text = "".join(parts)
        if rng.random() < 0.2:
            text = rng.choice(SPACES) + text
        if rng.random() < 0.2:
            text += rng.choice(SPACES)
        out.append(text)
    return out


@pytest.fixture(scope="module")
def file_pipeline():
    """The file's own pipeline, as the encoder used it before the piecewise path: special-token strings plain."""
    tok = Tokenizer.from_file(str(REAL_TOKENIZER / "tokenizer.json"))
    tok.encode_special_tokens = True
    return lambda texts: [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


@pytest.fixture(scope="module")
def fast():
    enc = PromptEncoder(str(REAL_TOKENIZER), fast=True)
    assert enc.pieces is not None, "the synthesizer's tokenizer file qualifies for the piecewise path"
    return enc


@pytest.fixture(scope="module")
def strings():
    return generated(100_000)


def test_the_strings_hold_every_hard_case(strings):
    joined = "".join(strings[:20_000])
    for case in ["  ", "\t", "\r\n", "\u00a0", "\u3000", "▁", "<s>", "</s>", "🎉", "東京", "x" * 300]:
        assert case in joined
    assert sum(s.startswith(" ") for s in strings) > 1000 and sum(s.endswith(" ") for s in strings) > 1000
    assert "" in strings


def test_plain_ids_and_counts_equal_the_file_pipeline_on_100000_strings(fast, file_pipeline, strings):
    want = file_pipeline(strings)
    got = fast.encode_texts(strings)
    wrong = [s for s, a, b in zip(strings, got, want, strict=True) if a != b]
    assert not wrong, f"{len(wrong)} of {len(strings)} differ, e.g. {wrong[:3]!r}"
    assert fast.count_texts(strings) == [len(ids) for ids in want]
    again = fast.encode_texts(strings[:5000])  # from the memo this time
    assert again == want[:5000]


def test_prompts_built_from_a_texts_own_ids_equal_the_whole_prompt(fast, file_pipeline, strings):
    texts = [s for s in strings[:30_000] if s.strip()]
    own = fast.text_ids(texts)
    bos, eos = fast.bos_id, fast.eos_id
    assert fast.context_ids(texts, own) == [[bos, *ids] for ids in file_pipeline(map(wire.context_body, texts))]
    rng = random.Random(1)
    examples = [(t, [{"instruction": rng.choice(strings), "response": rng.choice(strings)}]) for t in texts[:10_000]]
    want = [[bos, *ids, eos] for ids in file_pipeline(wire.demo_body(t, p) for t, p in examples)]
    assert fast.demo_ids(examples, own[:10_000]) == want
    assert fast.context_lengths(texts, own) == [len(ids) for ids in fast.context_ids(texts)]
    joined = sum(map(fast.joins, texts))
    assert 0.5 * len(texts) < joined < len(texts), "texts ending in a space or a mark are encoded whole"


@pytest.mark.parametrize("is_fast", [True, False])
def test_assembled_prompts_equal_the_goldens(is_fast):
    enc = PromptEncoder(str(REAL_TOKENIZER), fast=is_fast)
    assert (enc.pieces is not None) == is_fast
    wrong = []
    for case in GOLDENS["prompts"]:
        demos = [(t, p) for t, p in case["demos"]]
        own = enc.text_ids([case["text"], *(t for t, _ in demos)]) if enc.reuses_ids else [None] * (1 + len(demos))
        ids = [tok for demo in enc.demo_ids(demos, own[1:] if enc.reuses_ids else None) for tok in demo]
        ids += enc.context_ids([case["text"]], own[:1] if enc.reuses_ids else None)[0]
        if ids != case["ids"]:
            wrong.append(case["name"])
    assert not wrong, f"{len(wrong)} of {len(GOLDENS['prompts'])} differ: {wrong[:10]}"
    decoded = [enc.decode(c["ids"]) for c in GOLDENS["decode"]]
    assert decoded == [c["text"] for c in GOLDENS["decode"]]


def test_keys_are_the_pieces_of_the_normalized_text():
    for text in ["a b", "a  b", "  a", " ", "a ", "a   ", "▁a", "a▁ b", "x\t y", "a    b c"]:
        norm = "▁" + text.replace(" ", "▁")
        pieces = ["▁" + k for k in _keys(text)]
        assert "".join(pieces) == norm
        assert all(p.startswith("▁") and "▁" not in p.lstrip("▁") for p in pieces), text


def spec() -> dict:
    return json.loads((REAL_TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))


def edited(change) -> dict:
    s = spec()
    change(s)
    return s


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda s: s.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}),
         "pre-tokenizer"),
        (lambda s: s["normalizer"]["normalizers"].pop(0), "normalizer"),
        (lambda s: s["normalizer"]["normalizers"].append({"type": "NFKC"}), "normalizer"),
        (lambda s: s["model"]["vocab"].update({"a▁b": 32000}), "after another character"),
        (lambda s: s["model"].update(dropout=0.1), "dropout"),
        (lambda s: s["model"].update(ignore_merges=True), "ignores merges"),
        (lambda s: s["added_tokens"].append({"id": 32000, "content": "[X]", "special": False}), "not special"),
        (lambda s: s["model"].update(byte_fallback=False, unk_token=None), "dropped"),
        (lambda s: (s["model"].update(unk_token=None), s["model"]["vocab"].pop("<0xFF>")), "dropped"),
    ],
)  # fmt: skip
def test_a_file_that_does_not_qualify_is_refused_with_its_reason(change, why):
    assert piecewise_problem(spec()) is None
    problem = piecewise_problem(edited(change))
    assert problem is not None and why in problem


def test_a_dropped_character_would_have_changed_the_ids():
    """Why a file that drops characters is refused: the marks around a dropped one merge in the file's pipeline."""
    s = spec()
    s["model"].update(byte_fallback=False, unk_token=None)
    tok = Tokenizer.from_str(json.dumps(s))
    assert tok.encode("ꙮ  x", add_special_tokens=False).tokens == ["▁▁", "▁x"]  # pieces "▁ꙮ", "▁▁x" would differ
    assert PieceEncoder.for_tokenizer(tok)[0] is None


def test_a_file_that_does_not_qualify_keeps_its_own_pipeline(tmp_path, file_pipeline):
    s = spec()
    s["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "▁+"}, "behavior": "MergedWithNext", "invert": False}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(s), encoding="utf-8")
    enc = PromptEncoder(str(path))
    assert enc.pieces is None and not enc.reuses_ids and not enc.joins("a text")
    texts = generated(300, seed=5)
    tok = Tokenizer.from_file(str(path))
    tok.encode_special_tokens = True
    assert enc.encode_texts(texts) == [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_the_environment_switch_turns_the_path_off(monkeypatch):
    from ipt_data.method.tokenizer import get_encoder

    monkeypatch.setenv("IPT_DATA_FAST_TOKENIZER", "0")
    assert get_encoder(str(REAL_TOKENIZER)).pieces is None
    monkeypatch.setenv("IPT_DATA_FAST_TOKENIZER", "1")
    assert get_encoder(str(REAL_TOKENIZER)).pieces is not None


def test_the_memo_starts_over_when_full_and_stays_exact(monkeypatch, file_pipeline):
    import ipt_data.method.pieces as pieces

    monkeypatch.setattr(pieces, "MAX_ENTRIES", 50)
    enc = PieceEncoder.for_tokenizer(Tokenizer.from_file(str(REAL_TOKENIZER / "tokenizer.json")))[0]
    texts = generated(2000, seed=3)
    for k in range(0, 2000, 100):
        assert [a.tolist() for a in enc.encode(texts[k : k + 100])] == file_pipeline(texts[k : k + 100])
    distinct = set().union(*map(_keys, texts))
    assert len(enc._memo.ids) < len(distinct), "the memo started over"


class Echo:
    """A test engine whose pairs are a function of the prompt ids it gets: any id that differs shows in the data."""

    name = "echo"

    def __init__(self, model, device, max_model_len=4096, **_):
        self.max_model_len = max_model_len
        self.prompts: list[list[int]] = []

    def generate(self, prompts, *, max_new_tokens, temperature=0.0, seed=0):
        import zlib

        from ipt_data.engines import Completion

        self.prompts += [list(p) for p in prompts]
        out = []
        for p in prompts:
            key = zlib.crc32(bytes(str(list(p)), "ascii"))
            text = f"<QUE> What is {key}? <ANS> It is {len(p)} tokens long. </END>\n\n<QUE> And? <ANS> {key % 7} </END>"
            out.append(Completion(text, "stop", len(p), 20))
        return out


def test_augment_publishes_the_same_bytes_on_either_path(tmp_path, monkeypatch):
    """The whole run, chunking and 2- and 3-shot prompts and token counts included, on the piecewise path and on
    the file's own pipeline: every prompt id and every published file the same."""
    from ipt_data.config import SAMPLE_CORPUS, AugmentConfig
    from ipt_data.engines import clear_cache, register_engine, unregister_engine
    from ipt_data.method import tokenizer as budget
    from ipt_data.run import augment
    from ipt_data.testing.fixtures import TINY_SYNTHESIZER

    texts = [json.loads(line)["text"] for line in open(SAMPLE_CORPUS, encoding="utf-8")]
    texts += [s for s in generated(400, seed=9) if s.strip()][:60]
    texts += ["word " * 4000, "One sentence. " * 900 + "\n\n" + "Two words. " * 600]  # cut into chunks
    texts += ["ends in spaces  ", "and one space ", "a mark▁"]  # encoded whole
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    engines = {}
    register_engine("echo", lambda model, device, **o: engines.setdefault(device, Echo(model, device, **o)))
    published = {}
    try:
        for fast in ("1", "0"):
            monkeypatch.setenv("IPT_DATA_FAST_TOKENIZER", fast)
            budget._cached_encoder.cache_clear()
            clear_cache()
            engines.clear()
            out = tmp_path / f"out-{fast}"
            config = AugmentConfig(
                dataset=str(corpus), model=TINY_SYNTHESIZER, engine="echo", rounds=3, fraction=1.0, batch_size=16,
                shard_size=40, output=str(out), work_dir=str(tmp_path / f"work-{fast}"),
            )  # fmt: skip
            augment(config, progress=False)
            files = sorted(p for p in out.rglob("*") if p.is_file())
            prompts = sorted(map(tuple, next(iter(engines.values())).prompts))
            published[fast] = ({str(p.relative_to(out)): p.read_bytes() for p in files}, prompts)
    finally:
        unregister_engine("echo")
        clear_cache()
        budget._cached_encoder.cache_clear()
    (fast_files, fast_prompts), (file_files, file_prompts) = published["1"], published["0"]
    assert len(fast_prompts) > 50 and fast_prompts == file_prompts
    assert fast_files.keys() == file_files.keys() and any(k.endswith(".parquet") for k in fast_files)
    assert [k for k in fast_files if fast_files[k] != file_files[k]] == []
