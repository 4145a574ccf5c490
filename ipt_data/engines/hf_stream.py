"""The `hf` engine with continuous batching: transformers' `ContinuousBatchingManager` (paged KV cache) behind
`submit(prompt) -> Future[Completion]`, so chains stream through it as they do through `vllm` and `openai`.

A prompt joins the running batch at the manager's next step and leaves it at its own EOS: a batch never
waits for its slowest sequence, which is what a GPU serving 400-token completions that mostly stop early
needs. The default on CUDA; on a CPU the static path (`HFEngine`) stays the default (there, continuous
batching with default cache settings is far slower), and it is the fallback wherever a manager cannot be
started.

Fault isolation: the manager runs a step for many prompts at once, so one poisoned prompt fails its whole
step. A prompt that comes back failed is retried once alone (the others wait meanwhile); only a prompt
that fails alone gets an error completion. If the manager's loop dies, a new one is started for the
retries. Cancelling a future drops its prompt, queued or running. Greedy outputs equal the static path's.

Options (`engine_options`, on top of `HFEngine`'s): `cache_blocks` (KV cache blocks; from free GPU memory
when unset), `page_size` (tokens a block holds per layer), `max_batch_tokens` (tokens one step may take),
`max_requests_per_batch`, `memory_fraction` (of free GPU memory for the cache), `cuda_graphs` (on, off, or
unset: transformers decides), `attn_implementation` (unset: the manager picks a paged one, flash attention
where it is installed).
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from ipt_data.engines.base import Completion, SubmitsEach, resolved, settle, unservable
from ipt_data.engines.hf import HFEngine

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Request:
    prompt: list[int]
    room: int  # new tokens it may generate
    sampling: tuple[float, int]  # (temperature, seed): one manager serves one
    future: Future
    alone: bool = False  # failed among others: is retried alone


class HFStreamingEngine(SubmitsEach, HFEngine):
    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        cache_blocks: int | None = None,
        page_size: int | None = None,
        max_batch_tokens: int | None = None,
        max_requests_per_batch: int | None = None,
        memory_fraction: float | None = None,
        cuda_graphs: bool | None = None,
        attn_implementation: str | None = None,
        **options: Any,
    ):
        super().__init__(model, **options)
        if not hasattr(self.model, "init_continuous_batching"):
            raise RuntimeError("this transformers has no continuous batching (transformers >= 5 has)")
        self._settings = {
            "num_blocks": cache_blocks,
            "page_size": page_size,
            "max_batch_tokens": max_batch_tokens,
            "max_requests_per_batch": max_requests_per_batch,
            "max_memory_percent": memory_fraction,
            "use_cuda_graph": cuda_graphs,
        }
        if attn_implementation:
            self.model.set_attn_implementation(attn_implementation)
        self._lock = threading.RLock()
        self._ids = itertools.count()
        self._running: dict[str, _Request] = {}  # in the manager, by our request id
        self._alone: deque[_Request] = deque()  # failed among others, to retry one at a time
        self._waiting: deque[_Request] = deque()  # held back while a prompt runs alone or sampling changes
        self._closed = False
        self._busy = threading.Event()  # set while a prompt is in the manager: the reader reads
        self._sampling: tuple[float, int] = (0.0, 0)
        self._manager = self._start((0.0, 0))  # fails here, not at the first prompt: the fallback can act
        self._reader = threading.Thread(target=self._read, name="ipt-hf-stream", daemon=True)
        self._reader.start()
        _close_at_exit(self)

    @property
    def capacity(self) -> int:
        """The most prompts one step of the manager takes."""
        return int(self._manager.continuous_batching_config.max_requests_per_batch or self.batch_size)

    @property
    def in_flight(self) -> int:
        """Prompts submitted and not yet answered (running, retried alone or waiting)."""
        with self._lock:
            return len(self._running) + len(self._alone) + len(self._waiting)

    # ---- the caller's side ----

    def submit(
        self, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Future[Completion]:
        refused = unservable(prompt, self.max_model_len)
        if refused is not None:
            return resolved(refused)
        request = _Request(
            list(prompt),
            min(max_new_tokens, self.max_model_len - len(prompt)),
            (float(temperature), int(seed)) if temperature > 0 else (0.0, 0),
            Future(),
        )
        with self._lock:
            if self._closed:
                return resolved(Completion.failed(len(prompt), "the hf engine is closed"))
            if self._alone or self._waiting or self._running_alone():
                self._waiting.append(request)
            else:
                self._admit(request)
        return request.future

    def close(self) -> None:
        """Answer every prompt not yet answered with an error, and stop the manager's loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = [*self._running.values(), *self._alone, *self._waiting]
            self._running.clear(), self._alone.clear(), self._waiting.clear()
            self._busy.set()  # the reader wakes and sees the engine closed
        for request in pending:
            settle(request.future, Completion.failed(len(request.prompt), "the hf engine was closed"))
        self._stop(self._manager)
        self._reader.join(timeout=30)

    # ---- the manager ----

    def batching_config(self, sampling: tuple[float, int] = (0.0, 0)):
        """transformers' `ContinuousBatchingConfig` of this engine's settings (and a sampling's seed)."""
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
        settings = {k: v for k, v in self._settings.items() if v is not None}
        if "page_size" in settings and "page_size" not in fields:  # transformers < 5.17 calls it block_size
            settings["block_size"] = settings.pop("page_size")
        if sampling[0] > 0:
            settings["seed"] = sampling[1]
        unknown = set(settings) - fields
        if unknown:
            raise ValueError(f"this transformers' continuous batching has no {sorted(unknown)}")
        return ContinuousBatchingConfig(**settings)

    def generation_config(self, sampling: tuple[float, int] = (0.0, 0)):
        """The `GenerationConfig` of one sampling (greedy by default), EOS as this engine has it."""
        from transformers import GenerationConfig

        temperature = sampling[0]
        return GenerationConfig(
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=None,
            top_p=None,
            eos_token_id=-1 if self.ignore_eos else self.eos_id,
            pad_token_id=self.pad_id,
            max_new_tokens=self.max_model_len,
        )

    def release(self) -> None:
        """Stop the manager and free its KV cache while nothing is in flight (the next prompt starts a new one)."""
        with self._lock:
            if not (self._running or self._alone or self._waiting):
                self._stop(self._manager)

    def _start(self, sampling: tuple[float, int]):
        config = self.batching_config(sampling)
        manager = self.model.init_continuous_batching(
            generation_config=self.generation_config(sampling), continuous_batching_config=config
        )
        if config.use_cuda_graph and hasattr(manager, "warmup"):
            manager.warmup()
        manager.start()
        self._sampling = sampling
        log.info("hf continuous batching started: %s", manager.continuous_batching_config)
        return manager

    def _stop(self, manager) -> None:
        if not manager.is_running():  # stopped already, or its loop died (a new one is started for what is left)
            return
        try:
            manager.stop(block=True, timeout=30)
        except Exception as exc:  # noqa: BLE001 - a manager that cannot stop cleanly is dropped anyway
            log.warning("the hf continuous batching manager did not stop cleanly: %s: %s", type(exc).__name__, exc)

    def _admit(self, request: _Request) -> None:
        """Into the manager now (the lock held): restarted first if its loop died or the sampling differs."""
        if request.future.cancelled():
            return
        try:
            if request.sampling != self._sampling or not self._manager.is_running():
                self._stop(self._manager)
                self._manager = self._start(request.sampling)
            request_id = f"ipt-{next(self._ids)}"
            eos = -1 if self.ignore_eos else self.eos_id
            added = self._manager.add_request(
                request.prompt, request_id=request_id, max_new_tokens=request.room, eos_token_id=eos
            )
            if added is None:
                raise RuntimeError("the continuous batching manager refused the prompt")
        except Exception as exc:  # noqa: BLE001 - a prompt that cannot be added fails alone
            settle(request.future, Completion.raised(len(request.prompt), exc))
            return
        self._running[request_id] = request
        self._busy.set()
        request.future.add_done_callback(lambda f: f.cancelled() and self._cancel(request_id))

    def _running_alone(self) -> bool:
        """Whether a retried prompt is running (alone: it was admitted with nothing else running, and nothing
        is admitted beside it)."""
        return len(self._running) == 1 and next(iter(self._running.values())).alone

    def _cancel(self, request_id: str) -> None:
        with self._lock:
            if self._running.pop(request_id, None) is not None:
                self._manager.cancel_request(request_id)
                self._advance()

    def _advance(self) -> None:
        """Once nothing runs (the lock held): the next prompt to retry alone, else everything held back, in order
        (a change of sampling waits for the prompts of the previous one to finish)."""
        while not self._running and (self._alone or self._waiting):
            if self._alone:
                self._admit(self._alone.popleft())
                continue
            sampling = self._waiting[0].sampling
            while self._waiting and self._waiting[0].sampling == sampling:
                self._admit(self._waiting.popleft())
        if not self._running:
            self._busy.clear()

    # ---- the reader thread ----

    def _read(self) -> None:
        """Answers the prompts as their outputs come; sleeps while none is in the manager (a released or
        replaced manager answers `get_result` at once: polling it would spin and starve generation)."""
        while not self._closed:
            if not self._busy.wait(timeout=1.0):
                continue
            manager = self._manager
            output = manager.get_result(timeout=0.1)
            if output is None:
                if not manager.is_running():
                    self._lost(manager)
                time.sleep(0.005)  # a manager with a fatal error answers None at once too
                continue
            if output.is_finished():
                self._finished(output)

    def _finished(self, output) -> None:
        if output.error is None:  # decoded outside the lock: submit() is not held up
            tokens = list(output.generated_tokens)
            stop = not self.ignore_eos and self.eos_id in tokens
            tokens = tokens[: tokens.index(self.eos_id) + 1] if stop else tokens
            text = self.encoder.decode_batch([tokens])[0]
        with self._lock:
            request = self._running.pop(output.request_id, None)
            if request is None:  # cancelled meanwhile
                return
            if output.error is None:
                settle(request.future, Completion(text, "stop" if stop else "length", len(request.prompt), len(tokens)))
            elif request.alone or not self._running and not self._alone:
                log.warning("a prompt of %d tokens failed alone: %s", len(request.prompt), output.error)
                settle(request.future, Completion.failed(len(request.prompt), f"generation failed: {output.error}"))
            else:
                request.alone = True
                self._alone.append(request)
            self._advance()

    def _lost(self, manager) -> None:
        """The manager's loop stopped with prompts in it: they are retried alone, on a new manager."""
        with self._lock:
            if manager is not self._manager or self._closed or not self._running:
                return
            log.error("the hf continuous batching loop stopped with %d prompts running", len(self._running))
            for request in self._running.values():
                if request.alone:
                    settle(request.future, Completion.failed(len(request.prompt), "the generation loop stopped"))
                else:
                    request.alone = True
                    self._alone.append(request)
            self._running.clear()
            self._advance()


def _close_at_exit(engine: HFStreamingEngine) -> None:
    """The manager's loop runs in a thread that is not a daemon: the interpreter would wait for it forever at
    exit. Close the engine first, at the point where `concurrent.futures` stops its own workers (before
    threads are joined; plain `atexit` runs after)."""
    ref = weakref.ref(engine)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(close)
    except RuntimeError:  # already shutting down
        close()
