"""Rejected submissions: queue messages the intake could not turn into a job, and why.

Kept in the job database (table `rejected_submissions`) so operators can see them
(`python -m worker_fn rejected`) long after SQS would have dropped a dead letter, and so a
redelivered bad message is recorded once. The excerpt never holds a webhook secret.
"""
from __future__ import annotations

import dataclasses

from chalicelib.store import base as store_base
from chalicelib.store import database as store_database

EXCERPT_CHARS = 2048

RECORD = """
INSERT INTO rejected_submissions (message_id, received_at, reason, problems, excerpt)
VALUES (:message_id, :received_at, :reason, :problems, :excerpt)
ON CONFLICT (message_id) DO NOTHING
"""
LIST = """
SELECT seq, message_id, received_at, reason, problems, excerpt FROM rejected_submissions
WHERE (CAST(:before AS BIGINT) IS NULL OR seq < CAST(:before AS BIGINT)) ORDER BY seq DESC LIMIT :limit
"""


@dataclasses.dataclass(frozen=True)
class Rejection:
    seq: int
    message_id: str
    received_at: float
    reason: str
    problems: list[dict]
    excerpt: str


class RejectionLog:
    """The log on a job store's database (either adapter)."""

    def __init__(self, database: store_database.Database) -> None:
        self.database = database

    def record(self, message_id: str, *, reason: str, problems: list[dict], excerpt: str, now: float) -> bool:
        """Keep one rejection per message id; False when this message was recorded before."""
        return self.database.execute(self.database.native(RECORD), {
            "message_id": message_id, "received_at": now, "reason": reason,
            "problems": self.database.dump_json(problems), "excerpt": excerpt}) == 1

    def list(self, *, limit: int, before: int | None = None) -> list[Rejection]:
        """Newest first."""
        rows = self.database.query(self.database.native(LIST), {"before": before, "limit": limit})
        return [Rejection(**{**row, "problems": self.database.load_json(row["problems"])}) for row in rows]


def make_rejection_log(job_store: store_base.JobStore) -> RejectionLog:
    """The log on the job store's own database."""
    return RejectionLog(job_store.database)
