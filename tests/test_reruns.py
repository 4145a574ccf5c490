"""Reruns into the same output, through the CLI: the published dataset always equals a fresh run on the current
input (byte for byte), its card and report describe exactly it, and only changed or new shards are
synthesized. Pre-flight failures come in seconds, before any synthesis; a dead engine stops the run."""

import json
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from ipt_data.cli import main
from ipt_data.config import SAMPLE_CORPUS
from ipt_data.engines import clear_cache, load_engine, register_engine, unregister_engine
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

PROBE = 1  # each run first sends the engine one one-token prompt (pre-flight)
TEXTS = [json.loads(line)["text"] for line in open(SAMPLE_CORPUS, encoding="utf-8")]


class Counting:
    """The hf engine, counting the prompts it is sent."""

    name = "counting"

    def __init__(self, model, device, calls, **options):
        self.inner, self.calls = load_engine(model, "hf", device=device, **options), calls
        self.max_model_len = self.inner.max_model_len

    def generate(self, prompts, **kwargs):
        self.calls["prompts"] += len(prompts)
        return self.inner.generate(prompts, **kwargs)


@pytest.fixture()
def calls():
    counter = {"prompts": 0}
    register_engine("counting", lambda model, device, **o: Counting(model, device, counter, **o))
    yield counter
    unregister_engine("counting")
    clear_cache()


