"""`JobStats` on the SQLite file of the job store (read-only aggregates for /metrics)."""
from __future__ import annotations

from chalicelib.store import sqlite_db
from chalicelib.store import stats

TABLE_PRESENT = "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = :name"


class SqliteJobStats(stats.SqlJobStats):
    def __init__(self, database: sqlite_db.SqliteDatabase) -> None:
        super().__init__(database)

    def has_table(self, name: str) -> bool:
        return self.database.query(TABLE_PRESENT, {"name": name})[0]["n"] > 0
