"""The Hub sink: `hf://datasets/<user>/<name>` (or a repo id with `hub=True`).

The parquet shards, the card (`README.md`, with `dataset_info`: features, splits, sizes) and the extra
files go up in ONE commit, so readers never see data without its card; blobs the server already has
are not sent again, so an interrupted push resumes cheaply. A repo that holds data which is not ours
(no `.ipt_publish.json`) is refused unless `overwrite`. The token comes from `token`, else `HF_TOKEN`
or `huggingface-cli login`.
"""

from __future__ import annotations

import json
import os
import tempfile

from ipt_data.errors import OutputExistsError
from ipt_data.sinks.base import MANIFEST, n_shards, shard_name, with_dataset_info, with_retries

KEEP = {".gitattributes"}  # files any new repo has


def hub_repo_id(destination: str, hub: bool = False) -> str | None:
    """The repo id if `destination` names a Hub dataset repo, else None."""
    if destination.startswith("hf://"):
        rest = destination[len("hf://") :]
        return rest[len("datasets/") :] if rest.startswith("datasets/") else rest
    return destination if hub else None


class HubSink:
    def __init__(self, repo_id: str, token: str | None = None):
        from huggingface_hub import HfApi

        self.repo_id, self.token = repo_id, token
        self.api = HfApi(token=token)

    def existing_files(self) -> list[str]:
        return self.api.list_repo_files(self.repo_id, repo_type="dataset")

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        api, repo_id = self.api, self.repo_id
        with_retries(
            lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
            what=f"create {repo_id}",
        )
        existing = set(with_retries(self.existing_files, what=f"list {repo_id}")) - KEEP
        if existing and MANIFEST not in existing and not overwrite:
            raise OutputExistsError(
                f"hf://datasets/{repo_id} holds data that ipt_data did not publish ({len(existing)} files); "
                "pass overwrite=True (--overwrite) to replace it"
            )
        n = n_shards(dataset, max_shard_rows)
        names = [shard_name(i, n) for i in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            operations, size = [], 0
            for i, name in enumerate(names):
                local = os.path.join(tmp, f"{i}.parquet")
                dataset.shard(n, i, contiguous=True).to_parquet(local)
                size += os.path.getsize(local)
                operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=local))
            files = {
                **extra_files,
                MANIFEST: json.dumps({"fingerprint": fingerprint, "shards": n}),
                **({"README.md": with_dataset_info(card, dataset, size)} if card else {}),
            }
            operations += [CommitOperationAdd(path_in_repo=k, path_or_fileobj=v.encode()) for k, v in files.items()]
            stale = sorted(p for p in existing if p.startswith("data/") and p not in names)
            operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
            with_retries(
                lambda: api.create_commit(
                    repo_id, operations, repo_type="dataset", commit_message="Upload ipt_data corpus"
                ),
                what=f"push to {repo_id}",
            )
        return f"hf://datasets/{repo_id}"
