"""One SQLite file shared by the job store, the local queue and the image rows.

Connections are per thread (sqlite3 objects must not cross threads). Every write runs in
`BEGIN IMMEDIATE`, so a transaction never has to upgrade a read lock to a write lock: that upgrade is
what yields "database is locked" under concurrent writers even with a busy timeout. WAL lets readers
proceed while one writer commits. The threads of one process also take turns on a lock of their
own before `BEGIN IMMEDIATE`: a thread waiting for it wakes the moment the writer before it is done,
where SQLite's busy handler would sleep in steps of up to 100 ms (the tail latency of concurrent
submits). Other processes still wait in the busy handler. sqlite3 errors are turned into
`StoreUnavailable` here, once.

The interface it shares with `postgres_db.PostgresDatabase` (see `store.database`): query,
query_one, execute, transaction, `native` (SQL written with `:name` parameters, in this driver's
style: as is), JSON and array parameters, and the driver's `IntegrityError`.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import typing

import sqlite_utils

from chalicelib import errors
from chalicelib.store import sqlite_schema

BUSY_TIMEOUT_MS = 30_000
# In WAL, NORMAL syncs at checkpoints only: a commit survives any crash of the process, the last
# commits may be lost on a power cut; FULL syncs the WAL at every commit (SQLITE_SYNCHRONOUS).
SYNCHRONOUS_LEVELS = ("NORMAL", "FULL")
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
RECLAIM_PAGES = 4096  # per step of reclaim_space: 16 MiB of 4 KiB pages, a short hold of the write lock

_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(path: str) -> threading.RLock:
    """The process's one lock for writes to the file at `path`."""
    key = os.path.realpath(path)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.RLock())


class SqliteSession:
    """Statements inside one write transaction; rows are dicts, JSON columns left as text."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def query(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> list[dict]:
        cursor = self.connection.execute(sql, params)
        columns = [d[0] for d in cursor.description or ()]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        cursor.close()
        return rows

    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int:
        return self.connection.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: typing.Iterable[typing.Mapping | typing.Sequence]) -> None:
        self.connection.executemany(sql, rows)


class SqliteDatabase:
    """A SQLite file with per-thread connections and short write transactions."""

    dialect = "sqlite"
    IntegrityError = sqlite3.IntegrityError

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._write_lock = _write_lock(path)
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise errors.StoreUnavailable(f"cannot create the SQLite directory {directory}: {exc.strerror}") from exc

    @classmethod
    def from_url(cls, url: str, *, synchronous: str = "NORMAL") -> "SqliteDatabase":
        if not url.startswith("sqlite:///"):
            raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
        return cls(url[len("sqlite:///"):], synchronous=synchronous)

    def connection(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                # Takes effect only in a file without tables yet (see reclaim_space), and must come
                # before WAL mode writes the file's header.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise errors.StoreUnavailable(f"cannot open the SQLite database: {exc}") from exc
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @contextlib.contextmanager
    def write(self) -> typing.Iterator[sqlite3.Connection]:
        """A short write transaction, committed on success and rolled back on any error."""
        conn = self.connection().conn
        with self._write_lock, _wrapped():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> typing.Iterator[SqliteSession]:
        """`write()` with the statements of the common interface."""
        with self.write() as conn:
            yield SqliteSession(conn)

    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int:
        """Run one statement in a write transaction of its own; the number of rows it changed."""
        with self.transaction() as session:
            return session.execute(sql, params)

    def execute_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        """Run one statement that may write, in a write transaction of its own; its first row."""
        with self.transaction() as session:
            return session.query_one(sql, params)

    @staticmethod
    def native(sql: str) -> str:
        """sqlite3 reads `:name` parameters itself."""
        return sql

    @staticmethod
    def dump_json(value: object) -> str:
        """A parameter for a JSON column (TEXT here)."""
        return json.dumps(value)

    @staticmethod
    def load_json(value: str | None) -> typing.Any:
        return None if value is None else json.loads(value)

    @staticmethod
    def array(values: typing.Iterable) -> str:
        """A list parameter, read in SQL with json_each (no limit on host parameters)."""
        return json.dumps(list(values))

    def query(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> list[dict]:
        """One statement on this thread's connection (sqlite_utils' `query` would wrap it in a
        SAVEPOINT and a RELEASE: three statements for every read)."""
        with _wrapped():
            return SqliteSession(self.connection().conn).query(sql, params)

    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap way to wait for new work."""
        with _wrapped():
            return self.connection().conn.execute("PRAGMA data_version").fetchone()[0]

    def reclaim_space(self) -> int:
        """Give every free page back to the file system, RECLAIM_PAGES at a time (other writers get
        the lock between two); how many went.

        Only a file created with auto_vacuum = INCREMENTAL (every file this code creates) can; one
        created before stays its size (SQLite reuses its free pages) until `convert_to_incremental`.
        Run as a script: sqlite3's execute steps a pragma that returns no rows once, freeing one page.
        The file shrinks when the WAL is checkpointed (a passive one here, blocking nobody)."""
        conn = self.connection().conn
        reclaimed = 0
        while True:
            with self._write_lock, _wrapped():
                if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
                    return 0
                before = conn.execute("PRAGMA freelist_count").fetchone()[0]
                conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
                freed = before - conn.execute("PRAGMA freelist_count").fetchone()[0]
            reclaimed += freed
            if freed < RECLAIM_PAGES:
                break
        with _wrapped():
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return reclaimed

    def convert_to_incremental(self) -> None:
        """Switch a file created without auto_vacuum to INCREMENTAL: a full VACUUM, which rewrites
        the file (it needs that much free disk again) and holds the write lock meanwhile, so it is
        run by hand (`python -m worker_fn purge --vacuum`), never at start-up."""
        conn = self.connection().conn
        with self._write_lock, _wrapped():
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def migrate(self) -> None:
        """Bring the schema to the latest version; safe when several processes start at once."""
        with self.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(sqlite_schema.MIGRATIONS[version:], start=version + 1):
                for statement in _split_statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")


def _split_statements(script: str) -> list[str]:
    """The statements of `script`; a trigger's body (BEGIN ...; ...; END) stays in one piece."""
    statements, current = [], ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements


@contextlib.contextmanager
def _wrapped() -> typing.Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error as exc:
        raise errors.StoreUnavailable(f"SQLite error: {exc}") from exc
