"""`synthesize_batch` / `Synthesizer`: M-round chains of texts through the synthesizer (SPEC 2).

Within one batch, the n valid texts are grouped into chains of up to M (`rounds`) as the reference
does (`chain_order="reference"`): the batch is cut into M consecutive parts of ceil(n/M) and chain
i holds texts i, i + ceil(n/M), i + 2 ceil(n/M), ...; `chain_order="adjacent"` chains consecutive
texts instead (consecutive chunks of one document stay together). A text's prompt carries the contiguous run of
examples that ends at its predecessor in the chain: the predecessor's own demos plus the
predecessor, when the predecessor got at least one pair, and nothing when it got none. A prompt
that would exceed the prompt budget (max_model_len - max_new_tokens, counted in real tokens)
breaks the chain: the text is prompted alone and starts a new chain. Chains never leave their
batch.

A prompt depends only on its own chain, so how prompts reach the engine does not change the output
(`pipeline`): "stream", with an engine that takes prompts one at a time (vllm, openai), sends each
chain's next prompt as soon as its previous one is back, and takes later batches in while earlier ones
drain, up to `max_in_flight` prompts queued; "rounds" (and engines that only take lists, hf) sends
round r of every chain of a batch in one call.

Output columns, besides the input's: `pairs`, `chain`, `shot`, `inherits`, `synth_status`,
`prompt_tokens`, `completion_tokens`, `invalid_pairs` (pieces of the completion rejected by the
parser), and for templify `continued` (the next row of the chain inherits from this one) and
`chain_prefix` (on the last row of a run of inheriting rows: a JSON list of the earlier rows'
`text`, `pairs` and `key`, their `doc_id:chunk`; else ""), so every pre-training text can be rendered
from one row, whatever the batching, sharding or order of later stages.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ipt_data.engines import Completion, Engine, StreamingEngine, generate_isolated, load_engine
from ipt_data.engines.base import drained, resolved
from ipt_data.errors import ConfigError, RunStoppedError
from ipt_data.method import wire
from ipt_data.method.tokenizer import PromptEncoder, get_encoder, prompt_budget
from ipt_data.options import SynthesisOptions
from ipt_data.schema import TEXT_IDS, row_keys, synthesis_features, text_problem
from ipt_data.stages.base import ShardData, Stage, Stat

log = logging.getLogger(__name__)


__all__ = ["Synthesizer", "chain_groups", "synthesis_features", "synthesize_batch"]


def chain_groups(items: list, rounds: int, order: str = "reference") -> list[list]:
    """`items` grouped into chains of up to `rounds` (SPEC 2): with "reference", chain i holds items
    i, i + ceil(n/M), i + 2 ceil(n/M), ...; with "adjacent", consecutive items."""
    if order == "adjacent":
        return [items[k : k + rounds] for k in range(0, len(items), rounds)]
    if order != "reference":
        raise ConfigError(f"chain_order must be 'reference' or 'adjacent', got {order!r}")
    step = math.ceil(len(items) / rounds)
    return [items[i::step] for i in range(step)]


@dataclass
class Synthesizer(SynthesisOptions):
    """Configure once, then call on batches: `ds.map(Synthesizer(model=...), batched=True)`, or stream many
    batches through one engine: `for out in synth.stream(batches): ...`.

    The options are `SynthesisOptions`' (each documents itself); `engine` may also be a ready `Engine`.
    """

    def __post_init__(self):
        super().__post_init__()
        self.budget = prompt_budget(self.max_model_len, self.max_new_tokens)

    def load_engine(self, rank: int | None = None) -> Engine:
        if isinstance(self.engine, Engine):  # a ready engine object, used as given
            return self.engine
        options = {"trust_remote_code": True} if self.trust_remote_code else {}
        return load_engine(
            self.model, self.engine, rank=rank, max_model_len=self.max_model_len, **options, **self.engine_options
        )

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        return next(self.stream([batch], rank))

    def streams(self, engine: Engine) -> bool:
        """Whether chains are streamed through `engine` (`pipeline="stream"` and an engine that takes prompts
        one at a time) rather than sent a round at a time."""
        return self.pipeline == "stream" and isinstance(engine, StreamingEngine)

    def stream(
        self, batches: Iterable[dict[str, list]], rank: int | None = None, stop: threading.Event | None = None
    ) -> Iterator[dict[str, list]]:
        """Each batch's output, in order. Chains never leave their batch and each prompt depends only on its
        own chain, so the output is the same as calling the batches one by one (for an engine whose answer to
        a prompt does not depend on the other prompts it runs with); with a streaming engine, every chain's
        next prompt is sent as soon as its previous one is back, and later batches are taken in while earlier
        ones drain, up to `max_in_flight` prompts of this stream in the engine. Setting `stop` makes it raise
        `RunStoppedError` within a second, its prompts still queued in the engine cancelled."""
        encoder = get_encoder(self.tokenizer or self.model, self.trust_remote_code)
        states = (_Batch(self, batch, encoder) for batch in batches)
        engine: Engine | None = None  # loaded for the first batch that has a text to prompt
        for state in states:
            _check(stop)
            if state.chains and engine is None:
                engine = self.load_engine(rank)
                if self.streams(engine):
                    yield from self._stream(engine, itertools.chain([state], states), stop)
                    return
            if state.chains:
                self._rounds(engine, state)
            yield state.output()

    def _rounds(self, engine: Engine, state: _Batch) -> None:
        """One engine call per round: round r prompts the r-th text of every chain of the batch."""
        for r in range(self.rounds):
            chains = [c for c in state.chains if r < len(c.members)]
            requests = [state.prompt(c) for c in chains]
            completions = generate_isolated(
                lambda prompts: engine.generate(
                    prompts, max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed
                ),
                [ids for _, ids in requests],
            )
            rows = [i for i, _ in requests]
            state.record(list(zip(chains, rows, completions, strict=True)))

    def _stream(
        self, engine: StreamingEngine, states: Iterator[_Batch], stop: threading.Event | None
    ) -> Iterator[dict[str, list]]:
        admitted: deque[_Batch] = deque()  # batches not yet yielded, in input order
        held_rows = 0  # rows of the admitted batches: finished batches wait for the oldest unfinished one
        max_rows = 4 * self.max_in_flight * self.rounds
        in_flight: dict[Future, tuple[_Batch, _Chain, int, int]] = {}  # -> (batch, chain, row, prompt length)
        answers: queue.SimpleQueue[Future] = queue.SimpleQueue()  # futures as they finish, in that order
        more = True

        def send(state: _Batch, chain: _Chain) -> None:
            i, ids = state.prompt(chain)
            try:
                future = engine.submit(
                    ids, max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed
                )
            except Exception as exc:  # noqa: BLE001 - a prompt the engine cannot take fails alone
                future = resolved(Completion.raised(len(ids), exc))
            in_flight[future] = (state, chain, i, len(ids))
            future.add_done_callback(answers.put)

        try:
            while True:
                _check(stop)
                while more and len(in_flight) < self.max_in_flight and held_rows < max_rows:
                    state = next(states, None)
                    if state is None:
                        more = False
                        break
                    admitted.append(state)
                    held_rows += len(state.rows.texts)
                    for chain in state.chains:
                        send(state, chain)
                while admitted and admitted[0].pending == 0:
                    state = admitted.popleft()
                    held_rows -= len(state.rows.texts)
                    yield state.output()
                if not in_flight:
                    if not more and not admitted:
                        return
                    if not more:  # an unfinished batch with nothing in flight: an engine broke its contract
                        raise RuntimeError("synthesis lost track of a prompt (an engine answered one twice?)")
                    continue
                done = [_next(answers, stop), *drained(answers)]  # the next answer, then every other one back
                answered: dict[int, tuple[_Batch, list]] = {}
                for future in done:
                    state, chain, i, n_prompt = in_flight.pop(future)
                    answered.setdefault(id(state), (state, []))[1].append((chain, i, _result(future, n_prompt)))
                for state, results in answered.values():
                    for chain in state.record(results):
                        send(state, chain)
        finally:
            for future in in_flight:
                future.cancel()


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise RunStoppedError("the run was stopped")


def _next(answers: queue.SimpleQueue, stop: threading.Event | None) -> Future:
    """The next finished future, checking `stop` every tenth of a second while waiting."""
    while True:
        try:
            return answers.get(timeout=None if stop is None else 0.1)
        except queue.Empty:
            _check(stop)


def _result(future: Future, n_prompt: int) -> Completion:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - an engine's future that raised: that prompt fails alone
        return Completion.raised(n_prompt, exc)


@dataclass
class _Chain:
    members: list[int]  # row positions in the batch, in chain order
    r: int = 0  # the member to prompt next
    start: int = 0  # where the current run of the chain starts (a too-long prompt breaks it)


class _Batch:
    """One batch being synthesized: its rows, its chains, and the prompt of each chain's next text."""

    def __init__(self, synth: Synthesizer, batch: dict[str, list], encoder: PromptEncoder):
        if synth.text_column not in batch:
            raise KeyError(f"no text column {synth.text_column!r}; the columns are {sorted(batch)}")
        given_ids = batch.get(TEXT_IDS)  # each text's own ids, from chunk_batch(ids_column=TEXT_IDS)
        self.batch = {k: v for k, v in batch.items() if k != TEXT_IDS}
        self.encoder, self.budget = encoder, synth.budget
        texts = list(batch[synth.text_column])
        self.rows = rows = _Rows(texts, row_keys(batch, texts))
        valid = [i for i in range(len(texts)) if rows.status[i] is None]
        self.context: dict[int, list[int]] = {}
        self.text_ids: dict[int, Any] = {}  # row -> its text's own ids, when the encoder builds prompts from them
        if valid:
            valid_texts = [texts[i] for i in valid]
            if encoder.reuses_ids:
                own = [given_ids[i] for i in valid] if given_ids is not None else [None] * len(valid)
                missing = [k for k, ids in enumerate(own) if ids is None]
                for k, ids in zip(missing, encoder.text_ids([valid_texts[k] for k in missing]), strict=True):
                    own[k] = ids
                self.text_ids = dict(zip(valid, own, strict=True))
            own_ids = [self.text_ids[i] for i in valid] if self.text_ids else None
            self.context = dict(zip(valid, encoder.context_ids(valid_texts, own_ids), strict=True))
            for i in valid:
                if len(self.context[i]) > self.budget:
                    rows.status[i] = (
                        f"too_long: {len(self.context[i])} prompt tokens > budget {self.budget}; "
                        "split long texts with chunk_batch first"
                    )
            valid = [i for i in valid if rows.status[i] is None]
        self.chains = [_Chain(g) for g in chain_groups(valid, synth.rounds, synth.chain_order)]
        self.pending = len(self.chains)  # chains not yet at their end
        self.demo_ids: dict[int, list[int]] = {}  # rows that got pairs -> their ids as an earlier example
        self.carried: dict[int, list[int]] = {}  # row -> the rows shown as demos in its prompt

    def prompt(self, chain: _Chain) -> tuple[int, list[int]]:
        """`(row, prompt ids)` of the chain's next text: the run that ends at its predecessor, if the
        predecessor got pairs, then the text; alone, starting a new run, when that exceeds the budget."""
        rows, r, g = self.rows, chain.r, chain.members
        i = g[r]
        prev = g[r - 1] if r > 0 else None
        demos = [*self.carried[prev], prev] if prev is not None and rows.pairs[prev] else []
        ids = [*itertools.chain.from_iterable(self.demo_ids[m] for m in demos), *self.context[i]]
        if demos and len(ids) > self.budget:  # the chain breaks: prompt alone, start anew
            log.debug("chain of row %s breaks: %d prompt tokens > %d", rows.keys[i], len(ids), self.budget)
            chain.start, demos, ids = r, [], self.context[i]
        self.carried[i] = demos
        rows.chain[i], rows.shot[i] = rows.keys[g[chain.start]], r - chain.start
        if demos:
            rows.predecessor[i] = prev
        return i, ids

    def record(self, results: list[tuple[_Chain, int, Completion]]) -> list[_Chain]:
        """Record completions of the rows `i` of these chains; returns the chains that have a next text."""
        for _, i, completion in results:
            self.rows.record(i, completion)
        got = [i for _, i, _ in results if self.rows.pairs[i]]
        texts = self.rows.texts
        own = [self.text_ids[i] for i in got] if self.text_ids else None
        for i, ids in zip(got, self.encoder.demo_ids([(texts[i], self.rows.pairs[i]) for i in got], own), strict=True):
            self.demo_ids[i] = ids
        going = []
        for chain, _, _ in results:
            chain.r += 1
            if chain.r < len(chain.members):
                going.append(chain)
            else:
                self.pending -= 1
        return going

    def output(self) -> dict[str, list]:
        """The batch's columns, once every chain is at its end. Its prompts' token ids (lists of thousands of ints
        per row) are let go here, not when the next batch is taken: freed now, rather than walked by the garbage
        collector, maybe more than once, while the stages after synthesis work on the batch."""
        out = {**self.batch, **self.rows.columns()}
        self.context, self.text_ids, self.demo_ids, self.carried = {}, {}, {}, {}
        return out


