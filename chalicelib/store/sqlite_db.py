"""One SQLite file shared by the job store, the local queue and the image rows.

Connections. A process writes through one connection (per `SqliteDatabase`, which the process's
context builds once): its threads take turns on a lock of their own before `BEGIN IMMEDIATE` anyway,
so many writing connections only cost warmth. In WAL a connection drops its whole page cache when
another connection committed since its last transaction; with a connection per thread, waitress's
threads serving requests in turn made nearly every write start cold. A thread's reads inside its own
write transaction go to the writer too, so they see the transaction's writes. Other reads borrow a
connection from a LIFO pool: the one given back last is reused first, so at low concurrency reads
stay on one warm connection, and the pool grows with the number of reads at once, not the number
of threads. `data_version()` is read on a connection of the calling thread's own (its "watcher"),
since its values compare only on one connection, and a connection that never writes sees this
process's commits as well as other processes'.

Every write runs in `BEGIN IMMEDIATE`, so a transaction never has to upgrade a read lock to a write
lock: that upgrade is what yields "database is locked" under concurrent writers even with a busy
timeout. WAL lets readers proceed while one writer commits. A thread waiting for the process's write
lock wakes the moment the writer before it is done, where SQLite's busy handler would sleep in steps
of up to 100 ms (the tail latency of concurrent submits). Other processes still wait in the busy
handler. sqlite3 errors are turned into `StoreUnavailable` here, once.

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

from chalicelib import errors
from chalicelib.store import database as database_module
from chalicelib.store import sqlite_checkpoints
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
        try:
            columns = [d[0] for d in cursor.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()  # a statement left open would hold a pooled reader's snapshot

    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int:
        return self.connection.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: typing.Iterable[typing.Mapping | typing.Sequence]) -> None:
        self.connection.executemany(sql, rows)


class SqliteDatabase:
    """A SQLite file: one writer connection, a LIFO pool of readers, a watcher per waiting thread."""

    dialect = "sqlite"
    IntegrityError = sqlite3.IntegrityError

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self._write_lock = _write_lock(path)
        self._writer: sqlite3.Connection | None = None  # opened, used and closed under _write_lock
        self._writing_thread: int | None = None  # the thread inside write(), whose reads see its writes
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_guard = threading.Lock()
        self._closes = 0  # close() calls so far: a reader borrowed before one is closed on return
        self._watchers = threading.local()
        self.write_failures = database_module.WriteFailures()
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

    def _connect(self) -> sqlite3.Connection:
        """A new connection with every setting; StoreUnavailable when the file cannot be opened."""
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Takes effect only in a file without tables yet (see reclaim_space), and must come
            # before WAL mode writes the file's header. Asked only of a new file: in a file in use it
            # would wait for the write lock, and a reader opened during a write must not.
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA wal_autocheckpoint = {sqlite_checkpoints.BACKSTOP_PAGES}")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise errors.StoreUnavailable(f"cannot open the SQLite database: {exc}") from exc
        return conn

    def close(self) -> None:
        """Close the writer, the idle readers and this thread's watcher. A reader in use closes when
        it is given back; another thread's watcher closes with its thread."""
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_guard:
            self._closes += 1
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()
        watcher = getattr(self._watchers, "conn", None)
        if watcher is not None:
            watcher.close()
            self._watchers.conn = None

    @contextlib.contextmanager
    def write(self) -> typing.Iterator[sqlite3.Connection]:
        """A short write transaction on the writer connection, committed on success and rolled back
        on any error (also when COMMIT itself fails, so the writer is never left in a transaction)."""
        with self.write_failures.recorded(), self._write_lock, _wrapped():
            conn = self._writer_connection()
            conn.execute("BEGIN IMMEDIATE")
            self._writing_thread = threading.get_ident()
            try:
                yield conn
                conn.execute("COMMIT")
                sqlite_checkpoints.committed(self.path, self._write_lock)
            finally:
                self._writing_thread = None
                if conn.in_transaction:
                    self._roll_back(conn)

    def _writer_connection(self) -> sqlite3.Connection:
        """The process's one connection for writes (of this object's file); call with _write_lock."""
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        """Roll back the writer's transaction; a writer that cannot is dropped (the next write opens
        another) rather than left holding its transaction for every thread."""
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            self._writer = None

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
        """One statement on a pooled reader; inside this thread's write(), on the writer, so that it
        sees the transaction's own writes."""
        with _wrapped(), self._reader() as conn:
            return SqliteSession(conn).query(sql, params)

    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def _reader(self) -> typing.Iterator[sqlite3.Connection]:
        """The most recently given back reader (the warmest), or a new one when all are in use."""
        if self._writing_thread == threading.get_ident():
            yield self._writer
            return
        with self._readers_guard:
            conn = self._idle_readers.pop() if self._idle_readers else None
            closes = self._closes
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._readers_guard:
                if closes == self._closes:
                    self._idle_readers.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap way to wait for new work.

        Read on this thread's watcher, a connection that never writes, so that it also moves when
        this process commits (through the writer), and that a pooled reader would not give: two
        values compare only when read on the same connection."""
        watcher = getattr(self._watchers, "conn", None)
        if watcher is None:
            watcher = self._watchers.conn = self._connect()
        with _wrapped():
            return watcher.execute("PRAGMA data_version").fetchone()[0]

    def reclaim_space(self) -> int:
        """Give every free page back to the file system, RECLAIM_PAGES at a time (other writers get
        the lock between two); how many went.

        Only a file created with auto_vacuum = INCREMENTAL (every file this code creates) can; one
        created before stays its size (SQLite reuses its free pages) until `convert_to_incremental`.
        Run as a script: sqlite3's execute steps a pragma that returns no rows once, freeing one page.
        The file shrinks when the WAL is checkpointed: a passive one on a reader here, blocking nobody,
        and the background thread's (sqlite_checkpoints) should that one find the checkpoint busy."""
        reclaimed = 0
        while True:
            with self._write_lock, _wrapped():
                conn = self._writer_connection()
                if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
                    return 0
                before = conn.execute("PRAGMA freelist_count").fetchone()[0]
                conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
                sqlite_checkpoints.committed(self.path, self._write_lock)  # counted like any commit
                freed = before - conn.execute("PRAGMA freelist_count").fetchone()[0]
            reclaimed += freed
            if freed < RECLAIM_PAGES:
                break
        with _wrapped(), self._reader() as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return reclaimed

    def convert_to_incremental(self) -> None:
        """Switch a file created without auto_vacuum to INCREMENTAL: a full VACUUM, which rewrites
        the file (it needs that much free disk again) and holds the write lock meanwhile, so it is
        run by hand (`python -m worker_fn purge --vacuum`), never at start-up."""
        with self._write_lock, _wrapped():
            conn = self._writer_connection()
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
