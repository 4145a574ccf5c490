"""What a stage declares (`Stage`, `Stat`) and what it is given while a shard is made (`ShardContext`).

A stage is one module holding a `STAGE = Stage(...)`: its name, the columns it reads and writes, its options
(a dataclass of `ipt_data.options.option` fields: `AugmentConfig` inherits it, so the flags, the recipes and
the fingerprint follow) and the statistics it counts (`Stat`: the CLI table, the card, `stats.json` and the
progress bar read them from here). It acts at one or more points of a shard, each a plain function:

- `on_rows(texts, ctx) -> reasons`: the input texts of the shard's usable rows, before routing; a reason
  (`str`) rejects the row (it goes to `rejects.jsonl`), None keeps it.
- `on_synthesized(batch, ctx) -> batch`: each synthesized batch (`synthesize_batch`'s columns), before
  `templify`: may change `pairs`, keeping every chain whole (`ipt_data.method.chains`).
- `on_rendered(batch, ctx) -> batch`: each batch of rendered texts (`templify_batch`'s columns).

The built-in stages `chunk`, `synthesize`, `templify` and `count` are driven by the shard's synthesis loop
(streaming, retries), so they declare their columns and statistics (`summarize`) but no hook.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipt_data.errors import ConfigError

POINTS = ("on_rows", "on_synthesized", "on_rendered")


@dataclass(frozen=True)
class Stat:
    """One statistic of the run report, and how it is shown.

    `key`: its place in the report (a dotted path for a nested one); a mapping is shown one line per key, its
    `label` holding `{}` for the key. `card`: its label in the dataset card's counts (None: not in the card),
    ordered by `card_order`, then by declaration. `published`: copied into `stats.json` (its `synthesis`
    section). `progress`: its short name on the progress bar (None: not shown)."""

    key: str
    label: str
    card: str | None = None
    card_order: int = 0
    published: bool = False
    progress: str | None = None
    help: str = ""
    names: Any = None  # key -> its words in the card (a dict), e.g. why a text is raw

    def value(self, report: dict) -> Any:
        value: Any = report
        for part in self.key.split("."):
            value = value.get(part, {}) if isinstance(value, dict) else {}
        return value

    def lines(self, report: dict, card: bool = False) -> list[tuple[str, Any]]:
        """`(label, value)` lines for the CLI table (or the card's, with its label and `names`): one, or one per
        key of a mapping (sorted; nested keys joined by " / "); none without a label."""
        label, value = (self.card if card else self.label), self.value(report)
        names = self.names if card else None
        if not label:
            return []
        if "{}" in label:
            flat = _flat(value) if isinstance(value, dict) else {}
            return [(label.format(" / ".join((names or {}).get(p, p) for p in k)), v) for k, v in flat]
        return [(label, value if value != {} else 0)]

    def total(self, report: dict) -> int:
        """The statistic's value, or the sum of a mapping's."""
        value = self.value(report)
        return sum(v for _, v in _flat(value)) if isinstance(value, dict) else value


def _flat(value: dict, parents: tuple = ()) -> list[tuple[tuple, Any]]:
    out = []
    for k, v in sorted(value.items()):
        out += _flat(v, (*parents, k)) if isinstance(v, dict) else [((*parents, k), v)]
    return out


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    options: type | None = None  # a dataclass of `option(...)` fields
    stats: tuple[Stat, ...] = ()
    enabled: Callable[[Any], bool] = lambda options: True
    canonical: Callable[[Any], dict] | None = None  # options -> {name: the value in its one checked form}
    # (options, work folder) -> what the shards depend on besides the options (e.g. a benchmark index's digest):
    # once per run, in the driver, before any shard; it joins the fingerprint and the report's `inputs`
    setup: Callable[[Any, str], dict] | None = None
    prepare: Callable[[Any, str], Any] | None = None  # (options, work folder) -> state, once per process
    on_rows: Callable | None = None
    on_synthesized: Callable | None = None
    on_rendered: Callable | None = None
    summarize: Callable[[ShardData], dict] | None = None  # the stage's statistics of a finished shard
    # options -> whether the stage takes the word hashes an earlier point leaves (`ShardContext.words`); when no
    # acting stage does, none are left
    takes_words: Callable[[Any], bool] = lambda options: False

    def option_values(self, config) -> Any:
        """The stage's options: `config` itself when `AugmentConfig` inherits them (the built-in stages), else
        the stage's options dataclass from `config.stage_options[name]`."""
        if self.options is None or isinstance(config, self.options):
            return config
        values = (getattr(config, "stage_options", {}) or {}).get(self.name, {})
        try:
            return self.options(**values)
        except TypeError as exc:
            known = [f.name for f in dataclasses.fields(self.options)]
            raise ConfigError(f"stage_options of {self.name!r}: {exc}; its options are {known}") from exc


@dataclass
class ShardData:
    """What a finished shard's statistics are computed from."""

    n: int  # input rows
    convert: list[int]
    raw: list[int]
    rejects: list[dict]
    synthesized: dict[str, list]  # every synthesized batch's columns as the engine wrote them, in order
    kept: dict[str, list]  # the same after the stages' `on_synthesized`: what was rendered
    out: dict[str, list]  # the rendered rows (templify's columns and n_tokens)
    raw_because: dict[str, str]  # chunk key -> why its text is published raw (set by stages)


@dataclass
class ShardContext:
    """What a stage's hook is given: the shard, its options, the shard's statistics to count into
    (`count`), records to keep in the work folder for inspection (`record`), and its prepared state."""

    shard: int
    start: int  # the shard's first input row
    options: Any
    state: Any = None
    stats: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    raw_because: dict[str, str] = field(default_factory=dict)  # chunk key -> why its text is published raw
    synthesized: dict | None = None  # for `on_rendered`: the synthesized batch its texts were rendered from
    rows: list[int] | None = None  # for `on_rows`: the input row number of each text
    # id(text) -> (text, the hashes of its words: `ngram_kernels.scan`), left by a stage that hashed them (the input
    # texts' decontamination) for a later one (the grounding filter) to take rather than hash them again; one per
    # shard, None when no acting stage takes them (`Stage.takes_words`)
    words: dict | None = None

    def count(self, path: str | tuple[str, ...], n: int = 1) -> None:
        """Add `n` to the statistic at `path` of the shard's stats: dotted, or a tuple of keys (names that may
        hold a dot, e.g. a benchmark's)."""
        *parents, last = path.split(".") if isinstance(path, str) else path
        node = self.stats
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = node.get(last, 0) + n

    def record(self, **values: Any) -> None:
        """Keep one record (a hit, a dropped pair) in the shard's `records.jsonl` in the work folder."""
        self.records.append({"shard": self.shard, **values})


def option_classes(stages: list[Stage]) -> list[type]:
    """The options dataclasses of `stages`, each once, in order."""
    out: list[type] = []
    for stage in stages:
        if stage.options is not None and dataclasses.is_dataclass(stage.options) and stage.options not in out:
            out.append(stage.options)
    return out
