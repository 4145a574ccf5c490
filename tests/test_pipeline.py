import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset

from ipt_data.cli import main
from ipt_data.config import SAMPLE_CORPUS, AugmentConfig
from ipt_data.run import augment
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def demo_config(tmp_path, name="out", **kw):
    values = dict(
        dataset=SAMPLE_CORPUS,
        model=TINY_SYNTHESIZER,
        engine="hf",
        rounds=2,
        max_new_tokens=160,
        batch_size=8,
        shard_size=6,
        output=str(tmp_path / name),
        seed=0,
    )
    values.update(kw)
    return AugmentConfig(**values)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_end_to_end_with_card_report_and_accounting(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([*demo_args(out)[3:], "--examples", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "all input rows accounted for: True" in printed and "example 2" in printed
    data = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert (
        set(data.column_names) == {"text", "kind", "n_tokens", "source", "n_pairs", "layout", "inverted", "pairs"}
        and len(data) > 0
    )
    assert set(data["kind"]) <= {"augmented", "raw"}
    report = json.loads((out / "run_report.json").read_text())
    rows = report["rows"]
    assert rows["in"] == 24 == rows["converted"] + rows["raw"] + rows["rejected"]
    assert sum(report["status"].values()) == report["chunks"]
    card = (out / "README.md").read_text()
    for needle in (
        "ipt-data augment",
        "Cheng",
        "tiny-synthesizer",
        "rounds",
        "Template layouts",
        "## Example",
        "chunks synthesized: ok",
        "configs:",
    ):
        assert needle in card


def test_fraction_keeps_the_rest_raw_and_rejects_bad_rows(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"text": t} for t in synthetic_texts(30)] + [{"text": ""}, {"text": None}, {"text": 7}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = augment(demo_config(tmp_path, dataset=str(src), fraction=0.3, shard_size=10), progress=False)
    r = report["rows"]
    assert r["in"] == 33 and r["rejected"] == 3 and r["converted"] + r["raw"] == 30 and 3 <= r["converted"] <= 18
    assert report["output_rows"]["raw"] >= r["raw"]
    rejects = (tmp_path / "out.work" / "rejects.jsonl").read_text().splitlines()  # published only if asked
    assert sorted(json.loads(x)["reason"] for x in rejects) == ["empty_text", "empty_text", "invalid_text: int"]
    assert not (tmp_path / "out" / "rejects.jsonl").exists()


def test_streaming_gives_the_same_output(tmp_path):
    augment(demo_config(tmp_path, "a"), progress=False)
    augment(demo_config(tmp_path, "b", streaming=True), progress=False)
    a, b = files_of(tmp_path / "a" / "data"), files_of(tmp_path / "b" / "data")
    assert a == b and a


def test_one_engine_process_per_gpu_gives_the_same_output(tmp_path):
    augment(demo_config(tmp_path, "one"), progress=False)
    report = augment(demo_config(tmp_path, "two", gpus=2), progress=False)  # two worker processes (CPU here)
    assert files_of(tmp_path / "one" / "data") == files_of(tmp_path / "two" / "data")
    assert report["rows"]["in"] == 24 and report["accounted"]
    # the report is merged in shard order, not completion order: the same bytes
    assert (tmp_path / "one" / "run_report.json").read_bytes() == (tmp_path / "two" / "run_report.json").read_bytes()


def test_a_changed_parameter_is_detected(tmp_path):
    augment(demo_config(tmp_path, limit=6), progress=False)
    with pytest.raises(ValueError, match="rounds"):
        augment(demo_config(tmp_path, limit=6, rounds=3, overwrite=True), progress=False)


def test_a_foreign_dataset_is_refused_unless_overwrite_and_other_files_are_never_touched(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "precious.txt").write_text("keep me")
    (out / "data" / "train-old.parquet").write_bytes(b"not ours")
    (out / "README.md").write_text("their card")
    t = time.time()
    with pytest.raises(FileExistsError, match="--overwrite"):
        augment(demo_config(tmp_path, limit=6), progress=False)
    assert time.time() - t < 30 and not list((tmp_path / "out.work" / "shards").glob("*.parquet"))  # pre-flight
    augment(demo_config(tmp_path, limit=6, overwrite=True), progress=False)
    assert (out / "precious.txt").read_text() == "keep me" and not (out / "data" / "train-old.parquet").exists()
    assert "Instruction Pre-Training" in (out / "README.md").read_text()


def demo_args(out: Path) -> list[str]:
    """`python -m ipt_data augment` on the bundled corpus with the fixture, into `out`."""
    return [
        sys.executable,
        "-m",
        "ipt_data",
        "augment",
        "--recipe",
        str(RECIPES / "cpu-demo.yaml"),
        "--dataset",
        SAMPLE_CORPUS,
        "--model",
        TINY_SYNTHESIZER,
        "--output",
        str(out),
        "--no-progress",
    ]


def _cli(out: Path, work: Path) -> list[str]:
    return [*demo_args(out), "--work-dir", str(work), "--shard-size", "4"]


def kill_and_resume(cmd: list[str], out: Path, work: Path, env: dict, kill_after: int) -> tuple[dict, int, dict]:
    """Run `cmd` whole, then again from scratch, SIGKILLed once `kill_after` shards are done, and once more to
    resume. Returns the uninterrupted run's files, the shards done at the kill, and the resumed run's report."""
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=ROOT)
    expected = files_of(out)
    subprocess.run(["rm", "-rf", str(out), str(work)], check=True)

    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((work / "shards").glob("*.done.json"))) < kill_after and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((work / "shards").glob("*.done.json")))
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=ROOT)
    return expected, done, json.loads((work / "run_report.json").read_text())


