"""The folder sink: a local folder or any fsspec URL (`./out`, `s3://bucket/prefix`, `gs://...`).

Writes `data/train-XXXXX-of-NNNNN-<hash of the file>.parquet`, `README.md`, the extra files and the manifest
(`.ipt_publish.json`: every file we wrote; written first with the files this publish may leave, then with
exactly the new ones). New data files get new names and are written (each under a temporary name, then
renamed) before the old ones are removed, so readers never see a mix once `publish` returns; an interrupted
publish of the same data resumes, uploading only the missing files.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ipt_data.errors import IptDataError
from ipt_data.sinks.base import (
    MANIFEST,
    as_bytes,
    data_files,
    dataset_files,
    foreign_refusal,
    lasting_error,
    manifest,
    with_dataset_info,
    with_retries,
)

# what a failed publish leaves: the manifest already claims every file this publish may leave, so a rerun
# finishes it (files sent already are not sent again)
RERUN = (
    "the output is left as ours and resumable: run the same command again to finish publishing (a run's shards "
    "are kept in its work folder: nothing is synthesized again)"
)


class FolderSink:
    def __init__(self, destination: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.destination = destination
        self.fs, root = fsspec.core.url_to_fs(destination, **(storage_options or {}))
        self.root = root.rstrip("/")

    def _files(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(self.root))

    def _ours(self) -> list[str] | None:
        """The files our last publish wrote here, or None when the destination holds no manifest."""
        path = f"{self.root}/{MANIFEST}"
        return json.loads(self.fs.cat_file(path)).get("files", []) if self.fs.exists(path) else None

    def check(self, overwrite: bool, private: bool = False) -> None:
        """Refuses a foreign dataset without `overwrite`, and a destination that cannot be written, in seconds,
        with one line (read-only, not permitted, full: `lasting_error`)."""
        try:
            self._check(overwrite)
        except IptDataError:
            raise
        except OSError as exc:
            lasting = lasting_error(exc, f"checking that {self.destination} can be written")
            if lasting is None:
                raise
            raise lasting from exc

    def _check(self, overwrite: bool) -> None:
        ours, foreign = self._ours(), dataset_files(self._files())
        if ours is None and foreign and not overwrite:
            raise foreign_refusal(self.destination, foreign)
        probe, existed = f"{self.root}/.ipt-write-test", self.fs.exists(self.root)
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(probe, b"")  # fails here, in seconds, if the destination is not writable
        self.fs.rm(probe)
        # leave no trace before there is anything to publish (unless another run put its lock there meanwhile)
        if not existed and self.fs.exists(self.root) and not self.fs.ls(self.root, detail=False):
            self.fs.rm(self.root, recursive=True)

    def _discard(self, path: str) -> None:
        """Remove a temporary file of ours that a failed write left (best effort: the failure is what counts)."""
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except Exception:  # noqa: BLE001 - the write's own error is raised
            pass

    def _write_text(self, name: str, text: str | bytes) -> None:
        """A small file, atomically: a reader sees the old or the new one, never half of it."""
        tmp = f"{self.root}/.ipt-tmp-{name.replace('/', '_')}"
        if "/" in name:
            self.fs.makedirs(f"{self.root}/{name.rsplit('/', 1)[0]}", exist_ok=True)
        what = f"writing {self.root}/{name}"
        try:
            with_retries(lambda: self.fs.pipe_file(tmp, as_bytes(text)), what=what, then=RERUN)
            with_retries(lambda: self.fs.mv(tmp, f"{self.root}/{name}"), what=what, then=RERUN)
        except BaseException:
            self._discard(tmp)  # a full disk, Ctrl-C: no half-written file is left
            raise

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        fs, root = self.fs, self.root
        ours = self._ours()
        old = set(ours) if ours is not None else set(dataset_files(self._files()))  # a foreign set: overwrite
        with tempfile.TemporaryDirectory() as tmp:
            data = data_files(dataset, max_shard_rows, tmp)
            shards = data.files
            names = [name for name, _ in shards]
            new = [*names, *extra_files, *(["README.md"] if card else []), MANIFEST]
            fs.makedirs(f"{root}/data", exist_ok=True)
            # claim every file this publish may leave behind first, so an interrupted publish resumes as ours
            self._write_text(MANIFEST, manifest(fingerprint, sorted(old | set(new))))
            for i, (name, local) in enumerate(shards):
                path = f"{root}/{name}"
                if fs.exists(path):  # the same bytes (the name holds their hash): sent before an interruption
                    continue
                partial = f"{root}/.ipt-upload-{i}.partial"  # outside data/: never read as data

                def put(local=local, path=path, partial=partial):
                    try:
                        fs.put_file(local, partial)
                        fs.mv(partial, path)
                    except BaseException:
                        self._discard(partial)  # a full disk, Ctrl-C: no half-written file is left
                        raise

                with_retries(put, what=f"writing {path}", then=RERUN)
            size = sum(os.path.getsize(local) for _, local in shards)
        files = {**extra_files, **({"README.md": with_dataset_info(card, data, size)} if card else {})}
        for name, text in files.items():
            self._write_text(name, text)
        for stale in sorted(old - set(new)):  # while the manifest still claims them, so a retry finishes this
            if fs.exists(f"{root}/{stale}"):
                with_retries(lambda stale=stale: fs.rm(f"{root}/{stale}"), what=f"removing {stale}", then=RERUN)
        self._write_text(MANIFEST, manifest(fingerprint, new))
        return self.destination
