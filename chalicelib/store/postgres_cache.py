"""The cache port on the Postgres job database (table `cache_entries`)."""
from __future__ import annotations

import typing

from psycopg.types import json as psycopg_json

from chalicelib.store import cache
from chalicelib.store import postgres_db

UPSERT = """
INSERT INTO cache_entries (namespace, key, value, stored_at)
VALUES (%(namespace)s, %(key)s, %(value)s, %(stored_at)s)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at
WHERE excluded.stored_at >= cache_entries.stored_at
"""
SELECT_ONE = """
SELECT key, value, stored_at FROM cache_entries WHERE namespace = %(namespace)s AND key = %(key)s
"""
SELECT_MANY = """
SELECT key, value, stored_at FROM cache_entries WHERE namespace = %(namespace)s AND key = ANY(%(keys)s)
"""


class PostgresCache:
    def __init__(self, database: postgres_db.PostgresDatabase) -> None:
        self.database = database

    def get(self, namespace: str, key: str) -> cache.CacheEntry | None:
        row = self.database.query_one(SELECT_ONE, {"namespace": namespace, "key": key})
        return None if row is None else _entry(row)

    def get_many(self, namespace: str, keys: typing.Sequence[str]) -> dict[str, cache.CacheEntry]:
        if not keys:
            return {}
        rows = self.database.query(SELECT_MANY, {"namespace": namespace, "keys": list(dict.fromkeys(keys))})
        return {row["key"]: _entry(row) for row in rows}

    def put(self, namespace: str, key: str, value: typing.Any, *, now: float) -> None:
        self.database.execute(UPSERT, {"namespace": namespace, "key": key, "value": psycopg_json.Json(value),
                                       "stored_at": now})


def _entry(row: dict) -> cache.CacheEntry:
    return cache.CacheEntry(value=row["value"], stored_at=row["stored_at"])
