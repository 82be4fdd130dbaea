"""One Postgres database shared by the job store, the doorbell queue and the image rows.

Connections are pooled per process and opened on first use, up to `pool_size` (default 4): the API's
request threads and the worker's runner, progress and housekeeping threads each borrow one for a
single statement or transaction. A Lambda container serves one invocation at a time, so it opens one
connection and keeps it across warm invocations. A borrowed connection that went bad while idle
(server restart, RDS Proxy idle timeout, failover) is replaced before use; one that breaks while in
use is dropped, and that call fails with `StoreUnavailable`.

Every connection is in autocommit mode; multi-statement changes use `transaction()`. Server-side
prepared statements are off unless `prepare_threshold` is set: RDS Proxy pins a session that
prepares statements, and PgBouncer in transaction mode cannot route them. psycopg errors become
`StoreUnavailable` here, once; `IntegrityError` passes through, as in `sqlite_db`.

Options that belong to this module, not to libpq, ride on the URL's query string and are removed
before connecting: `pool_size` (connections per process) and `prepare_threshold` (`none` or an
integer, psycopg's meaning). Every other parameter (sslmode, connect_timeout, ...) goes to libpq.

The interface it shares with `sqlite_db.SqliteDatabase` (see `store.database`): query, query_one,
execute, transaction, `native` (SQL written with `:name` parameters, in psycopg's `%(name)s`
style), JSON and array parameters, and the driver's `IntegrityError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import select
import threading
import time
import typing
import urllib.parse
import weakref

import psycopg
from psycopg import rows as psycopg_rows
from psycopg.types import json as psycopg_json

from chalicelib import errors
from chalicelib.store import database as database_module
from chalicelib.store import postgres_schema

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 4
DEFAULT_CONNECT_TIMEOUT = 5
CHECKOUT_TIMEOUT = 10.0
IDLE_PING_SECONDS = 30.0
# pg_advisory_xact_lock key for the migration runner: any constant 64-bit integer, ours alone.
MIGRATION_LOCK_KEY = 7_310_542_418_206_443_521

LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%(key)s)"
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
MIGRATIONS_TABLE_PRESENT = "SELECT to_regclass('schema_migrations') IS NOT NULL AS present"
SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version) VALUES (%(version)s)"
PING = "SELECT 1"
OUR_PARAMETERS = ("pool_size", "prepare_threshold")
NAMED_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # `:name`, not a `::type` cast


@dataclasses.dataclass(frozen=True)
class ConnectionOptions:
    """What `from_url` makes of a DATABASE_URL: libpq's part and ours."""

    conninfo: str
    pool_size: int = DEFAULT_POOL_SIZE
    prepare_threshold: int | None = None


def parse_url(url: str) -> ConnectionOptions:
    """Split our query parameters off a postgresql:// URL; libpq's stay exactly as written."""
    parts = urllib.parse.urlsplit(url)
    ours, libpq = {}, []
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        if urllib.parse.unquote(key) in OUR_PARAMETERS:
            ours[urllib.parse.unquote(key)] = urllib.parse.unquote(value)
        else:
            libpq.append(item)
    if not any(item.partition("=")[0] == "connect_timeout" for item in libpq):
        libpq.append(f"connect_timeout={DEFAULT_CONNECT_TIMEOUT}")
    conninfo = urllib.parse.urlunsplit(parts._replace(query="&".join(libpq)))
    return ConnectionOptions(conninfo=conninfo, pool_size=_pool_size(ours.get("pool_size")),
                             prepare_threshold=_prepare_threshold(ours.get("prepare_threshold")))


@functools.lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """SQL written with `:name` parameters in psycopg's style: `%(name)s`, a literal % doubled."""
    return NAMED_PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


