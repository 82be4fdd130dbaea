"""Read-only aggregates for GET /metrics: a port of its own, so metrics never widen `JobStore`.

Every number comes from one aggregate query (histograms are bucketed in SQL), so a scrape never
reads job rows into Python. The numbers describe the whole store, not one process: every API
replica reports the same values. The SQL is the same on SQLite and Postgres but for how each finds
out whether a table exists (the webhook outbox may not be migrated yet).
"""
from __future__ import annotations

import dataclasses
import typing

from chalicelib import vocabulary
from chalicelib.store import database as database_module

JOB_STATUSES = tuple(vocabulary.JobStatus)
FINAL_STATUSES = tuple(status for status in vocabulary.JobStatus if status in vocabulary.TERMINAL_STATUSES)
DELIVERY_STATUSES = tuple(vocabulary.DeliveryStatus)
ATTEMPT_OUTCOMES = ("success", "http_error", "no_response")
# Upper bounds in seconds (Prometheus's `le`); +Inf is implied.
QUEUE_WAIT_BOUNDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RUN_TIME_BOUNDS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
A1111_ERROR_PREFIX = "a1111_"
A1111_ERROR_CODES = ("a1111_unavailable", "a1111_rejected", "a1111_bad_response")  # see jobrunner

JOBS_BY_STATUS = "SELECT status, COUNT(*) AS n FROM jobs GROUP BY status"

# Every failed A1111 call that ended an attempt: a retry (A1111 unavailable, job requeued) or the
# attempt that failed the job (its error code says why).
A1111_ERRORS = """
SELECT CASE WHEN r.outcome = 'retry' THEN 'a1111_unavailable' ELSE j.error_code END AS code, COUNT(*) AS n
FROM job_runs r JOIN jobs j ON j.id = r.job_id
WHERE r.outcome = 'retry' OR (r.outcome = 'error' AND j.error_code IS NOT NULL)
GROUP BY 1
"""

DELIVERIES_BY_STATUS = "SELECT status, COUNT(*) AS n FROM webhook_deliveries GROUP BY status"

# Finished attempts only, so that each count only grows (an attempt in flight has no outcome yet).
ATTEMPTS_BY_OUTCOME = """
SELECT CASE WHEN status_code BETWEEN 200 AND 299 THEN 'success'
            WHEN status_code IS NOT NULL THEN 'http_error'
            ELSE 'no_response' END AS outcome,
       COUNT(*) AS n
FROM webhook_attempts WHERE finished_at IS NOT NULL GROUP BY 1
"""

QUEUE_WAIT_VALUE = "started_at - created_at"
QUEUE_WAIT_ROWS = "jobs WHERE started_at IS NOT NULL"
RUN_TIME_VALUE = "finished_at - started_at"
RUN_TIME_ROWS = "jobs WHERE started_at IS NOT NULL AND finished_at IS NOT NULL"
TABLE_PRESENT = {
    "sqlite": "SELECT COUNT(*) > 0 AS present FROM sqlite_master WHERE type = 'table' AND name = :name",
    "postgres": "SELECT to_regclass(:name) IS NOT NULL AS present",
}


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound (Prometheus's `le`), and the count and sum of all values."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total: float


class JobStats(typing.Protocol):
    """What /metrics reads; nothing here writes."""

    def jobs_by_status(self) -> dict[str, int]: ...

    def queue_wait(self, *, bounds: typing.Sequence[float]) -> Histogram:
        """Submit → first start, of every job that has started."""

    def run_time(self, *, bounds: typing.Sequence[float]) -> dict[str, Histogram]:
        """First start → finish, of every finished job that had started, by its final status."""

    def a1111_errors(self) -> dict[str, int]:
        """Failed A1111 calls by error code (`a1111_unavailable`, `a1111_rejected`, ...)."""

    def webhook_deliveries(self) -> dict[str, int] | None:
        """Deliveries by status; None when this database has no webhook outbox."""

    def webhook_attempts(self) -> dict[str, int] | None:
        """Finished delivery attempts (POSTs) by outcome; None when this database has no webhook outbox."""


def histogram_sql(value: str, *, rows: str, bounds: typing.Sequence[float], group_by: str | None = None) -> str:
    """One aggregate query: count, sum and a cumulative count per bound of `value` over `rows`.

    The bounds are our own float constants, written into the SQL as literals.
    """
    buckets = ", ".join(f"SUM(CASE WHEN {value} <= {float(bound)!r} THEN 1 ELSE 0 END) AS le_{index}"
                        for index, bound in enumerate(bounds))
    key = group_by or "''"
    grouping = f" GROUP BY {group_by}" if group_by else ""
    return f"SELECT {key} AS key, COUNT(*) AS n, SUM({value}) AS total, {buckets} FROM {rows}{grouping}"


class SqlJobStats:
    """`JobStats` on either database adapter."""

    def __init__(self, database: database_module.Database) -> None:
        self.database = database

    def has_table(self, name: str) -> bool:
        """Whether the table exists (the webhook tables may not, before their migration)."""
        sql = self.database.native(TABLE_PRESENT[self.database.dialect])
        return bool(self.database.query_one(sql, {"name": name})["present"])

    def jobs_by_status(self) -> dict[str, int]:
        return _counts(self.database.query(JOBS_BY_STATUS), "status", JOB_STATUSES)

    def queue_wait(self, *, bounds: typing.Sequence[float] = QUEUE_WAIT_BOUNDS) -> Histogram:
        rows = self.database.query(histogram_sql(QUEUE_WAIT_VALUE, rows=QUEUE_WAIT_ROWS, bounds=bounds))
        return _histogram(rows[0], bounds)

    def run_time(self, *, bounds: typing.Sequence[float] = RUN_TIME_BOUNDS) -> dict[str, Histogram]:
        rows = self.database.query(histogram_sql(RUN_TIME_VALUE, rows=RUN_TIME_ROWS, bounds=bounds,
                                                 group_by="status"))
        found = {row["key"]: _histogram(row, bounds) for row in rows}
        return {status: _histogram({}, bounds) for status in FINAL_STATUSES} | found

    def a1111_errors(self) -> dict[str, int]:
        rows = [row for row in self.database.query(A1111_ERRORS) if row["code"].startswith(A1111_ERROR_PREFIX)]
        return _counts(rows, "code", A1111_ERROR_CODES)

    def webhook_deliveries(self) -> dict[str, int] | None:
        if not self.has_table("webhook_deliveries"):
            return None
        return _counts(self.database.query(DELIVERIES_BY_STATUS), "status", DELIVERY_STATUSES)

    def webhook_attempts(self) -> dict[str, int] | None:
        if not self.has_table("webhook_attempts"):
            return None
        return _counts(self.database.query(ATTEMPTS_BY_OUTCOME), "outcome", ATTEMPT_OUTCOMES)


def _counts(rows: list[dict], key: str, known: typing.Sequence[str]) -> dict[str, int]:
    """Counts by key, with a zero for every known key that has no rows (a series must not vanish)."""
    counts = dict.fromkeys(known, 0)
    counts.update({row[key]: int(row["n"]) for row in rows})
    return counts


def _histogram(row: dict, bounds: typing.Sequence[float]) -> Histogram:
    # SUM over no rows is NULL, and a status without rows has no row: both are histograms of zeros.
    return Histogram(buckets=tuple((float(bound), int(row.get(f"le_{index}") or 0))
                                   for index, bound in enumerate(bounds)),
                     count=int(row.get("n") or 0), total=float(row.get("total") or 0.0))
