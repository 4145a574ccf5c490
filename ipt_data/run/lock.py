"""A run's hold on a folder: `FolderLock(folder)` makes a second run that wants the same work folder (or publishes
to the same output folder) stop at once with one line naming the run that holds it.

The lock is a file (`run.lock`) made with its record already in it: written beside it, then hard-linked to its
name, which is atomic and fails if it exists, on local disks and on shared filesystems (NFSv3+, Lustre, GPFS,
CephFS); where a filesystem has no hard links, created with `O_CREAT | O_EXCL`, then written. It records the
holder (host, pid, start time, a random token) and is touched every `HEARTBEAT_S` seconds while the run lives. A
lock left by a run that died is stale and taken over: on the same host when its process is gone (or its pid now
belongs to a process started later); from another host when it has not been touched for `STALE_S` seconds.
Taking over goes through a second file (`run.lock.break`, `O_EXCL`), so of two runs finding the same stale lock
only one breaks it.

Workers (other processes, Ray actors on other nodes) are given the token and check it before they write: a
run whose lock was taken over writes nothing more.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ipt_data.errors import RunLockedError, RunStoppedError
from ipt_data.notices import NOTICE

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0  # how often a live run touches its lock
STALE_S = 120.0  # a lock from another host untouched this long has no run left


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where that cannot be read: a
    recycled pid then shows as another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return started is None or _process_start(pid) in (None, started)


class FolderLock:
    """`with FolderLock(folder, what="the work folder"):` the folder is this run's until the block ends."""

    def __init__(self, folder: str | os.PathLike, what: str = "the work folder", name: str = "run.lock"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / name
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._made_folder = False

    # --- holding -----------------------------------------------------------------------------------------------
    def acquire(self) -> FolderLock:
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "token": self.token,
        }
        for _ in range(5):
            try:
                self._create(json.dumps(record))
            except FileExistsError:
                holder = self._written_holder()
                if holder is None or not self._stale(holder):
                    raise self._refusal(holder) from None
                self._break(holder)
                continue
            self._beat = threading.Thread(target=self._heartbeat, name="ipt-lock", daemon=True)
            self._beat.start()
            log.info("%s %s is held by this run (%s)", self.what, self.folder, _describe(record))
            return self
        raise RunLockedError(f"{self.what} {self.folder} changed hands several times while this run started; retry")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        if self._made_folder:
            try:
                self.folder.rmdir()  # a folder made only to hold the lock leaves no trace
            except OSError:
                pass

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                token = _token(self.path)
                if token != self.token:
                    log.error("%s %s was taken over by another run (%s)", self.what, self.folder, self._who())
                    return
                os.utime(self.path)
            except OSError as exc:  # a shared filesystem's hiccup (ESTALE, a timeout): not a lost lock
                log.warning("could not touch the lock %s: %s", self.path, exc)

    # --- the others' locks -----------------------------------------------------------------------------------
    def holder(self) -> dict | None:
        """The lock's record, or None when there is no lock (or it is being written this instant)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            return {**json.loads(text), "age": age}
        except ValueError:
            return {"age": age}  # created, not written yet: a run starting this instant, or one that died then

    def _create(self, text: str) -> None:
        """The lock file with `text` in it, made in one step: written beside it, then hard-linked to its name (an
        atomic create-if-absent, NFS included), so no run ever finds it empty, even if its maker is killed right
        then. Where the filesystem has no hard links, created with `O_EXCL` and then written. Raises
        `FileExistsError` when another run holds it."""
        tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
                return
            except FileExistsError:
                raise
            except OSError:  # no hard links here
                pass
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.path.unlink(missing_ok=True)  # a full disk, Ctrl-C: no empty lock is left to refuse others
            raise

    def _written_holder(self, wait_s: float = 2.0) -> dict | None:
        """`holder()`, given up to `wait_s` seconds to be written when it was created just now (two runs started
        together: the other one's record is a moment away), so that a refusal can name its run."""
        deadline = time.monotonic() + wait_s
        holder = self.holder()
        while holder is not None and "pid" not in holder and holder["age"] < wait_s and time.monotonic() < deadline:
            time.sleep(0.02)
            holder = self.holder()
        return holder

    def _stale(self, holder: dict) -> bool:
        if "pid" not in holder:
            return holder["age"] > STALE_S  # never written: its run died between creating and writing it
        if holder.get("host") == socket.gethostname():
            return not _alive(int(holder["pid"]), holder.get("process_start"))
        return holder["age"] > STALE_S

    def _break(self, stale: dict) -> None:
        """Remove the stale lock `stale`, unless another run has replaced it meanwhile."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - breaker.stat().st_mtime > STALE_S:
                    breaker.unlink(missing_ok=True)  # left by a run that died while breaking a lock
            except FileNotFoundError:
                pass
            time.sleep(0.2)
            return
        os.close(fd)
        try:
            now = self.holder()
            if now is not None and now.get("token") == stale.get("token") and now.get("pid") == stale.get("pid"):
                log.warning(
                    "%s %s: taking over the lock of a run that is gone (%s)",
                    self.what,
                    self.folder,
                    _describe(stale),
                    extra=NOTICE,
                )
                self.path.unlink(missing_ok=True)
        finally:
            breaker.unlink(missing_ok=True)

    def _who(self) -> str:
        holder = self.holder()
        return _describe(holder) if holder else "unknown"

    def _refusal(self, holder: dict | None) -> RunLockedError:
        who = _describe(holder) if holder and "pid" in holder else "a run starting this instant"
        return RunLockedError(
            f"{self.what} {self.folder} is in use by another run ({who}); wait for it to end, or stop it "
            f"(a run that died leaves a lock that the next run takes over by itself)"
        )


def _describe(record: dict) -> str:
    return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"


def _token(path: str | os.PathLike) -> str | None:
    """The token in the lock file at `path`; None when there is none (no file, or not written yet)."""
    try:
        return json.loads(Path(path).read_text()).get("token")
    except (FileNotFoundError, ValueError):
        return None


def held(path: str | os.PathLike, token: str) -> bool:
    """Whether the lock file at `path` still carries `token` (an unreadable file is not taken for a lost lock:
    a shared filesystem's hiccup raises `OSError`)."""
    return _token(path) == token


def check_held(path: str | os.PathLike, token: str | None, what: str) -> None:
    """Raise `RunStoppedError` when the run that handed out `token` no longer holds the lock at `path` (it died and
    another run took the folder over): a worker of that run must not write there."""
    if token is not None and not held(path, token):
        raise RunStoppedError(f"{what}: the work folder's lock is no longer this run's (another run took it over)")
