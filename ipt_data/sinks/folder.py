"""The folder sink: a local folder or any fsspec URL (`./out`, `s3://bucket/prefix`, `gs://...`).

Writes `data/train-XXXXX-of-NNNNN-<fingerprint>.parquet`, `README.md`, the extra files and the manifest
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
    dataset_files,
    foreign_refusal,
    manifest,
    n_shards,
    shard_name,
    with_dataset_info,
    with_retries,
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

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        fs, root = self.fs, self.root
        ours = self._ours()
        old = set(ours) if ours is not None else set(dataset_files(self._files()))  # a foreign set: overwrite
        n = n_shards(dataset, max_shard_rows)
        names = [shard_name(fingerprint, i, n) for i in range(n)]
        new = [*names, *extra_files, *(["README.md"] if card else []), MANIFEST]
        fs.makedirs(f"{root}/data", exist_ok=True)
        # first claim every file this publish may leave behind, so an interrupted publish resumes as ours
        pending = manifest(fingerprint, sorted(old | set(new)))
        with_retries(lambda: fs.pipe_file(f"{root}/{MANIFEST}", pending.encode()), what=MANIFEST)
        size = 0
        with tempfile.TemporaryDirectory() as tmp:
            for i, name in enumerate(names):
                path = f"{root}/{name}"
                if fs.exists(path):  # the same data, finished before an interruption
                    size += fs.size(path)
                    continue
                local = os.path.join(tmp, f"{i}.parquet")
                dataset.shard(n, i, contiguous=True).to_parquet(local)
                size += os.path.getsize(local)

                def put(local=local, path=path):
                    fs.put_file(local, path + ".partial")
                    fs.mv(path + ".partial", path)

                with_retries(put, what=f"writing {path}")
        files = {**extra_files, **({"README.md": with_dataset_info(card, dataset, size)} if card else {})}
        for name, text in files.items():
            with_retries(lambda name=name, text=text: fs.pipe_file(f"{root}/{name}", text.encode()), what=name)
        with_retries(lambda: fs.pipe_file(f"{root}/{MANIFEST}", manifest(fingerprint, new).encode()), what=MANIFEST)
        for stale in sorted(old - set(new)):
            if fs.exists(f"{root}/{stale}"):
                fs.rm(f"{root}/{stale}")
        return self.destination
