"""The folder sink: a local folder or any fsspec URL (`./out`, `s3://bucket/prefix`, `gs://...`).

Writes `data/train-XXXXX-of-NNNNN.parquet`, `README.md` and the extra files. Each shard is written under
a temporary name and renamed when complete, so after an interruption a rerun with the same fingerprint
uploads only the missing shards. A destination that holds anything else is refused unless `overwrite`.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ipt_data.errors import OutputExistsError
from ipt_data.sinks.base import MANIFEST, n_shards, shard_name, with_dataset_info, with_retries


class FolderSink:
    def __init__(self, destination: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.destination = destination
        self.fs, root = fsspec.core.url_to_fs(destination, **(storage_options or {}))
        self.root = root.rstrip("/")

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        fs, root = self.fs, self.root
        manifest_path = f"{root}/{MANIFEST}"
        if fs.exists(root) and fs.ls(root):
            ours = fs.exists(manifest_path) and json.loads(fs.cat_file(manifest_path)).get("fingerprint") == fingerprint
            if not ours:
                if not overwrite:
                    raise OutputExistsError(
                        f"{self.destination} is not empty and holds no unfinished upload of this data; "
                        "pass overwrite=True (--overwrite) to replace it"
                    )
                fs.rm(root, recursive=True)
        fs.makedirs(f"{root}/data", exist_ok=True)
        n = n_shards(dataset, max_shard_rows)
        fs.pipe_file(manifest_path, json.dumps({"fingerprint": fingerprint, "shards": n}).encode())
        size = 0
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                path = f"{root}/{shard_name(i, n)}"
                if fs.exists(path):  # finished before an interruption
                    size += fs.size(path)
                    continue
                local = os.path.join(tmp, f"{i}.parquet")
                dataset.shard(n, i, contiguous=True).to_parquet(local)
                size += os.path.getsize(local)

                def put(local=local, path=path):
                    fs.put_file(local, path + ".partial")
                    fs.mv(path + ".partial", path)

                with_retries(put, what=f"writing {path}")
        card = with_dataset_info(card, dataset, size)
        for name, text in {**extra_files, **({"README.md": card} if card else {})}.items():
            with_retries(lambda name=name, text=text: fs.pipe_file(f"{root}/{name}", text.encode()), what=name)
        return self.destination
