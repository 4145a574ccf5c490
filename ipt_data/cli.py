"""`ipt-data` command line: `ipt-data augment --recipe recipes/cpu-demo.yaml --output ./out`.

Every `AugmentConfig` option is a flag (`--max-new-tokens`, `--general-ratio`, ...), typed, with the help,
default and choices its declaration gives (`ipt_data.options`); values given on the command line override
the recipe's. Errors the user can fix print as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing

from ipt_data.config import AugmentConfig
from ipt_data.errors import IptDataError
from ipt_data.notices import to_stderr
from ipt_data.redact import collect_secrets, scrub
from ipt_data.stages import PIPELINE, declared_stats


def _kind(hint):
    """The type a flag parses to: the option's type without `| None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _parser_for(kind):
    origin = typing.get_origin(kind) or kind
    if origin is dict:
        return _json_object
    if origin is tuple:
        return lambda text: tuple(x.strip() for x in text.split(",") if x.strip())
    if kind in (int, float):
        return kind
    return str


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        example = '{"name": "value"}'
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg} (a JSON object, e.g. '{example}')") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('a JSON object is needed, e.g. \'{"name": "value"}\'')
    return value


def _help(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, tuple):
        default = ",".join(default)
    shown = "" if default is None or default in ({}, "") else f" (default: {default})"
    return f.metadata["help"].replace("%", "%%") + shown


def _add_config_options(parser: argparse.ArgumentParser, cls=AugmentConfig) -> None:
    """One flag per option of `cls`, typed, with its help, default and choices from its declaration."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = _kind(hints[f.name])
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_help(f))
            continue
        metavar = {dict: "JSON", tuple: "A,B"}.get(typing.get_origin(kind) or kind)
        parser.add_argument(
            flag,
            type=_parser_for(kind),
            choices=f.metadata.get("choices"),
            default=None,
            metavar=metavar,
            help=_help(f),
        )


def build_parser() -> argparse.ArgumentParser:
    from ipt_data import __version__

    parser = argparse.ArgumentParser(prog="ipt-data", description="Instruction Pre-Training data, end to end.")
    parser.add_argument("--version", action="version", version=f"ipt-data {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    aug = sub.add_parser("augment", help="raw corpus -> augmented, mixed, published corpus (resumable)")
    aug.add_argument("--recipe", help="YAML recipe (recipes/*.yaml); options given here override it")
    aug.add_argument("--no-progress", action="store_true", help="no progress bar")
    aug.add_argument("--examples", type=int, default=0, help="print this many augmented texts at the end")
    _add_config_options(aug)
    from ipt_data.train.config import TrainConfig

    tr = sub.add_parser(
        "train-synthesizer",
        help="tune a causal LM into an instruction synthesizer (resumable; evaluates on held-out texts)",
    )
    tr.add_argument("--recipe", help="YAML recipe (recipes/train-*.yaml); options given here override it")
    _add_config_options(tr, TrainConfig)
    st = sub.add_parser(
        "stats", help="statistics (and plots) of a published corpus: a folder, an fsspec URL or hf://datasets/..."
    )
    st.add_argument("path", help="where the corpus was published (holds data/*.parquet)")
    st.add_argument("--plots", metavar="DIR", help="also write the figures into DIR as PNG files")
    st.add_argument("--json", action="store_true", help="print every number as JSON instead of the summary table")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _print_report(report: dict, stages: tuple[str, ...] = PIPELINE) -> None:
    """The run's numbers: what each stage declares (`ipt_data.stages`), then the shards, the output and times."""
    lines = [line for stat in declared_stats(stages) for line in stat.lines(report)]
    lines += [(f"shards {k}", v) for k, v in report.get("shards", {}).items()]
    lines += [(f"output {k}", v) for k, v in sorted(report.get("output_rows", {}).items())]
    if "mix" in report:
        lines += [(f"general : augmented ({report['mix']['by']})", f"{report['mix']['achieved']}")]
    lines += [(f"general rejected: {k}", v) for k, v in report.get("general_rejects", {}).items()]
    lines += [(f"seconds {k}", round(v, 2)) for k, v in report.get("seconds", {}).items()]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v:>12,}" if isinstance(v, int) else f"{k:<{width}}  {v:>12}" for k, v in lines))
    print(f"all input rows accounted for: {report.get('accounted')}")
    print(f"output: {report.get('output')}")


