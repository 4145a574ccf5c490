"""Engines for measuring ipt_data's own overhead: one that costs nothing, and a simulated GPU that streams.

`Instant` answers every prompt at once with one fixed, well-formed completion of three pairs (free-form,
multiple choice, chain of thought), so a run measures only our own work. `GroundedInstant` does the same with
pairs made of the words of each prompt's own text (its last tokens before ` </CON>`), different for every
text and grounded in it, as a good synthesizer's are: what pair filters are measured on.

`SimulatedGPU` is a `StreamingEngine` with the timing model of continuous batching on one GPU, driven by one
thread in this process as the vLLM engine is:
- at most `max_num_seqs` (512) sequences run at once; a submitted prompt waits in a queue for a free slot;
- the engine works in steps: a step takes `step_s` (12 ms) plus the prompt tokens admitted in it at
  `prefill_tokens_per_s` (40,000/s), all divided by `speed`; every running sequence gains one token per step;
- a sequence ends after `new_tokens` (250) tokens (or `max_new_tokens`, if fewer);
- between steps the thread does its bookkeeping in Python, so it needs the GIL: Python work elsewhere in the
  process that holds the GIL delays the next step, as it would delay a real engine's scheduler;
- with nothing queued or running it waits for a prompt (idle time, counted).
It counts its steps, its busy and idle seconds, and the seconds by which steps started late.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

from ipt_data.engines import Completion

COMPLETION = (
    "<QUE> What does the function return when the input is empty? <ANS> It returns None. </END>\n\n"
    "<QUE> Which module provides this class?\nOptions:\n- os\n- sys\n- shutil <ANS> sys </END>\n\n"
    "<QUE> Why is the lock released before the call?\nLet's think step by step. <ANS> The call may block, and "
    "holding the lock would stop other threads.\nTherefore, the answer is to avoid a deadlock </END>"
)


class Instant:
    """Every prompt answered at once with `COMPLETION` (90 tokens, as counted by the engine)."""

    name = "instant"

    def __init__(self, model: str, device: str, max_model_len: int = 4096, **_):
        self.max_model_len = max_model_len

    def generate(self, prompts, *, max_new_tokens, temperature=0.0, seed=0):
        return [Completion(COMPLETION, "stop", len(p), 90) for p in prompts]


class GroundedInstant(Instant):
    """As `Instant`, but each completion's three pairs are made of a stretch of the prompt's own text: its
    `span` tokens before the last `tail` (` </CON>\\n\\n`), decoded (one decode per prompt) and cut in three: a
    free-form answer, the correct option of a multiple-choice question, and a chain-of-thought rationale with
    its final answer. Grounded in the text, so pair filters keep them, and a different completion per text."""

    name = "grounded-instant"

    def __init__(self, model: str, device: str, max_model_len: int = 4096, span: int = 60, tail: int = 8, **_):
        from tokenizers import Tokenizer

        super().__init__(model, device, max_model_len)
        self._tokenizer = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
        self.span, self.tail = span, tail

    def completion(self, prompt) -> str:
        words = self._tokenizer.decode(list(prompt[-self.span - self.tail : -self.tail])).split()[1:-1]
        if len(words) < 9:
            return COMPLETION
        third = len(words) // 3
        a, b, c = " ".join(words[:third]), " ".join(words[third : 2 * third]), " ".join(words[2 * third :])
        return (
            f"<QUE> What does the text say right before its end? <ANS> {a} </END>\n\n"
            f"<QUE> Which of these does the text say?\nOptions:\n- {b}\n- {a[::-1]}\n- {c[::-1]} <ANS> {b} </END>\n\n"
            f"<QUE> How does the text end?\nLet's think step by step. <ANS> The text says {a}, then {b}.\n"
            f"Therefore, the answer is {c} </END>"
        )

    def generate(self, prompts, *, max_new_tokens, temperature=0.0, seed=0):
        return [Completion(self.completion(p), "stop", len(p), 90) for p in prompts]


class SimulatedGPU:
    name = "simulated-gpu"

    def __init__(
        self,
        model: str,
        device: str,
        max_model_len: int = 4096,
        speed: float = 1.0,
        max_num_seqs: int = 512,
        step_s: float = 0.012,
        prefill_tokens_per_s: float = 40_000.0,
        new_tokens: int = 250,
        **_,
    ):
        self.max_model_len, self.speed, self.max_num_seqs = max_model_len, speed, max_num_seqs
        self.step_s, self.prefill, self.new_tokens = step_s, prefill_tokens_per_s, new_tokens
        self._inbox: deque = deque()
        self._wake = threading.Condition()
        self.stats = self._fresh_stats()
        threading.Thread(target=self._loop, daemon=True, name="simulated-gpu").start()

    @staticmethod
    def _fresh_stats() -> dict:
        # first_submit / last_done: perf_counter() of the first prompt in and of the last sequence out
        times = {"first_submit": None, "last_done": None}
        return {"steps": 0, "busy_s": 0.0, "idle_s": 0.0, "late_s": 0.0, "tokens": 0, **times}

    def submit(self, prompt, *, max_new_tokens, temperature=0.0, seed=0) -> Future:
        future: Future = Future()
        if self.stats["first_submit"] is None and max_new_tokens > 1:  # not the run's one-token probe
            self.stats["first_submit"] = time.perf_counter()
        with self._wake:
            self._inbox.append((future, len(prompt), min(max_new_tokens, self.new_tokens)))
            self._wake.notify()
        return future

    def generate(self, prompts, *, max_new_tokens, temperature=0.0, seed=0):
        futures = [self.submit(p, max_new_tokens=max_new_tokens) for p in prompts]
        return [f.result() for f in futures]

    def reset_stats(self) -> dict:
        old, self.stats = self.stats, self._fresh_stats()
        return old

    def _loop(self) -> None:
        waiting: deque = deque()
        running: list[list] = []  # [future, prompt tokens, tokens left, tokens made]
        next_start = None
        while True:
            with self._wake:
                if not (waiting or running or self._inbox):
                    idle_from = time.perf_counter()
                    self._wake.wait()
                    self.stats["idle_s"] += time.perf_counter() - idle_from
                    next_start = None
                waiting.extend(self._inbox)
                self._inbox.clear()
            now = time.perf_counter()
            if next_start is not None:
                self.stats["late_s"] += max(0.0, now - next_start)  # the thread got back to work late
            admitted = 0
            while waiting and len(running) < self.max_num_seqs:
                future, n_prompt, n_new = waiting.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                running.append([future, n_prompt, n_new, 0])
                admitted += n_prompt
            if not running:
                next_start = None
                continue
            step = (self.step_s + admitted / self.prefill) / self.speed
            time.sleep(step)  # the GPU works; the GIL is free
            self.stats["busy_s"] += step
            self.stats["steps"] += 1
            next_start = time.perf_counter()
            still = []
            for seq in running:
                seq[2] -= 1
                seq[3] += 1
                if seq[2] > 0:
                    still.append(seq)
                else:
                    self.stats["tokens"] += seq[3]
                    self.stats["last_done"] = time.perf_counter()
                    seq[0].set_result(Completion(COMPLETION, "length", seq[1], seq[3]))
            running = still
