"""The shard's pipeline, declared once: `PIPELINE` names the stages in order, each a module of this package
(or any importable module) holding a `STAGE` (`ipt_data.stages.base.Stage`). A new stage is one module plus
its name in the list; the run, the report, the progress bar, the card and the CLI table take the rest from
its declaration.

`route` splits a shard's rows (converted / kept raw / rejected); `chunk`, `synthesize`, `templify` and
`count` are the method (SPEC 1-3); `pair_filter` and `decontaminate` act only when their options ask
(`--filters`, `--decontaminate`).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from ipt_data.errors import ConfigError
from ipt_data.options import SHARDS, option
from ipt_data.stages.base import POINTS, ShardContext, ShardData, Stage, Stat, option_classes

__all__ = ["PIPELINE", "PipelineOptions", "ShardContext", "ShardData", "Stage", "Stat", "declared_stats", "load"]

PIPELINE = ("route", "chunk", "synthesize", "pair_filter", "decontaminate", "templify", "count")
CORE = ("route", "chunk", "synthesize", "templify", "count")  # the method itself: always there, in this order


@dataclass
class PipelineOptions:
    stages: tuple[str, ...] = option(
        PIPELINE,
        scope=SHARDS,
        added=True,
        help="the shard's stages in order: the built-in ones by name, others as an importable module holding a "
        "STAGE (see README, Extending)",
    )
    stage_options: dict[str, Any] = option(
        scope=SHARDS,
        factory=dict,
        added=True,
        help="options of stages that are not built in, as JSON: {stage name: {option: value}}",
    )


def _module(name: str) -> str:
    return name if "." in name else f"{__name__}.{name}"


@functools.cache
def _stage(name: str) -> Stage:
    try:
        module = importlib.import_module(_module(name))
    except ImportError as exc:
        raise ConfigError(f"stage {name!r}: cannot import {_module(name)} ({exc})") from exc
    stage = getattr(module, "STAGE", None)
    if not isinstance(stage, Stage):
        raise ConfigError(f"stage {name!r}: {_module(name)} holds no STAGE = ipt_data.stages.Stage(...)")
    return stage


def load(names: tuple[str, ...] | list[str] = PIPELINE) -> list[Stage]:
    """The `Stage`s named, checked: the core stages all there and in their order, no stage twice."""
    stages = [_stage(n) for n in names]
    seen = [s.name for s in stages]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"stages: a stage is named twice in {list(names)}")
    core = [n for n in seen if n in CORE]
    if core != list(CORE):
        raise ConfigError(f"stages must hold {list(CORE)} in this order (other stages anywhere); got {list(names)}")
    for stage in stages:
        if stage.name not in CORE and not any(getattr(stage, p) for p in POINTS):
            raise ConfigError(f"stage {stage.name!r} acts nowhere: give it one of {list(POINTS)}")
    return stages


def built_in_options() -> list[type]:
    """The options dataclasses of the built-in stages: `AugmentConfig` inherits them."""
    return option_classes(load(PIPELINE))


def declared_stats(names: tuple[str, ...] | list[str] = PIPELINE) -> list[Stat]:
    """Every statistic the stages declare, in pipeline order."""
    return [stat for stage in load(names) for stat in stage.stats]