class PostgresSession:
    """Statements inside one transaction on a borrowed connection; rows are dicts, JSON decoded."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection

    def query(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> list[dict]:
        return self.connection.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        return self.connection.execute(sql, params).fetchone()

    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int:
        return self.connection.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: typing.Iterable[typing.Mapping | typing.Sequence]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(sql, rows)


class PostgresDatabase:
    """A Postgres database behind a small per-process connection pool (thread-safe)."""

    dialect = "postgres"
    IntegrityError = psycopg.IntegrityError

    def __init__(self, options: ConnectionOptions) -> None:
        self.options = options
        self._idle: list[tuple[psycopg.Connection, float]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(options.pool_size)
        self.write_failures = database_module.WriteFailures()
        # Idle connections close with the database object, even if nobody calls close().
        self._finalizer = weakref.finalize(self, _close_all, self._idle)

    @classmethod
    def from_url(cls, url: str) -> "PostgresDatabase":
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("not a Postgres URL (expected postgresql://user:password@host:port/dbname)")
        return cls(parse_url(url))

    def connect(self) -> psycopg.Connection:
        """A new autocommit connection outside the pool (the LISTEN loop and migrations own theirs)."""
        with wrapped():
            return psycopg.connect(self.options.conninfo, autocommit=True,
                                   prepare_threshold=self.options.prepare_threshold,
                                   row_factory=psycopg_rows.dict_row)

    @contextlib.contextmanager
    def connection(self) -> typing.Iterator[psycopg.Connection]:
        """Borrow a pooled connection for one unit of work."""
        if not self._slots.acquire(timeout=CHECKOUT_TIMEOUT):
            raise errors.StoreUnavailable(
                f"all {self.options.pool_size} database connections of this process stayed busy for "
                f"{CHECKOUT_TIMEOUT:.0f} s (raise pool_size in DATABASE_URL)")
        conn = None
        try:
            conn = self._checkout()
            with wrapped():
                yield conn
        finally:
            if conn is not None:
                self._checkin(conn)
            self._slots.release()

    @contextlib.contextmanager
    def transaction(self) -> typing.Iterator[PostgresSession]:
        """A transaction, committed on success and rolled back on any error."""
        with self.write_failures.recorded(), self.connection() as conn, conn.transaction():
            yield PostgresSession(conn)

    def execute_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        """Run one statement that may write, on its own (autocommit); its first row."""
        with self.write_failures.recorded():
            return self.query_one(sql, params)

    native = staticmethod(pyformat)

    @staticmethod
    def dump_json(value: object) -> psycopg_json.Json:
        """A parameter for a `json` column."""
        return psycopg_json.Json(value)

    @staticmethod
    def load_json(value: object) -> typing.Any:
        """psycopg decodes json columns already."""
        return value

    @staticmethod
    def array(values: typing.Iterable) -> list:
        """A list parameter, bound as a Postgres array (`= ANY(:values)`)."""
        return list(values)

    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self.write_failures.recorded(), self.connection() as conn:
            return conn.execute(sql, params).rowcount

    def query(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> list[dict]:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchone()

    def reclaim_space(self) -> int:
        """Nothing to do: Postgres's autovacuum makes deleted rows' space reusable by itself."""
        return 0

    def migrate(self) -> None:
        """Bring the schema to the latest version; safe when several processes start at once.

        A process that finds the schema current is done after one read. Otherwise the work runs in
        one transaction under a transaction-level advisory lock (a second starter waits, then finds
        nothing left to do), on a connection of its own that is closed afterwards: a lock function
        pins an RDS Proxy session, and this way the pin ends with it.
        """
        current = self._schema_version()
        if current is not None and current >= len(postgres_schema.MIGRATIONS):
            if current > len(postgres_schema.MIGRATIONS):
                log.warning("the database schema is newer than this code (rolling deploy?)",
                            extra={"schema_version": current, "code_version": len(postgres_schema.MIGRATIONS)})
            return
        conn = self.connect()
        try:
            with wrapped(), conn.transaction():
                conn.execute(LOCK_MIGRATIONS, {"key": MIGRATION_LOCK_KEY})
                conn.execute(CREATE_MIGRATIONS_TABLE)
                version = conn.execute(SCHEMA_VERSION).fetchone()["version"]
                pending = postgres_schema.MIGRATIONS[version:]
                for number, script in enumerate(pending, start=version + 1):
                    conn.execute(script)
                    conn.execute(RECORD_MIGRATION, {"version": number})
            if pending:
                log.info("database migrated", extra={"from_version": version,
                                                     "to_version": len(postgres_schema.MIGRATIONS)})
        finally:
            conn.close()

    def close(self) -> None:
        """Close the idle connections (borrowed ones close when they come back)."""
        with self._lock:
            _close_all(self._idle)

    # -- pool -------------------------------------------------------------------------------

    def _schema_version(self) -> int | None:
        """The applied version, or None when the migrations table does not exist yet."""
        if not self.query_one(MIGRATIONS_TABLE_PRESENT)["present"]:
            return None
        return self.query_one(SCHEMA_VERSION)["version"]

    def _checkout(self) -> psycopg.Connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, idle_since = self._idle.pop()
            if _usable(conn, idle_seconds=time.monotonic() - idle_since):
                return conn
            conn.close()
        return self.connect()

    def _checkin(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            self._idle.append((conn, time.monotonic()))


@contextlib.contextmanager
def wrapped() -> typing.Iterator[None]:
    """Turn driver errors into `StoreUnavailable` (the backend edge); IntegrityError stays itself."""
    try:
        yield
    except psycopg.IntegrityError:
        raise
    except psycopg.Error as exc:
        if not isinstance(exc, psycopg.OperationalError):
            log.error("unexpected database error", exc_info=True)
        raise errors.StoreUnavailable(f"Postgres error: {describe(exc)}") from exc


def describe(exc: psycopg.Error) -> str:
    """The first line of the driver's message (libpq never puts the password in it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"


def _usable(conn: psycopg.Connection, *, idle_seconds: float) -> bool:
    """Cheap for a healthy connection: a ping only if it idled long or the server has spoken.

    A server that ends a session (restart, pg_terminate_backend, proxy idle timeout) sends an error
    and closes the socket, which makes the socket readable while the connection sits idle.
    """
    if conn.closed or conn.broken:
        return False
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        readable = bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return False
    if not readable and idle_seconds < IDLE_PING_SECONDS:
        return True
    try:
        conn.execute(PING)
    except psycopg.Error:
        return False
    return True


def _close_all(idle: list) -> None:
    while idle:
        conn, _ = idle.pop()
        conn.close()


def _pool_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_POOL_SIZE
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"DATABASE_URL: pool_size must be a positive integer, not {value!r}")


def _prepare_threshold(value: str | None) -> int | None:
    if value is None or value.lower() in ("", "none"):
        return None
    if value.isdigit():
        return int(value)
    raise ValueError(f"DATABASE_URL: prepare_threshold must be 'none' or an integer, not {value!r}")

