"""The engine protocol: token-id prompts in, one `Completion` per prompt out.

An engine never fails a whole batch for one prompt: a prompt it cannot serve comes back as a
`Completion` with `finish_reason="error"` and the reason in `error`.

An engine that can take prompts one at a time while it is generating others (vllm, openai) is also a
`StreamingEngine`: `submit(prompt)` returns a future at once, so the synthesizer can send a chain's next
prompt as soon as its previous one is back and the engine's batch never waits for a round to end.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ipt_data.errors import MissingExtraError  # noqa: F401 - engines raise it from here
from ipt_data.redact import scrub

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_new_tokens), "error"
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None

    @classmethod
    def failed(cls, prompt_tokens: int, error: str) -> Completion:
        return cls("", "error", prompt_tokens, 0, error)

    @classmethod
    def raised(cls, prompt_tokens: int, exc: BaseException) -> Completion:
        """The error completion of a prompt whose engine call raised `exc`."""
        return cls.failed(prompt_tokens, describe(exc))


def describe(exc: BaseException) -> str:
    """`Type: message` of an engine's exception, secrets scrubbed (it lands in the data's status column)."""
    return scrub(f"{type(exc).__name__}: {exc}")


@runtime_checkable
class Engine(Protocol):
    name: str
    max_model_len: int

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Completion]:
        """One completion per prompt, in the order of `prompts`."""
        ...


@runtime_checkable
class StreamingEngine(Engine, Protocol):
    def submit(
        self, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Future[Completion]:
        """Queue one prompt; the future resolves to its `Completion` (never to an exception for a
        prompt's own failure). Cancelling the future drops the prompt if the engine can."""
        ...


class SubmitsEach:
    """`generate` for a streaming engine: every prompt submitted at once, the answers in their order."""

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Completion]:
        submit = self.submit  # type: ignore[attr-defined]
        futures = [submit(p, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed) for p in prompts]
        return [f.result() for f in futures]


def unservable(prompt: Sequence[int], max_model_len: int) -> Completion | None:
    """The error completion for a prompt no engine can serve (empty, or leaving no room to generate)."""
    if not prompt:
        return Completion.failed(0, "empty prompt")
    if len(prompt) >= max_model_len:
        return Completion.failed(
            len(prompt), f"prompt of {len(prompt)} tokens does not fit max_model_len={max_model_len}"
        )
    return None


def generate_isolated(
    generate: Callable[[list[Sequence[int]]], list[Completion]], prompts: list[Sequence[int]]
) -> list[Completion]:
    """`generate(prompts)`, and when it raises, the halves, down to single prompts that fail alone.

    One prompt that makes an engine raise (too long, a server error, a poisoned input) or a batch that
    runs out of memory costs an error completion for that prompt only, never the batch.
    """
    if not prompts:
        return []
    try:
        return list(generate(prompts))
    except Exception as exc:  # noqa: BLE001 - isolate the failing prompt(s), keep the rest
        if len(prompts) == 1:
            log.warning("a prompt of %d tokens failed alone: %s: %s", len(prompts[0]), type(exc).__name__, exc)
            return [Completion.raised(len(prompts[0]), exc)]
        log.warning("a batch of %d prompts failed (%s: %s); retrying its halves", len(prompts), type(exc).__name__, exc)
        half = len(prompts) // 2
        return generate_isolated(generate, prompts[:half]) + generate_isolated(generate, prompts[half:])


def drained(q: queue.SimpleQueue) -> list:
    """Everything in `q` now, in order, without waiting."""
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def resolved(completion: Completion) -> Future[Completion]:
    """A future that already holds `completion` (a prompt answered without the engine)."""
    future: Future[Completion] = Future()
    future.set_result(completion)
    return future


def settle(future: Future, completion: Completion) -> None:
    """Answer `future`, unless it was cancelled meanwhile (by another thread, at any moment)."""
    try:
        future.set_result(completion)
    except InvalidStateError:
        pass
