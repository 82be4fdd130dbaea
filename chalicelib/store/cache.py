"""Cache port: small JSON documents kept in the job database, each with the time it was stored.

The catalog keeps A1111's lists here (served, marked stale, while A1111 is unreachable) and
Civitai's answers (found and not found). An entry knows only when it was stored: whether it is still
fresh is the reader's decision, so each use can have its own TTL. `make_cache()` in
`chalicelib.store` picks the backend that matches the job store.
"""
from __future__ import annotations

import typing


class CacheEntry(typing.NamedTuple):
    value: typing.Any
    stored_at: float  # epoch seconds

    def age(self, *, now: float) -> float:
        return max(0.0, now - self.stored_at)


class Cache(typing.Protocol):
    def get(self, namespace: str, key: str) -> CacheEntry | None:
        """The entry, or None if nothing was stored under (namespace, key)."""

    def get_many(self, namespace: str, keys: typing.Sequence[str]) -> dict[str, CacheEntry]:
        """The entries that exist among `keys`, by key."""

    def put(self, namespace: str, key: str, value: typing.Any, *, now: float) -> None:
        """Store `value` (JSON-serialisable) unless a newer entry is already there: a slow writer
        that finishes late never replaces what a later one stored."""
