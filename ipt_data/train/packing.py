"""Examples -> training sequences in the synthesizer's wire format (SPEC 1-2), with the loss on the pairs only.

An example is `<s> <CON> {text} </CON>\n\n{pairs}</s>`, encoded by `PromptEncoder` exactly as inference
encodes a demo (one BOS per example; special-token strings inside texts stay text). Its labels are -100
on the BOS and the context (`<s> <CON> {text} </CON>\n\n`, exactly the tokens of the inference prompt) and
the token ids on the pairs and the closing `</s>`. Sequences concatenate whole examples of one task, in a
seeded order, up to `max_length` tokens; an example longer than that alone is rejected and counted
(`too_long`), never cut.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ipt_data.train.examples import Example

IGNORE = -100


@dataclass
class Packed:
    sequences: list[dict[str, list[int]]] = field(default_factory=list)  # input_ids, labels
    rejects: Counter = field(default_factory=Counter)
    examples: int = 0  # packed
    tokens: int = 0
    label_tokens: int = 0


def encode_examples(encoder, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
    """`(input_ids, labels)` of each example (see module doc)."""
    contexts = encoder.context_ids([e.text for e in examples])
    full = encoder.demo_ids([(e.text, e.pair_dicts()) for e in examples])
    out = []
    for ctx, ids in zip(contexts, full, strict=True):
        if ids[: len(ctx)] != ctx:  # the prompt's tokens must be the example's first tokens
            raise AssertionError("an example's context does not tokenize as the inference prompt does")
        out.append((ids, [IGNORE] * len(ctx) + ids[len(ctx) :]))
    return out


def pack(encoder, examples: list[Example], max_length: int, seed: int = 0, batch: int = 512) -> Packed:
    """Whole examples of one task per sequence, at most `max_length` tokens each (see module doc)."""
    packed = Packed()
    by_task: dict[str, list[Example]] = {}
    for e in examples:
        by_task.setdefault(e.task, []).append(e)
    rng = random.Random(seed)
    for task in sorted(by_task):
        group = by_task[task]
        rng.shuffle(group)
        ids: list[int] = []
        labels: list[int] = []
        for start in range(0, len(group), batch):
            for e_ids, e_labels in encode_examples(encoder, group[start : start + batch]):
                if len(e_ids) > max_length:
                    packed.rejects["too_long"] += 1
                    continue
                if len(ids) + len(e_ids) > max_length:
                    packed.sequences.append({"input_ids": ids, "labels": labels})
                    ids, labels = [], []
                ids, labels = ids + e_ids, labels + e_labels
                packed.examples += 1
                packed.tokens += len(e_ids)
                packed.label_tokens += sum(label != IGNORE for label in e_labels)
        if ids:
            packed.sequences.append({"input_ids": ids, "labels": labels})
    return packed
