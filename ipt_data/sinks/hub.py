"""The Hub sink: `hf://datasets/<user>/<name>` (or a repo id with `hub=True`).

The parquet shards, the card (`README.md`, with `dataset_info`: features, splits, sizes), the extra files
and the manifest go up, and our stale files go away, in ONE commit (a run's workers send their data files'
content ahead of it, `send_ahead`, so the commit itself sends no data): readers never see a mix of old and new
or data without its card. Blobs the server already has are not sent again, so an interrupted push resumes
cheaply. A repo holding a dataset that is not ours (no `.ipt_publish.json`) is refused unless `overwrite`,
which replaces its `data/` files and `README.md` and nothing else. `check` validates the repo id and the
token's right to write before any synthesis. `private` makes a new repo private; an existing repo keeps its
visibility (never changed here), so `private` for a public one is refused, or with `overwrite` published
public with a warning. A push that fails leaves the repo as it was, in one line. The token comes from
`token`, else `HF_TOKEN` or `huggingface-cli login`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

from ipt_data.errors import ConfigError
from ipt_data.notices import NOTICE
from ipt_data.sinks.base import (
    MANIFEST,
    as_bytes,
    data_files,
    dataset_files,
    foreign_refusal,
    manifest,
    with_dataset_info,
    with_retries,
)

log = logging.getLogger(__name__)
KEEP = {".gitattributes"}  # files any new repo has
# a push is one commit: when it fails the repo is as it was, and the blobs sent are kept by the Hub
RERUN = (
    "the repo is unchanged: run the same command again to publish (a run's shards are kept in its work folder: "
    "nothing is synthesized again; files the Hub has already are not sent again)"
)


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
        (401/403), a Hub that cannot be reached (offline mode; network errors are retried first), a foreign
        dataset without `overwrite`, or `private` asked of a public repo (creating a repo makes it private; an
        existing one keeps its visibility): refused, or with `overwrite` published public with a warning."""
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        where = f"hf://datasets/{self.repo_id}"
        try:
            validate_repo_id(self.repo_id)
            if "/" not in self.repo_id:
                raise HFValidationError("a dataset repo id is <user or org>/<name>")
        except HFValidationError as exc:
            raise ConfigError(f"{where}: not a valid Hub repo id: {exc}") from exc

        def look() -> tuple[set[str], list[str] | None, bool | None]:
            self.api.create_repo(self.repo_id, repo_type="dataset", private=private, exist_ok=True)
            files = self._files()
            info = self.api.repo_info(self.repo_id, repo_type="dataset")
            return files, self._ours(files), info.private

        files, ours, is_private = with_retries(look, what=f"checking {where}")
        if ours is None and dataset_files(files) and not overwrite:
            raise foreign_refusal(where, dataset_files(files))
        if private and is_private is False:
            if not overwrite:
                raise ConfigError(
                    f"{where} is a public repo and --private does not change an existing repo's visibility; make "
                    "it private in its settings on the Hub first, pass --overwrite to publish to it as it is "
                    "(public), or choose another output"
                )
            log.warning(
                "%s is public and stays public: --private does not change an existing repo's visibility",
                where,
                extra=NOTICE,
            )

    def send_ahead(self, files: list[tuple[str, str]]) -> None:
        """Send the content of data files ahead of the commit (`(name, local path)`): a run's workers each send
        their shard's files as they finish it, so the run's one commit only names blobs the Hub has (it sends
        none again). Nothing shows in the repo until that commit."""
        from huggingface_hub import CommitOperationAdd

        additions = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=local) for name, local in files]
        with_retries(
            lambda: self.api.preupload_lfs_files(self.repo_id, additions=additions, repo_type="dataset"),
            what=f"sending data files to hf://datasets/{self.repo_id}",
        )

    def publish(self, dataset, *, card, extra_files, fingerprint, overwrite, private, max_shard_rows) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        api, repo_id = self.api, self.repo_id
        where = f"hf://datasets/{repo_id}"
        files_now = with_retries(self._files, what=f"listing {where}", then=RERUN)
        ours = with_retries(lambda: self._ours(files_now), what=f"reading {where}/{MANIFEST}", then=RERUN)
        old = set(ours) if ours is not None else set(dataset_files(files_now))
        with tempfile.TemporaryDirectory() as tmp:
            data = data_files(dataset, max_shard_rows, tmp)
            shards = data.files
            names = [name for name, _ in shards]
            size = sum(os.path.getsize(local) for _, local in shards)
            operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=local) for name, local in shards]
            files = {**extra_files, **({"README.md": with_dataset_info(card, data, size)} if card else {})}
            new = [*names, *files, MANIFEST]
            files[MANIFEST] = manifest(fingerprint, new)
            operations += [CommitOperationAdd(path_in_repo=k, path_or_fileobj=as_bytes(v)) for k, v in files.items()]
            stale = sorted((old & files_now) - set(new))
            operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
            with_retries(
                lambda: api.create_commit(
                    repo_id, operations, repo_type="dataset", commit_message="Upload ipt_data corpus"
                ),
                what=f"pushing to {where}",
                then=RERUN,
            )
        return f"hf://datasets/{repo_id}"
