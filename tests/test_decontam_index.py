"""Benchmark decontamination's core: normalization, n-gram hashing (against a slow reference), benchmark specs,
and the index (building from every kind of source, lookup, digest, a build that dies)."""

from __future__ import annotations

import csv
import json
import pickle
import random

import numpy as np
import pytest

from ipt_data.errors import ConfigError, InputError, InputNotFoundError
from ipt_data.quality import benchmarks as bm
from ipt_data.quality import ngrams
from ipt_data.quality.benchmarks import BenchmarkIndex, BenchmarkSpec, Hit, parse_specs, strings
from ipt_data.quality.ngrams import NgramHasher, normalize

Q1 = (
    "Which of the following statements best describes the primary function of chlorophyll molecules "
    "inside the chloroplasts of green plant cells during photosynthesis"
)  # 22 words
A1 = "It absorbs light energy, mostly blue and red wavelengths, to drive the reactions"
Q2 = (
    "A train leaves the station at nine o'clock travelling at sixty miles per hour while a second train "
    "leaves two hours later at eighty miles per hour; when does the second train catch up"
)  # 35 words
A2 = "The second train catches up after eight hours of its own travel, at five in the afternoon"
SHORT = "Who painted the ceiling of the Sistine Chapel in Rome"  # 10 words
TINY = "Capital of France"  # 3 words
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore"


def words(text: str) -> list[str]:
    return normalize(text).split()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def quiz(tmp_path):
    return write_jsonl(
        tmp_path / "quiz.jsonl",
        [
            {"question": Q1, "answer": A1},
            {"question": Q2, "answer": A2},
            {"question": SHORT, "answer": "Michelangelo"},
            {"question": TINY, "answer": "Paris"},
        ],
    )


@pytest.fixture()
def index(quiz, tmp_path):
    return BenchmarkIndex.build(parse_specs(str(quiz)), tmp_path / "index")


# --- normalization and hashing -----------------------------------------------------------------------------


def test_normalize_ignores_case_punctuation_and_white_space_and_keeps_unicode_letters():
    assert normalize("The  Cat's, hat!") == "the cat s hat"
    variants = ["The cat's hat!", "the CAT S hat", "  THE\tcat--s\n\nhat...", "the_cat_s_hat"]
    assert {normalize(v) for v in variants} == {"the cat s hat"}
    assert normalize("Ünïcode ÉTÉ: 東京 café, Straße №5") == "ünïcode été 東京 café strasse no5"
    assert normalize("cafe\u0301") == normalize("café")  # decomposed accent = composed
    assert normalize(" ,;! ") == ""


def reference_grams(texts: list[str], n: int) -> set[tuple[int, int, str]]:
    """The slow, obvious definition: every run of n consecutive normalized words."""
    out = set()
    for t, text in enumerate(texts):
        w = normalize(text).split()
        out |= {(t, p, " ".join(w[p : p + n])) for p in range(len(w) - n + 1)}
    return out


def random_texts(rng: random.Random, count: int) -> list[str]:
    vocab = ["alpha", "Beta", "gamma!", "d_e", "ÉTÉ", "x", "42", ",,", "\n", "straße", "東京", "o'neil", "---", "A"]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 60))) for _ in range(count)]


@pytest.mark.parametrize("n", [1, 3, 13])
def test_hashes_find_every_ngram_of_the_reference(n, monkeypatch):
    rng = random.Random(n)
    texts = random_texts(rng, 300)
    for batch_bytes, piece_chars in [(None, None), (64, 40)]:  # one batch; many batches and texts in pieces
        if batch_bytes:
            monkeypatch.setattr(ngrams, "BATCH_BYTES", batch_bytes)
            monkeypatch.setattr(ngrams, "PIECE_CHARS", piece_chars)
        hasher = NgramHasher(n)
        hashes, text_of, pos = hasher.hashes(texts)
        assert hashes.dtype == np.uint64 and text_of.dtype == np.int32 and pos.dtype == np.int32
        found = [(int(t), int(p), hasher.ngram(texts[t], int(p))) for t, p in zip(text_of, pos, strict=True)]
        assert len(found) == len(set(found))  # no n-gram twice (pieces overlap by n - 1 words only)
        assert set(found) == reference_grams(texts, n)
        by_gram: dict[str, set[int]] = {}
        for (_, _, gram), h in zip(found, hashes.tolist(), strict=True):
            by_gram.setdefault(gram, set()).add(h)
        assert all(len(v) == 1 for v in by_gram.values())  # one gram, one hash
        assert len({h for v in by_gram.values() for h in v}) == len(by_gram)  # no two grams share one


