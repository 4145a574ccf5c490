"""Checks made before any synthesis, each failing in seconds with one clear line: the destination is allowed
and writable (overwrite rules, Hub repo id and token), the output is not a folder that holds the input or the
work folder, the general data is readable, with text in its columns, to its last row, and the engine answers one
request."""

from __future__ import annotations

import logging
import os
from collections import Counter

from ipt_data.corpus.sources import CorruptInputError
from ipt_data.errors import ConfigError, EngineUnavailableError, InputError
from ipt_data.run.inputs import first_row, general_rows, read_general
from ipt_data.sinks import sink_for
from ipt_data.sinks.base import MANIFEST, OWN_FILES, OWN_FOLDERS

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
    """The output neither holds the input nor lies inside the input folder (a rerun would read its own output,
    or publishing would replace files of the input). A work folder inside the output is ours and allowed, unless
    it is where publishing writes (`data/`, `images/`, the card...)."""
    if "://" in config.output:
        return
    if os.path.exists(config.dataset) and _inside(config.dataset, config.output):
        raise ConfigError(
            f"the output {config.output} contains the input ({config.dataset}); publishing replaces the dataset "
            "files there: choose an output folder of its own"
        )
    work = config.resolved_work_dir()
    if _inside(work, config.output):
        relative = os.path.relpath(os.path.realpath(work), os.path.realpath(config.output))
        first = relative.split(os.sep)[0]
        if relative == "." or first in OWN_FILES or f"{first}/" in OWN_FOLDERS or first == MANIFEST:
            raise ConfigError(
                f"the work folder {work} is where publishing to {config.output} writes the dataset: choose another "
                "--work-dir"
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
    """The general data opens, its first row has both `general_columns`, and it is read in full, streamed: a
    corrupt line (or one not UTF-8) stops the run here, naming it, unless --bad-lines skip; rows that are not
    usable (a question or response missing, empty or not text) are counted, to be left out of the mix with
    their reasons, as input rows are; general data without a usable row is an error."""
    try:
        source = read_general(config)
        first = first_row(source)
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
    usable, rejected, example = 0, Counter(), None
    try:
        for number, _, reason in general_rows(source, config.general_columns):
            if reason is None:
                usable += 1
            else:
                rejected[reason.split(":")[0]] += 1
                example = example or f"row {number}: {reason}"
    except CorruptInputError as exc:
        raise CorruptInputError(f"the general data: {exc}") from exc
    if not usable:
        raise InputError(
            f"the general data {config.general!r} has no usable row: {rejected.total()} rejected "
            f"({dict(rejected)}; the first, {example})"
        )
    if rejected:
        log.warning("the general data: %d usable rows, %s rejected (the first, %s)", usable, dict(rejected), example)


def probe_engine(config) -> None:
    """One tiny request to the engine this run will use (loading it, for local engines)."""
    from ipt_data.method.tokenizer import get_encoder
    from ipt_data.stages.synthesize import Synthesizer

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
