"""Rejected submissions: queue messages the intake could not turn into a job, and why.

Kept in the job database (table `rejected_submissions`) so operators can see them
(`python -m worker_fn rejected`) long after SQS would have dropped a dead letter, and so a
redelivered bad message is recorded once. The excerpt never holds a webhook secret.
"""
from __future__ import annotations

import dataclasses
import json
import typing

from chalicelib.store import base as store_base

EXCERPT_CHARS = 2048

SQLITE_RECORD = """
INSERT INTO rejected_submissions (message_id, received_at, reason, problems, excerpt)
VALUES (:message_id, :received_at, :reason, :problems, :excerpt)
ON CONFLICT (message_id) DO NOTHING
"""
SQLITE_LIST = """
SELECT seq, message_id, received_at, reason, problems, excerpt FROM rejected_submissions
WHERE (:before IS NULL OR seq < :before) ORDER BY seq DESC LIMIT :limit
"""
POSTGRES_RECORD = """
INSERT INTO rejected_submissions (message_id, received_at, reason, problems, excerpt)
VALUES (%(message_id)s, %(received_at)s, %(reason)s, %(problems)s::json, %(excerpt)s)
ON CONFLICT (message_id) DO NOTHING
"""
POSTGRES_LIST = """
SELECT seq, message_id, received_at, reason, problems, excerpt FROM rejected_submissions
WHERE (%(before)s::BIGINT IS NULL OR seq < %(before)s::BIGINT) ORDER BY seq DESC LIMIT %(limit)s
"""


@dataclasses.dataclass(frozen=True)
class Rejection:
    seq: int
    message_id: str
    received_at: float
    reason: str
    problems: list[dict]
    excerpt: str


class RejectionLog(typing.Protocol):
    def record(self, message_id: str, *, reason: str, problems: list[dict], excerpt: str, now: float) -> bool:
        """Keep one rejection per message id; False when this message was recorded before."""
    def list(self, *, limit: int, before: int | None = None) -> list[Rejection]:
        """Newest first."""


class SqliteRejectionLog:
    def __init__(self, database) -> None:
        self.database = database

    def record(self, message_id: str, *, reason: str, problems: list[dict], excerpt: str, now: float) -> bool:
        with self.database.write() as conn:
            cursor = conn.execute(SQLITE_RECORD, {"message_id": message_id, "received_at": now, "reason": reason,
                                                  "problems": json.dumps(problems), "excerpt": excerpt})
            return cursor.rowcount == 1

    def list(self, *, limit: int, before: int | None = None) -> list[Rejection]:
        rows = self.database.query(SQLITE_LIST, {"before": before, "limit": limit})
        return [Rejection(**{**row, "problems": json.loads(row["problems"])}) for row in rows]


class PostgresRejectionLog:
    def __init__(self, database) -> None:
        self.database = database

    def record(self, message_id: str, *, reason: str, problems: list[dict], excerpt: str, now: float) -> bool:
        return self.database.execute(POSTGRES_RECORD, {
            "message_id": message_id, "received_at": now, "reason": reason, "problems": json.dumps(problems),
            "excerpt": excerpt}) == 1

    def list(self, *, limit: int, before: int | None = None) -> list[Rejection]:
        rows = self.database.query(POSTGRES_LIST, {"before": before, "limit": limit})
        return [Rejection(**{**row, "problems": _json(row["problems"])}) for row in rows]


def _json(value: object) -> list[dict]:
    return json.loads(value) if isinstance(value, str) else typing.cast(list, value)


def make_rejection_log(job_store: store_base.JobStore) -> RejectionLog:
    """The log on the job store's own database."""
    if job_store.backend == "sqlite":
        return SqliteRejectionLog(job_store.database)
    if job_store.backend == "postgres":
        return PostgresRejectionLog(job_store.database)
    raise ValueError(f"no rejection log for a {job_store.backend!r} store")
