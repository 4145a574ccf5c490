"""The Hub sink: `hf://datasets/<user>/<name>` (or a repo id with `hub=True`).

The parquet shards, the card (`README.md`, with `dataset_info`: features, splits, sizes), the extra files
and the manifest go up, and our stale files go away, in ONE commit: readers never see a mix of old and new
or data without its card. Blobs the server already has are not sent again, so an interrupted push resumes
cheaply. A repo holding a dataset that is not ours (no `.ipt_publish.json`) is refused unless `overwrite`,
which replaces its `data/` files and `README.md` and nothing else. `check` validates the repo id and the
token's right to write before any synthesis. The token comes from `token`, else `HF_TOKEN` or
`huggingface-cli login`.
"""

from __future__ import annotations

import json
import os
import tempfile

from ipt_data.errors import ConfigError, OutputUnwritableError
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

    def _files(self) -> set[str]:
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            return set(self.api.list_repo_files(self.repo_id, repo_type="dataset")) - KEEP
        except RepositoryNotFoundError:
            return set()

    def _ours(self, files: set[str]) -> list[str] | None:
        if MANIFEST not in files:
            return None
        path = self.api.hf_hub_download(self.repo_id, MANIFEST, repo_type="dataset")
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("files", [])

    def check(self, overwrite: bool, private: bool = False) -> None:
        """Fail in seconds, with one clear line, on a malformed repo id, a token that may not write the repo
        (401/403), or a foreign dataset without `overwrite`."""
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError
        from huggingface_hub.utils import validate_repo_id

        where = f"hf://datasets/{self.repo_id}"
        try:
            validate_repo_id(self.repo_id)
            if "/" not in self.repo_id:
                raise HFValidationError("a dataset repo id is <user or org>/<name>")
        except HFValidationError as exc:
            raise ConfigError(f"{where}: not a valid Hub repo id: {exc}") from exc
        try:
            self.api.create_repo(self.repo_id, repo_type="dataset", private=private, exist_ok=True)
            files = self._files()
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            raise OutputUnwritableError(
                f"{where}: the Hub refused ({status}): {str(exc).splitlines()[0]}; check HF_TOKEN "
                "(`huggingface-cli login`) and that it may write to this repo"
            ) from exc
        if self._ours(files) is None and dataset_files(files) and not overwrite:
            raise foreign_refusal(where, dataset_files(files))

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        api, repo_id = self.api, self.repo_id
        files_now = self._files()
        ours = self._ours(files_now)
        old = set(ours) if ours is not None else set(dataset_files(files_now))
        n = n_shards(dataset, max_shard_rows)
        with tempfile.TemporaryDirectory() as tmp:
            shards = write_shards(dataset, n, tmp)
            names = [name for name, _ in shards]
            size = sum(os.path.getsize(local) for _, local in shards)
            operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=local) for name, local in shards]
            files = {**extra_files, **({"README.md": with_dataset_info(card, dataset, size)} if card else {})}
            new = [*names, *files, MANIFEST]
            files[MANIFEST] = manifest(fingerprint, new)
            operations += [CommitOperationAdd(path_in_repo=k, path_or_fileobj=as_bytes(v)) for k, v in files.items()]
            stale = sorted((old & files_now) - set(new))
            operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
            with_retries(
                lambda: api.create_commit(
                    repo_id, operations, repo_type="dataset", commit_message="Upload ipt_data corpus"
                ),
                what=f"push to {repo_id}",
            )
        return f"hf://datasets/{repo_id}"
