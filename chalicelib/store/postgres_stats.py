"""`JobStats` on the job store's Postgres database (read-only aggregates for /metrics)."""
from __future__ import annotations

from chalicelib.store import postgres_db
from chalicelib.store import stats

TABLE_PRESENT = "SELECT to_regclass(%(name)s) IS NOT NULL AS present"


class PostgresJobStats(stats.SqlJobStats):
    def __init__(self, database: postgres_db.PostgresDatabase) -> None:
        super().__init__(database)

    def has_table(self, name: str) -> bool:
        return bool(self.database.query(TABLE_PRESENT, {"name": name})[0]["present"])
