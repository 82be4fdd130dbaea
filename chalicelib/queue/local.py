"""Doorbell queue in a table of the job database, with SQS's semantics.

`receive` long-polls like SQS's WaitTimeSeconds without querying the table in a tight loop: it
watches `PRAGMA data_version`, which changes only when another connection commits, and looks at the
table when it does (and at least every `FALLBACK_POLL` seconds, for delayed messages coming due).
"""
from __future__ import annotations

import json
import time
import uuid

from chalicelib.queue import base
from chalicelib.store import sqlite_db

WATCH_INTERVAL = 0.005
FALLBACK_POLL = 0.25

SEND = "INSERT INTO queue_messages (queue, body, visible_at, created_at) VALUES (:queue, :body, :visible_at, :now)"

RECEIVE = """
SELECT id, body, receive_count FROM queue_messages
WHERE queue = :queue AND visible_at <= :now ORDER BY id LIMIT :limit
"""


def dead_letter_name(queue: str) -> str:
    return f"{queue}-dlq"


class LocalQueue:
    """`Queue` on the SQLite database shared with the job store."""

    def __init__(self, database: sqlite_db.SqliteDatabase, *, max_receives: int,
                 visibility_timeout: float) -> None:
        self.database = database
        self.max_receives = max_receives
        self.visibility_timeout = visibility_timeout

    def close(self) -> None:
        """Nothing runs in the background: receivers watch the file's data version."""

    def send(self, queue: str, body: dict, *, delay: float = 0) -> None:
        with self.database.transaction() as session:
            self.send_on_commit(queue, body, delay=delay).write(session)

    def send_on_commit(self, queue: str, body: dict, *, delay: float = 0) -> base.TableMessage:
        """A row in the store's own transaction: the job and its doorbell commit together."""
        now = time.time()
        return base.TableMessage(SEND, {"queue": queue, "body": json.dumps(body), "visible_at": now + delay,
                                        "now": now})

    def receive(self, queue: str, *, max_messages: int = 1, wait_seconds: float = 0,
                visibility_timeout: float | None = None) -> list[base.Message]:
        deadline = time.monotonic() + wait_seconds
        timeout = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        while True:
            version = self.database.data_version()
            messages = self._receive_now(queue, max_messages, timeout)
            if messages or time.monotonic() >= deadline:
                return messages
            self._wait_for_commit(version, deadline)

    def delete(self, queue: str, receipt: str) -> None:
        with self.database.write() as conn:
            conn.execute("DELETE FROM queue_messages WHERE queue = ? AND receipt = ?", (queue, receipt))

    def change_visibility(self, queue: str, receipt: str, *, timeout: float) -> None:
        with self.database.write() as conn:
            conn.execute("UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                         (time.time() + timeout, queue, receipt))

    def depth(self, queue: str) -> dict[str, int]:
        now = time.time()
        row = self.database.query_one(
            "SELECT COALESCE(SUM(visible_at <= :now), 0) AS visible, "
            "COALESCE(SUM(visible_at > :now), 0) AS in_flight_or_delayed FROM queue_messages "
            "WHERE queue = :queue", {"now": now, "queue": queue})
        dead = self.database.query_one("SELECT COUNT(*) AS n FROM queue_messages WHERE queue = ?",
                                       [dead_letter_name(queue)])
        return {**row, "dead_letter": dead["n"]}

    def _receive_now(self, queue: str, limit: int, timeout: float) -> list[base.Message]:
        now = time.time()
        received = []
        with self.database.write() as conn:
            rows = conn.execute(RECEIVE, {"queue": queue, "now": now, "limit": limit}).fetchall()
            for message_id, body, count in rows:
                if count >= self.max_receives:
                    conn.execute("UPDATE queue_messages SET queue = ?, receipt = NULL, receive_count = 0 WHERE id = ?",
                                 (dead_letter_name(queue), message_id))
                    continue
                receipt = uuid.uuid4().hex
                conn.execute("UPDATE queue_messages SET receive_count = receive_count + 1, "
                             "visible_at = ?, receipt = ? WHERE id = ?", (now + timeout, receipt, message_id))
                received.append(base.Message(id=str(message_id), body=json.loads(body),
                                             receipt=receipt, receive_count=count + 1))
        return received

    def _wait_for_commit(self, version: int, deadline: float) -> None:
        fallback = min(deadline, time.monotonic() + FALLBACK_POLL)
        while time.monotonic() < fallback:
            time.sleep(WATCH_INTERVAL)
            if self.database.data_version() != version:
                return
