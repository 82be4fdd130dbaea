"""SQLite job store: the embedded default. Every state change is one guarded statement."""
from __future__ import annotations

import json
import sqlite3
import typing
import uuid

from chalicelib.store import base
from chalicelib.store import sqlite_db

JOB_COLUMNS = ", ".join(f.name for f in base.Job.__dataclass_fields__.values())
JSON_COLUMNS = ("request", "options", "progress", "result")
SNAPSHOT_COLUMNS = ", ".join(f.name for f in base.Job.__dataclass_fields__.values()
                             if f.name not in base.SNAPSHOT_EXCLUDED)
RUN_COLUMNS = "attempt, worker_id, instance, started_at, finished_at, outcome, detail"

INSERT_JOB = """
INSERT INTO jobs (id, owner, kind, status, priority, request, options, webhook_secret,
                  idempotency_key, available_at, created_at, updated_at)
VALUES (:id, :owner, :kind, 'queued', :priority, :request, :options, :webhook_secret,
        :idempotency_key, :now, :now, :now)
"""

SELECT_BY_IDEMPOTENCY = f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?"

# The queue numbered in claim order up to the last job asked about (base.queue_window), read in
# order from jobs_queued alone; {marks} is one bound parameter per seq.
QUEUE_POSITIONS = """
SELECT seq, position FROM (
    SELECT seq, ROW_NUMBER() OVER (ORDER BY priority DESC, seq) AS position FROM jobs
    WHERE status = 'queued' AND priority >= :last_priority AND (priority > :last_priority OR seq <= :last_seq)
) AS queue
WHERE seq IN ({marks})
"""

CANCEL_QUEUED = """
UPDATE jobs SET status = 'cancelled', finished_at = :now, updated_at = :now
WHERE id = :id AND status = 'queued'
"""

REQUEST_CANCEL = """
UPDATE jobs SET cancel_requested = 1, updated_at = :now WHERE id = :id AND status = 'processing'
"""

CLAIM_NEXT = f"""
UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease_owner = :worker,
       lease_expires_at = :expires, instance = :instance, started_at = COALESCE(started_at, :now),
       progress = NULL, preview = NULL, updated_at = :now
WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' AND available_at <= :now
             AND NOT EXISTS (SELECT 1 FROM json_each(jobs.options, '$.instance_labels')
                             WHERE value NOT IN (SELECT value FROM json_each(:labels)))
             ORDER BY priority DESC, seq LIMIT 1)
  AND status = 'queued'
RETURNING {JOB_COLUMNS}
"""

INSERT_RUN = """
INSERT OR REPLACE INTO job_runs (job_id, attempt, worker_id, instance, started_at)
VALUES (:id, :attempt, :worker, :instance, :now)
"""

FINISH_RUN = """
UPDATE job_runs SET finished_at = :now, outcome = :outcome, detail = :detail
WHERE job_id = :id AND worker_id = :worker AND finished_at IS NULL
"""

PROGRESS_BEFORE = "SELECT progress FROM jobs WHERE id = :id AND status = 'processing' AND lease_owner = :worker"

RECORD_PROGRESS = """
UPDATE jobs SET progress = :progress, preview = COALESCE(:preview, preview),
       lease_expires_at = :expires, updated_at = :now
WHERE id = :id AND status = 'processing' AND lease_owner = :worker
RETURNING cancel_requested
"""

OWNED = "WHERE id = :id AND status = 'processing' AND lease_owner = :worker"

COMPLETE = f"""
UPDATE jobs SET status = 'completed', result = :result, image_count = :image_count,
       result_attempt = attempts, progress = :progress, preview = NULL, finished_at = :now,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
{OWNED}
"""

