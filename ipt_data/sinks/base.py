"""What every sink shares: the shard file names, the card's `dataset_info`, and retries with backoff."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import yaml

from ipt_data.errors import (
    DestinationUnavailableError,
    DiskFullError,
    IptDataError,
    OutputExistsError,
    OutputUnwritableError,
    storage_error,
)

log = logging.getLogger(__name__)
MANIFEST = ".ipt_publish.json"
T = TypeVar("T")


class Sink(Protocol):
    """Writes a dataset, its card and extra files to one kind of destination; returns where it went.

    `check(overwrite, private)` runs before any synthesis (and `publish()` runs it again before
    `Sink.publish`): it raises if the destination cannot be written, or holds a dataset that is not ours
    and `overwrite` is off. `publish` is a transaction over the files we own (listed in the destination's
    manifest): afterwards the destination holds exactly the new dataset, our stale files are gone, and
    files we never wrote are untouched (with `overwrite`, a foreign dataset's own files, `data/` and
    `README.md`, are replaced too).
    """

    def check(self, overwrite: bool, private: bool = False) -> None: ...

    def publish(
        self,
        dataset,  # a `datasets.Dataset`, or `DataFiles` written already (a run's shards' own files)
        *,
        card: str | None,
        extra_files: dict[str, str | bytes],
        fingerprint: str,
        overwrite: bool,
        private: bool,
        max_shard_rows: int,
    ) -> str: ...


def shard_name(i: int, n: int, local_file: str, digest: str | None = None) -> str:
    """A data file's name; it carries a hash of the file's bytes (`digest`, the sha256 in hex, computed when not
    given), so a new dataset never overwrites the files of the one readers may be reading (new names are written
    first, old ones removed after), and a file of that name already there is the same data (an interrupted
    publish resumes without sending it again). The suffix keeps the `train-XXXXX-of-NNNNN` form from which
    `datasets` infers the split."""
    return f"data/train-{i:05d}-of-{n:05d}-{(digest or file_sha256(local_file))[:12]}.parquet"


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, in hex, read a block at a time."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


@dataclass
class DataFiles:
    """A dataset as parquet files written already (by the workers of a run, say), to publish as they are:
    `(name at the destination, local path)` of each, and what the card's `dataset_info` says of them."""

    files: list[tuple[str, str]]
    features: Any
    num_rows: int
    nbytes: int  # in memory, as `Dataset.data.nbytes`

    def __len__(self) -> int:
        return self.num_rows


def data_files(data, max_shard_rows: int, folder: str) -> DataFiles:
    """`data` as `DataFiles`: a `Dataset` written into `folder` (`write_shards`), or `DataFiles` as they are."""
    if isinstance(data, DataFiles):
        return data
    files = write_shards(data, n_shards(data, max_shard_rows), folder)
    return DataFiles(files, data.features, len(data), int(data.data.nbytes))


def write_shards(dataset, n: int, folder: str) -> list[tuple[str, str]]:
    """`(name, local path)` of each of the `n` parquet files of `dataset`, written under `folder` (a temporary
    folder, removed by the caller). A full or read-only disk there is one line naming the folder and TMPDIR."""
    out = []
    for i in range(n):
        local = os.path.join(folder, f"{i}.parquet")
        try:
            dataset.shard(n, i, contiguous=True).to_parquet(local)
        except OSError as exc:
            final = storage_error(exc)
            if final is None:
                raise
            raise type(final)(
                f"cannot write the data files to publish into the temporary folder {folder}: "
                f"{exc.strerror or exc}; free space there or set TMPDIR to a folder on a disk with room, then run "
                "the same command again (a run's shards are kept: nothing is synthesized again)"
            ) from exc
        out.append((shard_name(i, n, local), local))
    return out


OWN_FILES = ("README.md", "run_report.json", "rejects.jsonl", "stats.json")  # besides data/ and images/
OWN_FOLDERS = ("data/", "images/")


def dataset_files(files) -> list[str]:
    """The files that make up a dataset found at a destination (what `--overwrite` may replace): `data/`,
    `images/`, and the top-level files a publish of ours would write over."""
    return sorted(f for f in files if f.startswith(OWN_FOLDERS) or f in OWN_FILES)


def as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content


