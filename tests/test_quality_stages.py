"""Pair filters and benchmark decontamination as stages of the shard, through the CLI (issue 25): planted cases
found and handled as configured, every input row accounted for, the counts of the report, stats.json, the card
and the CLI table in agreement; without the options, nothing changes."""

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ipt_data.cli import main
from ipt_data.engines import Completion, clear_cache, register_engine, unregister_engine
from ipt_data.method import wire
from ipt_data.method.tokenizer import PromptEncoder
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

WORDS = (
    "river valley farmers harvest grain autumn market village bridge stone mill water wheel baker bread "
    "morning winter snow mountain path shepherd flock meadow spring blossom orchard apple cider barrel cellar"
).split()
# a benchmark's question, and the same question pasted with other case, punctuation and white space
BENCH_Q = (
    "Which planet in the solar system has the longest day measured in Earth hours and why does it rotate so slowly"
)
BENCH_A = "Venus rotates slowly because of tidal effects from the Sun and its thick atmosphere"
PASTED = "which PLANET, in the Solar System -- has the longest  day;\nmeasured in earth hours? And why does it rotate"


def prose(k: int) -> str:
    rng = random.Random(k)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(6)]
    return f"Document {k} tells of the valley. " + " ".join(sentences)


class Planted:
    """Answers each prompt by what its current text holds: a grounded pair always (the text's first words as
    the answer); UNGROUNDED adds a pair about nothing in the text; DEGENERATE a looping answer; ALLBAD gives
    only pairs the filters drop; LEAKPAIR a pair asking the benchmark's question."""

    name = "planted"
    max_model_len = 100_000

    def __init__(self):
        self.encoder = PromptEncoder(TINY_SYNTHESIZER)

    def generate(self, prompts, **kwargs):
        out = []
        for p in prompts:
            text = self.encoder.decode(p).rsplit(wire.CON_OPEN.strip(), 1)[-1].split(wire.CON_CLOSE.strip())[0]
            words = text.split()
            grounded = {"instruction": "What does the document say first?", "response": " ".join(words[:6])}
            off = {"instruction": "Who won the chess final?", "response": "Magnus Carlsen defeated Ian Nepomniachtchi"}
            loop = {
                "instruction": "Describe it in detail please.",
                "response": " ".join([(words + ["x", "x"])[-3]] * 12),
            }
            leak = {"instruction": PASTED.upper(), "response": "Venus, because it rotates slowly."}
            pairs = [off, loop] if "ALLBAD" in text else [grounded]
            if "UNGROUNDED" in text:
                pairs.append(off)
            if "DEGENERATE" in text:
                pairs.append(loop)
            if "LEAKPAIR" in text:
                pairs.append(leak)
            body = wire.render_pairs(pairs)
            out.append(Completion(body, "stop", len(p), len(self.encoder.encode_texts([body])[0])))
        return out


@pytest.fixture()
def planted():
    register_engine("planted", lambda model, device, **options: Planted())
    yield
    unregister_engine("planted")
    clear_cache()


def corpus(tmp_path: Path) -> Path:
    texts = [prose(k) for k in range(16)]
    texts[1] += " UNGROUNDED"
    texts[2] += " DEGENERATE"
    texts[3] += " ALLBAD"
    texts[4] += " LEAKPAIR"
    texts[5] = texts[5] + " As the old quiz asked, " + PASTED + " so slowly? Nobody knew."
    texts[6] = ""  # rejected before any stage: empty
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def bench_file(tmp_path: Path) -> Path:
    path = tmp_path / "quiz.jsonl"
    items = [{"question": BENCH_Q, "answer": BENCH_A}]
    items += [
        {"question": f"An unrelated question number {k} about {' '.join(WORDS[k : k + 12])}", "answer": "x"}
        for k in range(5)
    ]
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def augment(tmp_path: Path, out: str, *extra: str, capsys=None) -> tuple[int, str]:
    code = main(
        [
            "augment",
            "--dataset", str(corpus(tmp_path)),
            "--model", TINY_SYNTHESIZER,
            "--engine", "planted",
            "--output", str(tmp_path / out),
            "--rounds", "2",
            "--batch-size", "8",
            "--shard-size", "8",
            "--no-progress",
            *extra,
        ]
    )  # fmt: skip
    return code, capsys.readouterr().out if capsys else ""


