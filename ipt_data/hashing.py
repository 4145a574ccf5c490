"""Stable hashes: seeded per-row decisions without RNG state, and ids for rows that carry none."""

from __future__ import annotations

import hashlib
from typing import Any


def unit_interval(key: str) -> float:
    """A number in [0, 1) fixed by `key`: seeded per-row decisions that need no RNG state."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def content_id(text: Any) -> str:
    """A stable 16-hex-digit id of a value's text, for rows that carry no id of their own."""
    return hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
