"""`Registry`: named builders of one kind, in one shape for the engines (`register_engine`), the executors
(`register_executor`) and the sinks (`register_sink`): register, unregister, list, look up. A name registered
later is tried first where order matters (sinks) and replaces one of the same name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from ipt_data.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, built_in: dict[str, T]):
        self.kind = kind
        self._entries: dict[str, T] = dict(built_in)

    def register(self, name: str, entry: T) -> None:
        """Add `entry` under `name` (replacing one of that name), before the others."""
        self._entries.pop(name, None)
        self._entries = {name: entry, **self._entries}

    def unregister(self, name: str) -> None:
        """Forget `name` (nothing happens when it is not registered)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        """`(name, entry)`, the latest registered first."""
        return iter(list(self._entries.items()))

    def get(self, name: str, also: tuple[str, ...] = ()) -> T:
        """The entry `name`, or a `ConfigError` listing the names known (and `also`, names resolved elsewhere)."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {[*also, *self.names()]}")
        return self._entries[name]
