"""The work folder of a run: `run.json` (the shard fingerprint), `shards/NNNNN.parquet` + `.rejects.jsonl` +
`.done.json` (the shard's stats, written last: a shard is done when its marker exists), and `run.log`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ipt_data.errors import WorkDirMismatchError
from ipt_data.redact import redact


class WorkDir:
    def __init__(self, path: str, config):
        self.path = Path(path)
        (self.path / "shards").mkdir(parents=True, exist_ok=True)
        run = self.path / "run.json"
        fingerprint, values = config.fingerprint(), redact(config.shard_values())
        if run.exists():
            old = json.loads(run.read_text())
            if old["fingerprint"] != fingerprint:
                before = old.get("shard_config", {})
                changed = sorted(k for k in {*before, *values} if before.get(k) != _jsonable(values.get(k)))
                raise WorkDirMismatchError(
                    f"{self.path} holds shards made with other parameters "
                    f"(changed: {changed or 'the ipt_data version or its templates'}); "
                    "use another --work-dir, or delete that folder to start over"
                )
        else:
            _atomic_write(run, json.dumps({"fingerprint": fingerprint, "shard_config": values}, indent=1, default=str))

    def shard(self, k: int, suffix: str) -> Path:
        return self.path / "shards" / f"{k:05d}{suffix}"

    def done(self, k: int) -> dict | None:
        marker = self.shard(k, ".done.json")
        return json.loads(marker.read_text()) if marker.exists() else None

    def write(self, k: int, table: pa.Table, rejects: list[dict], stats: dict, done: bool = True) -> None:
        """Write shard `k`; with `done=False` (rows to retry) it is redone by the next run."""
        tmp = self.shard(k, ".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.shard(k, ".parquet"))
        _atomic_write(self.shard(k, ".rejects.jsonl"), "".join(json.dumps(r) + "\n" for r in redact(rejects)))
        if done:
            _atomic_write(self.shard(k, ".done.json"), json.dumps(stats, sort_keys=True))

    def shard_files(self, n: int) -> list[str]:
        """The non-empty shard files (a shard whose rows were all rejected holds no rows)."""
        paths = [self.shard(k, ".parquet") for k in range(n)]
        return [str(p) for p in paths if pq.ParquetFile(p).metadata.num_rows]

    def rejects(self, n: int) -> str:
        return "".join(self.shard(k, ".rejects.jsonl").read_text() for k in range(n))


def shard_tables(path: str) -> list[Path]:
    """The shard files of a work folder, in order (for reading a finished run's texts)."""
    return sorted((Path(path) / "shards").glob("*.parquet"))


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
