"""Cache port: small JSON documents kept in the job database, each with the time it was stored.

The catalog keeps A1111's lists here (served, marked stale, while A1111 is unreachable) and
Civitai's answers (found and not found). An entry knows only when it was stored: whether it is still
fresh is the reader's decision, so each use can have its own TTL. `make_cache()` in
`chalicelib.store` puts it on the job store's database.
"""
from __future__ import annotations

import typing

from chalicelib.store import database as database_module

UPSERT = """
INSERT INTO cache_entries (namespace, key, value, stored_at) VALUES (:namespace, :key, :value, :stored_at)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at
WHERE excluded.stored_at >= cache_entries.stored_at
"""
SELECT_ONE = "SELECT key, value, stored_at FROM cache_entries WHERE namespace = :namespace AND key = :key"
SELECT_MANY = {  # the keys bound as one list parameter (database.array)
    "sqlite": "SELECT key, value, stored_at FROM cache_entries WHERE namespace = :namespace "
              "AND key IN (SELECT value FROM json_each(:keys))",
    "postgres": "SELECT key, value, stored_at FROM cache_entries WHERE namespace = :namespace AND key = ANY(:keys)",
}


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


class SqlCache:
    """`Cache` on either database adapter."""

    def __init__(self, database: database_module.Database) -> None:
        self.database = database

    def get(self, namespace: str, key: str) -> CacheEntry | None:
        row = self.database.query_one(self.database.native(SELECT_ONE), {"namespace": namespace, "key": key})
        return None if row is None else self._entry(row)

    def get_many(self, namespace: str, keys: typing.Sequence[str]) -> dict[str, CacheEntry]:
        if not keys:
            return {}
        rows = self.database.query(self.database.native(SELECT_MANY[self.database.dialect]), {
            "namespace": namespace, "keys": self.database.array(dict.fromkeys(keys))})
        return {row["key"]: self._entry(row) for row in rows}

    def put(self, namespace: str, key: str, value: typing.Any, *, now: float) -> None:
        self.database.execute(self.database.native(UPSERT), {
            "namespace": namespace, "key": key, "value": self.database.dump_json(value), "stored_at": now})

    def _entry(self, row: dict) -> CacheEntry:
        return CacheEntry(value=self.database.load_json(row["value"]), stored_at=row["stored_at"])
