"""The dataset card (README.md) of a published corpus: provenance, parameters, counts and an example."""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from ipt_data.redact import redact
from ipt_data.stages import PIPELINE, declared_stats

CITATION = """@inproceedings{cheng2024instruction,
  title={Instruction Pre-Training: Language Models are Supervised Multitask Learners},
  author={Cheng, Daixuan and Gu, Yuxian and Huang, Shaohan and Bi, Junyu and Huang, Minlie and Wei, Furu},
  booktitle={Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  year={2024},
  note={arXiv:2406.14491}
}"""

# about the machine that ran it, not the data: where and how its shards ran gives the same bytes
LOCAL_ONLY = ("overwrite", "work_dir", "output", "ray_address")
LOCAL_ONLY += ("executor", "gpus", "workers", "gpus_per_worker")
LOCAL_ONLY += ("slurm_partition", "slurm_gpus", "slurm_cpus", "slurm_mem", "slurm_time", "slurm_parallel", "slurm_args")
LOCAL_PATHS = ("dataset", "model", "tokenizer", "general", "decontaminate")  # shown by name when local paths


def reproduce_command(config: dict[str, Any]) -> str:
    """The `ipt-data augment` command line that reruns a config (secrets never included, at any depth)."""
    parts = ["ipt-data", "augment"]
    for key, value in redact(config).items():
        if key in LOCAL_ONLY or value is None or value == {} or value is False:
            continue
        if key in LOCAL_PATHS:
            value = _shown(value)
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, ",".join(map(str, value))]
        elif isinstance(value, dict):
            parts += [flag, json.dumps(value, sort_keys=True)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _shown(value: Any) -> Any:
    """A local path as its last component (this machine's folders are not the reader's business); a list of
    them (benchmark specs: `path?query`) item by item."""
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        where, mark, query = value.partition("?")
        return os.path.basename(where.rstrip("/")) + mark + query
    return value


def _mix_ratio(config: dict[str, Any], report: dict[str, Any]) -> str:
    """The ratio reached, and the one asked for when they differ (general data can run short)."""
    mix = report.get("mix")
    if not config.get("general") or not mix:
        return "n/a"
    shown = f"{mix['achieved']} by {mix['by']}"
    return shown + (f" (asked for {mix['requested']}; the general data ran short)" if mix.get("short") else "")


def _declared_counts(synthesis: dict[str, Any], stages) -> dict[str, Any]:
    """The counts the stages declare for the card (`ipt_data.stages`), in their order: the run's synthesis
    numbers as `stats.json` holds them."""
    stats = sorted((s for s in declared_stats(stages) if s.card), key=lambda stat: stat.card_order)  # stable
    return dict(line for stat in stats for line in stat.lines(synthesis, card=True))


def _decontamination(inputs: dict[str, Any], matches: dict[str, Any]) -> str:
    """Which benchmarks the run was decontaminated against, and what it found and did, per benchmark."""
    names = ", ".join(f"`{b['name']}`" for b in inputs["against"])
    lines = [
        f"Decontaminated against: {names}, by n-grams of {inputs['ngram']} words (case, punctuation and white space "
        "ignored), in the input texts, the generated pairs and the rendered texts.",
        "",
    ]
    rows = {}
    for b in inputs["against"]:
        found = matches.get(b["name"], {})
        done = "; ".join(
            f"{point}: {n:,} {action}" for point, acts in sorted(found.items()) for action, n in sorted(acts.items())
        )
        too_short = f", {b['too_short']:,} items too short to compare" if b.get("too_short") else ""
        rows[f"`{b['name']}` ({b['items']:,} items, {b['ngrams']:,} n-grams{too_short})"] = done or "no match"
    return "\n".join(lines) + "\n" + _table(rows, ("benchmark", "matches: where, how many, action"))


def _table(counts: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in counts.items()]
    return "\n".join(lines)


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def dataset_card(
    config: dict[str, Any],
    report: dict[str, Any],
    example: str | None,
    stats: dict[str, Any],
    figures: list | tuple = (),
) -> str:
    """Markdown with a YAML header that lets `load_dataset(repo)` find the parquet shards. Every number shown
    comes from `stats` (`ipt_data.stats` of the published corpus, with the run's synthesis numbers);
    `figures` (`ipt_data.corpus.plots`) are shown from `images/` with a one-line reading each."""
    config, report = redact(config), redact(report)
    synthesis = stats.get("synthesis", {})
    layouts = stats.get("layouts", {})
    total_layouts = sum(layouts.values()) or 1
    layout_share = {
        k.replace("_", " "): f"{100 * v / total_layouts:.1f}%"
        for k, v in sorted(layouts.items(), key=lambda kv: -kv[1])
    }
    diversity, duplicates = stats.get("diversity", {}), stats.get("duplicates", {})
    has_pairs = bool(stats.get("pairs"))
    parts = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*",
        "tags:",
        "- instruction-pretraining",
        "- synthetic",
        "- ipt-data",
        "---",
        "",
        "# Instruction Pre-Training corpus",
        "",
        "Raw texts augmented with instruction-response pairs written by an instruction synthesizer and "
        "rendered into varied templates, mixed for pre-training as in *Instruction Pre-Training: Language "
        "Models are Supervised Multitask Learners* (Cheng et al., EMNLP 2024). Made with "
        "ipt_data from `" + str(_shown(config.get("dataset"))) + "`.",
        "",
        "Columns: `text` (one pre-training text), `kind` (`augmented`: text with its tasks; `raw`: text "
        "kept as is; `general`: a general instruction example, question and response joined by a space), "
        "`n_tokens` (tokens with the synthesizer's tokenizer), `source` (the `doc_id:chunk` ids of the input rows "
        "the text was made from), `n_pairs`, `layout` and `inverted` (how an augmented text was rendered), "
        "`pairs` (its pairs: `instruction`, `response`, the `task` it was rendered as, and `copied`: the answer "
        "is found word for word in the text)"
        + (
            f", and the input columns {', '.join(f'`{c}`' for c in config.get('keep_columns') or [])} "
            "(one value per source row)."
            if config.get("keep_columns")
            else "."
        ),
        "",
        "## Synthesis",
        "",
        _table(
            {
                "synthesizer": f"`{_shown(config.get('model'))}`",
                "rounds (M-shot)": config.get("rounds"),
                "max new tokens": config.get("max_new_tokens"),
                "max model length": config.get("max_model_len"),
                "decoding": "greedy" if not config.get("temperature") else f"temperature {config.get('temperature')}",
                "seed": config.get("seed"),
                "fraction converted": config.get("fraction"),
                "general data": f"`{config.get('general')}`" if config.get("general") else "none",
                "general : augmented ratio": _mix_ratio(config, report),
            },
            ("parameter", "value"),
        ),
        "",
        "## Counts",
        "",
        _table(
            {f"output rows: {k}": v for k, v in stats.get("rows", {}).items()}
            | {f"output tokens: {k}": v for k, v in stats.get("tokens", {}).items()}
            | _declared_counts(synthesis, config.get("stages", PIPELINE)),
            ("what", "count"),
        ),
        "",
        "## Quality",
        "",
        _table(
            {
                "pairs per augmented text (mean)": stats.get("mean_pairs_per_text", 0.0) if has_pairs else "n/a",
                "distinct questions": _percent(diversity.get("distinct_question_share", 0.0)) if has_pairs else "n/a",
                "answers copied word for word from the text": (
                    _percent(diversity.get("copied_answer_share", 0.0)) if has_pairs else "n/a"
                ),
                "pairs malformed (dropped)": _percent(synthesis.get("invalid_pair_rate", 0.0)),
                "pairs rendered verbatim (fallback)": (
                    _percent(synthesis.get("fallback_pair_rate", 0.0)) if has_pairs else "n/a"
                ),
                "texts occurring more than once": duplicates.get("texts", {}).get("repeated", 0),
                "pairs occurring more than once": duplicates.get("pairs", {}).get("repeated", 0),
            },
            ("what", "value"),
        ),
        "",
    ]
    against = report.get("inputs", {}).get("decontaminate")
    if against:
        parts += ["## Decontamination", "", _decontamination(against, synthesis.get("decontamination", {})), ""]
    if layout_share:
        parts += ["## Template layouts", "", _table(layout_share, ("layout", "share of augmented texts")), ""]
    if figures:
        parts += ["## Statistics", ""]
        for f in figures:
            parts += [f"### {f.title}", "", f"![{f.title}](images/{f.name})", "", f.reading, ""]
    if example:
        parts += ["## Example", "", "```text", example, "```", ""]
    parts += [
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(config),
        "```",
        "",
        "Local files and folders are named by their last component; use your own copy's path.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(parts)