def test_hashes_are_fixed_values():
    """The same values in every process and on every platform (a change here changes every index's digest)."""
    hashes, text_of, pos = NgramHasher(3).hashes(["The cat sat on the mat.", "too short"])
    assert hashes.tolist() == [16769075728827912473, 7691460547991774539, 8752651313075738269, 10672902330144035029]
    assert text_of.tolist() == [0, 0, 0, 0] and pos.tolist() == [0, 1, 2, 3]
    assert NgramHasher(3).whole("cat sat") == NgramHasher(5).whole("Cat, sat!") == 3377205304633959276
    assert NgramHasher(3).whole("") is None and NgramHasher(3).whole("a b c") is None


def test_whole_is_the_same_gram_found_inside_a_longer_text():
    hasher = NgramHasher(13)
    h = hasher.whole(SHORT)
    batch = next(hasher.batches([f"{FILLER} -- {SHORT.upper()}!! {FILLER}"]))
    grams = batch.grams(len(words(SHORT)))
    assert h in grams.tolist()
    assert hasher.wholes(["", SHORT, Q1])[1].tolist() == [0, 10, 13]


# --- specs --------------------------------------------------------------------------------------------------


def test_parse_specs_from_the_command_line_and_a_recipe():
    specs = parse_specs("data/mmlu.jsonl?name=mmlu&question=q&answer=a&split=dev, openai/gsm8k?config=main")
    assert specs[0] == BenchmarkSpec("data/mmlu.jsonl", "mmlu", None, "dev", "q", "a")
    assert specs[1] == BenchmarkSpec("openai/gsm8k", "gsm8k", "main", "test", None, None)
    assert parse_specs("/x/arc_easy.parquet")[0].name == "arc_easy"
    assert parse_specs("/x/folder/")[0].name == "folder"
    recipe = parse_specs([{"source": "cais/mmlu", "config": "all", "answer": "choices"}, "b.csv?question=prompt"])
    assert [s.to_dict() for s in recipe] == [
        {
            "source": "cais/mmlu",
            "name": "mmlu",
            "config": "all",
            "split": "test",
            "question": None,
            "answer": "choices",
        },
        {"source": "b.csv", "name": "b", "config": None, "split": "test", "question": "prompt", "answer": None},
    ]
    assert parse_specs(None) == [] and parse_specs("") == []