@pytest.mark.parametrize("kill_after_shards", [1, 2, 4])
def test_kill_9_and_resume_is_byte_identical(tmp_path, kill_after_shards):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out, work = tmp_path / "out", tmp_path / "work"
    expected, done, report = kill_and_resume(_cli(out, work), out, work, env, kill_after_shards)
    assert 0 < done < 6, "the kill must land mid-run"
    assert report["shards"]["reused"] >= kill_after_shards
    assert files_of(out) == expected


def test_recipes_load_and_command_line_overrides(tmp_path):
    scratch = AugmentConfig.from_recipe(str(RECIPES / "general-from-scratch.yaml"))
    assert (scratch.rounds, scratch.fraction, scratch.general) == (2, 0.2, None)
    domain = AugmentConfig.from_recipe(str(RECIPES / "domain-adaptive.yaml"), rounds=4)
    assert (domain.rounds, domain.fraction, domain.general_ratio, domain.mix_by) == (4, 1.0, 1.0, "tokens")
    demo = AugmentConfig.from_recipe(str(RECIPES / "cpu-demo.yaml"))
    assert demo.engine == "hf" and Path(ROOT / demo.model).is_dir()
    bad = tmp_path / "bad-recipe.yaml"
    bad.write_text("rounds: 2\nroundz: 3\n")
    with pytest.raises(ValueError, match="unknown options"):
        AugmentConfig.from_recipe(str(bad))


def test_offline_without_the_model_fails_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    rc = main(
        [
            "augment",
            "--dataset",
            SAMPLE_CORPUS,
            "--model",
            "instruction-pretrain/instruction-synthesizer",
            "--output",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert rc == 2 and time.time() - t < 30
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "make demo" in err and "--model" in err
    assert not (tmp_path / "o").exists()


def test_inputs_folder_of_parquet_and_txt_and_missing_column(tmp_path, capsys):
    folder = tmp_path / "pq"
    folder.mkdir()
    for k in range(2):
        Dataset.from_dict({"body": synthetic_texts(3, seed=k)}).to_parquet(str(folder / f"part-{k}.parquet"))
    report = augment(demo_config(tmp_path, "o1", dataset=str(folder), text_column="body"), progress=False)
    assert report["rows"]["in"] == 6
    txt = tmp_path / "c.txt"
    txt.write_text("\n".join(synthetic_texts(5)) + "\n")
    assert augment(demo_config(tmp_path, "o2", dataset=str(txt)), progress=False)["rows"]["in"] == 1  # a document
    lines = augment(demo_config(tmp_path, "o2b", dataset=str(txt), text_files="line"), progress=False)
    assert lines["rows"]["in"] == 5
    rc = main(
        [
            "augment",
            "--dataset",
            str(folder),
            "--model",
            TINY_SYNTHESIZER,
            "--output",
            str(tmp_path / "o3"),
            "--no-progress",
        ]
    )
    assert rc == 2 and "body" in capsys.readouterr().err