class _Rows:
    """The per-row outputs of one batch while it is being synthesized."""

    def __init__(self, texts: list, keys: list[str]):
        n = len(texts)
        self.texts, self.keys = texts, keys
        self.status: list[str | None] = [text_problem(t) for t in texts]
        self.pairs: list[list[dict]] = [[] for _ in range(n)]
        self.invalid = [0] * n
        self.prompt_tokens, self.completion_tokens = [0] * n, [0] * n
        self.chain, self.shot = list(keys), [0] * n
        self.predecessor: dict[int, int] = {}  # row -> previous row of its chain, when it was in its prompt

    def record(self, i: int, completion) -> None:
        self.prompt_tokens[i], self.completion_tokens[i] = completion.prompt_tokens, completion.completion_tokens
        if completion.finish_reason == "error":
            self.status[i] = f"engine_error: {completion.error}"
            return
        self.pairs[i], self.invalid[i] = wire.parse_completion(completion.text)
        self.status[i] = "ok" if self.pairs[i] else "no_pairs"

    def columns(self) -> dict[str, list]:
        n = len(self.texts)
        # a row inherits when its predecessor was in its prompt (it had pairs) and it got pairs itself
        inherits = [i in self.predecessor and bool(self.pairs[i]) for i in range(n)]
        continued = [False] * n
        run: dict[int, list[int]] = {}  # row -> the earlier rows of its inheriting run
        for i in range(n):
            if inherits[i]:
                pred = self.predecessor[i]
                continued[pred] = True
                run[i] = [*run.get(pred, []), pred]
        prefix = [""] * n
        for i, members in run.items():
            if not continued[i]:
                prefix[i] = json.dumps(
                    [{"text": self.texts[m], "pairs": self.pairs[m], "key": self.keys[m]} for m in members],
                    ensure_ascii=False,
                )
        return {
            "pairs": self.pairs,
            "chain": self.chain,
            "shot": self.shot,
            "inherits": inherits,
            "synth_status": self.status,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "invalid_pairs": self.invalid,
            "continued": continued,
            "chain_prefix": prefix,
        }


