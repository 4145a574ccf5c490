"""The published files are written by the shards' workers (issue 24, `ipt_data.run.outputs`): no pass over the whole
corpus at the run's end. Each file holds one shard's rows in a seeded order; the run's end only names them."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from ipt_data.config import SAMPLE_CORPUS, AugmentConfig
from ipt_data.corpus import sources
from ipt_data.run import augment
from ipt_data.schema import PUBLISHED_COLUMNS
from ipt_data.testing.fixtures import TINY_SYNTHESIZER


def config(tmp_path, name="out", **kw):
    values = dict(
        dataset=SAMPLE_CORPUS, model=TINY_SYNTHESIZER, engine="hf", rounds=2, max_new_tokens=48, batch_size=8,
        shard_size=10, output=str(tmp_path / name), fraction=0.5, keep_columns=("id",),
    )  # fmt: skip
    values.update(kw)
    return AugmentConfig(**values)


def data_files(out: Path) -> list[Path]:
    return sorted((out / "data").glob("*.parquet"))


def shard_rows(work: Path, k: int) -> list[dict]:
    return pq.read_table(work / "shards" / f"{k:05d}.parquet", columns=[*PUBLISHED_COLUMNS, "id"]).to_pylist()


def key(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


@pytest.fixture
def calls(monkeypatch):
    """How many prompts the engine got (a rerun that only publishes sends none)."""
    from ipt_data.engines.hf import HFEngine

    seen = Counter()
    generate = HFEngine.generate

    def counted(self, prompts, **kwargs):
        seen["prompts"] += len(prompts)
        return generate(self, prompts, **kwargs)

    monkeypatch.setattr(HFEngine, "generate", counted)
    return seen


def test_each_file_is_one_shards_rows_in_a_seeded_order_named_in_shard_order(tmp_path):
    report = augment(config(tmp_path), progress=False)
    out, work = tmp_path / "out", tmp_path / "out.work"
    files = data_files(out)
    names = [f.name.split("-of-")[0] for f in files]
    assert names == ["train-00000", "train-00001", "train-00002"]  # 24 rows, 10 a shard
    published = [pq.read_table(f).to_pylist() for f in files]
    for k, rows in enumerate(published):
        made = shard_rows(work, k)
        order = np.random.default_rng([0, k]).permutation(len(made))  # the seed, then the shard
        assert rows == [made[i] for i in order] and len(rows) > 1 and rows != made
    total = sum(len(rows) for rows in published)
    assert total == sum(report["output_rows"].values())
    loaded = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    assert len(loaded) == total and loaded.column_names == [*PUBLISHED_COLUMNS, "id"]
    card = (out / "README.md").read_text()
    assert f"num_examples: {total}" in card
    assert not list(work.glob("mix-*"))  # nothing was mixed at the end


def test_the_driver_reads_no_rows_and_worker_processes_publish_the_same_files(tmp_path, monkeypatch):
    augment(config(tmp_path, "one"), progress=False)
    read_here = Counter()
    lines = sources.JsonlSource._lines

    def counted(self, f, path, first=1):
        for row in lines(self, f, path, first):
            read_here["rows"] += 1
            yield row

    monkeypatch.setattr(sources.JsonlSource, "_lines", counted)  # in this process only: not in the workers
    report = augment(config(tmp_path, "two", gpus=2), progress=False)
    assert report["rows"]["in"] == 24 and report["accounted"]
    assert read_here["rows"] <= 1  # the pre-flight's look at the first row; the shards' rows were read by the workers
    one, two = data_files(tmp_path / "one"), data_files(tmp_path / "two")
    assert [f.name for f in one] == [f.name for f in two] and [f.read_bytes() for f in one] == [
        f.read_bytes() for f in two
    ]


def test_another_file_size_remakes_the_files_from_the_shards_without_synthesis(tmp_path, calls):
    augment(config(tmp_path), progress=False)
    assert calls["prompts"] > 0
    calls.clear()
    report = augment(config(tmp_path, publish_shard_rows=4, overwrite=True), progress=False)
    assert calls["prompts"] == 1 and report["shards"]["reused"] == 3  # the pre-flight's one-token probe only
    files = data_files(tmp_path / "out")
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    per_shard = [len(shard_rows(tmp_path / "out.work", k)) for k in range(3)]
    assert max(sizes) <= 4 and sum(sizes) == sum(report["output_rows"].values()) == sum(per_shard)
    assert len(files) == sum(-(-n // 4) for n in per_shard) > 3
    rows = [key(r) for f in files for r in pq.read_table(f).to_pylist()]
    made = [key(r) for k in range(3) for r in shard_rows(tmp_path / "out.work", k)]
    assert sorted(rows) == sorted(made)
    fresh = augment(config(tmp_path, "fresh", publish_shard_rows=4), progress=False)
    assert [f.read_bytes() for f in data_files(tmp_path / "fresh")] == [f.read_bytes() for f in files]
    assert fresh["output_rows"] == report["output_rows"]


def test_general_data_is_mixed_in_by_each_shard_from_its_own_portion(tmp_path, calls):
    general = tmp_path / "general.jsonl"
    rows = [
        {"question": f"What is step {i} of the recipe?", "response": f"Mix {i} cups. " * (1 + i % 5)} for i in range(60)
    ]
    rows[7]["response"], rows[33]["question"] = 5, ""  # rejected, each in its shard's portion
    general.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = augment(config(tmp_path, general=str(general), general_ratio=0.5), progress=False)
    out, work = tmp_path / "out", tmp_path / "out.work"
    files = data_files(out)
    assert len(files) == 3 and not list(work.glob("mix-*"))  # a file per shard; nothing mixed at the end
    taken = 0
    for k, f in enumerate(files):  # 24 rows in shards of 10: 3 shards, 60 general rows: 20 for each
        published = pq.read_table(f).to_pylist()
        general_rows = [r for r in published if r["kind"] == "general"]
        numbers = [int(r["source"][0].split(":")[1]) for r in general_rows]
        assert numbers and all(20 * k <= n < 20 * (k + 1) and n not in (7, 33) for n in numbers)
        target = 0.5 * sum(r["n_tokens"] for r in published if r["kind"] == "augmented")
        got = sum(r["n_tokens"] for r in general_rows)
        assert abs(got - target) <= max(r["n_tokens"] for r in general_rows)  # the prefix closest to the target
        assert sorted(key(r) for r in published if r["kind"] != "general") == sorted(
            key(r) for r in shard_rows(work, k)
        )
        taken += len(general_rows)
    assert report["output_rows"]["general"] == taken and report["general_rejects"] == {
        "empty_text": 1,
        "invalid_text": 1,
    }
    listed = [json.loads(line)["row"] for line in (work / "general" / "rejects.jsonl").read_text().splitlines()]
    assert listed == [7, 33]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"]["general"] == taken

    calls.clear()  # another ratio: the workers make the files again from the done shards, without synthesis
    again = augment(config(tmp_path, general=str(general), general_ratio=1.0, overwrite=True), progress=False)
    assert calls["prompts"] == 1 and again["shards"]["reused"] == 3 and again["output_rows"]["general"] > taken
    fresh = augment(config(tmp_path, "fresh", general=str(general), general_ratio=1.0), progress=False)
    assert [f.read_bytes() for f in data_files(out)] == [f.read_bytes() for f in data_files(tmp_path / "fresh")]
    assert (out / "stats.json").read_bytes() == (tmp_path / "fresh" / "stats.json").read_bytes()
    assert fresh["mix"] == again["mix"]


def test_reruns_that_change_the_shard_count_or_mix_at_the_end_equal_fresh_runs(tmp_path):
    """The general data's portions depend on the number of shards, and general data a worker cannot read (here
    compressed) is mixed at the run's end: a rerun over done shards that changes either publishes what a fresh
    run would."""
    import gzip

    general = tmp_path / "general.jsonl"
    rows = [{"question": f"Which tool is number {i}?", "response": f"Tool {i} is a chisel. " * 3} for i in range(30)]
    general.write_text("".join(json.dumps(r) + "\n" for r in rows))
    packed = tmp_path / "general.jsonl.gz"
    packed.write_bytes(gzip.compress(general.read_bytes()))

    def run(name, general=general, **kw):
        work = str(tmp_path / f"{name}.work")
        augment(config(tmp_path, name, general=str(general), work_dir=work, **kw), progress=False)
        out = tmp_path / name
        return [f.read_bytes() for f in data_files(out)], (out / "stats.json").read_bytes()

    run("rerun", limit=16)  # 2 shards: the general rows in 2 portions of 15
    assert run("rerun", limit=24, overwrite=True) == run("fresh", limit=24)  # 3 shards: portions of 10
    again = run("rerun", general=packed, limit=24, overwrite=True)  # the shards' own files are not published
    assert again == run("fresh-packed", general=packed, limit=24)
    assert len(again[0]) == 1  # one corpus, mixed and shuffled whole