def manifest(fingerprint: str, files: list[str]) -> str:
    return json.dumps({"fingerprint": fingerprint, "files": sorted(files)}, indent=1)


def foreign_refusal(where: str, files: list[str]) -> OutputExistsError:
    shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    return OutputExistsError(
        f"{where} holds a dataset ipt_data did not publish ({shown}); pass --overwrite to replace its data/ "
        f"and images/ files and {', '.join(OWN_FILES)} (nothing else there is touched), or choose another output"
    )


def n_shards(dataset, max_shard_rows: int) -> int:
    return max(1, -(-len(dataset) // max_shard_rows))


def with_dataset_info(card: str | None, data: DataFiles, download_size: int) -> str | None:
    """`card` with a `dataset_info` block (features, split sizes) in its YAML header, as the Hub shows it."""
    if not card or not card.startswith("---\n"):
        return card
    info = {
        "dataset_info": {
            "features": data.features._to_yaml_list(),
            "splits": [{"name": "train", "num_bytes": data.nbytes, "num_examples": data.num_rows}],
            "download_size": int(download_size),
            "dataset_size": data.nbytes,
        }
    }
    return "---\n" + yaml.safe_dump(info, sort_keys=False, allow_unicode=True) + card[len("---\n") :]


def _first_line(exc: BaseException) -> str:
    """What the server said (a Hub error's message), else the exception's first line."""
    said = (getattr(exc, "server_message", None) or "").strip()
    return said.splitlines()[0] if said else (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _network_error(exc: BaseException) -> bool:
    """A failure that may heal by itself: the network, a timeout, a server error (httpx's transport errors
    are not `OSError`s; `huggingface_hub` raises them)."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError, RuntimeError)):
        return True
    transports = (getattr(sys.modules.get(name), "TransportError", None) for name in ("httpx2", "httpx"))
    return any(isinstance(t, type) and isinstance(exc, t) for t in transports)


def lasting_error(exc: BaseException, what: str) -> IptDataError | None:
    """The one-line error for a failure that retrying cannot heal, or None (it may heal, or it is a bug): a full
    or read-only disk (`storage_error`), offline mode, a request the server refuses (a 4xx: 401/403 are a
    token's rights)."""
    if isinstance(exc, IptDataError):
        return exc
    if isinstance(exc, OSError) and exc.filename2:  # a copy: the disk that failed is the destination's
        exc = OSError(exc.errno, exc.strerror, exc.filename2)
    if isinstance(exc, OSError) and (final := storage_error(exc)) is not None:
        return type(final)(f"{what}: {final}")
    if type(exc).__name__ == "OfflineModeIsEnabled":  # huggingface_hub's, raised before any request
        return DestinationUnavailableError(
            f"{what}: HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it to publish there, or choose "
            "a local --output"
        )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return OutputUnwritableError(
            f"{what}: the Hub refused ({status}): {_first_line(exc)}; check HF_TOKEN (`huggingface-cli login`) "
            "and that it may write there"
        )
    if status is not None and status < 500 and status not in (408, 429):
        return DestinationUnavailableError(f"{what}: refused ({status}): {_first_line(exc)}")
    return None


def with_retries(
    fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 1.0, what: str = "upload", then: str = ""
) -> T:
    """`fn()`, retried with exponential backoff on network and server errors. What cannot heal fails at once
    as one line (`lasting_error`: a full or read-only disk, offline mode, a client error); a failure still
    there after the last attempt is a `DestinationUnavailableError`. `then` (what the user may do next) ends
    every message but a full disk's, which says it already."""

    def final(error: IptDataError) -> IptDataError:
        if then and not isinstance(error, DiskFullError):
            error.args = (f"{error}; {then}",)
        return error

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except IptDataError:  # a refusal of ours (not ours to replace, not allowed) does not heal either
            raise
        except Exception as exc:
            lasting = lasting_error(exc, what)
            if lasting is not None:
                raise final(lasting) from exc
            if not _network_error(exc):
                raise  # a bug: its traceback
            if attempt == attempts:
                raise final(
                    DestinationUnavailableError(f"{what} failed after {attempts} attempts: {_first_line(exc)}")
                ) from exc
            log.warning("%s failed (attempt %d of %d): %s; retrying", what, attempt, attempts, exc)
            time.sleep(base_delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