FINISH_CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', result = :result, image_count = :image_count,
       result_attempt = attempts, preview = NULL, finished_at = :now,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
{OWNED}
"""

FAIL = f"""
UPDATE jobs SET status = 'error', error_code = :code, error_message = :message, preview = NULL,
       finished_at = :now, lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
{OWNED}
"""

RETRY_LATER = f"""
UPDATE jobs SET status = 'queued', available_at = :available_at, lease_owner = NULL,
       lease_expires_at = NULL, instance = NULL, progress = NULL, preview = NULL, updated_at = :now
{OWNED}
"""

RELEASE = f"""
UPDATE jobs SET status = 'queued', attempts = attempts - 1, available_at = :now, lease_owner = NULL,
       lease_expires_at = NULL, instance = NULL, progress = NULL, preview = NULL, updated_at = :now
{OWNED}
"""

EXPIRED_LEASES = """
SELECT id, attempts, lease_owner, cancel_requested FROM jobs
WHERE status = 'processing' AND lease_expires_at < :now
"""

EXPIRED_GUARD = "WHERE id = :id AND status = 'processing' AND lease_owner = :worker AND lease_expires_at < :now"

EXPIRE_TO_QUEUED = f"""
UPDATE jobs SET status = 'queued', available_at = :now, lease_owner = NULL, lease_expires_at = NULL,
       instance = NULL, progress = NULL, preview = NULL, updated_at = :now
{EXPIRED_GUARD}
"""

EXPIRE_TO_ERROR = f"""
UPDATE jobs SET status = 'error', error_code = 'lease_expired', error_message = :message,
       preview = NULL, finished_at = :now, lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
{EXPIRED_GUARD}
"""

EXPIRE_TO_CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', preview = NULL, finished_at = :now, lease_owner = NULL,
       lease_expires_at = NULL, updated_at = :now
{EXPIRED_GUARD}
"""

EXPIRE_TO = {"queued": EXPIRE_TO_QUEUED, "error": EXPIRE_TO_ERROR, "cancelled": EXPIRE_TO_CANCELLED}

STALE_QUEUED = """
SELECT id FROM jobs WHERE status = 'queued' AND available_at <= :cutoff ORDER BY priority DESC, seq LIMIT :limit
"""

# -- webhook outbox ---------------------------------------------------------------------------

DELIVERY_COLUMNS = ("seq, id, job_id, event_type, status, event_at, attempts, next_attempt_at, "
                    "claim_token, redelivery_of, created_at, updated_at, finished_at")

EVENT_OPTIONS = "SELECT options FROM jobs WHERE id = :id"

EVENT_JOB = f"SELECT {SNAPSHOT_COLUMNS} FROM jobs WHERE id = :id"

EVENT_RUNS = f"SELECT {RUN_COLUMNS} FROM job_runs WHERE job_id = :id ORDER BY attempt"

LAST_EVENT_AT = """
SELECT MAX(event_at) AS last FROM webhook_deliveries WHERE job_id = :id AND event_type = :event_type
"""

INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (id, job_id, event_type, status, event_at, snapshot, body, attempts,
                                next_attempt_at, redelivery_of, created_at, updated_at)
VALUES (:id, :job_id, :event_type, 'pending', :event_at, :snapshot, :body, 0, :now, :redelivery_of,
        :now, :now)
"""

CLAIM_DELIVERY = f"""
UPDATE webhook_deliveries SET attempts = attempts + 1, claim_token = :token,
       next_attempt_at = :lease_until, updated_at = :now
WHERE seq = (SELECT seq FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now
             ORDER BY next_attempt_at, seq LIMIT 1)
  AND status = 'pending'
RETURNING {DELIVERY_COLUMNS}, snapshot, body
"""

CLOSE_LOST_ATTEMPTS = """
UPDATE webhook_attempts SET finished_at = :now, error = :error
WHERE delivery_id = :id AND finished_at IS NULL
"""

INSERT_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, dispatcher_id, started_at)
VALUES (:id, :attempt, :dispatcher, :now)
"""

FINISH_ATTEMPT = """
UPDATE webhook_attempts SET finished_at = :now, status_code = :status_code, response = :response,
       error = :error
WHERE delivery_id = :id AND attempt = :attempt
"""

FINISH_DELIVERY = """
UPDATE webhook_deliveries SET status = :status, next_attempt_at = :next_attempt_at, claim_token = NULL,
       body = COALESCE(body, :body), updated_at = :now,
       finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE :now END
WHERE id = :id AND claim_token = :token AND status = 'pending'
"""

LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
WHERE job_id = :job_id AND (:before IS NULL OR seq < :before)
ORDER BY seq DESC LIMIT :limit
"""

LIST_ATTEMPTS = """
SELECT delivery_id, attempt, dispatcher_id, started_at, finished_at, status_code, response, error
FROM webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY delivery_id, attempt
"""

LATEST_DELIVERY = f"""
SELECT {DELIVERY_COLUMNS}, snapshot, body FROM webhook_deliveries WHERE job_id = :job_id
ORDER BY seq DESC LIMIT 1
"""

SELECT_DELIVERY = f"SELECT {DELIVERY_COLUMNS}, snapshot, body FROM webhook_deliveries WHERE id = :id"

ANY_DUE_DELIVERY = """
SELECT 1 AS due FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now LIMIT 1
"""

COUNT_DUE_DELIVERIES = """
SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now
"""

ACQUIRE_SLOT = """
UPDATE instance_slots SET holder = :holder, expires_at = :expires
WHERE instance = :instance AND slot = (
    SELECT slot FROM instance_slots
    WHERE instance = :instance AND (holder IS NULL OR holder = :holder OR expires_at < :now)
    ORDER BY holder = :holder DESC, slot LIMIT 1)
RETURNING slot
"""


class SqliteJobStore:
    """`JobStore` on a SQLite file (see sqlite_db for the locking rules)."""

    backend = "sqlite"

    def __init__(self, database: sqlite_db.SqliteDatabase) -> None:
        self.database = database

    def migrate(self) -> None:
        self.database.migrate()

    def ping(self) -> None:
        self.database.query("SELECT 1")

    # -- API side ---------------------------------------------------------------------------

    def create_job(self, job: base.NewJob, *, now: float) -> tuple[base.Job, bool]:
        params = {
            "id": job.id, "owner": job.owner, "kind": job.kind, "priority": job.priority,
            "request": json.dumps(job.request), "options": json.dumps(job.options),
            "webhook_secret": job.webhook_secret, "idempotency_key": job.idempotency_key, "now": now,
        }
        try:
            with self.database.write() as conn:
                conn.execute(INSERT_JOB, params)
        except sqlite3.IntegrityError:
            row = self.database.query_one(SELECT_BY_IDEMPOTENCY, [job.owner, job.idempotency_key])
            if row is None:
                raise
            return _job(row), False
        return self.get_job(job.id), True

    def get_job(self, job_id: str, *, owner: str | None = None) -> base.Job | None:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id"
        if owner is not None:
            sql += " AND owner = :owner"
        row = self.database.query_one(sql, {"id": job_id, "owner": owner})
        return _job(row) if row else None

    def list_jobs(self, owner: str, *, status: str | None, limit: int, before: int | None) -> base.Page:
        clauses = ["owner = :owner"]
        if status is not None:
            clauses.append("status = :status")
        if before is not None:
            clauses.append("seq < :before")
        sql = (f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} "
               "ORDER BY seq DESC LIMIT :limit")
        rows = self.database.query(sql, {"owner": owner, "status": status, "before": before,
                                         "limit": limit + 1})
        jobs, next_cursor = base.keyset_page([_job(row) for row in rows], limit=limit)
        return base.Page(jobs=jobs, next_cursor=next_cursor)

    def queue_positions(self, jobs: list[base.Job]) -> dict[str, int]:
        window = base.queue_window(jobs)
        if window is None:
            return {}
        seqs = {f"seq{n}": seq for n, seq in enumerate(window.pop("seqs"))}
        sql = QUEUE_POSITIONS.format(marks=", ".join(f":{name}" for name in seqs))
        return base.positions_by_id(jobs, self.database.query(sql, {**window, **seqs}))

    def cancel_queued(self, job_id: str, *, now: float) -> bool:
        with self.database.write() as conn:
            if conn.execute(CANCEL_QUEUED, {"id": job_id, "now": now}).rowcount != 1:
                return False
            _add_event(conn, job_id, base.EVENT_CANCELLED, now=now)
        return True

    def request_cancel(self, job_id: str, *, now: float) -> bool:
        return self._update(REQUEST_CANCEL, {"id": job_id, "now": now})

    def list_runs(self, job_id: str) -> list[base.JobRun]:
        rows = self.database.query(
            "SELECT attempt, worker_id, instance, started_at, finished_at, outcome, detail "
            "FROM job_runs WHERE job_id = ? ORDER BY attempt", [job_id])
        return [base.JobRun(**row) for row in rows]

    def count_by_status(self) -> dict[str, int]:
        rows = self.database.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    # -- worker side ------------------------------------------------------------------------

    def claim_next(self, *, worker_id: str, instance: str, lease_seconds: float, now: float,
                   labels: typing.Sequence[str] = ()) -> base.Job | None:
        with self.database.write() as conn:
            cursor = conn.execute(CLAIM_NEXT, {"worker": worker_id, "instance": instance,
                                               "expires": now + lease_seconds, "now": now,
                                               "labels": json.dumps(list(labels))})
            columns = [d[0] for d in cursor.description]
            row = cursor.fetchone()
            cursor.close()
            if row is None:
                return None
            job = _job(dict(zip(columns, row)))
            conn.execute(INSERT_RUN, {"id": job.id, "attempt": job.attempts, "worker": worker_id,
                                      "instance": instance, "now": now})
            _add_event(conn, job.id, base.EVENT_STARTED, now=now)
        return job

    def record_progress(self, job_id: str, *, worker_id: str, progress: dict, preview: str | None,
                        lease_seconds: float, now: float) -> bool | None:
        encoded = json.dumps(progress)
        with self.database.write() as conn:
            before = conn.execute(PROGRESS_BEFORE, {"id": job_id, "worker": worker_id}).fetchone()
            row = conn.execute(RECORD_PROGRESS, {
                "id": job_id, "worker": worker_id, "progress": encoded,
                "preview": preview, "expires": now + lease_seconds, "now": now}).fetchone()
            if row is not None and before is not None and _changed(before[0], encoded):
                _add_event(conn, job_id, base.EVENT_PROGRESS, now=now)
        return None if row is None else bool(row[0])

    def complete(self, job_id: str, *, worker_id: str, result: dict, image_count: int, now: float,
                 progress: dict | None = None) -> bool:
        progress = progress or base.final_progress(None)
        return self._finish(COMPLETE, job_id, worker_id, now, "completed", None, {
            "result": json.dumps(result), "image_count": image_count,
            "progress": json.dumps(progress)}, event_type=base.EVENT_COMPLETED)

    def finish_cancelled(self, job_id: str, *, worker_id: str, result: dict | None, image_count: int,
                         now: float) -> bool:
        return self._finish(FINISH_CANCELLED, job_id, worker_id, now, "cancelled", None, {
            "result": json.dumps(result) if result is not None else None, "image_count": image_count},
            event_type=base.EVENT_CANCELLED)

    def fail(self, job_id: str, *, worker_id: str, code: str, message: str, now: float) -> bool:
        return self._finish(FAIL, job_id, worker_id, now, "error", message,
                            {"code": code, "message": message}, event_type=base.EVENT_ERROR)

    def retry_later(self, job_id: str, *, worker_id: str, delay: float, reason: str,
                    now: float) -> bool:
        return self._finish(RETRY_LATER, job_id, worker_id, now, "retry", reason,
                            {"available_at": now + delay})

    def release(self, job_id: str, *, worker_id: str, now: float) -> bool:
        return self._finish(RELEASE, job_id, worker_id, now, "released",
                            "the worker stopped before the job finished", {})

    def expire_leases(self, *, max_attempts: int, now: float) -> list[tuple[str, str]]:
        """Jobs whose worker vanished go back to the queue, or end once attempts are spent."""
        changed = []
        for row in self.database.query(EXPIRED_LEASES, {"now": now}):
            expiry = base.lease_expiry(attempts=row["attempts"], cancel_requested=bool(row["cancel_requested"]),
                                       max_attempts=max_attempts)
            params = {"id": row["id"], "worker": row["lease_owner"], "now": now, "message": expiry.detail}
            with self.database.write() as conn:
                if conn.execute(EXPIRE_TO[expiry.status], params).rowcount:
                    conn.execute(FINISH_RUN, {**params, "outcome": "lost", "detail": expiry.detail})
                    if expiry.event_type is not None:
                        _add_event(conn, row["id"], expiry.event_type, now=now)
                    changed.append((row["id"], expiry.status))
        return changed

    def stale_queued(self, *, older_than: float, now: float, limit: int) -> list[str]:
        rows = self.database.query(STALE_QUEUED, {"cutoff": now - older_than, "limit": limit})
        return [row["id"] for row in rows]

    # -- instance slots and workers ---------------------------------------------------------

    def ensure_slots(self, instance: str, capacity: int) -> None:
        with self.database.write() as conn:
            conn.executemany("INSERT OR IGNORE INTO instance_slots (instance, slot) VALUES (?, ?)",
                             [(instance, slot) for slot in range(capacity)])
            conn.execute("DELETE FROM instance_slots WHERE instance = ? AND slot >= ?",
                         (instance, capacity))

    def acquire_slot(self, instance: str, *, holder: str, lease_seconds: float,
                     now: float) -> int | None:
        with self.database.write() as conn:
            row = conn.execute(ACQUIRE_SLOT, {"instance": instance, "holder": holder,
                                              "expires": now + lease_seconds, "now": now}).fetchone()
        return None if row is None else row[0]

    def renew_slots(self, holder_prefix: str, *, lease_seconds: float, now: float) -> None:
        with self.database.write() as conn:
            conn.execute("UPDATE instance_slots SET expires_at = ? WHERE holder LIKE ? ESCAPE '\\'",
                         (now + lease_seconds, _like_prefix(holder_prefix)))

    def release_slot(self, instance: str, slot: int, *, holder: str) -> None:
        with self.database.write() as conn:
            conn.execute("UPDATE instance_slots SET holder = NULL, expires_at = NULL "
                         "WHERE instance = ? AND slot = ? AND holder = ?", (instance, slot, holder))

    def busy_instances(self) -> dict[str, int]:
        rows = self.database.query(
            "SELECT instance, COUNT(*) AS n FROM jobs WHERE status = 'processing' GROUP BY instance")
        return {row["instance"]: row["n"] for row in rows if row["instance"]}

    def heartbeat(self, worker_id: str, *, info: dict, now: float) -> None:
        with self.database.write() as conn:
            conn.execute(
                "INSERT INTO workers (id, started_at, heartbeat_at, info) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, info = excluded.info",
                (worker_id, now, now, json.dumps(info)))

    def remove_worker(self, worker_id: str) -> None:
        with self.database.write() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def list_workers(self, *, now: float, keep_seconds: float) -> list[base.Worker]:
        with self.database.write() as conn:
            conn.execute("DELETE FROM workers WHERE heartbeat_at < ?", (now - keep_seconds,))
        rows = self.database.query("SELECT id, started_at, heartbeat_at, info FROM workers ORDER BY id")
        return [base.Worker(id=r["id"], started_at=r["started_at"], heartbeat_at=r["heartbeat_at"],
                            info=json.loads(r["info"])) for r in rows]

    # -- webhook outbox ---------------------------------------------------------------------

    def claim_delivery(self, *, dispatcher_id: str, lease_seconds: float,
                       now: float) -> base.WebhookDelivery | None:
        if self.database.query_one(ANY_DUE_DELIVERY, {"now": now}) is None:
            return None  # idle dispatchers poll: a read, not a write lock, when nothing is due
        token = uuid.uuid4().hex
        with self.database.write() as conn:
            row = _fetch_one(conn, CLAIM_DELIVERY, {"token": token, "lease_until": now + lease_seconds,
                                                    "now": now})
            if row is None:
                return None
            delivery = _delivery(row)
            conn.execute(CLOSE_LOST_ATTEMPTS, {"id": delivery.id, "now": now, "error": base.LOST_ATTEMPT})
            conn.execute(INSERT_ATTEMPT, {"id": delivery.id, "attempt": delivery.attempts,
                                          "dispatcher": dispatcher_id, "now": now})
        return delivery

    def finish_delivery(self, delivery_id: str, *, claim_token: str, attempt: int,
                        result: base.AttemptResult, status: str, next_attempt_at: float | None,
                        body: str | None, now: float) -> bool:
        with self.database.write() as conn:
            conn.execute(FINISH_ATTEMPT, {"id": delivery_id, "attempt": attempt, "now": now,
                                          "status_code": result.status_code, "response": result.response,
                                          "error": result.error})
            return conn.execute(FINISH_DELIVERY, {
                "id": delivery_id, "token": claim_token, "status": status,
                "next_attempt_at": next_attempt_at, "body": body, "now": now}).rowcount == 1

    def list_deliveries(self, job_id: str, *, limit: int, before: int | None) -> base.DeliveryPage:
        rows = self.database.query(LIST_DELIVERIES, {"job_id": job_id, "before": before, "limit": limit + 1})
        deliveries, next_cursor = base.keyset_page([_delivery(row) for row in rows], limit=limit)
        return base.DeliveryPage(deliveries=deliveries, next_cursor=next_cursor)

    def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[base.WebhookAttempt]]:
        if not delivery_ids:
            return {}
        marks = ", ".join("?" for _ in delivery_ids)
        rows = self.database.query(LIST_ATTEMPTS.format(marks=marks), list(delivery_ids))
        return base.group_attempts(delivery_ids, rows)

    def redeliver_latest(self, job_id: str, *, now: float) -> base.WebhookDelivery | None:
        with self.database.write() as conn:
            latest = _fetch_one(conn, LATEST_DELIVERY, {"job_id": job_id})
            if latest is None:
                return None
            new_id = base.new_delivery_id()
            conn.execute(INSERT_DELIVERY, {
                "id": new_id, "job_id": job_id, "event_type": latest["event_type"],
                "event_at": latest["event_at"], "snapshot": latest["snapshot"], "body": latest["body"],
                "redelivery_of": latest["id"], "now": now})
            row = _fetch_one(conn, SELECT_DELIVERY, {"id": new_id})
        return _delivery(row)

    def count_due_deliveries(self, *, now: float) -> int:
        return self.database.query_one(COUNT_DUE_DELIVERIES, {"now": now})["n"]

    # -- helpers ----------------------------------------------------------------------------

    def _update(self, sql: str, params: dict) -> bool:
        with self.database.write() as conn:
            return conn.execute(sql, params).rowcount == 1

    def _finish(self, sql: str, job_id: str, worker_id: str, now: float, outcome: str,
                detail: str | None, extra: dict, *, event_type: str | None = None) -> bool:
        """A guarded state change by the lease owner, with its run row closed (and its webhook
        delivery written) in the same commit."""
        with self.database.write() as conn:
            if not conn.execute(sql, {"id": job_id, "worker": worker_id, "now": now, **extra}).rowcount:
                return False
            conn.execute(FINISH_RUN, {"id": job_id, "worker": worker_id, "now": now,
                                      "outcome": outcome, "detail": detail})
            if event_type is not None:
                _add_event(conn, job_id, event_type, now=now)
        return True


def _add_event(conn: sqlite3.Connection, job_id: str, event_type: str, *, now: float) -> bool:
    """Inside the caller's transaction: `base.write_event` for the job as the change left it."""
    row = conn.execute(EVENT_OPTIONS, {"id": job_id}).fetchone()
    return row is not None and base.write_event(_EventWriter(conn), job_id, event_type,
                                                options=json.loads(row[0]), now=now)


