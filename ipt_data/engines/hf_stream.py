"""The `hf` engine with continuous batching: transformers' `ContinuousBatchingManager` (paged KV cache) behind
`submit(prompt) -> Future[Completion]`, so chains stream through it as they do through `vllm` and `openai`.

A prompt joins the running batch at the manager's next step and leaves it at its own EOS: a batch never
waits for its slowest sequence, which is what a GPU serving 400-token completions that mostly stop early
needs. The default on CUDA; on a CPU the static path (`HFEngine`) stays the default (there, continuous
batching with default cache settings is far slower), and it is the fallback wherever a manager cannot be
started.

Fault isolation: any error in a step kills transformers' manager and fails every prompt in it (a poisoned
prompt, a cache too small for one, out of memory). The failed prompts are retried on a new manager in
halves, one group at a time (later prompts wait), down to single prompts: only a prompt that fails alone
gets an error completion, after about 2 log2(n) retries for one bad prompt among n. A manager is replaced
only once none of our prompts is left in it, so no answer is lost with it, and a dead one's KV cache is
freed before the next is sized. Cancelling a future drops its prompt, queued or running. A change of
sampling (temperature, seed) waits for the prompts of the previous one, then restarts the manager; sampled
completions depend on which prompts share a step (the seed is the manager's, not the prompt's). Greedy
completions equal the static path's (float32 on a CPU; bf16 kernels on a GPU may differ in a few tokens).

Options (`engine_options`, on top of `HFEngine`'s): `cache_blocks` (KV cache blocks; from free GPU memory
when unset), `page_size` (tokens a block holds per layer), `max_batch_tokens` (tokens one step may take),
`max_requests_per_batch`, `memory_fraction` (of free GPU memory for the cache), `cuda_graphs` (on, off, or
unset: transformers decides), `attn_implementation` (unset: the manager picks a paged one, flash attention
where it is installed).
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import itertools
import logging
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import torch

from ipt_data.engines.base import Completion, SubmitsEach, resolved, settle, unservable
from ipt_data.engines.hf import HFEngine

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Request:
    prompt: list[int]
    room: int  # new tokens it may generate
    sampling: tuple[float, int]  # (temperature, seed): one manager serves one
    future: Future


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
        self._running: dict[str, _Request] = {}  # in the manager (`self._manager`), by our request id
        self._group = 0  # the size of the retried group running now (0: no retry running)
        self._failed: list[_Request] = []  # failed since the manager was last empty: to retry, in halves
        self._retry: deque[list[_Request]] = deque()  # groups to retry, one at a time, in order
        self._waiting: deque[_Request] = deque()  # held back: while retries run, or for a change of sampling
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
        """Prompts submitted and neither answered nor cancelled (running, to retry or waiting)."""
        with self._lock:
            return sum(not r.future.cancelled() for r in self._pending())

    def _abandon(self, reason: str) -> bool:
        """Close the engine: every prompt not yet answered is answered with `reason` and no other is taken
        (False: it was closed already)."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            pending = self._pending()
            self._running.clear(), self._failed.clear(), self._retry.clear(), self._waiting.clear()
            self._busy.set()  # the reader wakes and sees the engine closed
        for request in pending:
            settle(request.future, Completion.failed(len(request.prompt), reason))
        return True

    def _pending(self) -> list[_Request]:
        return [*self._running.values(), *self._failed, *(r for g in self._retry for r in g), *self._waiting]

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
            if self._group or self._failed or self._retry or self._waiting or self._running and not self._fits(request):
                self._waiting.append(request)
            else:
                self._admit([request])
        return request.future

    def _fits(self, request: _Request) -> bool:
        """Whether `request` can join the manager now: it takes new prompts, and of the same sampling."""
        return request.sampling == self._sampling and _usable(self._manager)

    def close(self) -> None:
        """Answer every prompt not yet answered with an error, and stop the manager at once."""
        if self._abandon("the hf engine was closed"):
            self._discard(self._manager, hard=True)
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
            if not self.in_flight:
                self._discard(self._manager)

    def _start(self, sampling: tuple[float, int]):
        config = self.batching_config(sampling)
        manager = self.model.init_continuous_batching(
            generation_config=self.generation_config(sampling), continuous_batching_config=config
        )
        graphs = manager.continuous_batching_config.use_cuda_graph  # as transformers resolved it
        if (any(graphs) if isinstance(graphs, tuple) else graphs) and hasattr(manager, "warmup"):
            manager.warmup()  # the graphs captured now, not while serving
        manager.start()
        self._sampling = sampling
        log.info("hf continuous batching started: %s", manager.continuous_batching_config)
        return manager

    def _discard(self, manager, hard: bool = False) -> None:
        """Stop `manager` (none of our prompts is in it, or they are answered already) and free its KV cache,
        a dead one's too (its error's traceback would hold it): the next manager sizes its cache from free
        memory."""
        if manager.is_running():
            try:
                manager.stop(block=True, timeout=30, hard_stop=hard)
            except Exception as exc:  # noqa: BLE001 - a manager that cannot stop cleanly is dropped anyway
                log.warning("the hf continuous batching manager did not stop cleanly: %s: %s", type(exc).__name__, exc)
        manager.batch_processor = None
        status = getattr(manager, "background_thread_status", None)
        error = getattr(status, "fatal_error", None)
        if error is not None:
            traceback.clear_frames(error.__traceback__)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _admit(self, requests: list[_Request]) -> None:
        """Into the manager now (the lock held; nothing running, or they fit it): a new manager first when
        nothing runs and the one there takes no prompts or serves another sampling."""
        requests = [r for r in requests if not r.future.cancelled()]
        if not requests:
            return
        if not self._running and not self._fits(requests[0]):
            if not self._restart(requests):
                return
        for k, request in enumerate(requests):
            request_id = f"ipt-{next(self._ids)}"
            try:
                added = self._add(request, request_id)
                if added is None and not self._running and self._restart(requests[k:]):
                    added = self._add(request, request_id)  # the manager died just now: once on a new one
            except Exception as exc:  # noqa: BLE001 - a prompt the manager will not take fails alone
                settle(request.future, Completion.raised(len(request.prompt), exc))
                continue
            if added is None:  # the manager is dying with prompts of ours in it: after them
                self._waiting.extendleft(reversed(requests[k:]))
                return
            self._running[request_id] = request
            self._busy.set()
            request.future.add_done_callback(lambda f, rid=request_id: f.cancelled() and self._cancel(rid))

    def _add(self, request: _Request, request_id: str) -> str | None:
        eos = -1 if self.ignore_eos else self.eos_id
        return self._manager.add_request(
            request.prompt, request_id=request_id, max_new_tokens=request.room, eos_token_id=eos
        )

    def _restart(self, requests: list[_Request]) -> bool:
        """A new manager for `requests[0]`'s sampling (nothing running); when it cannot start, `requests` are
        answered with the error."""
        self._discard(self._manager)
        try:
            self._manager = self._start(requests[0].sampling)
            return True
        except Exception as exc:  # noqa: BLE001 - the prompts fail, not the caller
            log.error("hf: a continuous batching manager did not start: %s: %s", type(exc).__name__, exc)
            for request in requests:
                settle(request.future, Completion.raised(len(request.prompt), exc))
            return False

    def _cancel(self, request_id: str) -> None:
        with self._lock:
            if self._running.pop(request_id, None) is not None:
                self._manager.cancel_request(request_id)
                self._advance()

    def _advance(self) -> None:
        """Once nothing runs (the lock held): the prompts that failed since, split in halves and retried first,
        one group at a time; then everything held back, in order (a change of sampling waits for the prompts
        of the previous one to finish)."""
        if self._running:
            return
        if self._failed:
            failed, half = self._failed, (len(self._failed) + 1) // 2
            self._failed = []
            self._retry.extendleft(reversed([g for g in (failed[:half], failed[half:]) if g]))
        self._group = 0
        while not self._running and (self._retry or self._waiting):
            if self._retry:
                group = [r for r in self._retry.popleft() if not r.future.cancelled()]
                self._group = len(group)
                self._admit(group)
                if not self._running:
                    self._group = 0
                continue
            sampling, now = self._waiting[0].sampling, []
            while self._waiting and self._waiting[0].sampling == sampling:
                now.append(self._waiting.popleft())
            self._admit(now)
        if not self._running:
            self._busy.clear()

    # ---- the reader thread ----

    def _read(self) -> None:
        """Answers the prompts as their outputs come; sleeps while none is in the manager (a released or
        replaced manager answers `get_result` at once: polling it would spin and starve generation)."""
        try:
            while not self._closed:
                if not self._busy.wait(timeout=1.0):
                    continue
                manager = self._manager
                output = manager.get_result(timeout=0.1)
                if output is None:
                    if not manager.is_running():
                        self._lost(manager)
                    time.sleep(0.005)  # a manager with a fatal error answers None at once too
                elif output.is_finished():
                    self._finished(output)
        except BaseException as exc:  # noqa: BLE001 - the reader must never die leaving futures unanswered
            log.error("the hf engine's reader stopped: %s: %s", type(exc).__name__, exc)
            self._abandon(f"the hf engine stopped: {exc}")
            self._discard(self._manager, hard=True)  # its loop thread would keep the process from exiting

    def _finished(self, output) -> None:
        if output.error is None:  # decoded outside the lock: submit() is not held up
            tokens, reason = self.until_eos(list(output.generated_tokens))
            text = self.encoder.decode_batch([tokens])[0]
        with self._lock:
            request = self._running.pop(output.request_id, None)
            if request is None:  # cancelled meanwhile
                return
            if output.error is None:
                settle(request.future, Completion(text, reason, len(request.prompt), len(tokens)))
            elif self._group == 1:
                log.warning("a prompt of %d tokens failed alone: %s", len(request.prompt), output.error)
                settle(request.future, Completion.failed(len(request.prompt), f"generation failed: {output.error}"))
            else:
                self._failed.append(request)
            self._advance()

    def _lost(self, manager) -> None:
        """The manager's loop stopped: its last outputs read, the prompts still in it are retried (in halves,
        on a new manager) or, when they ran alone, fail."""
        with self._lock:
            if manager is not self._manager or self._closed or not self._running:
                return
            while (output := manager.get_result(timeout=0)) is not None:  # delivered as the loop stopped
                if output.is_finished():
                    self._finished(output)
            if not self._running:
                return
            log.error("the hf continuous batching loop stopped with %d prompts running", len(self._running))
            lost = list(self._running.values())
            self._running.clear()
            if self._group == 1:
                for request in lost:
                    settle(request.future, Completion.failed(len(request.prompt), "the generation loop stopped"))
            else:
                self._failed += lost
            self._advance()


def _usable(manager) -> bool:
    """Whether `manager` takes new prompts: its loop runs and is neither stopping nor dead."""
    status = getattr(manager, "background_thread_status", None)
    return manager.is_running() and (status is None or status.can_accept_new_requests() is None)


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
