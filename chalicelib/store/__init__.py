"""Job store port: `make_store()` is the one place that picks a database from DATABASE_URL;
`make_cache()`, `make_stats()` and `make_instance_stats()` put their ports on the same database.

One store class (`jobs.JobStore`, its SQL in `queries`) runs over either database adapter. Each
branch imports its adapter itself, so importing app.py (a Lambda cold start) loads neither psycopg
nor sqlite3, and a Postgres deployment never loads sqlite3 (bench/cold_start.py)."""
from __future__ import annotations

from chalicelib.store import base
from chalicelib.store import cache
from chalicelib.store import instances
from chalicelib.store import stats

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def make_store(database_url: str, *, sqlite_synchronous: str = "NORMAL") -> base.JobStore:
    """A store for the URL; it connects on first use, so building one never fails on a down database."""
    from chalicelib.store import jobs
    if database_url.startswith("sqlite:///"):
        from chalicelib.store import sqlite_db
        return jobs.JobStore(sqlite_db.SqliteDatabase.from_url(database_url, synchronous=sqlite_synchronous))
    if database_url.startswith(POSTGRES_SCHEMES):
        from chalicelib.store import postgres_db
        return jobs.JobStore(postgres_db.PostgresDatabase.from_url(database_url))
    raise ValueError(f"unsupported DATABASE_URL scheme: {database_url.split(':', 1)[0]!r} "
                     "(supported: sqlite:///path, postgresql://user:password@host:port/dbname)")


def make_cache(job_store: base.JobStore) -> cache.Cache:
    """The cache on the job store's own database (table `cache_entries`); cheap, holds no connection."""
    return cache.SqlCache(job_store.database)


def make_stats(job_store: base.JobStore) -> stats.JobStats:
    """Read-only aggregates for /metrics on the job store's own database; cheap, holds no connection."""
    return stats.SqlJobStats(job_store.database)


def make_instance_stats(job_store: base.JobStore) -> instances.InstanceStats:
    """Per-instance facts (routing, /sdapi/v1/instances) on the job store's own database."""
    return instances.InstanceStats(job_store.database)
