import errno
import json
import os
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset
from fsspec.implementations.local import LocalFileSystem

from ipt_data.cli import main
from ipt_data.corpus.card import dataset_card, reproduce_command
from ipt_data.errors import OutputUnwritableError
from ipt_data.sinks import hub_repo_id, publish

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "cpu-demo.yaml")


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


def augment_cli(out: Path, work: Path, *extra: str) -> int:
    args = ["augment", "--recipe", RECIPE, "--limit", "8", "--output", str(out), "--work-dir", str(work)]
    return main([*args, "--no-progress", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("ipt-data: error: "), err
    return line


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_while_publishing_is_one_line_not_retried_and_leaves_nothing_partial(tmp_path, monkeypatch, capsys):
    """The disk fills while the data files are written to the temporary folder, while one is copied to the
    output, and while a small file is written: each time one line and exit code 2 at once (a full disk does not
    heal: no retry), no `.partial`/`.ipt-tmp-*` file and no temporary folder left; then the same command with
    room publishes from the kept shards, synthesizing nothing again. The data files go through the temporary
    folder when the run's end mixes the corpus (the first case: general data compressed, which a worker cannot cut
    into portions); otherwise the shards' own files, made again by the workers, are copied as they are."""
    import gzip

    out, work = tmp_path / "out", tmp_path / "work"
    general = tmp_path / "general.jsonl.gz"
    lines = "".join(json.dumps({"question": f"Q{i}?", "response": f"A{i}."}) + "\n" for i in range(20))
    general.write_bytes(gzip.compress(lines.encode()))
    calls, temporary = {"temp": 0, "upload": 0, "small": 0}, []
    real_to_parquet, real_put, real_pipe = Dataset.to_parquet, LocalFileSystem.put_file, LocalFileSystem.pipe_file

    def to_parquet(self, path, **kw):  # the temporary folder's disk
        if fails == "temp":
            calls["temp"] += 1
            temporary.append(os.path.dirname(path))
            Path(path).write_bytes(b"PAR1 half a file")
            raise no_space(path)
        return real_to_parquet(self, path, **kw)

    def put_file(self, lpath, rpath, **kw):  # the output's disk, while a data file is copied
        if fails == "upload" and str(rpath).startswith(str(out)):
            calls["upload"] += 1
            Path(rpath).write_bytes(Path(lpath).read_bytes()[:100])
            raise no_space(rpath)
        return real_put(self, lpath, rpath, **kw)

    def pipe_file(self, path, value=None, **kw):  # the output's disk, while stats.json is written
        if fails == "small" and str(path).startswith(str(out)) and "stats.json" in str(path):
            calls["small"] += 1
            Path(path).write_bytes(value[:10])
            raise no_space(path)
        return real_pipe(self, path, value, **kw)

    monkeypatch.setattr(Dataset, "to_parquet", to_parquet)
    monkeypatch.setattr(LocalFileSystem, "put_file", put_file)
    monkeypatch.setattr(LocalFileSystem, "pipe_file", pipe_file)
    for fails in ("temp", "upload", "small"):
        assert augment_cli(out, work, *(["--general", str(general)] if fails == "temp" else [])) == 2, fails
        line = one_error_line(capsys)
        assert ("temporary folder" in line and "TMPDIR" in line) if fails == "temp" else "no space left" in line
        assert "run the same command again" in line
        assert calls[fails] == 1, f"{fails}: a full disk was retried {calls[fails]} times"
        left = [p.name for p in out.rglob("*") if "partial" in p.name or p.name.startswith(".ipt-tmp-")]
        assert not left, f"{fails}: {left}"
    assert temporary and not os.path.exists(temporary[0])
    fails = None
    assert augment_cli(out, work) == 0
    report = json.loads((work / "run_report.json").read_text())
    assert report["shards"]["reused"] == report["shards"]["total"] and report["shards"]["added"] == 0  # published only
    back = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(back) == sum(report["output_rows"].values()) > 0


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_an_output_that_cannot_be_written_is_one_line_before_any_synthesis(tmp_path, monkeypatch, capsys, code):
    """A read-only output folder (or one we may not write): refused by the pre-flight probe, one line naming
    the reason, exit code 2, no shard synthesized. (Simulated: the tests may run as root, who writes anywhere.)"""
    out, work = tmp_path / "out", tmp_path / "work"
    real_makedirs, real_pipe = LocalFileSystem.makedirs, LocalFileSystem.pipe_file

    def refuse(real):
        def write(self, path, *args, **kw):
            if str(path).startswith(str(out)):
                raise OSError(code, os.strerror(code), str(path))
            return real(self, path, *args, **kw)

        return write

    monkeypatch.setattr(LocalFileSystem, "makedirs", refuse(real_makedirs))
    monkeypatch.setattr(LocalFileSystem, "pipe_file", refuse(real_pipe))
    assert augment_cli(out, work) == 2
    line = one_error_line(capsys)
    assert f"{out}" in line and os.strerror(code) in line
    assert not list(work.glob("shards/*.parquet"))
    with pytest.raises(OutputUnwritableError, match=os.strerror(code)):  # the same line from `publish` itself
        publish(Dataset.from_dict({"text": ["a"]}), str(out))
