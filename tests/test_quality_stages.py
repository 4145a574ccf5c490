"""Pair filters and benchmark decontamination as stages of the shard, through the CLI (issue 25): planted cases
found and handled as configured, every input row accounted for, the counts of the report, stats.json, the card
and the CLI table in agreement; without the options, nothing changes."""

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ipt_data import wire
from ipt_data.budget import PromptEncoder
from ipt_data.cli import main
from ipt_data.engines import Completion, clear_cache, register_engine, unregister_engine
from ipt_data.fixtures import TINY_SYNTHESIZER

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


def test_a_filter_change_is_a_new_fingerprint(tmp_path, planted, capsys):
    assert augment(tmp_path, "g", "--filters", "grounding")[0] == 0
    assert augment(tmp_path, "g", "--filters", "grounding,length")[0] == 2
    assert "other parameters" in capsys.readouterr().err