def entry() -> None:
    """The `ipt-data` program: `main`, with every traceback it may print scrubbed of secrets."""
    import traceback

    def scrubbed(kind, value, tb) -> None:
        sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = scrubbed  # this process is the CLI's own: nothing else relies on the hook
    sys.exit(main())


def _stats(args) -> int:
    from pathlib import Path

    from ipt_data.corpus.plots import figures
    from ipt_data.corpus.stats import stats, summary

    try:
        numbers = stats(args.path, progress=not args.no_progress)
    except IptDataError as exc:
        print(f"ipt-data: error: {scrub(str(exc), [])}", file=sys.stderr)
        return 2
    print(json.dumps(numbers, indent=1, sort_keys=True) if args.json else summary(numbers))
    if args.plots:
        try:
            Path(args.plots).mkdir(parents=True, exist_ok=True)
            for f in figures(numbers):
                (Path(args.plots) / f.name).write_bytes(f.png)
                print(f"{Path(args.plots) / f.name}: {f.reading}", file=sys.stderr)
        except OSError as exc:
            reason = exc.strerror or exc
            print(f"ipt-data: error: cannot write the figures into {args.plots}: {reason}", file=sys.stderr)
            return 2
    return 0


def _train(args) -> int:
    import logging

    from ipt_data.train import train_synthesizer
    from ipt_data.train.config import TrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = {name: getattr(args, name) for name in TrainConfig.names()}
    try:
        report = train_synthesizer(TrainConfig.from_recipe(args.recipe, **overrides))
    except IptDataError as exc:
        print(f"ipt-data: error: {scrub(str(exc), collect_secrets(overrides))}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("output", "examples", "rejects", "evaluation")}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stats":
        return _stats(args)
    if args.command == "train-synthesizer":
        return _train(args)
    if args.command == "augment":
        overrides = {name: getattr(args, name) for name in AugmentConfig.names()}
        secrets = collect_secrets(overrides)
        work = "the work folder"
        try:
            from ipt_data.run import augment

            config = AugmentConfig.from_recipe(args.recipe, **overrides)
            work = config.resolved_work_dir()
            secrets += collect_secrets(config.to_dict())
            with to_stderr():
                report = augment(config, progress=not args.no_progress)
        except IptDataError as exc:  # a problem the user can fix: one line; anything else is a bug
            print(f"ipt-data: error: {scrub(str(exc), secrets)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                f"ipt-data: stopped (Ctrl-C). The shards finished so far are kept in {work}; run the same command "
                "again to go on from there",
                file=sys.stderr,
            )
            return 2
        _print_report(report, config.stages)
        if report.get("mix", {}).get("short"):
            print(
                f"ipt-data: warning: the general data ran short: general : augmented is {report['mix']['achieved']} "
                f"by {report['mix']['by']}, {report['mix']['requested']} was asked for",
                file=sys.stderr,
            )
        engine_raw = report.get("raw_texts", {}).get("engine_error", 0)
        if engine_raw:
            print(
                f"ipt-data: warning: {engine_raw:,} texts are published raw because the engine failed on them "
                "(--on-engine-error raw); without that option they are retried",
                file=sys.stderr,
            )
        if report.get("rows", {}).get("converted") and not report.get("pairs"):
            print(
                f"ipt-data: warning: the synthesizer wrote no pair that parses ({report.get('completion_tokens', 0):,} "
                "completion tokens); every text was published raw. Check the model (--model) and its outputs in "
                f"{config.resolved_work_dir()}/run.log",
                file=sys.stderr,
            )
        if not sum(report.get("output_rows", {}).values()):
            rejected = report.get("rows", {}).get("rejected", 0)
            print(
                f"ipt-data: the input had no usable rows ({rejected} rejected; reasons in "
                f"{config.resolved_work_dir()}/rejects.jsonl); an empty dataset was published (its columns, no row: "
                "load_dataset(..., streaming=True) reads it; datasets prepares no split of 0 rows otherwise)",
                file=sys.stderr,
            )
        if args.examples:
            _print_examples(config, args.examples)
    return 0


def _print_examples(config: AugmentConfig, n: int) -> None:
    import pyarrow.parquet as pq

    from ipt_data.run.workdir import shard_tables

    shown = 0
    for path in shard_tables(config.resolved_work_dir()):
        for row in pq.read_table(path).to_pylist():
            if row["kind"] == "augmented" and shown < n:
                shown += 1
                print(f"\n----- example {shown} ({row['layout']}) -----\n{row['text']}")