class _EventWriter:
    """`base.EventWriter` on the connection of a write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def last_event_at(self, job_id: str, event_type: str) -> float | None:
        return self.conn.execute(LAST_EVENT_AT, {"id": job_id, "event_type": event_type}).fetchone()[0]

    def snapshot_rows(self, job_id: str) -> tuple[dict, list[dict]]:
        job = _decode_json(_fetch_one(self.conn, EVENT_JOB, {"id": job_id}))
        job["cancel_requested"] = bool(job["cancel_requested"])
        return job, _fetch_all(self.conn, EVENT_RUNS, {"id": job_id})

    def insert_delivery(self, values: dict) -> None:
        self.conn.execute(INSERT_DELIVERY, {**values, "snapshot": json.dumps(values["snapshot"])})


def _changed(before: str | None, after: str) -> bool:
    return before is None or json.loads(before) != json.loads(after)


def _fetch_all(conn: sqlite3.Connection, sql: str, params: dict) -> list[dict]:
    cursor = conn.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    cursor.close()
    return rows


def _fetch_one(conn: sqlite3.Connection, sql: str, params: dict) -> dict | None:
    rows = _fetch_all(conn, sql, params)
    return rows[0] if rows else None


def _delivery(row: dict) -> base.WebhookDelivery:
    values = dict(row)
    if values.get("snapshot") is not None:
        values["snapshot"] = json.loads(values["snapshot"])
    return base.WebhookDelivery(**values)


def _decode_json(row: dict) -> dict:
    values = dict(row)
    for column in JSON_COLUMNS:
        if column in values and values[column] is not None:
            values[column] = json.loads(values[column])
    return values


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _job(row: dict) -> base.Job:
    values = _decode_json(row)
    values["cancel_requested"] = bool(values["cancel_requested"])
    return base.Job(**values)
