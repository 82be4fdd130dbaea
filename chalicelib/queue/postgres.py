"""Doorbell queue in a table of the Postgres job database, with SQS's semantics.

`receive` takes visible messages with FOR UPDATE SKIP LOCKED in one statement (which also moves
over-received ones to the dead-letter queue), so concurrent receivers never get the same message.
A long poll that finds nothing waits for a NOTIFY, which `send` issues in the same statement as its
insert, and looks at the table at least every `FALLBACK_POLL` seconds anyway: a lost notification
costs at most that long, and delayed messages come due without one. One LISTEN connection per queue
object (so per process) serves every receiving thread; it is opened on the first long poll, so
processes that only send (the API, Lambda) never hold one.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from psycopg.types import json as psycopg_json

from chalicelib import backoff
from chalicelib import errors
from chalicelib.queue import base
from chalicelib.store import postgres_db

log = logging.getLogger(__name__)

CHANNEL = "queue_messages"
FALLBACK_POLL = 0.5
LISTEN_SLICE = 1.0
LISTENER_PING_SECONDS = 30.0
RECONNECT_FIRST_DELAY = 0.2
RECONNECT_MAX_DELAY = 5.0

SEND = """
INSERT INTO queue_messages (queue, body, visible_at, created_at)
VALUES (%(queue)s, %(body)s, %(visible_at)s, %(now)s)
"""

SEND_AND_RING = f"""
WITH message AS ({SEND} RETURNING queue)
SELECT pg_notify('{CHANNEL}', queue) FROM message
"""

RECEIVE = """
WITH picked AS (
    SELECT id, receive_count FROM queue_messages
    WHERE queue = %(queue)s AND visible_at <= %(now)s
    ORDER BY id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), dead AS (
    UPDATE queue_messages SET queue = %(dead_letter)s, receipt = NULL, receive_count = 0
    FROM picked WHERE queue_messages.id = picked.id AND picked.receive_count >= %(max_receives)s
)
UPDATE queue_messages
SET receive_count = queue_messages.receive_count + 1, visible_at = %(visible_at)s,
    receipt = gen_random_uuid()::text
FROM picked WHERE queue_messages.id = picked.id AND picked.receive_count < %(max_receives)s
RETURNING queue_messages.id, queue_messages.body, queue_messages.receipt, queue_messages.receive_count
"""

DELETE = "DELETE FROM queue_messages WHERE queue = %(queue)s AND receipt = %(receipt)s"

CHANGE_VISIBILITY = """
UPDATE queue_messages SET visible_at = %(visible_at)s WHERE queue = %(queue)s AND receipt = %(receipt)s
"""

CHANGE_VISIBILITY_AND_RING = f"""
WITH changed AS ({CHANGE_VISIBILITY} RETURNING queue)
SELECT pg_notify('{CHANNEL}', queue) FROM changed
"""

DEPTH = """
SELECT COUNT(*) FILTER (WHERE queue = %(queue)s AND visible_at <= %(now)s) AS visible,
       COUNT(*) FILTER (WHERE queue = %(queue)s AND visible_at > %(now)s) AS in_flight_or_delayed,
       COUNT(*) FILTER (WHERE queue = %(dead_letter)s) AS dead_letter
