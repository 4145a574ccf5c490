"""The Slurm executor against a real Slurm (`tests/slurm_cluster.py`: slurmctld, slurmd and munge on 127.0.0.1),
the hf engine and the tiny fixture: the same files as a local run, reruns that make only what is missing after
an array task or the driver is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import slurm_cluster

from ipt_data.config import SAMPLE_CORPUS, AugmentConfig
from ipt_data.run import augment
from ipt_data.run.slurm_executor import SlurmExecutor, SlurmTaskError
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

pytestmark = [pytest.mark.timeout(600)]
WHY_NOT = slurm_cluster.available()


@pytest.fixture(scope="module")
def slurm():
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    root = Path(tempfile.mkdtemp(prefix="ipt-slurm-"))
    with slurm_cluster.cluster(root) as env:
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        try:
            yield env
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before


def options(tmp_path: Path, name: str, **kw) -> dict:
    values = dict(
        dataset=SAMPLE_CORPUS, model=TINY_SYNTHESIZER, engine="hf", rounds=2, max_new_tokens=48, batch_size=8,
        shard_size=4, limit=16, output=str(tmp_path / name),
    )  # fmt: skip
    return {**values, **kw}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def done_shards(out: Path) -> int:
    return len(list((Path(f"{out}.work") / "shards").glob("*.done.json")))


def test_sbatch_options_and_a_refused_job_in_one_line():
    args = SlurmExecutor(
        partition="gpu", gpus_per_task=1, cpus_per_task=8, mem="64G", time_limit="4:00:00", parallel=16,
        extra_args=("--account=me",),
    ).sbatch_args(Path("/w/slurm/x"), 100)  # fmt: skip
    assert "--array=0-99%16" in args and "--partition=gpu" in args and "--gpus-per-task=1" in args
    assert "--cpus-per-task=8" in args and "--mem=64G" in args and "--time=4:00:00" in args
    assert (
        args[-1] == "--account=me" and "--output=/w/slurm/x/logs/0+%a.log" in args and "--job-name=ipt-data-x" in args
    )


def test_a_job_slurm_refuses_is_one_line(tmp_path, slurm):
    from ipt_data.errors import ConfigError

    with pytest.raises(ConfigError, match="sbatch refused the job: .*partition"):
        augment(AugmentConfig(**options(tmp_path, "x", executor="slurm", slurm_partition="nosuch")), progress=False)


def test_squeue_failing_is_not_an_empty_queue(tmp_path, slurm, monkeypatch):
    from ipt_data.run.slurm_executor import _queued

    assert _queued(["999999"]) is False  # a job Slurm does not know: not queued
    dead = tmp_path / "slurm.conf"  # a controller that does not answer: squeue cannot tell
    dead.write_text(Path(slurm["SLURM_CONF"]).read_text().replace("SlurmctldPort=", "SlurmctldPort=1#"))
    monkeypatch.setenv("SLURM_CONF", str(dead))
    assert _queued(["1"]) is None


def test_slurm_equals_local_and_a_rerun_reuses_every_shard(tmp_path, slurm, monkeypatch):
    import ipt_data.run.slurm_executor as slurm_executor

    monkeypatch.setattr(slurm_executor, "MAX_ARRAY", 3)  # 4 shards: two array jobs
    local = augment(AugmentConfig(**options(tmp_path, "local")), progress=False)
    config = AugmentConfig(**options(tmp_path, "slurm", executor="slurm", slurm_parallel=2))
    report = augment(config, progress=False)
    assert files_of(tmp_path / "local" / "data") == files_of(tmp_path / "slurm" / "data")
    assert report["rows"] == local["rows"] and report["status"] == local["status"] and report["accounted"]
    for name in ("stats.json", "README.md"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "slurm" / name).read_bytes(), name
    again = augment(config, progress=False)
    assert again["shards"] == {"total": 4, "reused": 4, "redone": 0, "added": 0, "dropped": 0}
    assert not list((tmp_path / "slurm.work" / "slurm").iterdir())  # a finished job leaves nothing behind


def test_a_killed_array_task_stops_the_run_and_the_same_command_makes_only_the_rest(tmp_path, slurm, monkeypatch):
    import ipt_data.run.slurm_executor as slurm_executor

    monkeypatch.setattr(slurm_executor, "RESULTS_GRACE_S", 2.0)
    augment(AugmentConfig(**options(tmp_path, "local")), progress=False)
    config = AugmentConfig(**options(tmp_path, "slurm", executor="slurm", slurm_parallel=1))
    killed = []

    def kill_a_task_after_the_first_shard():
        shards = tmp_path / "slurm.work" / "shards"
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if done_shards(tmp_path / "slurm") >= 1:
                found = subprocess.run(["pgrep", "-af", "ipt_data.run.slurm_executor"], capture_output=True, text=True)
                for line in found.stdout.splitlines():
                    pid, *_, index = line.split()
                    if (shards / f"{int(index):05d}.done.json").exists():  # task i makes shard i: this one is done
                        continue
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
                        break
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)

    thread = threading.Thread(target=kill_a_task_after_the_first_shard, daemon=True)
    thread.start()
    with pytest.raises(SlurmTaskError, match="only their shards are made"):
        augment(config, progress=False)
    thread.join(timeout=5)
    assert killed
    made = done_shards(tmp_path / "slurm")
    assert 1 <= made < 4
    again = augment(config, progress=False)
    assert again["shards"]["reused"] == made and again["shards"]["added"] == 4 - made
    assert files_of(tmp_path / "local" / "data") == files_of(tmp_path / "slurm" / "data")


def test_kill_9_of_the_driver_then_the_same_command_gives_the_same_files(tmp_path, slurm):
    augment(AugmentConfig(**options(tmp_path, "local")), progress=False)
    out = tmp_path / "slurm"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options(tmp_path, "slurm").items()]
    command = [sys.executable, "-m", "ipt_data", "augment", *flags, "--executor=slurm", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and done_shards(out) < 1 and driver.poll() is None:
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert done_shards(out) < 4
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert files_of(tmp_path / "local" / "data") == files_of(out / "data")
    assert (tmp_path / "local" / "stats.json").read_bytes() == (out / "stats.json").read_bytes()
