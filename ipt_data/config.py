"""`AugmentConfig`: every option of a run, loadable from a YAML recipe and overridable field by field.

`fingerprint()` hashes the fields that change the synthesized shards, so a rerun into the same work
folder with another value is refused instead of mixing old and new shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ipt_data.fixtures import REAL_SYNTHESIZER

SAMPLE_CORPUS = str(Path(__file__).parent / "assets" / "sample_corpus.jsonl")

# Fields that change what the shards hold; mixing and publishing options are applied afresh each run.
SHARD_FIELDS = (
    "dataset",
    "dataset_config",
    "split",
    "text_column",
    "fraction",
    "rounds",
    "chain_order",
    "model",
    "tokenizer",
    "max_model_len",
    "max_new_tokens",
    "seed",
    "shard_size",
    "batch_size",
    "limit",
    "temperature",
)


@dataclass
class AugmentConfig:
    dataset: str = SAMPLE_CORPUS  # Hub dataset name, local file or folder, or fsspec URL
    output: str = "./out"  # local folder, fsspec URL, or hf://datasets/<user>/<name>
    dataset_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    streaming: bool = False
    limit: int | None = None  # only the first N input rows
    fraction: float = 1.0  # share of rows converted (SPEC 4: 0.2 from scratch); the rest stays raw
    rounds: int = 2
    chain_order: str = "reference"  # texts per chain as the reference groups them, or "adjacent"
    model: str = REAL_SYNTHESIZER
    tokenizer: str | None = None
    engine: str = "auto"
    engine_options: dict[str, Any] = field(default_factory=dict)
    gpus: int = 1  # engine processes, one per GPU (rank r -> GPU r); on a CPU machine, parallel workers
    executor: str = "local"  # "local", or "ray": shards on a Ray cluster (ipt_data.ray)
    ray_address: str | None = None  # an existing cluster ("auto", "ray://host:10001"); default: start one here
    workers: int = 2  # Ray actors, one engine each
    gpus_per_worker: float = 0.0  # GPUs per Ray actor (1 on GPU clusters)
    batch_size: int = 256  # rows per synthesize call; chains never leave it
    shard_size: int = 4096  # input rows per checkpointed shard
    max_model_len: int = 4096
    max_new_tokens: int = 400
    temperature: float = 0.0
    seed: int = 0
    general: str | None = None  # general instruction data (e.g. Open-Orca/OpenOrca)
    general_config: str | None = None
    general_split: str = "train"
    general_columns: tuple[str, str] = ("question", "response")
    general_ratio: float | None = None  # general : augmented
    mix_by: str = "tokens"
    bad_lines: str = "error"  # a corrupt JSON line: "error" (with its line number) or "skip" (counted)
    on_engine_error: str = "raw"  # rows the engine failed on: "raw" (emitted as raw text) or "retry" (on rerun)
    work_dir: str | None = None  # checkpoints; default: "<output>.work" or ./ipt-work/<name>
    publish_shard_rows: int = 250_000  # rows per published parquet file
    overwrite: bool = False
    private: bool = False
    trust_remote_code: bool = False

    def __post_init__(self):
        self.general_columns = tuple(self.general_columns)
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if min(self.rounds, self.shard_size, self.batch_size, self.gpus) < 1:
            raise ValueError("rounds, shard_size, batch_size and gpus must be >= 1")
        if self.bad_lines not in ("error", "skip"):
            raise ValueError(f"bad_lines must be 'error' or 'skip', got {self.bad_lines!r}")
        if self.on_engine_error not in ("raw", "retry"):
            raise ValueError(f"on_engine_error must be 'raw' or 'retry', got {self.on_engine_error!r}")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        if self.chain_order not in ("reference", "adjacent"):
            raise ValueError(f"chain_order must be 'reference' or 'adjacent', got {self.chain_order!r}")
        if self.mix_by not in ("tokens", "examples"):
            raise ValueError(f"mix_by must be 'tokens' or 'examples', got {self.mix_by!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_recipe(cls, path: str | None = None, **overrides: Any) -> AugmentConfig:
        """A recipe file's values (keys may use - or _), then `overrides` that are not None."""
        values: dict[str, Any] = {}
        if path:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
            values = {k.replace("-", "_"): v for k, v in loaded.items()}
            unknown = sorted(set(values) - set(cls.names()))
            if unknown:
                raise ValueError(f"{path}: unknown options {unknown}; known: {cls.names()}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["general_columns"] = list(self.general_columns)
        return d

    def fingerprint(self) -> str:
        shard_values = {k: getattr(self, k) for k in SHARD_FIELDS}
        return hashlib.sha256(json.dumps(shard_values, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def output_fingerprint(self) -> str:
        """A hash of every field that changes the published data (not where or how it runs)."""
        ignored = {
            "output",
            "work_dir",
            "overwrite",
            "private",
            "engine",
            "engine_options",
            "gpus",
            "executor",
            "ray_address",
            "workers",
            "gpus_per_worker",
            "streaming",
            "on_engine_error",
            "trust_remote_code",
        }
        values = {k: v for k, v in self.to_dict().items() if k not in ignored}
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def resolved_work_dir(self) -> str:
        if self.work_dir:
            return self.work_dir
        if "://" not in self.output:
            return self.output.rstrip("/") + ".work"
        return str(Path("ipt-work") / self.output.rstrip("/").rsplit("/", 1)[-1])
