"""Options that document themselves: each declares its help, its choices and its scope next to its default.

The scope says what a change of the option invalidates:
- `SHARDS`: what the synthesized shards hold. Part of the work folder's fingerprint: a rerun with another
  value is refused rather than mixing shards made two ways.
- `OUTPUT`: the published data, not the shards (mixing, publishing shape). Part of the output fingerprint.
- `RUN`: where or how the run happens (engine, processes, destination); no effect on any output.

A field without a scope cannot be fingerprinted and is an error (`scoped`), so a new option cannot be
forgotten by the fingerprint. The CLI derives its flags, choices and help from the same declarations.
`SynthesisOptions` holds the synthesis parameters, shared by `Synthesizer`, `synthesize_batch` and
`AugmentConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ipt_data.errors import ConfigError, InputNotFoundError
from ipt_data.testing.fixtures import REAL_SYNTHESIZER

SHARDS, OUTPUT, RUN = "shards", "output", "run"
SCOPES = (SHARDS, OUTPUT, RUN)
FINGERPRINT_VERSION = 2  # bump when the meaning of an option or the shard format changes


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    scope: str,
    choices: tuple | None = None,
    factory=None,
    added: bool = False,
):
    """A dataclass field with its `help`, `scope` (SHARDS, OUTPUT or RUN) and allowed `choices`.

    `added=True` marks an option added after fingerprints were first published: while it is unset (None, empty,
    or its default) it is left out of `fingerprint`, so every run that does not use it keeps its fingerprint,
    its work folder and its published bytes."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    metadata = {"help": help, "scope": scope, "choices": choices, "added": added}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def scoped(cls_or_obj, *scopes: str) -> list[str]:
    """Names of the fields of the given scopes; every field must declare one."""
    names = []
    for f in dataclasses.fields(cls_or_obj):
        scope = f.metadata.get("scope")
        if scope not in SCOPES:
            raise TypeError(f"option {f.name!r} declares no scope (use ipt_data.options.option)")
        if scope in scopes:
            names.append(f.name)
    return names


