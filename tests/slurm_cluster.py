"""A real one-node Slurm cluster for the tests, on 127.0.0.1: Debian's `slurm-wlm` (slurmctld and slurmd) with
`munge` for authentication, every file in one temporary folder, free ports, stopped on exit. Needs root and the
packages (`.ci/run` installs them; `make install-slurm` on a developer's machine); `available()` says why not."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    missing = [d for d in (*DAEMONS, "sbatch", "squeue", "scancel") if not shutil.which(d)]
    if missing:
        return f"Slurm or munge is not installed ({', '.join(missing)}): make install-slurm"
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 4000


CONF = """\
ClusterName=ipt-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def cluster(root: Path):
    """Start munged, slurmctld and slurmd with their files in `root`; yield the environment that points Slurm's
    commands at them (`SLURM_CONF`); stop the daemons (and any job left) on exit."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        CONF.format(
            root=root, host=host, ctld_port=_free_port(), d_port=_free_port(), cpus=os.cpu_count(), memory=_memory_mb()
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids = [root / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    started = time.time()
    try:
        subprocess.run(
            [DAEMONS[0], f"--key-file={key}", f"--socket={root}/munge.socket", f"--pid-file={pids[0]}",
             f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed", "--force"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run([DAEMONS[1], "-f", str(conf), "-i"], check=True, capture_output=True, env=env)
        subprocess.run([DAEMONS[2], "-f", str(conf)], check=True, capture_output=True, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the test Slurm node did not come up: {state!r}; see {root}/slurmd.log")
        yield env
    finally:
        _stop(env, pids, started)


def _stop(env: dict, pid_files: list[Path], started: float) -> None:
    """Cancel every job, wait (15 s at most) until the controller has heard each one end (a job step that cannot
    report its end keeps retrying, and its slurmd with it), then stop the daemons: SIGTERM, and SIGKILL for what
    is still there 5 s later, job steps of this cluster included."""
    subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env)
        if queue.returncode or not queue.stdout.strip():
            break
        time.sleep(0.2)
    pids = []
    for pid_file in reversed(pid_files):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text().strip()))
    pids += _steps_since(started)
    by_conf = subprocess.run(["pgrep", "-f", env["SLURM_CONF"]], capture_output=True, text=True).stdout.split()
    pids += [int(pid) for pid in by_conf if int(pid) not in pids]  # a daemon whose pid file is gone
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _steps_since(started: float) -> list[int]:
    """The `slurmstepd` processes started since `started` (this cluster's: the tests run one at a time)."""
    found = subprocess.run(["pgrep", "-x", "slurmstepd"], capture_output=True, text=True).stdout.split()
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in map(int, found):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if boot + int(stat.rsplit(")", 1)[1].split()[19]) / ticks >= started - 1:
                out.append(pid)
    return out
