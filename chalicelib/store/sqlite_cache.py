"""The cache port on the SQLite job database (table `cache_entries`)."""
from __future__ import annotations

import json
import typing

from chalicelib.store import cache
from chalicelib.store import sqlite_db

UPSERT = """
INSERT INTO cache_entries (namespace, key, value, stored_at) VALUES (:namespace, :key, :value, :stored_at)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at
WHERE excluded.stored_at >= cache_entries.stored_at
"""
SELECT_ONE = "SELECT key, value, stored_at FROM cache_entries WHERE namespace = ? AND key = ?"
SELECT_MANY = "SELECT key, value, stored_at FROM cache_entries WHERE namespace = ? AND key IN ({marks})"
CHUNK = 500  # SQLite's host-parameter limit is 32766 (999 before 3.32): stay well below


class SqliteCache:
    def __init__(self, database: sqlite_db.SqliteDatabase) -> None:
        self.database = database

    def get(self, namespace: str, key: str) -> cache.CacheEntry | None:
        row = self.database.query_one(SELECT_ONE, [namespace, key])
        return None if row is None else _entry(row)

    def get_many(self, namespace: str, keys: typing.Sequence[str]) -> dict[str, cache.CacheEntry]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, cache.CacheEntry] = {}
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start:start + CHUNK]
            sql = SELECT_MANY.format(marks=", ".join("?" * len(chunk)))
            found.update({row["key"]: _entry(row) for row in self.database.query(sql, [namespace, *chunk])})
        return found

    def put(self, namespace: str, key: str, value: typing.Any, *, now: float) -> None:
        with self.database.write() as conn:
            conn.execute(UPSERT, {"namespace": namespace, "key": key, "value": json.dumps(value),
                                  "stored_at": now})


def _entry(row: dict) -> cache.CacheEntry:
    return cache.CacheEntry(value=json.loads(row["value"]), stored_at=row["stored_at"])
