"""The work folder of a run: `run.json` (the shard fingerprint), `shards/NNNNN.parquet` + `.rejects.jsonl` +
`.stats.npz` (the statistics of its rows, `CorpusStats.to_bytes`) + `.done.json` (written last: a shard is done when
its marker exists; it records the hash of the input rows the shard was made from, and the shard's stats), and
`run.log`. A shard is written to a temporary file per writer, then renamed; a run removes the temporary files that
writers killed mid-write left over an hour ago.

A rerun reuses a done shard only when its input rows hash the same; a folder whose parameters differ is
refused, unless it holds no shard yet (a run that failed before writing one locks nothing)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ipt_data.config import code_versions
from ipt_data.errors import WorkDirMismatchError
from ipt_data.redact import redact
from ipt_data.run import outputs
from ipt_data.run.lock import check_held

log = logging.getLogger(__name__)
STALE_TMP_SECONDS = 3600.0  # a shard's temporary file this old has no writer left
STATS = ".stats.npz"  # a shard's statistics of its rows
OUT = ".out"  # a shard's published files: `.out-J.parquet`
GENERAL_STATS = ".general.npz"  # the statistics of the general rows a shard took in
GENERAL_REJECTS = ".general-rejects.jsonl"  # the rejected rows of a shard's portion of the general data


class WorkDir:
    """A run's work folder. `WorkDir(path)` only reads and writes shards (what workers do); `WorkDir.open(path,
    config)`, called once by the run, also checks or records the parameters in `run.json`."""

    def __init__(self, path: str, lock_token: str | None = None):
        self.path = Path(path)
        self.lock_token = lock_token  # the run's lock (`ipt_data.run.lock`): shards are written only while it holds
        (self.path / "shards").mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, path: str, config, lock_token: str | None = None) -> WorkDir:
        work = cls(path, lock_token)
        work._check_parameters(config)
        return work

    def remove_stale_temporaries(self, older_than: float = STALE_TMP_SECONDS) -> None:
        """Remove the temporary files of writers killed mid-write (a shard is written in seconds, so one
        untouched for an hour has no writer left, on this host or another sharing the folder)."""
        now = time.time()
        for tmp in (self.path / "shards").glob("*.tmp"):
            try:
                if now - tmp.stat().st_mtime > older_than:
                    tmp.unlink()
                    log.info("removed %s, left by a writer that was stopped mid-write", tmp.name)
            except FileNotFoundError:  # another run's cleanup got there first
                pass

    def _check_parameters(self, config) -> None:
        run = self.path / "run.json"
        fingerprint, values, code = config.fingerprint(), redact(config.shard_values()), code_versions()
        if run.exists() and self.has_shards():
            old = json.loads(run.read_text())
            if old["fingerprint"] != fingerprint:
                changed = _changes(old.get("shard_config", {}), values) + _changes(old.get("code", {}), code)
                raise WorkDirMismatchError(
                    f"{self.path} holds shards made with other parameters "
                    f"({'; '.join(changed) or 'the ipt_data version or its templates changed'}); "
                    "use another --work-dir, or delete that folder to start over"
                )
        else:
            record = {"fingerprint": fingerprint, "shard_config": values, "code": code}
            _atomic_write(run, json.dumps(record, indent=1, default=str))

    def shard(self, k: int, suffix: str) -> Path:
        return self.path / "shards" / f"{k:05d}{suffix}"

    def has_shards(self) -> bool:
        return any((self.path / "shards").glob("*.parquet"))

    def known(self) -> set[int]:
        """The shards a run has written (done or not)."""
        return {int(p.name[:5]) for p in (self.path / "shards").glob("*.parquet")}

    def done(self, k: int, input_hash: str) -> dict | None:
        """Shard `k`'s stats, if it is done and was made from rows with this hash; else None."""
        marker = self.shard(k, ".done.json")
        if not marker.exists():
            return None
        done = json.loads(marker.read_text())
        return done["stats"] if done.get("input_hash") == input_hash else None

    def drop(self, k: int) -> None:
        """Forget shard `k` (its input rows are gone), done marker first."""
        for suffix in (".done.json", ".parquet", ".rejects.jsonl", ".records.jsonl", ".input.jsonl", STATS):
            self.shard(k, suffix).unlink(missing_ok=True)
        self._forget_outputs(k)

    def _remove_outputs(self, k: int, keep: set[str] = frozenset()) -> None:
        for path in (self.path / "shards").glob(f"{k:05d}{OUT}-*.parquet"):
            if path.name[5:] not in keep:
                path.unlink(missing_ok=True)

    def _remove_general(self, k: int) -> None:
        for suffix in (GENERAL_STATS, GENERAL_REJECTS):
            self.shard(k, suffix).unlink(missing_ok=True)

    def _forget_outputs(self, k: int) -> None:
        """Remove shard `k`'s published files and what it kept of the general data."""
        self._remove_outputs(k)
        self._remove_general(k)

    def _write_outputs(self, k: int, made: outputs.Published, keep_columns: tuple[str, ...]) -> dict:
        """Shard `k`'s published files (`ipt_data.run.outputs`), each under a temporary name, then renamed, and with
        general data the statistics of the general rows taken and the rejected ones; the marker's listing of them
        (the layout; each file's suffix, rows, in-memory bytes and content hash)."""
        listed = []
        for j, table in enumerate(made.tables):
            suffix = f"{OUT}-{j}.parquet"
            tmp = self.shard(k, f"{suffix}.{os.getpid()}-{threading.get_ident()}.tmp")
            try:
                rows, nbytes, digest = outputs.write(table, tmp, keep_columns)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, self.shard(k, suffix))
            listed.append(asdict(outputs.OutputFile(suffix, rows, nbytes, digest)))
        self._remove_outputs(k, keep={f["suffix"] for f in listed})  # those of a layout made before
        if made.general_stats is not None:
            _atomic_write(self.shard(k, GENERAL_STATS), made.general_stats.to_bytes())
            _atomic_write(self.shard(k, GENERAL_REJECTS), "".join(json.dumps(r) + "\n" for r in made.general_rejects))
        else:
            self._remove_general(k)
        return {"layout": made.layout, "files": listed}

    def outputs(self, k: int) -> tuple[dict, list[outputs.OutputFile]] | None:
        """Shard `k`'s published files and the layout they were made for, when its done marker lists them."""
        made = json.loads(self.shard(k, ".done.json").read_text()).get("outputs")
        if made is None:
            return None
        return made["layout"], [outputs.OutputFile(**f) for f in made["files"]]

    def remake_outputs(self, k: int, made: outputs.Published | None, keep_columns: tuple[str, ...]) -> None:
        """Write shard `k`'s published files again (for another layout), and its marker with them; `made` None:
        forget them (the run's end mixes the corpus). The marker stops listing the old files before any is
        touched: a kill meanwhile leaves a shard whose files are made again, never a listing that lies."""
        check_held(self.path / "run.lock", self.lock_token, f"shard {k}")
        marker = json.loads(self.shard(k, ".done.json").read_text())
        if marker.pop("outputs", None) is not None:
            _atomic_write(self.shard(k, ".done.json"), json.dumps(marker, sort_keys=True))
        if made is None:
            self._forget_outputs(k)
            return
        marker["outputs"] = self._write_outputs(k, made, keep_columns)
        _atomic_write(self.shard(k, ".done.json"), json.dumps(marker, sort_keys=True))

    def write(
        self,
        k: int,
        table: pa.Table,
        rejects: list[dict],
        stats: dict,
        input_hash: str,
        records: list[dict] = (),
        corpus_stats=None,
        published: outputs.Published | None = None,
        keep_columns: tuple[str, ...] = (),
    ) -> None:
        """Write shard `k` (and the records its stages kept for inspection, when there are any, the statistics
        of its rows, a `CorpusStats`, when given, and its published files, `outputs.Published`, with the kept
        columns, when given), then mark it done."""
        check_held(self.path / "run.lock", self.lock_token, f"shard {k}")
        self.shard(k, ".done.json").unlink(missing_ok=True)  # a redone shard is not done until rewritten
        tmp = self.shard(k, f".parquet.{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
        try:
            pq.write_table(table, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk, Ctrl-C: no half-written file is left
            raise
        os.replace(tmp, self.shard(k, ".parquet"))
        _atomic_write(self.shard(k, ".rejects.jsonl"), "".join(json.dumps(r) + "\n" for r in redact(rejects)))
        if records:
            _atomic_write(self.shard(k, ".records.jsonl"), "".join(_line(r) for r in records))
        else:
            self.shard(k, ".records.jsonl").unlink(missing_ok=True)
        if corpus_stats is not None:
            _atomic_write(self.shard(k, STATS), corpus_stats.to_bytes())
        else:
            self.shard(k, STATS).unlink(missing_ok=True)
        marker = {"input_hash": input_hash, "stats": stats}
        if corpus_stats is not None:  # a marker an older writer left says nothing of it: its file is not trusted
            marker["corpus_stats"] = STATS
        if published is not None:
            marker["outputs"] = self._write_outputs(k, published, keep_columns)
        else:
            self._forget_outputs(k)
        _atomic_write(self.shard(k, ".done.json"), json.dumps(marker, sort_keys=True))

    def corpus_stats_file(self, k: int) -> Path | None:
        """Shard `k`'s statistics of its rows, when its done marker says they were written with it (a shard an
        earlier ipt_data made, or remade, has none of its own: a file left beside it may be another make's)."""
        marker = json.loads(self.shard(k, ".done.json").read_text())
        return self.shard(k, STATS) if marker.get("corpus_stats") == STATS else None

    def shard_files(self, n: int) -> list[str]:
        """The non-empty shard files (a shard whose rows were all rejected holds no rows)."""
        paths = [self.shard(k, ".parquet") for k in range(n)]
        return [str(p) for p in paths if pq.ParquetFile(p).metadata.num_rows]

    def rejects(self, n: int) -> str:
        return "".join(self.shard(k, ".rejects.jsonl").read_text() for k in range(n))

    def records(self, n: int) -> str:
        """The shards' records (pairs the filters dropped, benchmark matches), in shard order."""
        paths = (self.shard(k, ".records.jsonl") for k in range(n))
        return "".join(p.read_text(encoding="utf-8") for p in paths if p.exists())


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def rows_hash(rows: dict[str, list]) -> str:
    """A hash of a shard's input rows (any values, as read)."""
    text = json.dumps(rows, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def shard_tables(path: str) -> list[Path]:
    """The shard files of a work folder, in order (for reading a finished run's texts)."""
    return sorted((Path(path) / "shards").glob("[0-9][0-9][0-9][0-9][0-9].parquet"))


def _changes(before: dict, now: dict) -> list[str]:
    """`name: old -> new` for every value that differs (`templates` is the hash of the template data)."""
    now = {k: _jsonable(now.get(k)) for k in {*before, *now}}
    return [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in sorted(now) if before.get(k) != now[k]]


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
