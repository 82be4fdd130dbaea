"""Job store port: `make_store()` is the one place that picks a backend from DATABASE_URL, and
`make_cache()` and `make_stats()` put the cache and the /metrics ports on the same database.

Each branch imports its backend itself, so importing app.py (a Lambda cold start) loads neither
psycopg nor sqlite-utils, and a Postgres deployment never loads sqlite-utils (bench/cold_start.py)."""
from __future__ import annotations

import importlib

from chalicelib.store import base
from chalicelib.store import cache
from chalicelib.store import instances
from chalicelib.store import stats

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def make_store(database_url: str) -> base.JobStore:
    """A store for the URL; it connects on first use, so building one never fails on a down database."""
    if database_url.startswith("sqlite:///"):
        from chalicelib.store import sqlite
        from chalicelib.store import sqlite_db
        return sqlite.SqliteJobStore(sqlite_db.SqliteDatabase.from_url(database_url))
    if database_url.startswith(POSTGRES_SCHEMES):
        from chalicelib.store import postgres
        from chalicelib.store import postgres_db
        return postgres.PostgresJobStore(postgres_db.PostgresDatabase.from_url(database_url))
    raise ValueError(f"unsupported DATABASE_URL scheme: {database_url.split(':', 1)[0]!r} "
                     "(supported: sqlite:///path, postgresql://user:password@host:port/dbname)")


def make_cache(job_store: base.JobStore) -> cache.Cache:
    """The cache on the job store's own database (table `cache_entries`); cheap, holds no connection."""
    return _companion(job_store, "cache", sqlite=("sqlite_cache", "SqliteCache"),
                      postgres=("postgres_cache", "PostgresCache"))


def make_stats(job_store: base.JobStore) -> stats.JobStats:
    """Read-only aggregates for /metrics on the job store's own database; cheap, holds no connection."""
    return _companion(job_store, "stats", sqlite=("sqlite_stats", "SqliteJobStats"),
                      postgres=("postgres_stats", "PostgresJobStats"))


def make_instance_stats(job_store: base.JobStore) -> instances.InstanceStats:
    """Per-instance facts (routing, /sdapi/v1/instances) on the job store's own database."""
    return _companion(job_store, "instance stats", sqlite=("sqlite_instances", "SqliteInstanceStats"),
                      postgres=("postgres_instances", "PostgresInstanceStats"))


def _companion(job_store: base.JobStore, kind: str, **backends: tuple[str, str]):
    """A port that shares the job store's database, its module imported only when used (cold start)."""
    if job_store.backend not in backends:
        raise ValueError(f"no {kind} for a {job_store.backend!r} store")
    module_name, class_name = backends[job_store.backend]
    module = importlib.import_module(f"chalicelib.store.{module_name}")
    return getattr(module, class_name)(job_store.database)
