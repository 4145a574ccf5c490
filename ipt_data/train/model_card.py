"""The model card (README.md) of a synthesizer trained by `ipt-data train-synthesizer`."""

from __future__ import annotations

import os
from typing import Any

from ipt_data.corpus.card import _shown

METRICS = (
    ("texts_with_pairs", "texts with at least one well-formed pair"),
    ("pairs_per_text", "well-formed pairs per text"),
    ("parse_failure_rate", "malformed pieces / all pieces"),
    ("answer_exact_match", "answer exact match"),
    ("answer_f1", "answer token F1"),
)


def _is_hub_id(name: str) -> bool:
    return "://" not in name and not os.path.exists(name) and name.count("/") == 1


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def model_card(cfg, report: dict[str, Any]) -> str:
    evaluation = report.get("evaluation") or {}
    ex = report["examples"]
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- instruction-pretraining",
        "- instruction-synthesizer",
        "- ipt-data",
        *([f"base_model: {cfg.base}"] if _is_hub_id(cfg.base) else []),
        "---",
        "",
        "# Instruction synthesizer",
        "",
        f"Tuned from `{_shown(cfg.base)}` by `ipt-data train-synthesizer` to write instruction-response pairs "
        "about a raw text in the wire format of Instruction Pre-Training (Cheng et al., EMNLP 2024): a prompt "
        "`<s> <CON> {text} </CON>\\n\\n` is completed with `<QUE> question <ANS> answer </END>` pairs and `</s>`, "
        "and earlier examples of a chain come first (M-shot).",
        "",
        'Use it with ipt_data: `ipt_data.synthesize_batch(batch, model="<this folder or repo>")`, or '
        "`ipt-data augment --model <this folder or repo> --dataset ...`.",
        "",
        "## Training data",
        "",
        f"`{_shown(report['data'])}`: {report.get('rows', 0):,} rows read into {ex['read']:,} examples, "
        f"{ex['held_out']:,} held out "
        f"({ex['evaluated']:,} evaluated), {ex['packed']:,} packed into {report['sequences']:,} sequences "
        f"of at most {cfg.max_length:,} tokens ({report['tokens']:,} tokens, {report['label_tokens']:,} of them "
        "with a loss: the pairs and each example's `</s>`)."
        + (f" Rejected: {', '.join(f'{k} {v:,}' for k, v in report['rejects'].items())}." if report["rejects"] else ""),
        "",
        "## Hyper-parameters",
        "",
        _row(("parameter", "value")),
        _row(("---", "---")),
        *(_row((k, v)) for k, v in report["hyper_parameters"].items()),
        "",
    ]
    if evaluation:
        lines += [
            "## Evaluation on the held-out texts",
            "",
            "Greedy synthesis of each held-out text alone (0-shot) and in chains of two (with a demo).",
            "",
            _row(("metric", "0-shot", "with a demo")),
            _row(("---", "---", "---")),
            *(_row((label, evaluation["zero_shot"][key], evaluation["with_demos"][key])) for key, label in METRICS),
            "",
        ]
    return "\n".join(lines) + "\n"