FROM queue_messages WHERE queue IN (%(queue)s, %(dead_letter)s)
"""


def dead_letter_name(queue: str) -> str:
    return f"{queue}-dlq"


class PostgresQueue:
    """`Queue` on the Postgres database shared with the job store."""

    def __init__(self, database: postgres_db.PostgresDatabase, *, max_receives: int,
                 visibility_timeout: float) -> None:
        self.database = database
        self.max_receives = max_receives
        self.visibility_timeout = visibility_timeout
        self.doorbell = Doorbell(database)

    def send(self, queue: str, body: dict, *, delay: float = 0) -> None:
        message = self.send_on_commit(queue, body, delay=delay)
        self.database.execute(message.sql, message.params)

    def send_on_commit(self, queue: str, body: dict, *, delay: float = 0) -> base.TableMessage:
        """A row in the store's own transaction; its NOTIFY is delivered when that commits."""
        now = time.time()
        return base.TableMessage(SEND_AND_RING if delay <= 0 else SEND, {
            "queue": queue, "body": psycopg_json.Json(body), "visible_at": now + delay, "now": now})

    def receive(self, queue: str, *, max_messages: int = 1, wait_seconds: float = 0,
                visibility_timeout: float | None = None) -> list[base.Message]:
        deadline = time.monotonic() + wait_seconds
        timeout = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        while True:
            # Read the ring count before looking, so a ring during the look is never slept through.
            rings = self.doorbell.rings(queue) if wait_seconds > 0 else None
            messages = self._receive_now(queue, max_messages, timeout)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            self.doorbell.wait(queue, rings, timeout=min(remaining, FALLBACK_POLL))

    def delete(self, queue: str, receipt: str) -> None:
        self.database.execute(DELETE, {"queue": queue, "receipt": receipt})

    def change_visibility(self, queue: str, receipt: str, *, timeout: float) -> None:
        self.database.execute(CHANGE_VISIBILITY_AND_RING if timeout <= 0 else CHANGE_VISIBILITY,
                              {"queue": queue, "receipt": receipt, "visible_at": time.time() + timeout})

    def depth(self, queue: str) -> dict[str, int]:
        return self.database.query_one(DEPTH, {"queue": queue, "dead_letter": dead_letter_name(queue),
                                               "now": time.time()})

    def close(self) -> None:
        self.doorbell.close()

    def _receive_now(self, queue: str, limit: int, timeout: float) -> list[base.Message]:
        now = time.time()
        rows = self.database.query(RECEIVE, {
            "queue": queue, "dead_letter": dead_letter_name(queue), "now": now, "limit": limit,
            "max_receives": self.max_receives, "visible_at": now + timeout})
        return [base.Message(id=str(row["id"]), body=row["body"], receipt=row["receipt"],
                             receive_count=row["receive_count"])
                for row in sorted(rows, key=lambda row: row["id"])]


class Doorbell:
    """Counts NOTIFYs per queue name; receivers wait for the count to move.

    A daemon thread owns the LISTEN connection. When it (re)connects it rings every queue, since
    notifications sent while it was away are lost; while it is down, receivers just poll.
    """

    def __init__(self, database: postgres_db.PostgresDatabase) -> None:
        self.database = database
        self._counts: collections.Counter[str] = collections.Counter()
        self._epoch = 0
        self._changed = threading.Condition()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def rings(self, queue: str) -> tuple[int, int]:
        self._start()
        with self._changed:
            return self._epoch, self._counts[queue]

    def wait(self, queue: str, rings: tuple[int, int], *, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: (self._epoch, self._counts[queue]) != rings, timeout=timeout)

    def close(self) -> None:
        self._closed.set()

    def _start(self) -> None:
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen_forever, name="queue-listener",
                                                daemon=True)
                self._thread.start()

    def _listen_forever(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                self._listen()
                failures = 0
            except errors.StoreUnavailable as exc:
                failures += 1
                delay = backoff.delay(failures, first=RECONNECT_FIRST_DELAY, cap=RECONNECT_MAX_DELAY)
                log.warning("queue listener lost its connection; receivers poll until it is back: %s",
                            exc, extra={"retry_in": delay})
                self._closed.wait(delay)
            except Exception:  # noqa: BLE001 - the listener must outlive any surprise; receivers poll
                failures += 1
                log.exception("queue listener failed; restarting it")
                self._closed.wait(backoff.delay(failures, first=RECONNECT_FIRST_DELAY, cap=RECONNECT_MAX_DELAY))

    def _listen(self) -> None:
        conn = self.database.connect()
        try:
            with postgres_db.wrapped():
                conn.execute(f"LISTEN {CHANNEL}")
                self._ring_all()
                last_ping = time.monotonic()
                while not self._closed.is_set():
                    for notify in conn.notifies(timeout=LISTEN_SLICE):
                        self._ring(notify.payload)
                    if time.monotonic() - last_ping > LISTENER_PING_SECONDS:
                        conn.execute(postgres_db.PING)  # finds a connection that died silently
                        last_ping = time.monotonic()
        finally:
            conn.close()

    def _ring(self, queue: str) -> None:
        with self._changed:
            self._counts[queue] += 1
            self._changed.notify_all()

    def _ring_all(self) -> None:
        with self._changed:
            self._epoch += 1
            self._changed.notify_all()
