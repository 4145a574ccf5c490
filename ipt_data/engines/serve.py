"""`local_vllm_server(model, ...)`: a `vllm serve` of `model` on 127.0.0.1, started for the length of a `with`
block, yielding its OpenAI base URL (for the `openai` engine on one machine, the tests and the benchmarks).

    with local_vllm_server("path/to/model", served_name="tiny", args=["--dtype", "float32"]) as url:
        engine = load_engine("path/to/model", "openai", base_url=url, served_model="tiny")
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
    `http://127.0.0.1:PORT/v1`, and stop it on exit. Its output goes to `log_path` (else is dropped)."""
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
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + start_timeout
        while True:
            if proc.poll() is not None:
                raise EngineUnavailableError(f"vllm serve exited with {proc.returncode} (its log: {log_path})")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if json.loads(r.read())["data"]:
                        break
            except OSError:
                if time.time() > deadline:
                    raise EngineUnavailableError(f"vllm serve did not come up in {start_timeout:.0f} s") from None
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()