def synthesize_batch(batch: dict[str, list], rank: int | None = None, **options: Any) -> dict[str, list]:
    """`Dataset.map(batched=True[, with_rank=True])` stage: instruction-response pairs per text.

    `options` are `SynthesisOptions`' (`model`, `rounds`, `chain_order`, `max_new_tokens`, ...); see
    `Synthesizer` and the module doc. Rows out == rows in, input columns carried.
    """
    return Synthesizer(**options)(batch, rank)


def _summarize(d: ShardData) -> dict:
    s = d.synthesized
    return {
        "status": dict(Counter(status.split(":")[0] for status in s.get("synth_status", []))),
        "pairs": sum(len(p) for p in s.get("pairs", [])),
        "invalid_pairs": sum(s.get("invalid_pairs", [])),
        "prompt_tokens": sum(s.get("prompt_tokens", [])),
        "completion_tokens": sum(s.get("completion_tokens", [])),
    }


STAGE = Stage(
    name="synthesize",
    doc=__doc__,
    reads=("text", "doc_id", "chunk"),
    writes=(
        "pairs",
        "chain",
        "shot",
        "inherits",
        "synth_status",
        "prompt_tokens",
        "completion_tokens",
        "invalid_pairs",
        "continued",
        "chain_prefix",
    ),
    stats=(
        Stat("pairs", "pairs", card="pairs", published=True, help="pairs that parse, as the synthesizer wrote them"),
        Stat("invalid_pairs", "pairs invalid (not parsed)", published=True),
        Stat("prompt_tokens", "prompt tokens", card="prompt tokens", published=True),
        Stat("completion_tokens", "completion tokens", card="completion tokens", published=True),
        Stat("status", "status {}", card="chunks synthesized: {}", card_order=1, published=True),
    ),
    summarize=_summarize,
)
