"""`AugmentConfig`: every option of a run, loadable from a YAML recipe and overridable field by field.

The synthesis options are `SynthesisOptions`' (inherited); the rest are declared here, each with its help,
choices and scope (`ipt_data.options`). `fingerprint()` hashes the SHARDS-scoped fields (plus the package
version and the template data), so a rerun into the same work folder with another value is refused instead
of mixing old and new shards; `output_fingerprint()` adds the OUTPUT-scoped fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipt_data.errors import ConfigError
from ipt_data.options import (
    OUTPUT,
    RUN,
    SHARDS,
    Recipe,
    SynthesisOptions,
    check_choices,
    fingerprint,
    left_out,
    option,
    scoped,
)
from ipt_data.schema import PUBLISHED_COLUMNS
from ipt_data.stages import PIPELINE, PipelineOptions, built_in_options
from ipt_data.stages import load as load_stages

SAMPLE_CORPUS = str(Path(__file__).parent / "assets" / "sample_corpus.jsonl")
RECIPE_PATHS = ("dataset", "model", "tokenizer", "general", "decontaminate")  # resolved against the recipe's folder


@dataclass
class AugmentConfig(PipelineOptions, *built_in_options(), SynthesisOptions, Recipe):
    """Every option of a run: those declared here, the synthesis options (`SynthesisOptions`) and the options
    of the built-in stages (`ipt_data.stages`: `--filters`, `--decontaminate`, ...)."""

    recipe_paths = RECIPE_PATHS
    recipe_spec_lists = ("decontaminate",)
    dataset: str = option(
        SAMPLE_CORPUS, scope=SHARDS, help="Hub dataset name, local file or folder (jsonl/json/parquet/txt/csv), or URL"
    )
    output: str = option("./out", scope=RUN, help="local folder, fsspec URL (s3://...), or hf://datasets/<user>/<name>")
    dataset_config: str | None = option(None, scope=SHARDS, help="the input dataset's configuration (Hub datasets)")
    split: str = option("train", scope=SHARDS, help="the input split to read")
    keep_columns: tuple[str, ...] = option(
        (),
        scope=SHARDS,
        help="input columns carried to every published row (id,url,license,...): a list of the values of the "
        "input rows the text came from, in the order of `source`",
    )
    text_files: str = option(
        "document",
        scope=SHARDS,
        choices=("document", "line"),
        help="how .txt/.md input files are read: one document per file, or one per line",
    )
    streaming: bool = option(False, scope=RUN, help="read the input as a stream (same shards, constant memory)")
    limit: int | None = option(
        None, scope=RUN, help="only the first N input rows (the shards' input hashes cover which rows were read)"
    )
    fraction: float = option(
        1.0, scope=SHARDS, help="share of rows converted; the rest is kept raw (0.2 from scratch, 1.0 domain-adaptive)"
    )
    gpus: int = option(1, scope=RUN, help="engine processes, one per GPU (rank r -> GPU r); on a CPU, parallel workers")
    executor: str = option(
        "local",
        scope=RUN,
        help="where shards run: local (this process, or --gpus N processes), ray, or slurm (one job array)",
    )
    ray_address: str | None = option(
        None, scope=RUN, help="Ray cluster address (auto, ray://host:10001); default: a local Ray"
    )
    workers: int = option(2, scope=RUN, help="Ray actors, one engine each")
    gpus_per_worker: float = option(0.0, scope=RUN, help="GPUs per Ray actor (1 on a GPU cluster)")
    slurm_partition: str | None = option(None, scope=RUN, help="Slurm partition of the job array")
    slurm_gpus: int = option(0, scope=RUN, help="GPUs per Slurm array task (one shard at a time, one engine each)")
    slurm_cpus: int = option(1, scope=RUN, help="CPUs per Slurm array task")
    slurm_mem: str | None = option(None, scope=RUN, help="memory per Slurm array task (sbatch --mem, e.g. 64G)")
    slurm_time: str | None = option(None, scope=RUN, help="time limit per Slurm array task (e.g. 4:00:00)")
    slurm_parallel: int = option(0, scope=RUN, help="Slurm array tasks running at once (0: no limit)")
    slurm_args: str | None = option(
        None,
        scope=RUN,
        help="more sbatch options for the job array, as on a command line: --slurm-args='--account=me --qos=high'",
    )
    batch_size: int = option(256, scope=SHARDS, help="rows per synthesize call; chains never leave it")
    shard_size: int = option(4096, scope=SHARDS, help="input rows per checkpointed shard")
    general: str | None = option(
        None, scope=OUTPUT, help="general instruction data (Hub name or file) mixed in, e.g. Open-Orca/OpenOrca"
    )
    general_config: str | None = option(None, scope=OUTPUT, help="the general data's configuration")
    general_split: str = option("train", scope=OUTPUT, help="the general data's split")
    general_columns: tuple[str, str] = option(
        ("question", "response"), scope=OUTPUT, help="the question and response columns of the general data"
    )
    general_ratio: float | None = option(None, scope=OUTPUT, help="general : augmented, counted by --mix-by")
    mix_by: str = option("tokens", scope=OUTPUT, choices=("tokens", "examples"), help="what the ratio counts")
    bad_lines: str = option(
        "error",
        scope=OUTPUT,
        choices=("error", "skip"),
        help="a corrupt JSON line: error (names the line) or skip (counted in the rejects)",
    )
    on_engine_error: str = option(
        "retry",
        scope=RUN,
        choices=("retry", "raw"),
        help="prompts the engine failed on: retry (their batches are sent again within the run; if the engine "
        "stays down the run stops, nothing published, and the next run goes on) or raw (their texts are published "
        "raw, counted in the card as raw because of the engine)",
    )
    engine_retries: int = option(
        3, scope=RUN, help="with --on-engine-error retry: how many times a batch the engine failed on is sent again"
    )
    engine_retry_wait: float = option(
        10.0, scope=RUN, help="seconds before the first retry of a failed batch; doubled before each next one"
    )
    max_engine_errors: float = option(
        0.1,
        scope=RUN,
        help="with --on-engine-error raw: stop the run (nothing published, the shard left for the next run) when "
        "the engine fails on more than this share of a shard's prompts",
    )
    work_dir: str | None = option(
        None,
        scope=RUN,
        help="checkpoint folder (default: <output>.work, or .ipt-work inside an output named . or ..); on Ray, on "
        "storage every node sees",
    )
    publish_rejects: bool = option(
        False,
        scope=OUTPUT,
        help="publish rejects.jsonl (each rejected row's reason and a 200-character preview) with the data; "
        "it is always written to the work folder",
    )
    publish_shard_rows: int = option(250_000, scope=OUTPUT, help="rows per published parquet file")
    overwrite: bool = option(False, scope=RUN, help="replace an output that holds data ipt_data did not write")
    private: bool = option(False, scope=RUN, help="create a private Hub dataset")

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.dataset, str) and "://" not in self.dataset and os.path.exists(self.dataset):
            self.dataset = os.path.realpath(self.dataset)  # one file, one fingerprint, however it is named
        self.general_columns = tuple(self.general_columns)
        self.keep_columns = tuple(self.keep_columns)
        clash = sorted(set(self.keep_columns) & set(PUBLISHED_COLUMNS))
        if clash:
            raise ConfigError(f"keep_columns cannot hold {clash}: published rows have such columns already")
        if len(self.general_columns) != 2:
            raise ConfigError(f"general_columns must name two columns, got {list(self.general_columns)}")
        if not 0 <= self.fraction <= 1:
            raise ConfigError(f"fraction must be in [0, 1], got {self.fraction}")
        if min(self.shard_size, self.batch_size, self.gpus) < 1:
            raise ConfigError("shard_size, batch_size and gpus must be >= 1")
        if self.engine_retries < 0 or self.engine_retry_wait < 0:
            raise ConfigError("engine_retries and engine_retry_wait cannot be negative")
        self.stages = tuple(self.stages)
        if not isinstance(self.stage_options, dict):
            raise ConfigError(f"stage_options must be a mapping, got {type(self.stage_options).__name__}")
        for stage in load_stages(PIPELINE):  # the built-in stages' options checked, in their one canonical form
            if stage.canonical is not None:
                for name, value in stage.canonical(self).items():
                    setattr(self, name, value)
            if stage.name not in self.stages and stage.enabled(self):
                raise ConfigError(f"the options of the stage {stage.name!r} are set, but --stages leaves it out")
        for stage in load_stages(self.stages):
            stage.option_values(self)  # a stage of your own: its options (`stage_options`) checked
        check_choices(self)
        self.stage_inputs: dict[str, Any] = {}  # what `setup` of the acting stages found (`ipt_data.run.open_run`)

    def to_dict(self) -> dict[str, Any]:
        """The options (options added since fingerprints were first published only when set)."""
        omitted = left_out(self)
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in omitted}
        d["general_columns"] = list(self.general_columns)
        d["keep_columns"] = list(self.keep_columns)
        return d

    def fingerprint(self) -> str:
        """What the shards depend on: SHARDS-scoped options, the package version, the template data, and what
        the stages' `setup` found (a benchmark index's digest)."""
        return fingerprint(self, SHARDS, extra=self._extra())

    def output_fingerprint(self) -> str:
        """What the published data depends on: the shards' fingerprint plus the OUTPUT-scoped options."""
        return fingerprint(self, SHARDS, OUTPUT, extra=self._extra())

    def _extra(self) -> dict[str, Any]:
        return code_versions() | self._inputs()

    def _inputs(self) -> dict[str, Any]:
        return {"stage_inputs": self.stage_inputs} if self.stage_inputs else {}

    def shard_values(self) -> dict[str, Any]:
        omitted = left_out(self)
        return {k: getattr(self, k) for k in sorted(scoped(self, SHARDS)) if k not in omitted} | self._inputs()

    def resolved_work_dir(self) -> str:
        if self.work_dir:
            return self.work_dir
        if "://" not in self.output:
            if os.path.basename(os.path.normpath(self.output)) in (".", ".."):  # `--output .`: inside it, hidden
                return os.path.join(self.output, ".ipt-work")
            return self.output.rstrip("/") + ".work"
        name = self.output.rstrip("/").rsplit("/", 1)[-1]
        return str(Path("ipt-work") / f"{name}-{hashlib.sha256(self.output.encode()).hexdigest()[:8]}")


def code_versions() -> dict[str, str]:
    """The code the shards are made with: the package version and a hash of the template data."""
    from ipt_data import __version__
    from ipt_data.stages.templify import TEMPLATES

    return {"ipt_data": __version__, "templates": hashlib.sha256(Path(TEMPLATES).read_bytes()).hexdigest()[:16]}
