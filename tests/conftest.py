import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ipt_data.testing.fixtures import TINY_SYNTHESIZER  # noqa: E402

DATA = Path(__file__).parent / "data"
REAL_TOKENIZER = DATA / "mistral-7b-v0.1-tokenizer"  # Mistral-7B-v0.1's, as transformers 4.44 wrote it
# ids made once with transformers 4.44 (scripts/make_tokenizer_goldens.py); see tests/test_fidelity.py
GOLDENS = json.loads((DATA / "tokenizer_goldens.json").read_text(encoding="utf-8"))


def assert_received_the_goldens(received: list[list[int]], cases: list[dict], out: dict[str, list]) -> None:
    """The prompts an engine or server `received` are exactly the golden ids of `cases`, each once. A mismatch
    names the cases missing or extra and counts the rows' statuses in `out`, instead of printing every id."""
    from collections import Counter

    got, want = Counter(map(tuple, received)), Counter(tuple(c["ids"]) for c in cases)
    if got == want:
        return
    names = {tuple(c["ids"]): c["name"] for c in cases}
    missing = sorted(names.get(ids, "?") for ids in (want - got).elements())
    extra = [names.get(ids, f"not a case ({len(ids)} ids)") for ids in (got - want).elements()]
    statuses = Counter(str(s).split(":")[0] for s in out["synth_status"])
    raise AssertionError(
        f"{len(received)} prompts received for {len(cases)} cases; missing {missing}; extra {extra}; "
        f"row statuses {dict(statuses)}; errors {sorted({s for s in out['synth_status'] if s != 'ok'})[:5]}"
    )


@pytest.fixture(scope="session")
def model_path() -> str:
    return TINY_SYNTHESIZER


@pytest.fixture(scope="session")
def encoder(model_path):
    from ipt_data.method.tokenizer import PromptEncoder

    return PromptEncoder(model_path)


# --- a scripted OpenAI-compatible completions server on 127.0.0.1 ----------------------------------

HANG = 999  # a prompt holding this token id never gets an answer in time


class Script:
    def __init__(self):
        self.requests, self.failures, self.in_flight, self.max_in_flight = [], [], 0, 0
        self.token_ids = True
        self.down_after = None  # after this many requests the server is "dead": connections drop unanswered
        self.resets = 0  # the next this many requests get their connection reset (an overloaded server)
        self.gate = threading.Event()  # cleared: requests wait, unanswered, until it is set again
        self.gate.set()
        self.lock = threading.Lock()


def serve(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.gate.wait()
            with script.lock:
                if script.down_after is not None and len(script.requests) >= script.down_after:
                    self.close_connection = True
                    return  # no answer at all: the client sees the connection drop
                if script.resets > 0:
                    script.resets -= 1
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return  # closed at once with a reset
                script.requests.append((body, self.headers.get("Authorization")))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
                failure = script.failures.pop(0) if script.failures else None
            try:
                time.sleep(0.05)
                prompt = body["prompt"]
                if isinstance(prompt, list) and not script.token_ids:
                    return self._reply(400, {"error": "prompt must be a string"})
                if failure:
                    return self._reply(failure, {"error": "scripted failure"})
                if isinstance(prompt, list) and HANG in prompt:
                    time.sleep(10)
                n = len(prompt) if isinstance(prompt, list) else len(prompt.split())
                text = f" <QUE> How long? <ANS> {n} </END>"
                self._reply(
                    200,
                    {
                        "choices": [{"text": text, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": n, "completion_tokens": 7},
                    },
                )
            finally:
                self._done()

        def _done(self):
            """Out of flight: before the answer is written, since the client may send its next request as
            soon as it reads it."""
            with script.lock:
                if not getattr(self, "counted_out", False):
                    script.in_flight -= 1
                    self.counted_out = True

        def _reply(self, code, obj):
            data = json.dumps(obj).encode()
            self._done()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Server(ThreadingHTTPServer):
    """A test server with a real server's listen backlog (uvicorn's is 2,048). socketserver's default of 5
    makes the kernel reset connections when hundreds arrive at once, as the openai engine sends them."""

    request_queue_size = 1024


@pytest.fixture()
def script():
    s = Script()
    server = serve(s)
    s.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield s
    server.shutdown()
    server.server_close()
    from ipt_data.engines import clear_cache

    clear_cache()  # no later test gets an engine cached for this server's address (a port may be reused)


def tiny_config(**values):
    """An `AugmentConfig` for the tiny fixture on the hf engine (short completions), with `values` on top."""
    from ipt_data.config import AugmentConfig

    return AugmentConfig(**{"model": TINY_SYNTHESIZER, "engine": "hf", "max_new_tokens": 40, **values})
