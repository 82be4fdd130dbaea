"""Job store port: `make_store()` is the one place that picks a backend from DATABASE_URL."""
from __future__ import annotations

from chalicelib.store import base
from chalicelib.store import postgres
from chalicelib.store import postgres_db
from chalicelib.store import sqlite
from chalicelib.store import sqlite_db

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def make_store(database_url: str) -> base.JobStore:
    """A store for the URL; it connects on first use, so building one never fails on a down database."""
    if database_url.startswith("sqlite:///"):
        return sqlite.SqliteJobStore(sqlite_db.SqliteDatabase.from_url(database_url))
    if database_url.startswith(POSTGRES_SCHEMES):
        return postgres.PostgresJobStore(postgres_db.PostgresDatabase.from_url(database_url))
    raise ValueError(f"unsupported DATABASE_URL scheme: {database_url.split(':', 1)[0]!r} "
                     "(supported: sqlite:///path, postgresql://user:password@host:port/dbname)")
