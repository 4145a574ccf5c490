"""`publish`: write a dataset as parquet shards plus a dataset card to a folder, any fsspec URL, or the Hub.

- Folder / fsspec URL (`./out`, `s3://bucket/prefix`, ...): `data/train-XXXXX-of-NNNNN.parquet` and
  `README.md`. Each shard is written under a temporary name and renamed when complete, so after an
  interruption a rerun with the same `fingerprint` uploads only the missing shards. A destination that
  holds anything else is refused unless `overwrite=True`.
- Hub (`hf://datasets/<user>/<name>`, or a repo id with `hub=True`): `Dataset.push_to_hub` (sharded;
  blobs the server already has are not sent again), then the card as `README.md`. The token comes
  from `token`, else `HF_TOKEN` or `huggingface-cli login`.
Transient failures are retried with exponential backoff.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

from datasets import Dataset

MANIFEST = ".ipt_publish.json"
T = TypeVar("T")


def with_retries(fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 1.0, what: str = "upload") -> T:
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (OSError, ConnectionError, TimeoutError, RuntimeError) as exc:  # network and server errors
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is not None and status < 500 and status not in (408, 429):
                raise  # a client error (auth, not found, bad request) does not heal by retrying
            if attempt == attempts:
                raise RuntimeError(f"{what} failed after {attempts} attempts: {exc}") from exc
            time.sleep(base_delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def hub_repo_id(destination: str, hub: bool = False) -> str | None:
    """The repo id if `destination` names a Hub dataset repo, else None."""
    if destination.startswith("hf://"):
        rest = destination[len("hf://") :]
        return rest[len("datasets/") :] if rest.startswith("datasets/") else rest
    return destination if hub else None


def publish(
    dataset: Dataset,
    destination: str,
    *,
    card: str | None = None,
    fingerprint: str | None = None,
    overwrite: bool = False,
    private: bool = False,
    token: str | None = None,
    hub: bool = False,
    max_shard_rows: int = 250_000,
    extra_files: dict[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write `dataset` (+ `card` as README.md, + `extra_files` name -> text) to `destination`."""
    repo_id = hub_repo_id(destination, hub)
    if repo_id:
        return _publish_hub(
            dataset,
            repo_id,
            card=card,
            private=private,
            token=token,
            max_shard_rows=max_shard_rows,
            extra_files=extra_files or {},
        )
    return _publish_fs(
        dataset,
        destination,
        card=card,
        fingerprint=fingerprint or dataset._fingerprint,
        overwrite=overwrite,
        max_shard_rows=max_shard_rows,
        extra_files=extra_files or {},
        storage_options=storage_options or {},
    )


def _publish_fs(
    dataset, destination, *, card, fingerprint, overwrite, max_shard_rows, extra_files, storage_options
) -> str:
    import fsspec

    fs, root = fsspec.core.url_to_fs(destination, **storage_options)
    root = root.rstrip("/")
    manifest_path = f"{root}/{MANIFEST}"
    if fs.exists(root) and fs.ls(root):
        ours = fs.exists(manifest_path) and json.loads(fs.cat_file(manifest_path)).get("fingerprint") == fingerprint
        if not ours:
            if not overwrite:
                raise FileExistsError(
                    f"{destination} is not empty and holds no unfinished upload of this data; "
                    "pass overwrite=True (--overwrite) to replace it"
                )
            fs.rm(root, recursive=True)
    fs.makedirs(f"{root}/data", exist_ok=True)
    n = max(1, math.ceil(len(dataset) / max_shard_rows))
    fs.pipe_file(manifest_path, json.dumps({"fingerprint": fingerprint, "shards": n}).encode())
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = f"{root}/data/train-{i:05d}-of-{n:05d}.parquet"
            if fs.exists(path):
                continue  # finished before an interruption
            local = os.path.join(tmp, f"{i}.parquet")
            dataset.shard(n, i, contiguous=True).to_parquet(local)

            def put(local=local, path=path):
                fs.put_file(local, path + ".partial")
                fs.mv(path + ".partial", path)

            with_retries(put, what=f"writing {path}")
    for name, text in {**extra_files, **({"README.md": card} if card else {})}.items():
        with_retries(lambda name=name, text=text: fs.pipe_file(f"{root}/{name}", text.encode()), what=name)
    return destination


def _publish_hub(dataset, repo_id, *, card, private, token, max_shard_rows, extra_files) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    n = max(1, math.ceil(len(dataset) / max_shard_rows))
    with_retries(
        lambda: dataset.push_to_hub(
            repo_id, private=private, token=token, num_shards=n, commit_message="Upload ipt_data corpus"
        ),
        what=f"push to {repo_id}",
    )
    for name, text in {**extra_files, **({"README.md": card} if card else {})}.items():
        with_retries(
            lambda name=name, text=text: api.upload_file(
                path_or_fileobj=text.encode(),
                path_in_repo=name,
                repo_id=repo_id,
                repo_type="dataset",
                commit_message=f"Add {name}",
            ),
            what=f"upload {name}",
        )
    return f"hf://datasets/{repo_id}"
