"""`publish(dataset, destination)`: parquet shards, a dataset card and extra files, to a folder, any fsspec
URL, or the Hub.

Sinks sit behind one protocol (`Sink.publish`) with a registry, as engines do: `register_sink(name,
matches, build)` adds one; the first registered sink whose `matches(destination)` is true takes the
destination (the Hub for `hf://...`, else the fsspec folder sink, which takes anything).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ipt_data.registry import Registry
from ipt_data.sinks.base import Sink, with_retries
from ipt_data.sinks.hub import hub_repo_id

__all__ = [
    "Sink",
    "available_sinks",
    "hub_repo_id",
    "publish",
    "register_sink",
    "sink_for",
    "unregister_sink",
    "with_retries",
]

log = logging.getLogger(__name__)


def _hub(destination: str, token: str | None = None, **_: Any) -> Sink:
    from ipt_data.sinks.hub import HubSink

    return HubSink(hub_repo_id(destination, hub=True), token=token)


def _folder(destination: str, storage_options: dict | None = None, **_: Any) -> Sink:
    from ipt_data.sinks.folder import FolderSink

    return FolderSink(destination, storage_options)


SINKS: Registry[tuple[Callable[[str], bool], Callable[..., Sink]]] = Registry(
    "sink", {"hub": (lambda d: d.startswith("hf://"), _hub), "folder": (lambda d: True, _folder)}
)


def register_sink(name: str, matches: Callable[[str], bool], build: Callable[..., Sink]) -> None:
    """Make destinations for which `matches(destination)` is true go to `build(destination, **options)`
    (tried before the sinks registered earlier and the built-in ones)."""
    SINKS.register(name, (matches, build))


def unregister_sink(name: str) -> None:
    """Forget the sink `name`."""
    SINKS.unregister(name)


def available_sinks() -> list[str]:
    return SINKS.names()


def sink_for(destination: str, *, hub: bool = False, **options: Any) -> Sink:
    """The sink that takes `destination` (`hub=True`: a bare repo id names a Hub dataset)."""
    if hub:
        return _hub(destination, **options)
    for _, (matches, build) in SINKS:
        if matches(destination):
            return build(destination, **options)
    raise AssertionError("the folder sink takes every destination")


def publish(
    dataset,
    destination: str,
    *,
    card: str | None = None,
    fingerprint: str | None = None,
    overwrite: bool = False,
    private: bool = False,
    token: str | None = None,
    hub: bool = False,
    max_shard_rows: int = 250_000,
    extra_files: dict[str, str | bytes] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write `dataset` (+ `card` as README.md, + `extra_files` name -> text or bytes) to `destination`; returns it."""
    sink = sink_for(destination, hub=hub, token=token, storage_options=storage_options)
    with_retries(lambda: sink.check(overwrite, private), what=f"checking {destination}")
    return sink.publish(
        dataset,
        card=card,
        extra_files=extra_files or {},
        fingerprint=fingerprint or getattr(dataset, "_fingerprint", ""),
        overwrite=overwrite,
        private=private,
        max_shard_rows=max_shard_rows,
    )


def send_ahead(destination: str, files: list[tuple[str, str]]) -> bool:
    """Hand data files (`(name, local path)`) to `destination`'s sink ahead of `publish`, where it takes them
    early (the Hub: their content is sent now, from the worker that wrote them, and the publish's one commit only
    names it). Best effort: a failure is logged and `publish` sends the content itself. Whether it was taken."""
    sink = sink_for(destination)
    if not hasattr(sink, "send_ahead"):
        return False
    try:
        sink.send_ahead(files)
    except Exception as exc:  # noqa: BLE001 - the publish sends them anyway
        log.warning("could not send data files to %s ahead of publishing (%s); publishing will", destination, exc)
        return False
    return True
