"""`synthesize_batch` / `Synthesizer`: M-round chains of texts through the synthesizer (SPEC 2).

Within one batch, the n valid texts are grouped into chains of up to M (`rounds`) as the reference
does (`chain_order="reference"`): the batch is cut into M consecutive parts of ceil(n/M) and chain
i holds texts i, i + ceil(n/M), i + 2 ceil(n/M), ...; `chain_order="adjacent"` chains consecutive
texts instead (consecutive chunks of one document stay together). Round r prompts the r-th text of
every chain at once (one engine call per round). A text's prompt carries the contiguous run of
examples that ends at its predecessor in the chain: the predecessor's own demos plus the
predecessor, when the predecessor got at least one pair, and nothing when it got none. A prompt
that would exceed the prompt budget (max_model_len - max_new_tokens, counted in real tokens)
breaks the chain: the text is prompted alone and starts a new chain. Chains never leave their
batch.

Output columns, besides the input's: `pairs`, `chain`, `shot`, `inherits`, `synth_status`,
`prompt_tokens`, `completion_tokens`, `invalid_pairs` (pieces of the completion rejected by the
parser), and for templify `continued` (the next row of the chain inherits from this one) and
`chain_prefix` (on the last row of a run of inheriting rows: a JSON list of the earlier rows'
`text`, `pairs` and `key`, their `doc_id:chunk`; else ""), so every pre-training text can be rendered
from one row, whatever the batching, sharding or order of later stages.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from ipt_data import wire
from ipt_data.budget import PromptEncoder, get_encoder, prompt_budget
from ipt_data.engines import Engine, generate_isolated, load_engine
from ipt_data.errors import ConfigError
from ipt_data.options import SynthesisOptions
from ipt_data.schema import row_keys, synthesis_features, text_problem

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
    """Configure once, then call on batches: `ds.map(Synthesizer(model=...), batched=True)`.

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
        if self.text_column not in batch:
            raise KeyError(f"no text column {self.text_column!r}; the columns are {sorted(batch)}")
        texts = list(batch[self.text_column])
        rows = _Rows(texts, row_keys(batch, texts))
        valid = [i for i in range(len(texts)) if rows.status[i] is None]
        if valid:
            encoder = get_encoder(self.tokenizer or self.model, self.trust_remote_code)
            context = dict(zip(valid, encoder.context_ids([texts[i] for i in valid]), strict=True))
            for i in valid:
                if len(context[i]) > self.budget:
                    rows.status[i] = (
                        f"too_long: {len(context[i])} prompt tokens > budget {self.budget}; "
                        "split long texts with chunk_batch first"
                    )
            valid = [i for i in valid if rows.status[i] is None]
            groups = chain_groups(valid, self.rounds, self.chain_order)
            if groups:
                self._run_rounds(groups, rows, encoder, context, rank)
        return {**batch, **rows.columns()}

    def _run_rounds(
        self,
        groups: list[list[int]],
        rows: _Rows,
        encoder: PromptEncoder,
        context: dict[int, list[int]],
        rank: int | None,
    ) -> None:
        engine = self.load_engine(rank)
        demo_ids: dict[int, list[int]] = {}  # rows that got pairs -> their ids as an earlier example
        carried: dict[int, list[int]] = {}  # row -> the rows shown as demos in its prompt
        start = {g[0]: 0 for g in groups}  # group's first row -> position where its current chain starts
        for r in range(self.rounds):
            requests: list[tuple[int, list[int]]] = []
            for g in groups:
                if r >= len(g):
                    continue
                i, head = g[r], g[0]
                prev = g[r - 1] if r > 0 else None
                # the run that ends at the predecessor, if the predecessor got pairs; else nothing
                demos = [*carried[prev], prev] if prev is not None and rows.pairs[prev] else []
                ids = [tok for m in demos for tok in demo_ids[m]] + context[i]
                if demos and len(ids) > self.budget:  # the chain breaks: prompt alone, start anew
                    log.debug("chain of row %s breaks: %d prompt tokens > %d", rows.keys[i], len(ids), self.budget)
                    start[head], demos, ids = r, [], context[i]
                carried[i] = demos
                rows.chain[i], rows.shot[i] = rows.keys[g[start[head]]], r - start[head]
                if demos:
                    rows.predecessor[i] = prev
                requests.append((i, ids))
            completions = generate_isolated(
                lambda prompts: engine.generate(
                    prompts, max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed
                ),
                [ids for _, ids in requests],
            )
            for (i, _), completion in zip(requests, completions, strict=True):
                rows.record(i, completion)
            got = [i for i, _ in requests if rows.pairs[i]]
            for i, ids in zip(got, encoder.demo_ids([(rows.texts[i], rows.pairs[i]) for i in got]), strict=True):
                demo_ids[i] = ids


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
