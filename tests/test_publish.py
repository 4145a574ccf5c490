import json

import pytest
from datasets import Dataset, load_dataset

from ipt_data.card import dataset_card, reproduce_command
from ipt_data.sinks import hub_repo_id, publish


@pytest.fixture()
def corpus():
    return Dataset.from_dict(
        {"text": [f"text number {i}" for i in range(50)], "kind": ["augmented"] * 50, "n_tokens": [3] * 50}
    )


def test_folder_publish_shards_card_and_read_back(tmp_path, corpus):
    out = tmp_path / "pub"
    publish(corpus, str(out), card="# card", fingerprint="fp1", max_shard_rows=20, extra_files={"x.json": "{}"})
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert [name[: len("train-00000-of-00003")] for name in shards] == [f"train-{i:05d}-of-00003" for i in range(3)]
    assert (out / "README.md").read_text() == "# card" and (out / "x.json").exists()
    back = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert back["text"] == corpus["text"]


def test_interrupted_publish_resumes_and_a_republish_replaces_exactly_our_files(tmp_path, corpus):
    out = tmp_path / "pub"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("not a dataset file")  # files we never wrote are never touched
    publish(corpus, str(out), fingerprint="fp1", max_shard_rows=20)
    first, _, last = sorted((out / "data").iterdir())
    before = first.stat().st_mtime_ns
    last.unlink()  # as if the upload died before the last shard
    publish(corpus, str(out), fingerprint="fp1", max_shard_rows=20)
    assert last.exists() and first.stat().st_mtime_ns == before  # finished shards are not written again
    publish(corpus.select(range(5)), str(out), card="# new", fingerprint="fp2")  # ours: no --overwrite needed
    (data,) = sorted(p.name for p in (out / "data").iterdir())
    assert data.startswith("train-00000-of-00001-")
    assert len(load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")) == 5
    assert (out / "notes" / "mine.txt").read_text() == "not a dataset file"
    assert json.loads((out / ".ipt_publish.json").read_text())["files"] == [
        ".ipt_publish.json",
        "README.md",
        f"data/{data}",
    ]
    # the same fingerprint with other rows (say the work folder was deleted and an engine failed differently):
    # the file names hold the bytes' hash, so nothing stale survives
    publish(corpus.select(range(7)), str(out), fingerprint="fp2")
    assert len(load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")) == 7
    assert not (out / "README.md").exists()  # ours before, not written this time: removed


def test_s3_publish_against_a_local_server(corpus):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket="ipt")
        publish(corpus, "s3://ipt/corpus", card="# card", fingerprint="fp", max_shard_rows=20, storage_options=creds)
        import pyarrow.parquet as pq
        import s3fs

        fs = s3fs.S3FileSystem(**creds)
        files = sorted(fs.glob("ipt/corpus/data/*.parquet"))
        assert len(files) == 3
        assert [t for f in files for t in pq.read_table(f, filesystem=fs)["text"].to_pylist()] == corpus["text"]
        assert fs.cat_file("ipt/corpus/README.md") == b"# card"
        manifest = json.loads(fs.cat_file("ipt/corpus/.ipt_publish.json"))["files"]
        assert [f for f in manifest if f.startswith("data/")] == [f[len("ipt/corpus/") :] for f in files]
    finally:
        server.stop()


def test_card_and_destinations():
    config = {
        "dataset": "me/raw",
        "model": "m",
        "rounds": 2,
        "seed": 0,
        "fraction": 0.2,
        "token": "hf_SECRET",
        "general": None,
        "overwrite": True,
    }
    report = {"rows": {"in": 10}, "status": {"ok": 9, "no_pairs": 1}}
    stats = {"rows": {"augmented": 2, "raw": 8}, "layouts": {"classic": 8, "dialog": 2}, "synthesis": report}
    card = dataset_card(config, report, "EXAMPLE TEXT", stats)
    assert "hf_SECRET" not in card and "EXAMPLE TEXT" in card and "80.0%" in card and "2406.14491" in card
    # secrets and what is about the machine that ran it (--overwrite, --work-dir) are left out
    assert reproduce_command(config) == "ipt-data augment --dataset me/raw --model m --rounds 2 --seed 0 --fraction 0.2"
    assert hub_repo_id("hf://datasets/me/out") == "me/out" and hub_repo_id("./out") is None
    assert hub_repo_id("me/out", hub=True) == "me/out"
