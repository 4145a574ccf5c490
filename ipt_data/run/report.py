"""The run report: shard stats merged in shard order (whatever order executors finish them in), stable JSON."""

from __future__ import annotations

import json
from typing import Any

VOLATILE = ("seconds", "shards")  # timings and resume counts: not published, so reruns publish identical bytes


def merge(total: dict, part: dict) -> dict:
    """Add `part`'s counts into `total` (nested dicts of numbers)."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def merged(stats_by_shard: dict[int, dict]) -> dict[str, Any]:
    """The shards' stats added up in shard order."""
    report: dict[str, Any] = {}
    for k in sorted(stats_by_shard):
        merge(report, stats_by_shard[k])
    rows = report.get("rows", {})
    report["accounted"] = (
        rows.get("in", 0) == rows.get("converted", 0) + rows.get("raw", 0) + rows.get("rejected", 0)
        and report.get("unrendered_chunks", 0) == 0
    )
    return report


def stable(report: dict) -> dict:
    """The report without timings and resume counts, as published."""
    return {k: v for k, v in report.items() if k not in VOLATILE}


def dumps(report: dict) -> str:
    """Byte-stable JSON (sorted keys)."""
    return json.dumps(report, indent=1, sort_keys=True)