def check_choices(obj) -> None:
    """Raise `ConfigError` for any field whose value is not one of its declared choices."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value not in choices:
            raise ConfigError(f"{f.name} must be one of {list(choices)}, got {value!r}")


def left_out(obj) -> set[str]:
    """The `added` options of `obj` that are unset (None, empty, or their default): left out of its
    fingerprint and of what is recorded of it (see `option`)."""
    out = set()
    for f in dataclasses.fields(obj):
        if f.metadata.get("added"):
            value = getattr(obj, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if value is None or value == default or (hasattr(value, "__len__") and not len(value)):
                out.add(f.name)
    return out


def fingerprint(obj, *scopes: str, extra: dict[str, Any] | None = None) -> str:
    """A 16-hex-digit hash of the fields of `scopes` (+ `extra`, + the fingerprint version); `added` options are
    left out while unset (see `option`)."""
    omitted = left_out(obj)
    values = {name: getattr(obj, name) for name in scoped(obj, *scopes) if name not in omitted}
    values.update(extra or {}, fingerprint_version=FINGERPRINT_VERSION)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Recipe:
    """Options loadable from a YAML recipe (`from_recipe`), for a dataclass of `option` fields; the fields named
    in `recipe_paths` are paths, resolved against the recipe's folder when they are relative."""

    recipe_paths: tuple[str, ...] = ()
    recipe_spec_lists: tuple[str, ...] = ()  # of `recipe_paths`: comma-separated `path?query` items, or lists

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_recipe(cls, path: str | None = None, **overrides: Any):
        """A recipe file's values (keys may use - or _), then `overrides` that are not None."""
        values: dict[str, Any] = {}
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    loaded = yaml.safe_load(f) or {}
            except FileNotFoundError as exc:
                raise InputNotFoundError(f"recipe {path} not found") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
            if not isinstance(loaded, dict):
                raise ConfigError(f"recipe {path} must be a mapping of option: value")
            values = {k.replace("-", "_"): v for k, v in loaded.items()}
            for key in cls.recipe_paths:  # a recipe's relative paths are relative to the recipe file
                if key in values:
                    values[key] = _relative_to(values[key], Path(path).parent, key in cls.recipe_spec_lists)
            unknown = sorted(set(values) - set(cls.names()))
            if unknown:
                raise ConfigError(f"{path}: unknown options {unknown}; known: {cls.names()}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc


def _relative_to(value: Any, folder: Path, specs: bool = False) -> Any:
    """`value` with its relative paths that exist in `folder` made absolute: a path; with `specs`, a list of
    paths or of mappings with a `source`, or comma-separated `path?query` items (benchmark specs)."""
    if specs and isinstance(value, list):
        return [
            {**v, "source": _relative_to(v["source"], folder)} if isinstance(v, dict) and "source" in v else
            _relative_to(v, folder, specs)
            for v in value
        ]  # fmt: skip
    if not isinstance(value, str):
        return value
    if specs and "," in value:
        return ",".join(_relative_to(part.strip(), folder, specs) for part in value.split(","))
    where, mark, query = value.partition("?") if specs else (value, "", "")
    if "://" in where or os.path.isabs(where) or not (folder / where).exists():
        return value
    return str((folder / where).resolve()) + mark + query


@dataclass
class SynthesisOptions:
    """The synthesis parameters (SPEC 1-2), one declaration for every place that takes them."""

    model: str = option(
        REAL_SYNTHESIZER, scope=SHARDS, help="the instruction synthesizer: a Hub model id or a local folder"
    )
    rounds: int = option(2, scope=SHARDS, help="M: texts per few-shot chain (2 from scratch, 3 domain-adaptive)")
    chain_order: str = option(
        "reference",
        scope=SHARDS,
        choices=("reference", "adjacent"),
        help="reference: within a batch text i chains with i + ceil(n/M), ... as the paper's scripts do; "
        "adjacent: consecutive texts (consecutive chunks of a document) share a chain",
    )
    max_model_len: int = option(4096, scope=SHARDS, help="the synthesizer's context length in tokens")
    max_new_tokens: int = option(400, scope=SHARDS, help="tokens generated per text at most")
    temperature: float = option(0.0, scope=SHARDS, help="0 is greedy decoding, as the reference")
    seed: int = option(0, scope=SHARDS, help="seed of sampling, routing, template choices and mixing")
    tokenizer: str | None = option(None, scope=SHARDS, help="tokenizer to count and encode with (default: the model's)")
    text_column: str = option("text", scope=SHARDS, help="the column holding the texts")
    engine: str = option("auto", scope=RUN, help="generation engine: auto (vllm with a GPU, else hf), hf, vllm, openai")
    engine_options: dict[str, Any] = option(
        scope=RUN, factory=dict, help="engine options as JSON, e.g. '{\"batch_size\": 64}'"
    )
    trust_remote_code: bool = option(False, scope=RUN, help="run the model repo's own code (off: safer)")
    pipeline: str = option(
        "stream",
        scope=RUN,
        choices=("stream", "rounds"),
        help="stream: engines that take prompts one at a time (vllm, openai) get each chain's next prompt as soon "
        "as its previous one is back, across batches and shards; rounds: one engine call per round of a batch. "
        "The same output either way",
    )
    max_in_flight: int = option(
        2048,
        scope=RUN,
        help="prompts one shard keeps queued in a streaming engine at most (keep it above the engine's batch size)",
    )

    def __post_init__(self):
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if not isinstance(self.engine_options, dict):
            raise ConfigError(f"engine_options must be a mapping, got {type(self.engine_options).__name__}")
        check_choices(self)

    def synthesis_options(self) -> dict[str, Any]:
        """This object's synthesis parameters, as keyword arguments of `Synthesizer`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SynthesisOptions)}
