"""The Ray executor on a local Ray (2 CPUs, loopback only), the hf engine and the tiny fixture."""

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

RAY_TMP = tempfile.mkdtemp(prefix="ipt-ray-")  # short: Ray's socket paths have a length limit
os.environ.update(
    {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": RAY_TMP,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
)

import ray  # noqa: E402

from ipt_data.config import SAMPLE_CORPUS, AugmentConfig  # noqa: E402
from ipt_data.run import augment  # noqa: E402
from ipt_data.run.ray_executor import augment_on_ray  # noqa: E402
from ipt_data.testing.fixtures import TINY_SYNTHESIZER  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=RAY_TMP,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def config(tmp_path, name, **kw):
    values = dict(
        dataset=SAMPLE_CORPUS,
        model=TINY_SYNTHESIZER,
        engine="hf",
        rounds=2,
        max_new_tokens=120,
        batch_size=8,
        shard_size=4,
        limit=16,
        output=str(tmp_path / name),
    )
    values.update(kw)
    return AugmentConfig(**values)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_equals_the_local_pipeline_and_resumes(tmp_path, local_ray):
    local = augment(config(tmp_path, "local"), progress=False)
    on_ray = augment_on_ray(config(tmp_path, "ray"), workers=2)
    assert files_of(tmp_path / "local" / "data") == files_of(tmp_path / "ray" / "data")
    assert on_ray["rows"] == local["rows"] and on_ray["status"] == local["status"] and on_ray["accounted"]
    again = augment_on_ray(config(tmp_path, "ray"), workers=2)  # everything done: nothing is recomputed
    assert again["shards"] == {"total": 4, "reused": 4, "redone": 0, "added": 0, "dropped": 0}
    assert files_of(tmp_path / "local" / "data") == files_of(tmp_path / "ray" / "data")


def _actor_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "MapWorker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_actor_loses_nothing(tmp_path, local_ray):
    expected = augment(config(tmp_path, "local", limit=24, shard_size=2), progress=False)  # the same shards
    cfg = config(tmp_path, "ray", limit=24, shard_size=2)
    killed = []

    def kill_one_actor_mid_run():
        shards = Path(cfg.resolved_work_dir()) / "shards"
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            pids = _actor_pids() if len(list(shards.glob("*.done.json"))) >= 2 else []
            if pids:
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                except ProcessLookupError:  # it ended between pgrep and the kill: try the next one
                    pass
            time.sleep(0.05)

    thread = threading.Thread(target=kill_one_actor_mid_run, daemon=True)
    thread.start()
    report = augment_on_ray(cfg, workers=2)
    thread.join(timeout=5)
    assert killed, "an actor was killed while shards remained"
    assert report["rows"]["in"] == 24 and report["accounted"] and report["rows"] == expected["rows"]
    assert files_of(tmp_path / "local" / "data") == files_of(tmp_path / "ray" / "data")


def test_cli_executor_ray(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        "python",
        "-m",
        "ipt_data",
        "augment",
        "--recipe",
        "recipes/cpu-demo.yaml",
        "--model",
        TINY_SYNTHESIZER,
        "--dataset",
        SAMPLE_CORPUS,
        "--limit",
        "8",
        "--shard-size",
        "4",
        "--executor",
        "ray",
        "--workers",
        "2",
        "--output",
        str(tmp_path / "cli"),
        "--no-progress",
    ]
    import sys

    cmd[0] = sys.executable
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all input rows accounted for: True" in result.stdout
    assert len(list((tmp_path / "cli" / "data").glob("*.parquet"))) == 2  # a file per shard (8 rows, 4 a shard)
