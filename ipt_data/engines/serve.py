"""`local_vllm_server(model, ...)`: a `vllm serve` of `model` on 127.0.0.1, started for the length of a `with`
block, yielding its OpenAI base URL (for the `openai` engine on one machine, the tests and the benchmarks).

    with local_vllm_server("path/to/model", served_name="tiny", args=["--dtype", "float32"]) as url:
        engine = load_engine("path/to/model", "openai", base_url=url, served_model="tiny")
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ipt_data.errors import EngineUnavailableError


@contextmanager
def local_vllm_server(
    model: str,
    *,
    served_name: str | None = None,
    max_model_len: int = 4096,
    args: Sequence[str] = (),
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    start_timeout: float = 300.0,
) -> Iterator[str]:
    """Start `vllm serve model` on a free local port with `args`, wait until it lists its model, yield
    `http://127.0.0.1:PORT/v1`, and stop it on exit. Its output goes to `log_path` (else to a temporary file,
    removed after). A port taken by another process between our pick and vLLM's bind is picked again."""
    with tempfile.TemporaryDirectory(prefix="ipt-vllm-serve-") as tmp:
        log_file = Path(log_path) if log_path else Path(tmp) / "vllm-serve.log"
        for attempt in range(3):
            proc, url = _start(model, served_name, max_model_len, args, log_file, env)
            try:
                if _wait_ready(proc, url, served_name or model, log_file, start_timeout, last=attempt == 2):
                    yield url
                    return
            finally:
                _stop(proc)


def _start(model, served_name, max_model_len, args, log_file: Path, env) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",  # `vllm serve`; the CLI wrapper wants a distribution named "vllm"
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--served-model-name",
        served_name or model,
        *args,
    ]
    with open(log_file, "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/v1"


def _wait_ready(proc: subprocess.Popen, url: str, name: str, log_file: Path, timeout: float, last: bool) -> bool:
    """True once our process is running and the port lists `name`; False when it exited because its port
    was taken (and this is not the `last` try); otherwise an `EngineUnavailableError`."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            log = log_file.read_text(errors="replace")
            if not last and "address already in use" in log.lower():
                return False
            raise EngineUnavailableError(f"vllm serve exited with {proc.returncode}; {_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                served = [m.get("id") for m in json.loads(r.read())["data"]]
            if name in served and proc.poll() is None:
                return True
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError, AttributeError):
            pass  # not up yet, or something else answers on the port: ours exits or comes up in time
        if time.time() > deadline:
            log = log_file.read_text(errors="replace")
            raise EngineUnavailableError(f"vllm serve did not come up in {timeout:.0f} s; {_tail(log)}")
        time.sleep(1)


def _tail(log: str, lines: int = 15) -> str:
    return "the end of its log:\n" + "\n".join(log.splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
