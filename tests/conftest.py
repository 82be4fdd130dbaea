"""Shared fixtures: a fresh store per test, behind the same factory the product uses.

Every test that asks for `database_url` (or `job_store`) runs once per backend: SQLite in a temporary
file, and Postgres in a database this session creates on the server at TEST_POSTGRES_URL (default:
the machine's own, postgresql://postgres@127.0.0.1:5432/postgres) and drops at the end. Each
Postgres test starts from an empty schema. Without a reachable server the Postgres cases are
skipped, unless CI is set: then they fail, so CI can never pass without them.
"""
from __future__ import annotations

import os
import pathlib
import secrets
import sys

import psycopg
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib import store as store_module  # noqa: E402
from tests import harness  # noqa: E402

# Ends what earlier tests left connected (a killed worker, a leaked pool), then empties the schema.
RESET_SCHEMA = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid();
DROP SCHEMA public CASCADE;
CREATE SCHEMA public;
"""


@pytest.fixture(scope="session")
def postgres_session_url():
    """A database of this test session's own on the Postgres server, dropped at the end."""
    server_url = harness.postgres_server_url()
    try:
        admin = psycopg.connect(server_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"Postgres is unreachable at TEST_POSTGRES_URL ({exc})".replace("\n", " ")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the Postgres tests must run", pytrace=False)
        pytest.skip(reason)
    name = f"a1111_test_{os.getpid()}_{secrets.token_hex(3)}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield harness.with_database(server_url, name)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def reset_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RESET_SCHEMA)


@pytest.fixture
def postgres_url(postgres_session_url) -> str:
    """The session's Postgres database with an empty schema."""
    reset_postgres(postgres_session_url)
    return postgres_session_url


@pytest.fixture(params=harness.BACKENDS)
def database_url(request, tmp_path) -> str:
    """Every store backend the contract suite runs against, empty."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def job_store(database_url):
    job_store = store_module.make_store(database_url)
    job_store.migrate()
    yield job_store
    job_store.database.close()


@pytest.fixture
def notes_database(tmp_path):
    """A SQLite database of one table, `notes (id, text)`: for tests of the SQLite adapter itself."""
    from chalicelib.store import sqlite_db

    database = sqlite_db.SqliteDatabase(str(tmp_path / "jobs.db"))
    database.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    yield database
    database.close()
