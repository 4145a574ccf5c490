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

from ipt_data.sinks.base import (
    MANIFEST,
    as_bytes,
    dataset_files,
    foreign_refusal,
    manifest,
    n_shards,
    with_dataset_info,
    with_retries,
    write_shards,
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
        ours, foreign = self._ours(), dataset_files(self._files())
        if ours is None and foreign and not overwrite:
            raise foreign_refusal(self.destination, foreign)
        probe, existed = f"{self.root}/.ipt-write-test", self.fs.exists(self.root)
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(probe, b"")  # fails here, in seconds, if the destination is not writable
        self.fs.rm(probe)
        if not existed and self.fs.exists(self.root):  # leave no trace before there is anything to publish
            self.fs.rm(self.root, recursive=True)

    def _write_text(self, name: str, text: str | bytes) -> None:
        """A small file, atomically: a reader sees the old or the new one, never half of it."""
        tmp = f"{self.root}/.ipt-tmp-{name.replace('/', '_')}"
        if "/" in name:
            self.fs.makedirs(f"{self.root}/{name.rsplit('/', 1)[0]}", exist_ok=True)
        with_retries(lambda: self.fs.pipe_file(tmp, as_bytes(text)), what=name)
        with_retries(lambda: self.fs.mv(tmp, f"{self.root}/{name}"), what=name)

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        fs, root = self.fs, self.root
        ours = self._ours()
        old = set(ours) if ours is not None else set(dataset_files(self._files()))  # a foreign set: overwrite
        n = n_shards(dataset, max_shard_rows)
        with tempfile.TemporaryDirectory() as tmp:
            shards = write_shards(dataset, n, tmp)
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
                    fs.put_file(local, partial)
                    fs.mv(partial, path)

                with_retries(put, what=f"writing {path}")
            size = sum(os.path.getsize(local) for _, local in shards)
        files = {**extra_files, **({"README.md": with_dataset_info(card, dataset, size)} if card else {})}
        for name, text in files.items():
            self._write_text(name, text)
        for stale in sorted(old - set(new)):  # while the manifest still claims them, so a retry finishes this
            if fs.exists(f"{root}/{stale}"):
                with_retries(lambda stale=stale: fs.rm(f"{root}/{stale}"), what=f"removing {stale}")
        self._write_text(MANIFEST, manifest(fingerprint, new))
        return self.destination