@pytest.mark.parametrize(
    "value, message",
    [
        ("a.jsonl?colour=red", "unknown key 'colour'"),
        ("a.jsonl,b/a.jsonl", "two benchmarks are named 'a'"),
        ([{"name": "x"}], "no source"),
        ("a.jsonl?name", "not key=value"),
        ("a.jsonl?name=", "'name' is empty"),
        ([{"source": "a.jsonl", "spilt": "test"}], "unknown key 'spilt'"),
        (42, "comma-separated string or a list"),
    ],
)
def test_bad_specs_are_one_line_config_errors(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_specs(value)
    assert "\n" not in str(caught.value)


def test_a_missing_column_names_the_columns_present(quiz, tmp_path):
    with pytest.raises(ConfigError, match=r"no question column 'prompt'.*\['question', 'answer'\]"):
        BenchmarkIndex.build(parse_specs(f"{quiz}?question=prompt"), tmp_path / "i1")
    with pytest.raises(ConfigError, match="no answer column 'gold'"):
        BenchmarkIndex.build(parse_specs(f"{quiz}?answer=gold"), tmp_path / "i2")
    nothing = write_jsonl(tmp_path / "odd.jsonl", [{"id": 1, "body": Q1}])
    with pytest.raises(ConfigError, match=r"no question column \(tried question, prompt.*\['id', 'body'\]"):
        BenchmarkIndex.build(parse_specs(str(nothing)), tmp_path / "i3")


def test_strings_takes_every_string_inside():
    assert strings("a") == ["a"] and strings(None) == [] and strings("  ") == []
    assert strings(["x", ["y", 3]]) == ["x", "y", "3"]
    assert strings({"text": ["one", "two"], "answer_start": [10, 20]}) == ["one", "two"]
    assert strings(42) == ["42"] and strings(42.0) == ["42"] and strings(2.5) == ["2.5"]
    assert strings(True) == [] and strings(float("nan")) == []


# --- the index ------------------------------------------------------------------------------------------------


def mangle(text: str) -> str:
    """The same words, with case, punctuation and white space changed."""
    out = []
    for i, word in enumerate(text.split()):
        word = word.upper() if i % 3 == 0 else word.lower()
        out.append(word + ("," if i % 4 == 0 else "") + ("\n  " if i % 5 == 0 else " "))
    return "«" + "".join(out) + "»!"


def test_a_pasted_question_is_found_despite_case_punctuation_and_white_space(index):
    text = f"{FILLER}. Here is a question: {mangle(Q1)} And more {FILLER}"
    [hits] = index.find([text])
    assert hits == [Hit("quiz", " ".join(words(Q1)[:13]))]
    assert index.names == ["quiz"]


def test_twelve_shared_words_are_not_a_hit(index):
    twelve = " ".join(Q1.split()[3:15])
    assert index.find([f"{FILLER} {twelve} {FILLER}", twelve, ""]) == [[], [], []]
    q1 = Q1.split()
    assert index.find([" ".join(q1[:7]), " ".join(q1[7:13])]) == [[], []]  # a gram across two texts is none


def test_an_ngram_from_the_end_of_the_question_into_the_answer_is_found(index):
    span = Q2.split()[-7:] + A2.split()[:6]
    [hits] = index.find([f"{FILLER} {' '.join(span)} {FILLER}"])
    assert hits == [Hit("quiz", normalize(" ".join(span)))]


def test_a_short_item_is_found_whole_and_a_tiny_one_is_too_short(index):
    [hits] = index.find([f"{FILLER}: {SHORT.lower()}? {FILLER}"])
    assert hits == [Hit("quiz", normalize(SHORT))]
    assert index.find([f"{FILLER} {' '.join(SHORT.split()[1:])} {FILLER}"]) == [[]]  # 9 of its 10 words
    assert index.find([f"{FILLER} {TINY} Paris {FILLER}"]) == [[]]
    [summary] = index.summary()["benchmarks"]
    assert summary["items"] == 4 and summary["too_short"] == 1
    assert summary["whole"] == 2  # the short question, and it with its answer
    assert summary["question"] == "question" and summary["answer"] == "answer"
    assert index.summary()["whole_lengths"] == [10, 11]


def test_hits_come_one_per_benchmark_in_the_order_of_the_text(quiz, tmp_path):
    other = tmp_path / "trivia.csv"
    with open(other, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["prompt", "target"], [Q2, "x"], ["What is the tallest mountain on Earth?", "K2"]])
    index = BenchmarkIndex.build(parse_specs(f"{quiz},{other}"), tmp_path / "index")
    assert index.names == ["quiz", "trivia"]
    text = f"{Q1} {FILLER} What is the tallest mountain on Earth? K2 {Q1} {FILLER}"
    first_q1, mountain = " ".join(words(Q1)[:13]), "what is the tallest mountain on earth k2"
    assert index.find([text, Q2, FILLER]) == [
        [Hit("quiz", first_q1), Hit("trivia", mountain)],
        [Hit("quiz", " ".join(words(Q2)[:13]))],  # Q2 is in both: its n-grams belong to the first benchmark
        [],
    ]
    summary = {b["name"]: b for b in index.summary()["benchmarks"]}
    assert summary["trivia"]["question"] == "prompt" and summary["trivia"]["answer"] == "target"
    assert summary["trivia"]["whole"] == 1 and summary["trivia"]["ngrams"] == len(words(Q2) + ["x"]) - 12


