"""`ipt-data` command line: `ipt-data augment --recipe recipes/cpu-demo.yaml --output ./out`.

Every `AugmentConfig` field is an option (`--max-new-tokens`, `--general-ratio`, ...); values given on
the command line override the recipe's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from ipt_data.config import AugmentConfig

HELP = {
    "dataset": "Hub dataset name, local file or folder (jsonl/json/parquet/txt/csv), or fsspec URL",
    "output": "local folder, fsspec URL (s3://...), or hf://datasets/<user>/<name>",
    "fraction": "share of rows converted; the rest is kept raw (0.2 from scratch, 1.0 domain-adaptive)",
    "rounds": "M: texts per few-shot chain (2 from scratch, 3 domain-adaptive)",
    "chain_order": "reference (default: text i chains with i + ceil(n/M), ... within a batch, as the paper's "
    "scripts) or adjacent (consecutive texts, so consecutive chunks of a document share a chain)",
    "engine": "auto | hf",
    "engine_options": "JSON object of engine options, e.g. '{\"batch_size\": 64}'",
    "general": "general instruction data (Hub name or file) with question/response columns",
    "general_columns": "the question and response columns of the general data, comma-separated",
    "general_ratio": "general : augmented, counted by --mix-by",
    "work_dir": "checkpoint folder (default: <output>.work); on Ray, on a filesystem every node sees",
    "executor": "local (default) or ray",
    "ray_address": "Ray cluster address (auto, ray://host:10001); default: a local Ray",
    "workers": "Ray actors, one engine each",
    "gpus_per_worker": "GPUs per Ray actor (1 on a GPU cluster)",
    "overwrite": "replace a non-empty output that holds other data",
    "bad_lines": "a corrupt JSON line: error (default, names the line) or skip (counted in rejects)",
    "on_engine_error": "rows the engine failed on: raw (kept as raw text) or retry (redone by the next run)",
}


def _parse_value(kind, text: str):
    if kind is dict or typing.get_origin(kind) is dict:
        return json.loads(text)
    if typing.get_origin(kind) is tuple:
        return tuple(x.strip() for x in text.split(","))
    return text


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(AugmentConfig)
    for f in dataclasses.fields(AugmentConfig):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=HELP.get(f.name))
        elif base[0] in (int, float):
            parser.add_argument(flag, type=base[0], default=None, help=HELP.get(f.name))
        else:
            parser.add_argument(flag, type=lambda t, k=base[0]: _parse_value(k, t), default=None, help=HELP.get(f.name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipt-data", description="Instruction Pre-Training data, end to end.")
    sub = parser.add_subparsers(dest="command", required=True)
    aug = sub.add_parser("augment", help="raw corpus -> augmented, mixed, published corpus (resumable)")
    aug.add_argument("--recipe", help="YAML recipe (recipes/*.yaml); options given here override it")
    aug.add_argument("--no-progress", action="store_true", help="no progress bar")
    aug.add_argument("--examples", type=int, default=0, help="print this many augmented texts at the end")
    _add_config_options(aug)
    return parser


def _print_report(report: dict) -> None:
    rows = report.get("rows", {})
    lines = [
        ("input rows", rows.get("in", 0)),
        ("converted", rows.get("converted", 0)),
        ("kept raw", rows.get("raw", 0)),
        ("rejected", rows.get("rejected", 0)),
        ("chunks", report.get("chunks", 0)),
        ("pairs", report.get("pairs", 0)),
        ("prompt tokens", report.get("prompt_tokens", 0)),
        ("completion tokens", report.get("completion_tokens", 0)),
    ]
    lines += [(f"status {k}", v) for k, v in sorted(report.get("status", {}).items())]
    lines += [(f"output {k}", v) for k, v in sorted(report.get("output_rows", {}).items())]
    lines += [(f"seconds {k}", round(v, 2)) for k, v in report.get("seconds", {}).items()]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v:>12,}" if isinstance(v, int) else f"{k:<{width}}  {v:>12}" for k, v in lines))
    print(f"all input rows accounted for: {report.get('accounted')}")
    print(f"output: {report.get('output')}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "augment":
        from ipt_data.pipeline import ModelUnavailableError, augment

        overrides = {name: getattr(args, name) for name in AugmentConfig.names()}
        try:
            config = AugmentConfig.from_recipe(args.recipe, **overrides)
            if config.executor == "ray":
                from ipt_data.ray import augment_on_ray

                report = augment_on_ray(
                    config, address=config.ray_address, workers=config.workers, gpus_per_worker=config.gpus_per_worker
                )
            else:
                report = augment(config, progress=not args.no_progress)
        except (ModelUnavailableError, FileExistsError, KeyError, ValueError, OSError) as exc:
            print(f"ipt-data: error: {exc}", file=sys.stderr)
            return 2
        if report.get("retry_shards"):
            print(
                f"ipt-data: the engine failed on rows of shards {report['retry_shards']}; nothing was "
                "published. Run the same command again to retry them.",
                file=sys.stderr,
            )
            return 3
        _print_report(report)
        if args.examples:
            _print_examples(config, args.examples)
    return 0


def _print_examples(config: AugmentConfig, n: int) -> None:
    import pyarrow.parquet as pq

    from ipt_data.pipeline import WorkDir

    shown = 0
    for path in sorted((WorkDir(config.resolved_work_dir(), config).path / "shards").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["kind"] == "augmented" and shown < n:
                shown += 1
                print(f"\n----- example {shown} ({row['layout']}) -----\n{row['text']}")
