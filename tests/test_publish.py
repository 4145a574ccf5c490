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
    assert shards == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert (out / "README.md").read_text() == "# card" and (out / "x.json").exists()
    back = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert back["text"] == corpus["text"]


def test_interrupted_publish_resumes_and_other_data_is_refused(tmp_path, corpus):
    out = tmp_path / "pub"
    publish(corpus, str(out), fingerprint="fp1", max_shard_rows=20)
    kept = out / "data" / "train-00000-of-00003.parquet"
    before = kept.stat().st_mtime_ns
    (out / "data" / "train-00002-of-00003.parquet").unlink()  # as if the upload died before the last shard
    publish(corpus, str(out), fingerprint="fp1", max_shard_rows=20)
    assert (out / "data" / "train-00002-of-00003.parquet").exists()
    assert kept.stat().st_mtime_ns == before  # finished shards are not written again
    with pytest.raises(FileExistsError, match="overwrite"):
        publish(corpus, str(out), fingerprint="other-data", max_shard_rows=20)
    publish(corpus.select(range(5)), str(out), fingerprint="other-data", overwrite=True)
    assert len(load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")) == 5


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
        assert json.loads(fs.cat_file("ipt/corpus/.ipt_publish.json"))["shards"] == 3
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
    report = {
        "rows": {"in": 10},
        "layouts": {"classic": 8, "dialog": 2},
        "status": {"ok": 9, "no_pairs": 1},
        "output_rows": {"augmented": 2, "raw": 8},
    }
    card = dataset_card(config, report, example="EXAMPLE TEXT")
    assert "hf_SECRET" not in card and "EXAMPLE TEXT" in card and "80.0%" in card and "2406.14491" in card
    # secrets and what is about the machine that ran it (--overwrite, --work-dir) are left out
    assert reproduce_command(config) == "ipt-data augment --dataset me/raw --model m --rounds 2 --seed 0 --fraction 0.2"
    assert hub_repo_id("hf://datasets/me/out") == "me/out" and hub_repo_id("./out") is None
    assert hub_repo_id("me/out", hub=True) == "me/out"