def test_parquet_csv_and_folder_sources_and_nested_answers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"problem": [Q1], "solution": [["first answer", A1]]}), tmp_path / "listed.parquet"
    )  # several answers: each is joined to the question
    squad = tmp_path / "squad"
    squad.mkdir()
    write_jsonl(squad / "test.jsonl", [{"context": Q2, "answers": {"text": [A2], "answer_start": [7]}}])
    write_jsonl(squad / "train.jsonl", [{"context": SHORT, "answers": {"text": ["x"], "answer_start": [0]}}])
    with open(tmp_path / "plain.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["sentence"], [SHORT]])
    specs = parse_specs(f"{tmp_path / 'listed.parquet'},{squad},{tmp_path / 'plain.csv'}?name=plain")
    index = BenchmarkIndex.build(specs, tmp_path / "index")
    assert index.names == ["listed", "squad", "plain"]
    across_a1 = Q1.split()[-6:] + A1.split()[:7]
    across_a2 = Q2.split()[-6:] + A2.split()[:7]
    texts = [" ".join(across_a1), " ".join(across_a2), f"so: {SHORT}", FILLER]
    assert [[h.benchmark for h in hits] for hits in index.find(texts)] == [["listed"], ["squad"], ["plain"], []]
    summary = {b["name"]: b for b in index.summary()["benchmarks"]}
    assert summary["squad"]["items"] == 1  # the test split only
    assert summary["squad"]["question"] == "context" and summary["squad"]["answer"] == "answers"


def test_the_digest_is_stable_and_follows_the_content(quiz, tmp_path):
    first = BenchmarkIndex.build(parse_specs(str(quiz)), tmp_path / "a")
    second = BenchmarkIndex.build(parse_specs(str(quiz)), tmp_path / "b")
    assert first.digest == second.digest and len(first.digest) == 64
    quiz.write_text(quiz.read_text().replace("chlorophyll", "carotene"))
    changed = BenchmarkIndex.build(parse_specs(str(quiz)), tmp_path / "a")  # over the old index
    assert changed.digest != first.digest


def test_load_maps_the_files_and_answers_as_the_built_index(index, quiz):
    texts = [mangle(Q1), f"{FILLER} {SHORT}", FILLER, Q2 + " " + A2]
    loaded = BenchmarkIndex.load(index.folder)
    assert isinstance(loaded.ngrams.hashes.base, np.memmap)
    assert loaded.find(texts) == index.find(texts) and loaded.digest == index.digest
    assert pickle.loads(pickle.dumps(loaded)).find(texts) == index.find(texts)
    assert loaded.summary() == index.summary()


def test_a_build_that_dies_leaves_no_index(quiz, tmp_path, monkeypatch):
    folder = tmp_path / "index"
    BenchmarkIndex.build(parse_specs(str(quiz)), folder)
    real_replace, calls = bm.os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed between two renames
        real_replace(src, dst)

    monkeypatch.setattr(bm.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        BenchmarkIndex.build(parse_specs(str(quiz)), folder)
    assert not (folder / "index.json").exists()
    assert not list(folder.glob("*.tmp-*"))
    with pytest.raises(InputNotFoundError, match="no benchmark index"):
        BenchmarkIndex.load(folder)

    def dying_bitmap(values, bits):
        raise RuntimeError("killed")

    monkeypatch.setattr(bm, "_bitmap", dying_bitmap)  # dies before anything is written
    with pytest.raises(RuntimeError):
        BenchmarkIndex.build(parse_specs(str(quiz)), tmp_path / "fresh")
    assert list((tmp_path / "fresh").iterdir()) == []


def test_an_index_of_only_tiny_items_is_empty_but_works(tmp_path):
    tiny = write_jsonl(tmp_path / "tiny.jsonl", [{"question": TINY}, {"question": "Yes or no"}])
    index = BenchmarkIndex.build(str(tiny), tmp_path / "index", min_words=4)  # a spec string is fine too
    assert index.summary()["ngrams"] == 0 and index.summary()["benchmarks"][0]["too_short"] == 2
    assert BenchmarkIndex.load(index.folder).find([TINY, Q1]) == [[], []]
    one_word = write_jsonl(tmp_path / "words.jsonl", [{"question": "Paris"}, {"question": TINY}])
    index = BenchmarkIndex.build(str(one_word), tmp_path / "words", n=3, min_words=1)
    assert index.summary()["whole_lengths"] == [1] and index.summary()["ngrams"] == 1
    assert index.find(["I love PARIS.", "the capital of france is", "parisian"]) == [
        [Hit("words", "paris")],
        [Hit("words", "capital of france")],
        [],
    ]


def test_a_long_text_is_looked_up_in_pieces(index, monkeypatch):
    monkeypatch.setattr(ngrams, "PIECE_CHARS", 64)
    monkeypatch.setattr(ngrams, "BATCH_BYTES", 128)
    text = f"{FILLER} {FILLER}. {mangle(Q2)} {FILLER} -- {SHORT} {FILLER}"
    assert len(text) > 5 * 64
    q2 = words(Q2)
    expected = [Hit("quiz", " ".join(q2[:13]))]
    assert index.find([FILLER, text, Q1]) == [[], expected, [Hit("quiz", " ".join(words(Q1)[:13]))]]
    [hits] = index.find([f"{FILLER} {SHORT} {FILLER} {Q2}"])
    assert hits == [Hit("quiz", normalize(SHORT))]  # one hit per benchmark: the first in the text


def test_the_kernels_are_compiled_when_the_index_is_loaded_not_in_the_first_batch(index):
    """Loading an index compiles (or loads) the compiled loops for the argument types a run passes them (a
    read-only packed buffer, memory-mapped bitmaps), so no batch pays for compiling: looking texts up, and
    grounding pairs, add no new compiled version."""
    from ipt_data.quality import ngram_kernels
    from ipt_data.quality.pair_filters import PairFilter

    kernels = ("scan", "words", "probe", "find", "pair_stats")
    index = BenchmarkIndex.load(index.folder)
    grounding = PairFilter("grounding")
    before = {name: len(getattr(ngram_kernels, name).signatures) for name in kernels}
    assert all(before.values())
    assert index.find([f"{FILLER} {Q1}", "", "Ünïcode ÉTÉ"])[0]
    text = "The reef lies off the coast of Queensland, Australia."
    assert grounding.judge(text, [{"instruction": "Where is the reef?", "response": "Queensland"}]) == [None]
    assert {name: len(getattr(ngram_kernels, name).signatures) for name in kernels} == before


def test_word_hashes_are_the_polynomial_of_their_bytes():
    """The compiled scan reads 8 bytes at a time; every word's hash is still the definition (`ngram_kernels`):
    splitmix64 of sum(byte[i] * P**i) mod 2**64, for words of 1 to 40 bytes at every offset of a block."""
    from ipt_data.quality import ngram_kernels as k

    m = 1 << 64

    def mix(x: int) -> int:
        x ^= x >> 30
        x = x * int(k.MIX1) % m
        x ^= x >> 27
        x = x * int(k.MIX2) % m
        return x ^ (x >> 31)

    def word_hash(word: bytes) -> int:
        return mix(sum(b * pow(int(k.BYTE_BASE), i, m) for i, b in enumerate(word)) % m)

    rng = random.Random(7)
    chunks = [
        " ".join(
            "".join(rng.choice("abcxyz09") for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(0, 6))
        ).encode()
        for _ in range(400)
    ]
    hashes, piece_of_word, first_word = k.scan(*ngrams.pack(chunks))
    words = [w for chunk in chunks for w in chunk.split()]
    assert hashes.tolist() == [word_hash(w) for w in words]
    assert piece_of_word.tolist() == [i for i, chunk in enumerate(chunks) for _ in chunk.split()]
    assert first_word[-1] == len(words)
    assert int(k._swap(np.uint64(0x0102030405060708))) == 0x0807060504030201  # a big-endian machine's blocks


def test_a_bitmap_of_the_wrong_size_is_refused_on_load(index):
    """The compiled probe reads the bitmap byte a hash points at, unchecked: an index whose bitmap is not the size
    its index.json says is refused when loaded (rebuild), not read past its end."""
    folder = index.folder
    short = np.load(folder / "ngram_bitmap.npy")[:-8]
    np.save(folder / "ngram_bitmap.npy", short)
    info = json.loads((folder / "index.json").read_text())
    info["sizes"]["ngram_bitmap"] = len(short)  # the listed size agrees; the bits do not
    (folder / "index.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="ngram_bitmap.npy.*rebuild"):
        BenchmarkIndex.load(folder)


def test_the_kernels_compile_without_a_disk_cache_where_none_can_be_written(monkeypatch):
    """Where numba can cache nowhere (a read-only install), the loops are compiled in the process instead of
    failing the import."""
    from ipt_data.quality import ngram_kernels

    calls = []

    def njit(**options):
        calls.append(options)
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file '...'")
        return lambda function: function

    monkeypatch.setattr(ngram_kernels.numba, "njit", njit)
    compiled = ngram_kernels._jit(len)
    assert compiled is len and calls == [{"cache": True, "nogil": True}, {"nogil": True}]


def test_the_word_hashes_left_for_the_grounding_filter_are_those_it_would_make(index):
    """Looking texts up can leave their word hashes (`hits(texts, words)`) for the grounding filter not to hash
    the texts again: those of every text hashed whole (ASCII or not: both normalize a text alike), each what the
    filter hashes of it (`ngram_kernels.scan` of `ngrams.pack_texts([text])`), and none of a text hashed in
    pieces. Taken for some texts and not others, the filter's words of a batch are those it makes alone, and so
    are its verdicts."""
    from ipt_data.quality import ngram_kernels, ngrams
    from ipt_data.quality.pair_filters import PairFilter, _joined_words, _text_words

    def hashed(texts):
        hashes, _, first = ngram_kernels.scan(*ngrams.pack_texts(texts, _joined_words))
        return hashes, first

    texts = [f"{FILLER} {Q1}", "The Reef, at 1620 -- it's Queensland's!", "", "Ünïcode ÉTÉ ﬁsh", "a\0b c", FILLER]
    texts += ["x " * (ngrams.PIECE_CHARS // 2 + 10)]  # hashed in pieces
    words: dict = {}
    index.hits(texts, words)
    assert {id(text) for text, _ in words.values()} == set(words)  # by the text object, which the entry holds
    assert sorted(text for text, _ in words.values()) == sorted(t for t in texts if len(t) <= ngrams.PIECE_CHARS)
    for text, hashes in words.values():
        assert np.array_equal(hashes, hashed([text])[0]), text
    batch = [texts[1], "not looked up", texts[3], texts[0], texts[1], ""]
    other = {id(texts[1]): (texts[0], words[id(texts[0])][1])}  # an entry that is not this text's: not taken
    for known in (words, {id(texts[0]): words[id(texts[0])]}, other, {}, None):
        got = _text_words(batch, known)
        assert all(np.array_equal(a, b) for a, b in zip(got, hashed(batch), strict=True))
    judge = PairFilter("grounding,length,repetition,duplicates")
    pairs = [[{"instruction": "Where is the reef?", "response": w}] for w in ("Queensland", "Reef 1620", "ÉTÉ", "Mars")]
    pairs += [[{"instruction": "What?", "response": "lorem dolor amet"}], []]
    plain = judge.judge_many(batch, pairs, [set() for _ in batch])
    assert judge.judge_many(batch, pairs, [set() for _ in batch], words) == plain
    assert [v[:1] for v in plain] == [[None], ["ungrounded"], [None], ["ungrounded"], ["ungrounded"], []]


def test_the_bloom_prefilter_misses_no_gram_of_the_table_and_lets_few_others_through():
    """The n-grams' prefilter is a blocked Bloom filter (`_bloom`, probed by the compiled `find` with
    `ngram_kernels.bloom_mask`, and by `_Bloom.probe` in numpy): `find` answers exactly as a binary search of
    every gram in the table (the plain definition), for texts full of the table's grams and texts of none;
    the kernel's masks are numpy's; few grams not in the table get through."""
    from ipt_data.quality import ngram_kernels

    rng = random.Random(7)
    texts = random_texts(rng, 400)
    hasher = NgramHasher(3)
    hashes, _, _ = hasher.hashes(texts)
    table = np.unique(hashes[::2])  # half the grams are in the table
    bits = bm._bloom_bits(len(table))
    bloom = bm._Bloom(bm._bloom(table, bits), bits)
    masks = np.array([ngram_kernels.bloom_mask(h) for h in hashes], np.uint64)
    assert (masks == bm._bloom_masks(hashes)).all()
    assert (np.unique(hashes[bloom.probe(hashes)]) == np.unique(hashes)[np.isin(np.unique(hashes), table)]).all()
    hits = 0
    for batch in hasher.batches(texts):
        k, at = ngram_kernels.find(batch.prefix, batch.piece_of_word, 3, bloom.bitmap, 70 - bits, table)
        starts = np.arange(max(len(batch.word_hash) - 2, 0))
        spans = batch.hash_spans(starts, 3)  # every gram's hash, the plain way
        inside = np.flatnonzero(batch.within(starts, 3))
        want = inside[np.isin(spans[inside], table)]
        assert k.tolist() == want.tolist()
        assert (table[at] == spans[k]).all()
        hits += len(k)
    assert hits > 100
    others = np.random.default_rng(0).integers(0, 2**63, 100_000, dtype=np.uint64)
    others = others[~np.isin(others, table)]
    assert len(bloom.probe(others)) < len(others) // 200  # a few in ten thousand: at most 0.5%


def test_an_index_of_an_older_format_is_refused_on_load(index):
    """The format changed (2: the Bloom prefilter): an index written by an older version says to rebuild it."""
    info = json.loads((index.folder / "index.json").read_text())
    info["format"] = 1
    (index.folder / "index.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="format 1; rebuild"):
        BenchmarkIndex.load(index.folder)
