"""What every sink shares: the shard file names, the card's `dataset_info`, and retries with backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import yaml

log = logging.getLogger(__name__)
MANIFEST = ".ipt_publish.json"
T = TypeVar("T")


class Sink(Protocol):
    """Writes a dataset, its card and extra files to one kind of destination; returns where it went."""

    def publish(
        self,
        dataset,
        *,
        card: str | None,
        extra_files: dict[str, str],
        fingerprint: str,
        overwrite: bool,
        private: bool,
        max_shard_rows: int,
    ) -> str: ...


def shard_name(i: int, n: int) -> str:
    return f"data/train-{i:05d}-of-{n:05d}.parquet"


def n_shards(dataset, max_shard_rows: int) -> int:
    return max(1, -(-len(dataset) // max_shard_rows))


def with_dataset_info(card: str | None, dataset, download_size: int) -> str | None:
    """`card` with a `dataset_info` block (features, split sizes) in its YAML header, as the Hub shows it."""
    if not card or not card.startswith("---\n"):
        return card
    info = {
        "dataset_info": {
            "features": dataset.features._to_yaml_list(),
            "splits": [{"name": "train", "num_bytes": int(dataset.data.nbytes), "num_examples": len(dataset)}],
            "download_size": int(download_size),
            "dataset_size": int(dataset.data.nbytes),
        }
    }
    return "---\n" + yaml.safe_dump(info, sort_keys=False, allow_unicode=True) + card[len("---\n") :]


def with_retries(fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 1.0, what: str = "upload") -> T:
    """`fn()`, retried with exponential backoff on network and server errors (not on client errors)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (OSError, ConnectionError, TimeoutError, RuntimeError) as exc:  # network and server errors
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is not None and status < 500 and status not in (408, 429):
                raise  # a client error (auth, not found, bad request) does not heal by retrying
            if attempt == attempts:
                raise RuntimeError(f"{what} failed after {attempts} attempts: {exc}") from exc
            log.warning("%s failed (attempt %d of %d): %s; retrying", what, attempt, attempts, exc)
            time.sleep(base_delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