def published(folder: Path) -> list[dict]:
    return [r for f in sorted((folder / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def rejects(tmp_path: Path, out: str) -> list[dict]:
    path = tmp_path / f"{out}.work" / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def records(tmp_path: Path, out: str) -> list[dict]:
    path = tmp_path / f"{out}.work" / "quality.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def accounted(tmp_path: Path, out: str, n: int = 16) -> None:
    """Every input row is published (a source of some text) or rejected, with its reason; none twice."""
    rows = published(tmp_path / out)
    sources = {int(key.split(":")[0]) for r in rows for key in r["source"]}
    rejected = {r["row"] for r in rejects(tmp_path, out)}
    assert not sources & rejected
    assert sources | rejected == set(range(n))


def test_filters_drop_planted_pairs_keep_chains_whole_and_count_alike(tmp_path, planted, capsys):
    code, table = augment(tmp_path, "f", "--filters", "grounding,length,repetition,duplicates", capsys=capsys)
    assert code == 0
    report = json.loads((tmp_path / "f" / "run_report.json").read_text())
    stats = json.loads((tmp_path / "f" / "stats.json").read_text())
    card = (tmp_path / "f" / "README.md").read_text()
    # the off-topic pairs of UNGROUNDED and ALLBAD, and LEAKPAIR's (about nothing in its text): ungrounded;
    # the loops of DEGENERATE and ALLBAD (the text's own words): repetitive
    assert report["filtered"] == {"ungrounded": 3, "repetitive": 2}
    assert stats["synthesis"]["filtered"] == report["filtered"]
    assert "| pairs dropped: ungrounded | 3 |" in card and "| pairs dropped: repetitive | 2 |" in card
    assert "pairs dropped: ungrounded" in table and "pairs dropped: repetitive" in table
    # no published pair is one the filters dropped, in its own text or as a demo in a later one
    rows = published(tmp_path / "f")
    for r in rows:
        assert "Magnus" not in r["text"] and "in detail please" not in r["text"]
    assert all("Magnus" not in p["response"] for r in rows for p in r["pairs"])
    # ALLBAD lost every pair: published raw, as its own text, and counted so
    allbad = [r for r in rows if "ALLBAD" in r["text"]]
    assert len(allbad) == 1 and allbad[0]["kind"] == "raw" and allbad[0]["text"] == prose(3) + " ALLBAD"
    assert report["raw_texts"]["filtered"] == 1 and stats["synthesis"]["raw_texts"]["filtered"] == 1
    assert "every pair dropped by the pair filters" in card
    # published pairs = synthesized - dropped
    assert sum(len(r["pairs"]) for r in rows) == report["pairs"] - sum(report["filtered"].values())
    # each dropped pair is in quality.jsonl with its reason and its text
    dropped = [r for r in records(tmp_path, "f") if r["stage"] == "pair_filter"]
    assert sorted(r["reason"] for r in dropped) == [
        "repetitive",
        "repetitive",
        "ungrounded",
        "ungrounded",
        "ungrounded",
    ]
    assert report["accounted"] is True
    accounted(tmp_path, "f")


def test_without_the_options_the_output_is_what_it_was(tmp_path, planted, capsys):
    """The stages act only when asked: with the filters' options unset, and with an empty --filters, the
    published files are the same bytes, and the report holds no key of theirs."""
    assert augment(tmp_path, "a")[0] == 0
    assert augment(tmp_path, "b", "--filters", "")[0] == 0
    for name in ("README.md", "run_report.json", "stats.json", ".ipt_publish.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert [r["text"] for r in published(tmp_path / "a")] == [r["text"] for r in published(tmp_path / "b")]
    report = json.loads((tmp_path / "a" / "run_report.json").read_text())
    assert "filtered" not in report and "decontamination" not in report and "inputs" not in report
    assert not (tmp_path / "a.work" / "quality.jsonl").exists()


# The published content of the run in `test_without_the_options_...`, as the code before the quality stages
# (commit c0a3431) published it: the rows (as JSON), stats.json, the card, and the run report without its
# fingerprint (which holds the input's absolute path). Recorded by running this file's scenario at c0a3431. That
# code mixed the corpus at the run's end (the shards' rows, then one seeded shuffle of them all); since issue 24
# a run without general data publishes each shard's own files (`ipt_data.run.outputs`): the same rows, in
# another order, and a card whose `dataset_info` sizes differ. The test takes both apart.
BEFORE_THE_STAGES = {
    "rows": "9e525330731ea0ca",
    "stats.json": "53af88bcdbbe4db2",
    "README.md": "47c6c557a0bf47fe",
    "run_report": "6b3062b3fa44b7fb",
}


def _h(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def content_hashes(out: Path, rows: list[dict]) -> dict[str, str]:
    report = json.loads((out / "run_report.json").read_text())
    report.pop("fingerprint")
    return {
        "rows": _h(json.dumps(rows, sort_keys=True).encode()),
        "stats.json": _h((out / "stats.json").read_bytes()),
        "README.md": _h((out / "README.md").read_bytes()),
        "run_report": _h(json.dumps(report, sort_keys=True).encode()),
    }


def mixed_as_before(work: Path) -> list[dict]:
    """The shards' rows in the order the end-of-run mix gave them: all shards, then one shuffle with the seed."""
    from datasets import Dataset

    from ipt_data.schema import PUBLISHED_COLUMNS

    rows = [
        r for f in sorted(work.glob("shards/[0-9][0-9][0-9][0-9][0-9].parquet")) for r in pq.read_table(f).to_pylist()
    ]
    return Dataset.from_list([{c: r[c] for c in PUBLISHED_COLUMNS} for r in rows]).shuffle(seed=0).to_list()


def sizes_out(card: str) -> str:
    return "\n".join(
        line
        for line in card.splitlines()
        if not line.lstrip().startswith(("num_bytes", "download_size", "dataset_size"))
    )


def test_without_the_options_the_content_is_what_the_code_before_the_stages_published(tmp_path, planted, monkeypatch):
    import importlib

    finish = importlib.import_module("ipt_data.run.finish")  # the module (`ipt_data.run.finish` is a function too)
    card_module = importlib.import_module("ipt_data.corpus.card")
    assert augment(tmp_path, "g")[0] == 0
    out = tmp_path / "g"
    before = mixed_as_before(tmp_path / "g.work")
    assert sorted(json.dumps(r, sort_keys=True) for r in published(out)) == sorted(
        json.dumps(r, sort_keys=True) for r in before
    )  # the same rows
    hashes = content_hashes(out, before)
    assert {k: v for k, v in hashes.items() if k != "README.md"} == {
        k: v for k, v in BEFORE_THE_STAGES.items() if k != "README.md"
    }
    # the card as the end-of-run mix writes it (general data takes that path still) is the card of c0a3431, whose
    # command line also named where its shards ran (left out since issue 24: the data does not depend on it; the
    # Slurm options, added since, are never in it)
    monkeypatch.setattr(finish, "published_files", lambda *args: None)
    where = ("executor", "gpus", "workers", "gpus_per_worker")
    monkeypatch.setattr(card_module, "LOCAL_ONLY", tuple(k for k in card_module.LOCAL_ONLY if k not in where))
    assert augment(tmp_path, "m")[0] == 0
    assert content_hashes(tmp_path / "m", published(tmp_path / "m"))["README.md"] == BEFORE_THE_STAGES["README.md"]
    assert published(tmp_path / "m") == before
    monkeypatch.undo()
    monkeypatch.setattr(finish, "published_files", lambda *args: None)
    assert augment(tmp_path, "m2")[0] == 0  # mixed at the end, the card without where the shards ran
    card, mixed_card = (out / "README.md").read_text(), (tmp_path / "m2" / "README.md").read_text()
    assert card != mixed_card and sizes_out(card) == sizes_out(mixed_card)  # only the data files' sizes differ


def test_a_filter_change_is_a_new_fingerprint(tmp_path, planted, capsys):
    assert augment(tmp_path, "g", "--filters", "grounding")[0] == 0
    assert augment(tmp_path, "g", "--filters", "grounding,length")[0] == 2
    assert "other parameters" in capsys.readouterr().err


def test_decontamination_finds_pasted_benchmark_questions_in_texts_and_pairs(tmp_path, planted, capsys):
    bench = bench_file(tmp_path)
    code, table = augment(tmp_path, "d", "--decontaminate", f"{bench}?name=quiz", capsys=capsys)
    assert code == 0
    report = json.loads((tmp_path / "d" / "run_report.json").read_text())
    stats = json.loads((tmp_path / "d" / "stats.json").read_text())
    card = (tmp_path / "d" / "README.md").read_text()
    # row 5 holds the question pasted with other case, punctuation and white space: rejected, with the reason
    assert {r["row"]: r["reason"] for r in rejects(tmp_path, "d")} == {5: "contaminated: quiz", 6: "empty_text"}
    # row 4's synthesizer asked the benchmark's question: that pair dropped, the text's other pair kept
    expected = {"quiz": {"texts": {"drop": 1}, "pairs": {"drop_pair": 1}}}
    assert report["decontamination"] == expected == stats["synthesis"]["decontamination"]
    assert report["rejects"]["contaminated"] == 1 and report["rows"]["rejected"] == 2
    assert "benchmark matches: quiz / pairs / drop_pair" in table and "benchmark matches: quiz / texts / drop" in table
    assert "Decontaminated against: `quiz`" in card and "pairs: 1 drop_pair; texts: 1 drop" in card
    assert report["inputs"]["decontaminate"]["against"][0]["name"] == "quiz"
    rows = published(tmp_path / "d")
    assert not any("longest day" in " ".join(r["text"].lower().split()) for r in rows)
    row4 = [r for r in rows if any(key.startswith("4:") for key in r["source"])]
    assert row4 and all(r["kind"] == "augmented" for r in row4)
    # every match is in quality.jsonl, with the n-gram it matched on
    hits = [r for r in records(tmp_path, "d") if r["stage"] == "decontaminate"]
    assert sorted((h["point"], h["action"]) for h in hits) == [("pairs", "drop_pair"), ("texts", "drop")]
    assert all(len(h["ngram"].split()) == 13 and h["ngram"] in " ".join(BENCH_Q.lower().split()) for h in hits)
    assert report["accounted"] is True
    accounted(tmp_path, "d")


def test_decontamination_actions_flag_and_raw(tmp_path, planted, capsys):
    bench = bench_file(tmp_path)
    extra = ("--decontaminate", str(bench), "--decontaminate-texts", "flag", "--decontaminate-pairs", "raw")
    assert augment(tmp_path, "r", *extra)[0] == 0
    report = json.loads((tmp_path / "r" / "run_report.json").read_text())
    # row 5, flagged, is published as it is: the rendered point counts only what templates add to the texts
    assert report["decontamination"] == {"quiz": {"texts": {"flag": 1}, "pairs": {"raw": 1}}}
    assert report["rows"]["rejected"] == 1  # only the empty row: a flagged text is published
    rows = published(tmp_path / "r")
    (row4,) = [r for r in rows if any(key.startswith("4:") for key in r["source"])]
    assert row4["kind"] == "raw" and row4["text"] == prose(4) + " LEAKPAIR"
    (row5,) = [r for r in rows if PASTED in r["text"]]
    assert row5["kind"] == "augmented" and "5:0" in row5["source"]
    assert report["raw_texts"]["contaminated"] == sum(r["kind"] == "raw" for r in rows) == 1
    accounted(tmp_path, "r")


def test_a_changed_benchmark_is_a_new_fingerprint(tmp_path, planted, capsys):
    bench = bench_file(tmp_path)
    assert augment(tmp_path, "c", "--decontaminate", str(bench))[0] == 0
    assert augment(tmp_path, "c", "--decontaminate", str(bench))[0] == 0  # the same: reused
    bench.write_text(bench.read_text() + json.dumps({"question": " ".join(WORDS[:14]), "answer": "y"}) + "\n")
    assert augment(tmp_path, "c", "--decontaminate", str(bench))[0] == 2
    assert "other parameters" in capsys.readouterr().err


def test_rendered_texts_that_match_are_published_as_their_raw_texts(tmp_path):
    """A template can join a question and its answer into an n-gram neither held: the rendered text matches,
    and `--decontaminate-rendered raw` publishes the chain's texts raw, each on its own."""
    from ipt_data.quality.benchmarks import BenchmarkIndex, parse_specs
    from ipt_data.stages.base import ShardContext
    from ipt_data.stages.decontaminate import DecontaminateOptions, screen_rendered

    bench = bench_file(tmp_path)
    index = BenchmarkIndex.build(parse_specs(str(bench)), tmp_path / "index")
    synthesized = {"text": ["first chunk text", "second chunk text"], "doc_id": [7, 9], "chunk": [0, 0]}
    rendered = {
        "text": ["clean text with its questions", f"chunk text. Question: {BENCH_Q}?\nAnswer: Venus."],
        "kind": ["augmented", "augmented"],
        "source": [["7:0"], ["7:0", "9:0"]],
        "n_pairs": [1, 2],
        "layout": ["l", "l"],
        "inverted": [False, False],
        "pairs": [[], []],
        "fallback_pairs": [0, 0],
    }
    ctx = ShardContext(0, 0, DecontaminateOptions(decontaminate="x"), index, synthesized=synthesized)
    out = screen_rendered(rendered, ctx)
    assert out["text"] == ["clean text with its questions", "first chunk text", "second chunk text"]
    assert out["kind"] == ["augmented", "raw", "raw"] and out["source"] == [["7:0"], ["7:0"], ["9:0"]]
    assert ctx.raw_because == {"7:0": "contaminated", "9:0": "contaminated"}
    assert ctx.stats == {"decontamination": {"quiz": {"rendered": {"raw": 1}}}}
    options = DecontaminateOptions(decontaminate="x", decontaminate_rendered="flag")
    ctx = ShardContext(0, 0, options, index, synthesized=synthesized)
    assert screen_rendered(rendered, ctx) == rendered


def test_benchmark_names_with_dots_columns_with_spaces_and_paths_however_written(tmp_path, planted, monkeypatch):
    from ipt_data.config import AugmentConfig

    bench = tmp_path / "quiz.v2.jsonl"
    bench.write_text(json.dumps({"my question": BENCH_Q, "answer": BENCH_A}) + "\n")
    spec = f"{bench}?question=my%20question&answer=answer"
    assert augment(tmp_path, "n", "--decontaminate", spec)[0] == 0
    report = json.loads((tmp_path / "n" / "run_report.json").read_text())
    assert report["decontamination"] == {"quiz.v2": {"texts": {"drop": 1}, "pairs": {"drop_pair": 1}}}
    assert "| `quiz.v2` (1 items" in (tmp_path / "n" / "README.md").read_text()
    assert "no match" not in (tmp_path / "n" / "README.md").read_text()
    # one file, one fingerprint, however its path is written
    monkeypatch.chdir(tmp_path)
    fingerprints = {
        AugmentConfig(decontaminate=s).fingerprint() for s in (str(bench), "quiz.v2.jsonl", "./quiz.v2.jsonl")
    }
    assert len(fingerprints) == 1


def test_options_of_a_stage_left_out_of_the_list_are_an_error():
    from ipt_data.config import AugmentConfig
    from ipt_data.errors import ConfigError
    from ipt_data.stages import CORE

    with pytest.raises(ConfigError, match="pair_filter"):
        AugmentConfig(stages=CORE, filters="grounding")
    with pytest.raises(ConfigError, match="decontaminate"):
        AugmentConfig(stages=CORE, decontaminate="quiz.jsonl")
    with pytest.raises(ConfigError, match="unknown pair filter"):
        AugmentConfig(filters="grounding,bogus")
    with pytest.raises(ConfigError, match="core|hold"):
        AugmentConfig(stages=("chunk", "route", "synthesize", "templify", "count"))


def test_unigrams_need_no_words_of_a_text_around_the_rest():
    """With 1-grams no gram spans a text's edge: the parts outside the texts carry none of their words (the
    texts are screened as input rows)."""
    from ipt_data.stages.decontaminate import outside_texts

    text = "TEXT one two three four five"
    assert outside_texts(f"aaa bbb ccc {text} ddd eee", [text], 1) == ["aaa bbb ccc  ", "  ddd eee"]
    assert [p.split() for p in outside_texts(f"aaa {text} ddd", [text], 3)] == [
        ["aaa", "TEXT", "one"],
        ["four", "five", "ddd"],
    ]


def test_screening_texts_checks_their_row_numbers():
    from types import SimpleNamespace

    from ipt_data.stages.base import ShardContext
    from ipt_data.stages.decontaminate import screen_texts

    ctx = ShardContext(0, 0, SimpleNamespace(decontaminate_texts="drop"), rows=[0, 1, 2])
    with pytest.raises(ValueError, match="2 texts but 3 row numbers"):
        screen_texts(["a", "b"], ctx)


def test_finding_a_long_text_is_str_find():
    """The rendered point finds each (long) text in its rendered text by its first 64 characters, then the rest:
    the same answers as `str.find`, where the head occurs many times without the text."""
    from ipt_data.stages.decontaminate import _find

    rng = random.Random(6)
    for _ in range(500):
        head = "".join(rng.choice("ab ") for _ in range(rng.randint(60, 70)))
        needle = head + "".join(rng.choice("ab ") for _ in range(rng.randint(0, 30)))
        hay = "".join(rng.choice([head, needle, needle[:-1], "a", " b"]) for _ in range(rng.randint(0, 8)))
        start = rng.randint(0, max(0, len(hay)))
        assert _find(hay, needle, start) == hay.find(needle, start), (hay, needle, start)


def test_a_texts_edge_words_are_its_split_words():
    """`outside_texts` reads a text's first and last words from its edges: the same words as splitting it all,
    whatever the words' lengths (a word longer than the edge, a text shorter than it, whitespace of any kind)."""
    from ipt_data.stages.decontaminate import _EDGE, _first_words, _last_words

    rng = random.Random(3)
    words = ["a", "bb", "é", "x" * 300, "y" * (_EDGE + 76), "", " ", "\n", "\t\t"]
    for _ in range(3000):
        text = "".join(rng.choice(words) + rng.choice([" ", "\n", "  "]) for _ in range(rng.randint(0, 60))).strip()
        for count in (0, 1, 12, 25):
            assert _first_words(text, count) == text.split()[:count]
            assert _last_words(text, count) == (text.split()[-count:] if count else [])


def test_outside_texts_holds_every_ngram_not_inside_a_text():
    """What the rendered point hashes: every n-gram of a rendered text that does not lie inside one of its
    texts is in one of the parts, whatever the template put around and between them (texts of a few words, and
    texts longer than the edge their first and last words are read from)."""
    from ipt_data.stages.decontaminate import _EDGE, outside_texts

    rng = random.Random(5)
    lengths = []
    for _ in range(200):
        texts = [
            " ".join(rng.choice(WORDS) for _ in range(rng.choice([rng.randint(1, 30), rng.randint(150, 400)])))
            for _ in range(rng.randint(1, 3))
        ]
        lengths += map(len, texts)
        pieces = [
            " ".join(rng.choice(["Q:", "A:", "what", "is", "it", "\n\n", "Options:"]) for _ in range(rng.randint(0, 8)))
            for _ in range(len(texts) + 1)
        ]
        rendered = pieces[0] + "".join(f" {t} {p}" for t, p in zip(texts, pieces[1:], strict=True))
        n = rng.randint(2, 13)
        parts = [p.split() for p in outside_texts(rendered, texts, n)]
        words, inside, at = rendered.split(), set(), 0
        for t in texts:  # the word positions of each text in the rendered text
            k = next(j for j in range(at, len(words)) if words[j : j + len(t.split())] == t.split())
            inside |= {(k, k + len(t.split()))}
            at = k + len(t.split())
        for i in range(len(words) - n + 1):
            if any(a <= i and i + n <= b for a, b in inside):
                continue  # inside a text: screened with the input texts
            gram = words[i : i + n]
            assert any(p[j : j + n] == gram for p in parts for j in range(len(p) - n + 1)), (rendered, gram)
    assert min(lengths) < 200 and max(lengths) > 2 * _EDGE


def test_the_built_in_stages_declare_the_columns_their_functions_write(encoder):
    """A stage's declaration is what its `Dataset.map` function does: the columns it writes are in its output."""
    from ipt_data import Synthesizer, chunk_batch, synthesis_features, templify_batch
    from ipt_data.schema import TEXT_IDS
    from ipt_data.stages import load

    stages = {s.name: s for s in load()}
    chunks = chunk_batch({"text": [prose(1), prose(2)]}, [0, 1], tokenizer=encoder, ids_column=TEXT_IDS)
    assert set(stages["chunk"].writes) <= set(chunks)
    synthesized = Synthesizer(model="unused", tokenizer=encoder, engine=Planted())({"text": chunks["text"]})
    assert set(stages["synthesize"].writes) <= set(synthesized) <= set(synthesis_features({"text": None}))
    assert set(stages["templify"].writes) == set(templify_batch(synthesized))
    assert {s.name for s in load()} == {
        "route",
        "chunk",
        "synthesize",
        "pair_filter",
        "decontaminate",
        "templify",
        "count",
    }


def test_the_grounding_filter_takes_the_words_decontamination_hashed(tmp_path):
    """Decontaminating a shard's texts leaves their words' hashes (`ShardContext.words`) for the grounding filter,
    which takes them (and forgets them) rather than hash the texts again: its verdicts, the batch it returns,
    its counts and records are those it makes alone. Only a filter that grounds by words asks for them."""
    from types import SimpleNamespace

    from ipt_data.quality.benchmarks import BenchmarkIndex, parse_specs
    from ipt_data.stages import pair_filter
    from ipt_data.stages.base import ShardContext
    from ipt_data.stages.decontaminate import screen_texts

    index = BenchmarkIndex.build(parse_specs(str(bench_file(tmp_path))), tmp_path / "index")
    # a non-ASCII text is shared too: hashed as normalized (NFKC: the ligature is "fi"), as the filter hashes it
    texts = [prose(40), prose(30) + " Ünïcode ﬁnery", prose(20), prose(50)]
    words: dict = {}
    ctx = ShardContext(0, 0, SimpleNamespace(decontaminate_texts="drop"), index, rows=[0, 1, 2, 3], words=words)
    assert screen_texts(texts, ctx) == [None] * 4
    assert sorted(text for text, _ in words.values()) == sorted(texts)
    grounded = {"instruction": "What is it about?", "response": " ".join(texts[0].split()[3:9])}
    finery = {"instruction": "What is worn?", "response": "Finery, ÜNÏCODE finery."}  # grounded through NFKC only
    batch = {
        "text": texts, "doc_id": ["0", "1", "2", "2"], "chunk": [0, 0, 0, 1],
        "pairs": [[grounded, pair_of("Mars rovers?")], [pair_of("Where?"), finery], [grounded], [grounded, grounded]],
        "chain": ["0:0", "1:0", "2:0", "2:1"], "continued": [False] * 4, "chain_prefix": [""] * 4,
    }  # fmt: skip
    options = SimpleNamespace(filters="grounding,length,repetition,duplicates")
    state = pair_filter._prepare(options, None)
    alone = ShardContext(0, 0, options, state)
    taking = ShardContext(0, 0, options, state, words=words)
    assert pair_filter.filter_pairs(batch, taking) == pair_filter.filter_pairs(batch, alone)
    assert (taking.stats, taking.records, taking.raw_because) == (alone.stats, alone.records, alone.raw_because)
    assert alone.stats["filtered"] and not words
    assert not any(r.get("instruction") == "What is worn?" for r in alone.records)  # kept: "ﬁnery" is "finery"
    assert pair_filter.STAGE.takes_words(options)
    assert not pair_filter.STAGE.takes_words(SimpleNamespace(filters={"grounding": {"ngram": 2}, "length": None}))
    assert not pair_filter.STAGE.takes_words(SimpleNamespace(filters="length,duplicates"))


def pair_of(question: str) -> dict:
    return {"instruction": question, "response": "Venus and Mars are planets orbiting far away"}