def write(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def run(corpus: Path, out: Path, *extra: str) -> int:
    args = ["augment", "--dataset", str(corpus), "--model", TINY_SYNTHESIZER, "--engine", "counting"]
    args += ["--rounds", "2", "--max-new-tokens", "60", "--batch-size", "4", "--shard-size", "4"]
    return main([*args, "--output", str(out), "--no-progress", *extra])


def published(out: Path) -> dict:
    """What a reader gets, and what the card and report say about it."""
    data = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    report = json.loads((out / "run_report.json").read_text())
    files = {p.name: p.read_bytes() for p in sorted((out / "data").iterdir())}
    return {"rows": data.to_list(), "files": files, "report": report, "card": (out / "README.md").read_text()}


def check_same_as_fresh(tmp_path: Path, corpus: Path, out: Path, calls) -> dict:
    """The published dataset at `out` equals a fresh run's on `corpus`; its report and card describe it."""
    fresh = tmp_path / f"fresh-{corpus.stat().st_mtime_ns}"
    assert run(corpus, fresh) == 0
    got, want = published(out), published(fresh)
    assert got["files"] == want["files"] and got["rows"] == want["rows"] and got["report"] == want["report"]
    kinds = {}
    for row in got["rows"]:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    assert got["report"]["output_rows"] == kinds
    for kind, n in kinds.items():
        assert f"| output rows: {kind} | {n:,} |" in got["card"]
    return got


def test_appended_edited_and_removed_rows_redo_only_their_shards(tmp_path, calls, capsys):
    corpus, out = tmp_path / "corpus.jsonl", tmp_path / "out"
    write(corpus, TEXTS[:12])
    assert run(corpus, out) == 0
    assert calls["prompts"] == PROBE + 12

    write(corpus, TEXTS[:16])  # 4 rows appended: one new shard
    calls["prompts"] = 0
    assert run(corpus, out) == 0
    assert calls["prompts"] == PROBE + 4
    assert re.search(r"shards added +1\n", capsys.readouterr().out)
    report = json.loads((tmp_path / "out.work" / "run_report.json").read_text())
    assert report["shards"] == {"total": 4, "reused": 3, "redone": 0, "added": 1, "dropped": 0}
    check_same_as_fresh(tmp_path, corpus, out, calls)

    edited = TEXTS[:16]
    edited[5] = "An edited text about a baker in Oslo who bakes bread every morning."
    write(corpus, edited)  # one row edited: its shard alone is redone
    calls["prompts"] = 0
    assert run(corpus, out) == 0
    assert calls["prompts"] == PROBE + 4
    report = json.loads((tmp_path / "out.work" / "run_report.json").read_text())
    assert report["shards"] == {"total": 4, "reused": 3, "redone": 1, "added": 0, "dropped": 0}
    got = check_same_as_fresh(tmp_path, corpus, out, calls)
    assert any("edited text" in r["text"] for r in got["rows"])

    write(corpus, edited[:8])  # rows removed: their shards are dropped
    calls["prompts"] = 0
    assert run(corpus, out) == 0
    assert calls["prompts"] == PROBE
    report = json.loads((tmp_path / "out.work" / "run_report.json").read_text())
    assert report["shards"] == {"total": 2, "reused": 2, "redone": 0, "added": 0, "dropped": 2}
    check_same_as_fresh(tmp_path, corpus, out, calls)


def test_overwrite_never_touches_files_we_did_not_write(tmp_path, calls):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    (out / "data" / "theirs.parquet").write_bytes(b"a dataset that is not ours")
    corpus = write(tmp_path / "corpus.jsonl", TEXTS[:4])
    assert run(corpus, out) == 2 and calls["prompts"] == 0  # refused before any synthesis
    assert run(corpus, out, "--overwrite") == 0
    assert (out / "keep.txt").read_text() == "mine" and not (out / "data" / "theirs.parquet").exists()
    assert run(tmp_path / "corpus.jsonl", tmp_path) == 2  # an output that holds the input is refused
    folder = tmp_path / "corpus-folder"
    folder.mkdir()
    write(folder / "a.jsonl", TEXTS[:4])
    assert run(folder, folder / "ipt") == 2  # ... and one inside the input folder (a rerun would read it)
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl"]  # a refused run leaves nothing behind
    assert run(folder, tmp_path / "apart") == 0


def test_preflight_failures_come_before_any_synthesis(tmp_path, calls, capsys):
    corpus = write(tmp_path / "corpus.jsonl", TEXTS[:4])
    (tmp_path / "general.jsonl").write_text(json.dumps({"instruction": "Q?", "output": 42}) + "\n")
    cases = {
        "no column(s) ['question', 'response']": ["--general", str(tmp_path / "general.jsonl")],
        "holds int, not text": [
            "--general",
            str(tmp_path / "general.jsonl"),
            "--general-columns",
            "instruction,output",
        ],
        "cannot be opened": ["--general", str(tmp_path / "missing.jsonl")],
    }
    for needle, extra in cases.items():
        t = time.time()
        assert run(corpus, tmp_path / "out", *extra) == 2, needle
        assert needle in capsys.readouterr().err and time.time() - t < 30
    assert calls["prompts"] == 0  # the general data is checked before the engine is even probed
    assert not list((tmp_path / "out.work" / "shards").glob("*.parquet"))
    # a run that failed before writing a shard locks nothing: other parameters are welcome
    assert run(corpus, tmp_path / "out", "--seed", "7") == 0


def test_shards_made_with_other_parameters_or_templates_are_refused_with_the_reason(
    tmp_path, calls, capsys, monkeypatch
):
    import ipt_data.stages.templify

    corpus = write(tmp_path / "corpus.jsonl", TEXTS[:4])
    assert run(corpus, tmp_path / "out") == 0
    assert run(corpus, tmp_path / "out", "--seed", "7") == 2
    assert "seed: 0 -> 7" in capsys.readouterr().err
    edited = tmp_path / "patterns.yaml"
    edited.write_text(ipt_data.stages.templify.TEMPLATES.read_text() + "\n# an edit\n")
    monkeypatch.setattr(ipt_data.stages.templify, "TEMPLATES", edited)
    prompts = calls["prompts"]
    assert run(corpus, tmp_path / "out") == 2
    assert "templates: " in capsys.readouterr().err and calls["prompts"] == prompts  # refused before any synthesis


def test_empty_and_all_rejected_input_finish_with_an_empty_dataset(tmp_path, calls, capsys):
    for name, lines in (("empty", []), ("rejected", ["", "   ", None])):
        corpus = tmp_path / f"{name}.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
        out = tmp_path / f"out-{name}"
        assert run(corpus, out) == 0, name
        assert "no usable rows" in (error := capsys.readouterr().err) and "streaming=True" in error
        tables = [pq.read_table(p) for p in (out / "data").glob("*.parquet")]
        assert len(tables) == 1 and tables[0].num_rows == 0 and "text" in tables[0].column_names
        # datasets 5.2 prepares no split of 0 examples ('Instruction "train" corresponds to no data!'): read as
        # a stream, the published folder gives its columns and no row, as the CLI's message says
        for how in ((str(out),), ("parquet", str(out / "data" / "*.parquet"))):
            stream = load_dataset(how[0], data_files=how[1:] or None, split="train", streaming=True)
            assert list(stream) == [] and {"text", "kind", "pairs"} <= set(stream.features), (name, how)
        assert len((tmp_path / f"out-{name}.work" / "rejects.jsonl").read_text().splitlines()) == len(lines)
        assert not (out / "rejects.jsonl").exists()  # previews of rejected texts are published only if asked


def openai_run(corpus: Path, out: Path, url: str, *extra: str) -> int:
    options = {"base_url": url, "retries": 1, "backoff": 0.01, "timeout": 5, "prompt_format": "token_ids"}
    args = ["augment", "--dataset", str(corpus), "--model", TINY_SYNTHESIZER, "--engine", "openai"]
    args += ["--engine-options", json.dumps(options), "--shard-size", "8", "--batch-size", "8", *extra]
    return main([*args, "--output", str(out), "--no-progress"])


def test_a_dead_server_fails_the_preflight_and_one_dying_mid_run_stops_it(tmp_path, script, capsys):
    corpus = write(tmp_path / "corpus.jsonl", TEXTS[:24])
    t = time.time()
    assert openai_run(corpus, tmp_path / "dead", "http://127.0.0.1:9/v1") == 2  # nothing listens there
    assert "no completions server answers" in capsys.readouterr().err and time.time() - t < 30

    fast = ("--engine-retry-wait", "0.01")
    assert openai_run(corpus, tmp_path / "uninterrupted", script.url, *fast) == 0
    expected = published(tmp_path / "uninterrupted")["files"]
    # 3 shards of 8 texts, 8 prompts each (4 chains, 2 rounds), after the probe: the server dies at the last
    # prompt of shard 0 (a shard that had been marked done with 1 row raw), in shard 1, and at the very end
    for i, down_after in enumerate((1 + 7, 1 + 8 + 3, 1 + 24 - 2)):
        script.down_after = len(script.requests) + down_after  # counted from now
        out = tmp_path / f"out-{i}"
        assert openai_run(corpus, out, script.url, *fast) == 2, down_after
        error = capsys.readouterr().err  # the engine's retries fail, or the openai engine finds the server gone
        assert "the engine still failed on" in error or "no completions server answers" in error
        assert not out.exists()  # nothing published
        script.down_after = None  # the server is back
        assert openai_run(corpus, out, script.url, *fast) == 0
        assert published(out)["files"] == expected, down_after
    script.down_after = len(script.requests) + 1 + 8 + 3  # one shard at a time (rounds): it dies in shard 1
    assert openai_run(corpus, tmp_path / "out", script.url, "--pipeline", "rounds", *fast) == 2
    done = sorted(p.name for p in (tmp_path / "out.work" / "shards").glob("*.done.json"))
    assert done == ["00000.done.json"] and not (tmp_path / "out").exists()
    script.down_after = None
    assert openai_run(corpus, tmp_path / "out", script.url, *fast) == 0
    assert published(tmp_path / "out")["files"] == expected


def test_an_output_of_dot_or_holding_its_work_folder_reruns(tmp_path, calls, monkeypatch, capsys):
    corpus = write(tmp_path / "corpus.jsonl", TEXTS[:8])
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert run(corpus, Path(".")) == 0  # the work folder is ./.ipt-work, ours
    first, prompts = published(here), calls["prompts"]
    assert run(corpus, Path(".")) == 0, capsys.readouterr().err  # was refused: "the output . contains the work folder"
    assert calls["prompts"] == prompts + 1 and published(here)["files"] == first["files"]  # the probe, no more
    assert (here / ".ipt-work" / "shards").is_dir()

    out = tmp_path / "out"
    for _ in range(2):  # a --work-dir of the user's choosing inside the output
        assert run(corpus, out, "--work-dir", str(out / "work")) == 0, capsys.readouterr().err
    assert published(out)["files"] == first["files"] and calls["prompts"] == 2 * (prompts + 1)
    assert run(corpus, out, "--work-dir", str(out / "data")) == 2  # where publishing writes: refused
    assert "is where publishing to" in capsys.readouterr().err
