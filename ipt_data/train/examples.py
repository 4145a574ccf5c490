"""Training examples for a synthesizer: `(text, pairs, task)` read from any input ipt_data opens.

Two shapes: ours (a `text` and a `pairs` column: a list of `{instruction, response}`, or `[question, answer]`),
and context-QA data with one question per row (`context` / `question` / `answers` as in SQuAD: an answer may
be a string, a list, or `{"text": [...]}`), whose questions about one context become one example. Rows that
cannot be used are counted by reason, never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ipt_data.hashing import content_id, unit_interval


@dataclass(frozen=True)
class Example:
    text: str
    pairs: tuple[tuple[str, str], ...]
    task: str = ""

    def pair_dicts(self) -> list[dict[str, str]]:
        return [{"instruction": q, "response": a} for q, a in self.pairs]


def _answer(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("text")
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _pair(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict):
        q, a = value.get("instruction", value.get("question")), value.get("response", value.get("answer"))
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        q, a = value
    else:
        return None
    if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
        return q.strip(), a.strip()
    return None


def check_columns(first: dict | None, columns: dict[str, str]) -> None:
    """Raise a one-line error when the columns to read are not in the data (`first`: its first row)."""
    from ipt_data.errors import InputError

    if first is None:
        raise InputError("the training data has no rows")
    qa = "question" in columns
    needed = {"text": columns.get("text", "text")}
    needed |= {"question": columns["question"], "answer": columns.get("answer", "answers")} if qa else {}
    needed |= {} if qa else {"pairs": columns.get("pairs", "pairs")}
    needed |= {"task": columns["task"]} if "task" in columns else {}
    missing = {k: v for k, v in needed.items() if v not in first}
    if missing:
        example = '{"text": "context", "question": "question", "answer": "answers"}'
        hint = "" if columns else f"; name them with --columns, e.g. '{example}'"
        raise InputError(
            f"the training data has no column {', '.join(repr(v) for v in missing.values())} "
            f"(for {', '.join(missing)}); its columns are {sorted(first)}{hint}"
        )


def read_examples(rows, columns: dict[str, str] | None = None) -> tuple[list[Example], Counter, int]:
    """`(examples, rejects by reason, rows read)` from an iterable of row dicts."""
    columns = dict(columns or {})
    text_col, task_col = columns.get("text", "text"), columns.get("task", "task")
    rejects: Counter = Counter()
    counted = _Counting(rows)
    rows = counted
    if "question" in columns:  # context-QA: one question per row, grouped by (task, context)
        grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in rows:
            text, question = row.get(text_col), row.get(columns["question"])
            answer = _answer(row.get(columns.get("answer", "answers")))
            if not isinstance(text, str) or not text.strip():
                rejects["empty_text"] += 1
            elif not isinstance(question, str) or not question.strip():
                rejects["empty_question"] += 1
            elif answer is None:
                rejects["no_answer"] += 1
            else:
                key = (str(row.get(task_col) or ""), text)
                grouped.setdefault(key, []).append((question.strip(), answer))
        examples = [Example(text, tuple(pairs), task) for (task, text), pairs in grouped.items()]
        return examples, rejects, counted.n
    pairs_col = columns.get("pairs", "pairs")
    examples = []
    for row in rows:
        text, raw_pairs = row.get(text_col), row.get(pairs_col)
        if not isinstance(text, str) or not text.strip():
            rejects["empty_text"] += 1
            continue
        pairs = [_pair(p) for p in raw_pairs] if isinstance(raw_pairs, (list, tuple)) else []
        rejects["malformed_pair"] += sum(p is None for p in pairs)
        pairs = [p for p in pairs if p is not None]
        if not pairs:
            rejects["no_pairs"] += 1
            continue
        examples.append(Example(text, tuple(pairs), str(row.get(task_col) or "")))
    return examples, +rejects, counted.n


class _Counting:
    """An iterable that counts the rows it yields."""

    def __init__(self, rows):
        self.rows, self.n = rows, 0

    def __iter__(self):
        for row in self.rows:
            self.n += 1
            yield row


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """`(train, held out)`: an example is held out by a seeded hash of its text, so the split does not depend
    on the order or the number of examples."""
    held = [unit_interval(f"{seed}/eval/{content_id(e.text)}") < fraction for e in examples]
    return [e for e, h in zip(examples, held, strict=True) if not h], [
        e for e, h in zip(examples, held, strict=True) if h
    ]
