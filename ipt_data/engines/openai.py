"""The `openai` engine: any OpenAI-compatible `/v1/completions` server (vLLM serve, TGI, llama.cpp
server, SGLang), over plain HTTP from a bounded thread pool.

Prompts go as token ids (`"prompt": [1, 523, ...]`), which keeps SPEC 1's exactly-one-BOS encoding;
a server that refuses token ids (400 to a one-token probe, asked once) is sent decoded text instead,
with `add_special_tokens: false` (exact where the server honours it). Requests that fail with 408, 429,
5xx, a connection error or a timeout are retried with exponential backoff; a prompt that still fails
gets an error completion, never failing its batch.

`submit` queues one prompt and returns a future at once; at most `concurrency` requests are in flight and
the rest wait in the engine's queue, so the server always has work queued while the synthesizer sends
each chain's next prompt as soon as its previous one is back. `generate` is `submit` for every prompt.

Options: `base_url` (else `OPENAI_BASE_URL`, default http://127.0.0.1:8000/v1), `api_key` (else
`OPENAI_API_KEY`), `served_model` (the name the server knows the model by; default: the model),
`concurrency` (requests in flight, 512: more than the server batches, e.g. vLLM's max_num_seqs), `timeout`
(seconds per request, 600), `retries` (5), `backoff` (1.0 s),
`retry_seconds` (a request's retries stop after this long in all, 120), `prompt_format` ("auto", "token_ids"
or "text"), `headers` (extra HTTP headers, e.g. a gateway's own auth). Once a request's connections are refused
(no server listening) through all its retries, later requests try once until one succeeds, so a dead server
costs seconds, not minutes per few rows; a reset connection (an overloaded server) is retried in full.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ipt_data.engines.base import Completion, SubmitsEach, unservable

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Refused(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def _refused(error: Exception) -> bool:
    """Whether the connection was refused: nothing listens there. A reset is not that: an overloaded server
    (its listen backlog full) resets new connections, and those requests deserve all their retries."""
    return isinstance(error, ConnectionRefusedError) or isinstance(
        getattr(error, "reason", None), ConnectionRefusedError
    )


def _jitter(data: bytes, attempt: int) -> float:
    """A factor in [0.5, 1.5), fixed by the request body and attempt: requests that failed together (a
    burst the server could not take) retry spread over time, not all at once; no random state involved."""
    return 0.5 + zlib.crc32(data + bytes([attempt & 0xFF])) / 2**32


class OpenAIEngine(SubmitsEach):
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,  # the server owns the device; accepted for a uniform interface
        base_url: str | None = None,
        api_key: str | None = None,
        served_model: str | None = None,
        max_model_len: int = 4096,
        concurrency: int = 512,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 1.0,
        retry_seconds: float = 120.0,
        prompt_format: str = "auto",
        headers: dict[str, str] | None = None,
        trust_remote_code: bool = False,
    ):
        if prompt_format not in ("auto", "token_ids", "text"):
            raise ValueError(f"prompt_format must be auto, token_ids or text, got {prompt_format!r}")
        base = base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1"
        self.url = base.rstrip("/") + "/completions"
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.model, self.served_model = model, served_model or model
        self.max_model_len = max_model_len
        self.concurrency, self.timeout, self.retries, self.backoff = max(1, concurrency), timeout, retries, backoff
        self.retry_seconds = retry_seconds  # a request's retries stop once this much time has gone
        self._unreachable = False  # set when a request found no server; later requests then try once
        self.prompt_format = prompt_format
        self._headers = dict(headers or {})  # extra HTTP headers (a gateway's own auth, say)
        self._lock = threading.Lock()
        self._trust_remote_code = trust_remote_code
        self._pool: ThreadPoolExecutor | None = None  # started on first use; its workers are the requests in flight
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIEngine(url={self.url!r}, served_model={self.served_model!r})"

    def submit(
        self, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Future[Completion]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ipt-openai")
            return self._pool.submit(self._one, list(prompt), max_new_tokens, temperature, seed)

    def close(self) -> None:
        """Drop the queued requests and wait for those in flight."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, ids: list[int], max_new_tokens: int, temperature: float, seed: int) -> Completion:
        refused = unservable(ids, self.max_model_len)
        if refused is not None:
            return refused
        body = {
            "model": self.served_model,
            "max_tokens": min(max_new_tokens, self.max_model_len - len(ids)),
            "temperature": temperature,
            "seed": seed,
            "skip_special_tokens": True,
        }
        try:
            if self._format(ids[:1]) == "token_ids":
                return self._post({**body, "prompt": ids}, len(ids))
            return self._post({**body, "prompt": self._text(ids), "add_special_tokens": False}, len(ids))
        except Exception as exc:  # noqa: BLE001 - one prompt's failure is that prompt's status
            return Completion.raised(len(ids), exc)

    def _format(self, probe: list[int]) -> str:
        """ "auto" asks the server once, with a one-token prompt, whether it takes token ids."""
        with self._lock:
            if self.prompt_format == "auto":
                try:
                    self._post({"model": self.served_model, "prompt": probe, "max_tokens": 1}, len(probe))
                    self.prompt_format = "token_ids"
                except _Refused as exc:
                    if exc.status != 400:
                        raise
                    self.prompt_format = "text"
                    log.warning(
                        "%s does not take token-id prompts: sending text, tokenized by the server's own tokenizer, "
                        "which may not give the ids the synthesizer was tuned on",
                        self.url,
                    )
            return self.prompt_format

    def _text(self, ids: list[int]) -> str:
        from ipt_data.method.tokenizer import get_encoder

        return get_encoder(self.model, self._trust_remote_code).decode_prompt(ids)

    def probe(self) -> None:
        """One tiny request, one attempt, a short timeout: a dead or refusing server fails in seconds."""
        from ipt_data.errors import EngineUnavailableError

        body = {"model": self.served_model, "prompt": [1], "max_tokens": 1}
        try:
            self._post(body, 1, attempts=1, timeout=min(self.timeout, 15.0))
        except _Refused as exc:
            if exc.status != 400:  # 400: token-id prompts refused; the server is up (text prompts then)
                raise EngineUnavailableError(f"the completions server at {self.url} refused a probe: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise EngineUnavailableError(f"no completions server answers at {self.url}: {exc}") from exc

    def _post(self, body: dict, n_prompt: int, attempts: int | None = None, timeout: float | None = None):
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._api_key}", **self._headers}
        attempts = attempts or (1 if self._unreachable else self.retries + 1)
        started = time.monotonic()
        for attempt in range(attempts):
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                    answer = json.loads(response.read())
                self._unreachable = False
                choice = answer["choices"][0]
                usage = answer.get("usage") or {}
                reason = "length" if choice.get("finish_reason") == "length" else "stop"
                return Completion(
                    choice.get("text") or "",
                    reason,
                    int(usage.get("prompt_tokens") or n_prompt),
                    int(usage.get("completion_tokens") or 0),
                )
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS:
                    raise _Refused(exc.code, exc.read().decode("utf-8", "replace")) from exc
                error: Exception = exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                error = exc
            pause = self.backoff * 2**attempt * _jitter(data, attempt)
            if attempt + 1 < attempts and time.monotonic() - started + pause <= self.retry_seconds:
                time.sleep(pause)
            elif attempt + 1 < attempts:
                break
        if _refused(error):  # no server listening (not a slow or overloaded one)
            if not self._unreachable:
                log.warning("no answer from %s (%s): later requests try once until one succeeds", self.url, error)
            self._unreachable = True
        raise TimeoutError(f"no answer after {attempt + 1} attempts: {error}")
