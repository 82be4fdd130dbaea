"""The one small interface of both database adapters (`sqlite_db.SqliteDatabase`,
`postgres_db.PostgresDatabase`), so the job store and its companion ports are written once.

SQL is written with `:name` parameters and passed through `native()` once; JSON column values go
through `dump_json`/`load_json`, list parameters through `array` (read in SQL by the dialect's
`queries` override: json_each on SQLite, `= ANY` on Postgres). Driver errors arrive as
`errors.StoreUnavailable`, except the driver's `IntegrityError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import typing

from chalicelib import errors


@dataclasses.dataclass(frozen=True)
class WriteFailure:
    at: float  # Unix time
    error: str


class WriteFailures:
    """The last write of this process that the database refused (`StoreUnavailable`: a full disk, a
    read-only server, a lock never granted). Such a store still answers every read and ping, so
    /health asks this to tell it."""

    def __init__(self) -> None:
        self.last: WriteFailure | None = None

    @contextlib.contextmanager
    def recorded(self) -> typing.Iterator[None]:
        """Around one write: its `StoreUnavailable`, if any, becomes `last` (a constraint's refusal
        or the caller's own error is not the store's)."""
        try:
            yield
        except errors.StoreUnavailable as exc:
            self.last = WriteFailure(at=time.time(), error=str(exc))
            raise


class Session(typing.Protocol):
    """Statements inside one transaction; rows are dicts."""

    def query(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> list[dict]: ...
    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None: ...
    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int:
        """The number of rows the statement changed."""
    def executemany(self, sql: str, rows: typing.Iterable[typing.Mapping | typing.Sequence]) -> None: ...


class Database(typing.Protocol):
    """Outside `transaction()`, `query`/`query_one` read and `execute`/`execute_one` write, each
    statement on its own (SQLite takes its write lock for the writes)."""

    dialect: str  # "sqlite" | "postgres": the key of a statement's per-dialect override
    IntegrityError: type[Exception]
    write_failures: WriteFailures  # recorded by every write: transaction(), execute(), execute_one()

    def query(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> list[dict]: ...
    def query_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None: ...
    def execute(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> int: ...
    def execute_one(self, sql: str, params: typing.Mapping | typing.Sequence = ()) -> dict | None:
        """One statement that may write (`... RETURNING`), on its own; its first row."""
    def transaction(self) -> contextlib.AbstractContextManager[Session]: ...
    def native(self, sql: str) -> str: ...
    def dump_json(self, value: object) -> typing.Any:
        """A JSON column's parameter (None becomes JSON null; pass None itself for SQL NULL)."""
    def load_json(self, value: typing.Any) -> typing.Any: ...
    def array(self, values: typing.Iterable) -> typing.Any: ...
    def migrate(self) -> None: ...
    def reclaim_space(self) -> int:
        """After deletes: give free space back to the file system where the database can (SQLite
        with incremental auto_vacuum); the number of pages given back."""
    def close(self) -> None: ...
