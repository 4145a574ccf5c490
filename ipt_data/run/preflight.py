"""Checks made before any synthesis, each failing in seconds with one clear line: the destination is allowed
and writable (overwrite rules, Hub repo id and token), the output is not a folder that holds the input or the
work folder, the general data is readable with text in its columns, and the engine answers one request."""

from __future__ import annotations

import logging
import os

from ipt_data.errors import ConfigError, EngineUnavailableError, InputError
from ipt_data.run.inputs import first_row, open_general
from ipt_data.sinks import sink_for

log = logging.getLogger(__name__)


def preflight(config, source) -> None:
    """Everything but the engine (see `probe_engine`), before the run writes anything."""
    _output_apart_from_inputs(config)
    _text_column_present(config, source)
    sink_for(config.output).check(config.overwrite, config.private)
    if config.general:
        check_general(config)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _output_apart_from_inputs(config) -> None:
    """The output neither holds the input or the work folder nor lies inside the input folder (a rerun would
    read its own output, or publishing would replace files of the input)."""
    if "://" in config.output:
        return
    for what, path in (("the input", config.dataset), ("the work folder", config.resolved_work_dir())):
        if os.path.exists(path) and _inside(path, config.output):
            raise ConfigError(
                f"the output {config.output} contains {what} ({path}); publishing replaces the dataset files "
                "there: choose an output folder of its own"
            )
    if os.path.isdir(config.dataset):
        for what, path in (("output", config.output), ("work folder", config.resolved_work_dir())):
            if _inside(path, config.dataset):
                raise ConfigError(
                    f"the {what} {path} lies inside the input folder {config.dataset}; the next run would read "
                    "it as input: choose a folder outside the input"
                )


def _text_column_present(config, source) -> None:
    """The input's first row has the text column (rows later without it are rejected, each with the reason)."""
    first = first_row(source)
    if first is not None and config.text_column not in first:
        raise InputError(
            f"the input has no column {config.text_column!r}; its columns are {sorted(first)} (set --text-column)"
        )


def check_general(config) -> None:
    """The general data opens, has both `general_columns`, and they hold text."""
    try:
        first = first_row(open_general(config))
    except (OSError, ValueError) as exc:
        raise InputError(f"the general data {config.general!r} cannot be opened: {exc}") from exc
    if first is None:
        raise InputError(f"the general data {config.general!r} is empty")
    missing = [c for c in config.general_columns if c not in first]
    if missing:
        raise InputError(
            f"the general data {config.general!r} has no column(s) {missing}; its columns are {sorted(first)} "
            "(set --general-columns QUESTION,RESPONSE)"
        )
    for column in config.general_columns:
        if not isinstance(first[column], str):
            raise InputError(f"the general data's {column!r} column holds {type(first[column]).__name__}, not text")


def probe_engine(config) -> None:
    """One tiny request to the engine this run will use (loading it, for local engines)."""
    from ipt_data.budget import get_encoder
    from ipt_data.synthesize import Synthesizer

    synth = Synthesizer(**config.synthesis_options())
    engine = synth.load_engine()
    probe = getattr(engine, "probe", None)
    if probe is not None:
        probe()
        log.info("the engine answered a one-token probe")
        return
    prompt = get_encoder(config.tokenizer or config.model, config.trust_remote_code).context_ids(["Ping."])[0]
    answer = engine.generate([prompt], max_new_tokens=1)[0]
    if answer.finish_reason == "error":
        raise EngineUnavailableError(f"the {config.engine} engine failed a one-token probe: {answer.error}")
    log.info("the engine answered a one-token probe")
