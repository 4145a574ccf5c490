"""Runs that overlap: a second run on a work folder (or output folder) in use is refused at once with one line
naming the first; a lock left by a run that died does not block; a worker of a run whose lock was taken over
writes nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipt_data.errors import RunLockedError, RunStoppedError
from ipt_data.run import lock as lock_module
from ipt_data.run.lock import FolderLock
from ipt_data.run.workdir import WorkDir
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

TEXTS = [json.loads(line)["text"] for line in open(Path(__file__).parents[1] / "ipt_data/assets/sample_corpus.jsonl")]


def corpus(path: Path, tag: str) -> Path:
    path.write_text("".join(json.dumps({"text": f"{tag} {t}"}) + "\n" for t in TEXTS[:16]))
    return path


def cli(url: str, dataset: Path, output: Path, *extra: str) -> list[str]:
    options = {"base_url": url, "retries": 1, "backoff": 0.01, "timeout": 120, "prompt_format": "token_ids"}
    return [
        sys.executable, "-m", "ipt_data", "augment", "--dataset", str(dataset), "--model", TINY_SYNTHESIZER,
        "--engine", "openai", "--engine-options", json.dumps(options), "--shard-size", "8", "--batch-size", "8",
        "--output", str(output), "--no-progress", *extra,
    ]  # fmt: skip


def published_texts(out: Path) -> list[str]:
    return [t for p in sorted((out / "data").glob("*.parquet")) for t in pq.read_table(p).column("text").to_pylist()]


@pytest.mark.parametrize("same_input", [True, False], ids=["same input and output", "other input, one work folder"])
def test_two_runs_started_together_one_is_refused_naming_the_other(tmp_path, script, same_input):
    a = corpus(tmp_path / "a.jsonl", "ALPHA")
    b = a if same_input else corpus(tmp_path / "b.jsonl", "BETA")
    if same_input:  # the same --output and its default work folder
        commands = [cli(script.url, a, tmp_path / "out"), cli(script.url, b, tmp_path / "out")]
    else:  # two outputs, one --work-dir
        work = ["--work-dir", str(tmp_path / "work")]
        commands = [cli(script.url, a, tmp_path / "out-a", *work), cli(script.url, b, tmp_path / "out-b", *work)]
    script.gate.clear()  # the server answers nothing: whichever run holds the folder cannot finish yet
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    try:
        deadline = time.monotonic() + 300
        while all(r.poll() is None for r in runs) and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = next((r for r in runs if r.poll() is not None), None)
        assert refused is not None, "neither run was refused while the other held the folder"
        holder = runs[1 - runs.index(refused)]
        error = refused.stderr.read()
        assert refused.returncode == 2 and len(error.strip().splitlines()) == 1, error
        assert f"is in use by another run (pid {holder.pid} on " in error
    finally:
        script.gate.set()
    assert holder.wait(timeout=300) == 0, holder.stderr.read()
    mine, other = ("BETA", "ALPHA") if holder is runs[1] and not same_input else ("ALPHA", "BETA")
    out = Path(commands[runs.index(holder)][commands[0].index("--output") + 1])
    texts = published_texts(out)
    assert len(texts) >= 8 and all(f"{mine} " in t and f"{other} " not in t for t in texts)  # 2-text chains
    if not same_input:
        assert not Path(commands[runs.index(refused)][commands[0].index("--output") + 1]).exists()  # no trace
    else:  # the lock went with its run: the refused command, run again, goes through (all its shards done)
        again = subprocess.run(commands[runs.index(refused)], capture_output=True, text=True, env=env)
        assert again.returncode == 0 and published_texts(out) == texts, again.stderr


def test_a_killed_runs_lock_does_not_block_the_next_run(tmp_path, script):
    a = corpus(tmp_path / "a.jsonl", "ALPHA")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script.gate.clear()
    run = subprocess.Popen(cli(script.url, a, tmp_path / "out"), env=env, stderr=subprocess.DEVNULL)
    lock = tmp_path / "out.work" / "run.lock"
    try:
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(lock.read_text())["pid"] == run.pid
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
        script.gate.set()
    assert lock.exists()  # kill -9: nothing removed it
    again = subprocess.run(cli(script.url, a, tmp_path / "out"), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert not lock.exists() and len(published_texts(tmp_path / "out")) == 8  # 16 texts in 2-text chains


def write_lock(folder: Path, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.lock"
    path.write_text(json.dumps({"host": "other-host", "pid": 1, "started": "then", "token": "t0", **record}))
    return path


def test_a_live_lock_from_another_host_refuses_and_a_silent_one_is_taken_over(tmp_path):
    path = write_lock(tmp_path / "work")
    with pytest.raises(RunLockedError, match=r"in use by another run \(pid 1 on other-host, started then\)"):
        FolderLock(tmp_path / "work").acquire()
    old = time.time() - lock_module.STALE_S - 5
    os.utime(path, (old, old))  # no heartbeat for longer than STALE_S: its run is gone
    with FolderLock(tmp_path / "work") as lock:
        assert json.loads(path.read_text())["token"] == lock.token
    assert not path.exists()


def test_an_empty_lock_refuses_while_fresh_and_is_taken_over_once_old(tmp_path):
    (tmp_path / "work").mkdir()
    path = tmp_path / "work" / "run.lock"
    path.write_text("")  # a run died between creating its lock and writing it
    with pytest.raises(RunLockedError, match="a run starting this instant"):
        FolderLock(tmp_path / "work").acquire()
    old = time.time() - lock_module.STALE_S - 5
    os.utime(path, (old, old))
    with FolderLock(tmp_path / "work") as lock:
        assert json.loads(path.read_text())["token"] == lock.token


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path / "work", host=socket.gethostname(), pid=dead.pid)
    with FolderLock(tmp_path / "work"):
        pass
    write_lock(tmp_path / "work", host=socket.gethostname(), pid=os.getpid())  # this very process: alive
    with pytest.raises(RunLockedError):
        FolderLock(tmp_path / "work").acquire()


def test_a_worker_whose_run_lost_the_lock_writes_nothing(tmp_path):
    with FolderLock(tmp_path / "work") as lock:
        work = WorkDir(str(tmp_path / "work"), lock.token)
        table = pa.table({"x": [1]})
        work.write(0, table, [], {}, "h")  # held: written
        (tmp_path / "work" / "run.lock").write_text(json.dumps({"token": "someone else"}))  # taken over
        with pytest.raises(RunStoppedError, match="no longer this run's"):
            work.write(1, table, [], {}, "h")
    assert work.shard(0, ".done.json").exists() and not work.shard(1, ".parquet").exists()


def test_ctrl_c_is_one_line_and_the_lock_is_released(tmp_path, script):
    a = corpus(tmp_path / "a.jsonl", "ALPHA")
    script.gate.clear()  # the run waits on the server: Ctrl-C comes mid-run
    run = subprocess.Popen(
        cli(script.url, a, tmp_path / "out"),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "out.work" / "run.lock"
    try:
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        error = run.communicate(timeout=120)[1]
    finally:
        script.gate.set()
    assert run.returncode == 2 and len(error.strip().splitlines()) == 1, error
    assert "stopped (Ctrl-C)" in error and str(tmp_path / "out.work") in error
    assert not lock.exists() and not (tmp_path / "out").exists()


def test_a_full_disk_while_writing_shards_is_one_line_and_leaves_nothing_partial(tmp_path, monkeypatch, capsys):
    import errno

    from ipt_data.cli import main
    from ipt_data.run import workdir

    def full(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")  # the disk fills up mid-file
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(workdir.pq, "write_table", full)
    a = corpus(tmp_path / "a.jsonl", "ALPHA")
    args = ["augment", "--dataset", str(a), "--model", TINY_SYNTHESIZER, "--engine", "hf", "--max-new-tokens", "8"]
    assert main([*args, "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "no space left on the disk" in error, error
    shards = tmp_path / "out.work" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [] and not (tmp_path / "out.work" / "run.lock").exists()
