"""Postgres job store: the same contract as the SQLite store, for scaled containers and Lambda.

Every state change is one guarded statement; under READ COMMITTED a statement that waited for a row
lock re-checks its guard on the row's newest version, so of two racing changes exactly one applies.
Claims take the next row with FOR UPDATE SKIP LOCKED, so concurrent workers never queue up behind
each other's candidate row, and record the run in the same statement.

A change that reports a webhook event runs in a transaction: the guarded statement returns the job's
options, and `base.write_event` adds the delivery row (with the job as the change left it) before
the commit. Dispatchers claim due deliveries with SKIP LOCKED too.
"""
from __future__ import annotations

import typing
import uuid

import psycopg
from psycopg.types import json as psycopg_json

from chalicelib.store import base
from chalicelib.store import postgres_db

JOB_FIELDS = tuple(base.Job.__dataclass_fields__)
JOB_COLUMNS = ", ".join(JOB_FIELDS)
CLAIMED_COLUMNS = ", ".join(f"jobs.{name}" for name in JOB_FIELDS)
SNAPSHOT_COLUMNS = ", ".join(name for name in JOB_FIELDS if name not in base.SNAPSHOT_EXCLUDED)

INSERT_JOB = f"""
INSERT INTO jobs (id, owner, kind, status, priority, request, options, webhook_secret,
                  idempotency_key, available_at, created_at, updated_at)
VALUES (%(id)s, %(owner)s, %(kind)s, 'queued', %(priority)s, %(request)s, %(options)s, %(webhook_secret)s,
        %(idempotency_key)s, %(now)s, %(now)s, %(now)s)
ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {JOB_COLUMNS}
"""

SELECT_BY_IDEMPOTENCY = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE owner = %(owner)s AND idempotency_key = %(idempotency_key)s
"""

SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s"
SELECT_OWNED_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s AND owner = %(owner)s"

# Keyset pagination, newest first; served by jobs_owner_seq or jobs_owner_status_seq.
LIST_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {{where}} ORDER BY seq DESC LIMIT %(limit)s"
LIST_FILTERS = {"status": "status = %(status)s", "before": "seq < %(before)s"}

# The queue numbered in claim order up to the last job asked about (base.queue_window), read in
# order from jobs_queued alone (an index-only scan); the seqs are picked out after numbering.
QUEUE_POSITIONS = """
SELECT seq, position FROM (
    SELECT seq, ROW_NUMBER() OVER (ORDER BY priority DESC, seq) AS position FROM jobs
    WHERE status = 'queued' AND priority >= %(last_priority)s
      AND (priority > %(last_priority)s OR seq <= %(last_seq)s)
) AS queue
WHERE seq = ANY(%(seqs)s)
"""

CANCEL_QUEUED = """
UPDATE jobs SET status = 'cancelled', finished_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'queued'
RETURNING options
"""

REQUEST_CANCEL = """
UPDATE jobs SET cancel_requested = TRUE, updated_at = %(now)s WHERE id = %(id)s AND status = 'processing'
"""

SELECT_RUNS = """
SELECT attempt, worker_id, instance, started_at, finished_at, outcome, detail
FROM job_runs WHERE job_id = %(id)s ORDER BY attempt
"""

COUNT_BY_STATUS = "SELECT status, COUNT(*) AS n FROM jobs GROUP BY status"

# One statement: pick the most urgent due job nobody else holds, take it, open its run row.
# (A released attempt is retried under the same number, so its run row is reset, not duplicated.)
CLAIM_NEXT = f"""
WITH candidate AS (
    SELECT seq FROM jobs
    WHERE status = 'queued' AND available_at <= %(now)s
      AND COALESCE(options::jsonb -> 'instance_labels', '[]'::jsonb) <@ %(labels)s::jsonb
    ORDER BY priority DESC, seq LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease_owner = %(worker)s,
           lease_expires_at = %(expires)s, instance = %(instance)s,
           started_at = COALESCE(started_at, %(now)s), progress = NULL, preview = NULL,
           updated_at = %(now)s
    FROM candidate WHERE jobs.seq = candidate.seq AND jobs.status = 'queued'
    RETURNING {CLAIMED_COLUMNS}
), run AS (
    INSERT INTO job_runs (job_id, attempt, worker_id, instance, started_at)
    SELECT id, attempts, %(worker)s, %(instance)s, %(now)s FROM claimed
    ON CONFLICT (job_id, attempt) DO UPDATE
    SET worker_id = EXCLUDED.worker_id, instance = EXCLUDED.instance, started_at = EXCLUDED.started_at,
        finished_at = NULL, outcome = NULL, detail = NULL
)
SELECT {JOB_COLUMNS} FROM claimed
"""

FINISH_RUN = """
UPDATE job_runs SET finished_at = %(now)s, outcome = %(outcome)s, detail = %(detail)s
WHERE job_id = %(id)s AND worker_id = %(worker)s AND finished_at IS NULL
"""

# Also returns the progress it replaced (from the statement's snapshot; only the lease owner writes
# progress), so a changed progress can be reported.
RECORD_PROGRESS = """
WITH before AS (
    SELECT id, progress FROM jobs WHERE id = %(id)s AND status = 'processing' AND lease_owner = %(worker)s
)
UPDATE jobs SET progress = %(progress)s, preview = COALESCE(%(preview)s, jobs.preview),
       lease_expires_at = %(expires)s, updated_at = %(now)s
FROM before
WHERE jobs.id = before.id AND jobs.status = 'processing' AND jobs.lease_owner = %(worker)s
RETURNING jobs.cancel_requested, jobs.options, before.progress AS progress_before
"""

# The guarded changes of a running job by its lease owner; each returns the options (for its event).
OWNED = """
WHERE id = %(id)s AND status = 'processing' AND lease_owner = %(worker)s
RETURNING options
"""

COMPLETE = f"""
UPDATE jobs SET status = 'completed', result = %(result)s, image_count = %(image_count)s,
       result_attempt = attempts, progress = %(progress)s, preview = NULL, finished_at = %(now)s,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = %(now)s
{OWNED}
"""

FINISH_CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', result = %(result)s, image_count = %(image_count)s,
       result_attempt = attempts, preview = NULL, finished_at = %(now)s,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = %(now)s
{OWNED}
"""

FAIL = f"""
UPDATE jobs SET status = 'error', error_code = %(code)s, error_message = %(message)s, preview = NULL,
       finished_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL, updated_at = %(now)s
{OWNED}
"""

RETRY_LATER = f"""
UPDATE jobs SET status = 'queued', available_at = %(available_at)s, lease_owner = NULL,
       lease_expires_at = NULL, instance = NULL, progress = NULL, preview = NULL, updated_at = %(now)s
{OWNED}
"""

RELEASE = f"""
UPDATE jobs SET status = 'queued', attempts = attempts - 1, available_at = %(now)s, lease_owner = NULL,
       lease_expires_at = NULL, instance = NULL, progress = NULL, preview = NULL, updated_at = %(now)s
{OWNED}
"""

EXPIRED_LEASES = """
SELECT id, attempts, lease_owner, cancel_requested FROM jobs
WHERE status = 'processing' AND lease_expires_at < %(now)s
"""

EXPIRED_GUARD = """
WHERE id = %(id)s AND status = 'processing' AND lease_owner = %(worker)s AND lease_expires_at < %(now)s
RETURNING options
"""

EXPIRE_TO_QUEUED = f"""
UPDATE jobs SET status = 'queued', available_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL,
       instance = NULL, progress = NULL, preview = NULL, updated_at = %(now)s
{EXPIRED_GUARD}
"""

EXPIRE_TO_ERROR = f"""
UPDATE jobs SET status = 'error', error_code = 'lease_expired', error_message = %(message)s,
       preview = NULL, finished_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL,
       updated_at = %(now)s
{EXPIRED_GUARD}
"""

EXPIRE_TO_CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', preview = NULL, finished_at = %(now)s, lease_owner = NULL,
       lease_expires_at = NULL, updated_at = %(now)s
{EXPIRED_GUARD}
"""

EXPIRE_TO = {"queued": EXPIRE_TO_QUEUED, "error": EXPIRE_TO_ERROR, "cancelled": EXPIRE_TO_CANCELLED}

STALE_QUEUED = """
SELECT id FROM jobs WHERE status = 'queued' AND available_at <= %(cutoff)s
ORDER BY priority DESC, seq LIMIT %(limit)s
"""

ENSURE_SLOTS = """
INSERT INTO instance_slots (instance, slot)
SELECT %(instance)s, slot FROM generate_series(0, %(capacity)s - 1) AS slot
ON CONFLICT (instance, slot) DO NOTHING
"""

DROP_EXTRA_SLOTS = "DELETE FROM instance_slots WHERE instance = %(instance)s AND slot >= %(capacity)s"

# SKIP LOCKED here too: two acquirers never take the same free slot, and a second one moves on to
# the next free slot instead of failing behind the first one's lock.
ACQUIRE_SLOT = """
WITH candidate AS (
    SELECT instance, slot FROM instance_slots
    WHERE instance = %(instance)s AND (holder IS NULL OR holder = %(holder)s OR expires_at < %(now)s)
    ORDER BY holder IS NOT DISTINCT FROM %(holder)s DESC, slot LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE instance_slots SET holder = %(holder)s, expires_at = %(expires)s
FROM candidate
WHERE instance_slots.instance = candidate.instance AND instance_slots.slot = candidate.slot
RETURNING instance_slots.slot
"""

RENEW_SLOTS = "UPDATE instance_slots SET expires_at = %(expires)s WHERE starts_with(holder, %(prefix)s)"

RELEASE_SLOT = """
UPDATE instance_slots SET holder = NULL, expires_at = NULL
WHERE instance = %(instance)s AND slot = %(slot)s AND holder = %(holder)s
"""

BUSY_INSTANCES = """
SELECT instance, COUNT(*) AS n FROM jobs WHERE status = 'processing' AND instance IS NOT NULL
GROUP BY instance
"""

HEARTBEAT = """
INSERT INTO workers (id, started_at, heartbeat_at, info) VALUES (%(id)s, %(now)s, %(now)s, %(info)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, info = EXCLUDED.info
"""

REMOVE_WORKER = "DELETE FROM workers WHERE id = %(id)s"
PRUNE_WORKERS = "DELETE FROM workers WHERE heartbeat_at < %(cutoff)s"
SELECT_WORKERS = "SELECT id, started_at, heartbeat_at, info FROM workers ORDER BY id"

# -- webhook outbox ---------------------------------------------------------------------------

DELIVERY_FIELDS = tuple(name for name in base.WebhookDelivery.__dataclass_fields__
                        if name not in ("snapshot", "body"))
DELIVERY_COLUMNS = ", ".join(DELIVERY_FIELDS)
CLAIMED_DELIVERY_COLUMNS = ", ".join(f"webhook_deliveries.{name}" for name in DELIVERY_FIELDS)

EVENT_JOB = f"SELECT {SNAPSHOT_COLUMNS} FROM jobs WHERE id = %(id)s"

LAST_EVENT_AT = """
SELECT MAX(event_at) AS last FROM webhook_deliveries WHERE job_id = %(id)s AND event_type = %(event_type)s
"""

INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (id, job_id, event_type, status, event_at, snapshot, body, attempts,
                                next_attempt_at, redelivery_of, created_at, updated_at)
VALUES (%(id)s, %(job_id)s, %(event_type)s, 'pending', %(event_at)s, %(snapshot)s, %(body)s, 0, %(now)s,
        %(redelivery_of)s, %(now)s, %(now)s)
"""

# One statement: take the most overdue pending delivery nobody else holds, push it past the claim's
# lease, close any attempt an earlier claim left open, and open this attempt.
CLAIM_DELIVERY = f"""
WITH candidate AS (
    SELECT seq FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at, seq LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries SET attempts = attempts + 1, claim_token = %(token)s,
           next_attempt_at = %(lease_until)s, updated_at = %(now)s
    FROM candidate
    WHERE webhook_deliveries.seq = candidate.seq AND webhook_deliveries.status = 'pending'
    RETURNING {CLAIMED_DELIVERY_COLUMNS}, webhook_deliveries.snapshot, webhook_deliveries.body
), lost AS (
    UPDATE webhook_attempts SET finished_at = %(now)s, error = %(lost_attempt)s
    FROM claimed
    WHERE webhook_attempts.delivery_id = claimed.id AND webhook_attempts.finished_at IS NULL
), attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, dispatcher_id, started_at)
    SELECT id, attempts, %(dispatcher)s, %(now)s FROM claimed
)
SELECT {DELIVERY_COLUMNS}, snapshot, body FROM claimed
"""

# One statement: record the attempt's answer (always), then move the delivery on if the claim is
# still ours.
FINISH_DELIVERY = """
WITH attempt AS (
    UPDATE webhook_attempts SET finished_at = %(now)s, status_code = %(status_code)s,
           response = %(response)s, error = %(error)s
    WHERE delivery_id = %(id)s AND attempt = %(attempt)s
)
UPDATE webhook_deliveries SET status = %(status)s, next_attempt_at = %(next_attempt_at)s, claim_token = NULL,
       body = COALESCE(body, %(body)s), updated_at = %(now)s,
       finished_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE %(now)s END
WHERE id = %(id)s AND claim_token = %(token)s AND status = 'pending'
"""

LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
WHERE job_id = %(job_id)s AND (%(before)s::bigint IS NULL OR seq < %(before)s::bigint)
ORDER BY seq DESC LIMIT %(limit)s
"""

LIST_ATTEMPTS = """
SELECT delivery_id, attempt, dispatcher_id, started_at, finished_at, status_code, response, error
FROM webhook_attempts WHERE delivery_id = ANY(%(ids)s) ORDER BY delivery_id, attempt
"""

# A copy of the job's latest delivery under a new id: same event, snapshot and (frozen) body.
REDELIVER_LATEST = f"""
INSERT INTO webhook_deliveries (id, job_id, event_type, status, event_at, snapshot, body, attempts,
                                next_attempt_at, redelivery_of, created_at, updated_at)
SELECT %(id)s, job_id, event_type, 'pending', event_at, snapshot, body, 0, %(now)s, id, %(now)s, %(now)s
FROM webhook_deliveries WHERE job_id = %(job_id)s ORDER BY seq DESC LIMIT 1
RETURNING {DELIVERY_COLUMNS}, snapshot, body
"""

COUNT_DUE_DELIVERIES = """
SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= %(now)s
"""


class PostgresJobStore:
    """`JobStore` on Postgres (see postgres_db for connections and error wrapping)."""

    backend = "postgres"

    def __init__(self, database: postgres_db.PostgresDatabase) -> None:
        self.database = database

    def migrate(self) -> None:
        self.database.migrate()

    def ping(self) -> None:
        self.database.query_one(postgres_db.PING)

    # -- API side ---------------------------------------------------------------------------

    def create_job(self, job: base.NewJob, *, now: float) -> tuple[base.Job, bool]:
        """Insert, or return the job the same owner already created with this idempotency key."""
        params = {
            "id": job.id, "owner": job.owner, "kind": job.kind, "priority": job.priority,
            "request": _json(job.request), "options": _json(job.options),
            "webhook_secret": job.webhook_secret, "idempotency_key": job.idempotency_key, "now": now,
        }
        row = self.database.query_one(INSERT_JOB, params)
        if row is not None:
            return _job(row), True
        # ON CONFLICT waited for a racing insert of the same key to commit; its row is visible now.
        return _job(self.database.query_one(SELECT_BY_IDEMPOTENCY, params)), False

    def get_job(self, job_id: str, *, owner: str | None = None) -> base.Job | None:
        sql = SELECT_JOB if owner is None else SELECT_OWNED_JOB
        row = self.database.query_one(sql, {"id": job_id, "owner": owner})
        return _job(row) if row else None

    def list_jobs(self, owner: str, *, status: str | None, limit: int, before: int | None) -> base.Page:
        params = {"owner": owner, "status": status, "before": before, "limit": limit + 1}
        where = " AND ".join(["owner = %(owner)s"] + [
            clause for name, clause in LIST_FILTERS.items() if params[name] is not None])
        rows = self.database.query(LIST_JOBS.format(where=where), params)
        jobs, next_cursor = base.keyset_page([_job(row) for row in rows], limit=limit)
        return base.Page(jobs=jobs, next_cursor=next_cursor)

    def queue_positions(self, jobs: list[base.Job]) -> dict[str, int]:
        window = base.queue_window(jobs)
        if window is None:
            return {}
        return base.positions_by_id(jobs, self.database.query(QUEUE_POSITIONS, window))

    def cancel_queued(self, job_id: str, *, now: float) -> bool:
        with self.database.transaction() as conn:
            row = conn.execute(CANCEL_QUEUED, {"id": job_id, "now": now}).fetchone()
            if row is None:
                return False
            _add_event(conn, job_id, base.EVENT_CANCELLED, options=row["options"], now=now)
        return True

    def request_cancel(self, job_id: str, *, now: float) -> bool:
        return self.database.execute(REQUEST_CANCEL, {"id": job_id, "now": now}) == 1

    def list_runs(self, job_id: str) -> list[base.JobRun]:
        return [base.JobRun(**row) for row in self.database.query(SELECT_RUNS, {"id": job_id})]

    def count_by_status(self) -> dict[str, int]:
        return {row["status"]: row["n"] for row in self.database.query(COUNT_BY_STATUS)}

    # -- worker side ------------------------------------------------------------------------

    def claim_next(self, *, worker_id: str, instance: str, lease_seconds: float, now: float,
                   labels: typing.Sequence[str] = ()) -> base.Job | None:
        with self.database.transaction() as conn:
            row = conn.execute(CLAIM_NEXT, {"worker": worker_id, "instance": instance,
                                            "expires": now + lease_seconds, "now": now,
                                            "labels": _json(list(labels))}).fetchone()
            if row is None:
                return None
            _add_event(conn, row["id"], base.EVENT_STARTED, options=row["options"], now=now)
        return _job(row)

    def record_progress(self, job_id: str, *, worker_id: str, progress: dict, preview: str | None,
                        lease_seconds: float, now: float) -> bool | None:
        with self.database.transaction() as conn:
            row = conn.execute(RECORD_PROGRESS, {
                "id": job_id, "worker": worker_id, "progress": _json(progress), "preview": preview,
                "expires": now + lease_seconds, "now": now}).fetchone()
            if row is None:
                return None
            if row["progress_before"] != progress:
                _add_event(conn, job_id, base.EVENT_PROGRESS, options=row["options"], now=now)
        return row["cancel_requested"]

    def complete(self, job_id: str, *, worker_id: str, result: dict, image_count: int, now: float,
                 progress: dict | None = None) -> bool:
        progress = progress or base.final_progress(None)
        return self._finish(COMPLETE, job_id, worker_id, now, "completed", None, {
            "result": _json(result), "image_count": image_count, "progress": _json(progress)},
            event_type=base.EVENT_COMPLETED)

    def finish_cancelled(self, job_id: str, *, worker_id: str, result: dict | None, image_count: int,
                         now: float) -> bool:
        return self._finish(FINISH_CANCELLED, job_id, worker_id, now, "cancelled", None, {
            "result": _json(result), "image_count": image_count}, event_type=base.EVENT_CANCELLED)

    def fail(self, job_id: str, *, worker_id: str, code: str, message: str, now: float) -> bool:
        message = _text(message)
        return self._finish(FAIL, job_id, worker_id, now, "error", message,
                            {"code": code, "message": message}, event_type=base.EVENT_ERROR)

    def retry_later(self, job_id: str, *, worker_id: str, delay: float, reason: str,
                    now: float) -> bool:
        return self._finish(RETRY_LATER, job_id, worker_id, now, "retry", _text(reason),
                            {"available_at": now + delay})

    def release(self, job_id: str, *, worker_id: str, now: float) -> bool:
        return self._finish(RELEASE, job_id, worker_id, now, "released",
                            "the worker stopped before the job finished", {})

    def expire_leases(self, *, max_attempts: int, now: float) -> list[tuple[str, str]]:
        """Jobs whose worker vanished go back to the queue, or end once attempts are spent."""
        changed = []
        for row in self.database.query(EXPIRED_LEASES, {"now": now}):
            expiry = base.lease_expiry(attempts=row["attempts"], cancel_requested=row["cancel_requested"],
                                       max_attempts=max_attempts)
            params = {"id": row["id"], "worker": row["lease_owner"], "now": now, "message": expiry.detail}
            with self.database.transaction() as conn:
                expired = conn.execute(EXPIRE_TO[expiry.status], params).fetchone()
                if expired is not None:
                    conn.execute(FINISH_RUN, {**params, "outcome": "lost", "detail": expiry.detail})
                    if expiry.event_type is not None:
                        _add_event(conn, row["id"], expiry.event_type, options=expired["options"], now=now)
                    changed.append((row["id"], expiry.status))
        return changed

    def stale_queued(self, *, older_than: float, now: float, limit: int) -> list[str]:
        rows = self.database.query(STALE_QUEUED, {"cutoff": now - older_than, "limit": limit})
        return [row["id"] for row in rows]

    # -- instance slots and workers ---------------------------------------------------------

    def ensure_slots(self, instance: str, capacity: int) -> None:
        params = {"instance": instance, "capacity": capacity}
        with self.database.transaction() as conn:
            conn.execute(ENSURE_SLOTS, params)
            conn.execute(DROP_EXTRA_SLOTS, params)

    def acquire_slot(self, instance: str, *, holder: str, lease_seconds: float,
                     now: float) -> int | None:
        row = self.database.query_one(ACQUIRE_SLOT, {"instance": instance, "holder": holder,
                                                     "expires": now + lease_seconds, "now": now})
        return None if row is None else row["slot"]

    def renew_slots(self, holder_prefix: str, *, lease_seconds: float, now: float) -> None:
        self.database.execute(RENEW_SLOTS, {"expires": now + lease_seconds, "prefix": holder_prefix})

    def release_slot(self, instance: str, slot: int, *, holder: str) -> None:
        self.database.execute(RELEASE_SLOT, {"instance": instance, "slot": slot, "holder": holder})

    def busy_instances(self) -> dict[str, int]:
        return {row["instance"]: row["n"] for row in self.database.query(BUSY_INSTANCES)}

    def heartbeat(self, worker_id: str, *, info: dict, now: float) -> None:
        self.database.execute(HEARTBEAT, {"id": worker_id, "now": now, "info": _json(info)})

    def remove_worker(self, worker_id: str) -> None:
        self.database.execute(REMOVE_WORKER, {"id": worker_id})

    def list_workers(self, *, now: float, keep_seconds: float) -> list[base.Worker]:
        self.database.execute(PRUNE_WORKERS, {"cutoff": now - keep_seconds})
        return [base.Worker(**row) for row in self.database.query(SELECT_WORKERS)]

    # -- webhook outbox ---------------------------------------------------------------------

    def claim_delivery(self, *, dispatcher_id: str, lease_seconds: float,
                       now: float) -> base.WebhookDelivery | None:
        row = self.database.query_one(CLAIM_DELIVERY, {
            "token": uuid.uuid4().hex, "lease_until": now + lease_seconds, "now": now,
            "dispatcher": dispatcher_id, "lost_attempt": base.LOST_ATTEMPT})
        return base.WebhookDelivery(**row) if row else None

    def finish_delivery(self, delivery_id: str, *, claim_token: str, attempt: int,
                        result: base.AttemptResult, status: str, next_attempt_at: float | None,
                        body: str | None, now: float) -> bool:
        return self.database.execute(FINISH_DELIVERY, {
            "id": delivery_id, "attempt": attempt, "token": claim_token, "status": status,
            "status_code": result.status_code, "response": _text(result.response),
            "error": _text(result.error), "next_attempt_at": next_attempt_at, "body": body, "now": now}) == 1

    def list_deliveries(self, job_id: str, *, limit: int, before: int | None) -> base.DeliveryPage:
        rows = self.database.query(LIST_DELIVERIES, {"job_id": job_id, "before": before, "limit": limit + 1})
        deliveries, next_cursor = base.keyset_page([base.WebhookDelivery(**row) for row in rows], limit=limit)
        return base.DeliveryPage(deliveries=deliveries, next_cursor=next_cursor)

    def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[base.WebhookAttempt]]:
        if not delivery_ids:
            return {}
        rows = self.database.query(LIST_ATTEMPTS, {"ids": list(delivery_ids)})
        return base.group_attempts(delivery_ids, rows)

    def redeliver_latest(self, job_id: str, *, now: float) -> base.WebhookDelivery | None:
        row = self.database.query_one(REDELIVER_LATEST, {"id": base.new_delivery_id(), "job_id": job_id,
                                                         "now": now})
        return base.WebhookDelivery(**row) if row else None

    def count_due_deliveries(self, *, now: float) -> int:
        return self.database.query_one(COUNT_DUE_DELIVERIES, {"now": now})["n"]

    # -- helpers ----------------------------------------------------------------------------

    def _finish(self, sql: str, job_id: str, worker_id: str, now: float, outcome: str,
                detail: str | None, extra: dict, *, event_type: str | None = None) -> bool:
        """A guarded state change by the lease owner, with its run row closed (and its webhook
        delivery written) in the same commit."""
        with self.database.transaction() as conn:
            row = conn.execute(sql, {"id": job_id, "worker": worker_id, "now": now, **extra}).fetchone()
            if row is None:
                return False
            conn.execute(FINISH_RUN, {"id": job_id, "worker": worker_id, "now": now,
                                      "outcome": outcome, "detail": detail})
            if event_type is not None:
                _add_event(conn, job_id, event_type, options=row["options"], now=now)
        return True


def _add_event(conn: psycopg.Connection, job_id: str, event_type: str, *, options: dict, now: float) -> bool:
    """Inside the caller's transaction: `base.write_event` for the job as the change left it."""
    return base.write_event(_EventWriter(conn), job_id, event_type, options=options, now=now)


class _EventWriter:
    """`base.EventWriter` on the connection of a transaction (rows are dicts, JSON decoded)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def last_event_at(self, job_id: str, event_type: str) -> float | None:
        return self.conn.execute(LAST_EVENT_AT, {"id": job_id, "event_type": event_type}).fetchone()["last"]

    def snapshot_rows(self, job_id: str) -> tuple[dict, list[dict]]:
        return (self.conn.execute(EVENT_JOB, {"id": job_id}).fetchone(),
                self.conn.execute(SELECT_RUNS, {"id": job_id}).fetchall())

    def insert_delivery(self, values: dict) -> None:
        self.conn.execute(INSERT_DELIVERY, {**values, "snapshot": _json(values["snapshot"])})


def _text(value: str | None) -> str | None:
    """Free text from outside (A1111's error messages, a webhook receiver's answer) minus NUL, which
    a Postgres text value cannot hold; otherwise the outcome could never be recorded."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _json(value: object) -> psycopg_json.Json | None:
    """A parameter for a `json` column (None stays SQL NULL)."""
    return None if value is None else psycopg_json.Json(value)


def _job(row: dict) -> base.Job:
    """psycopg already decodes json columns and booleans; the row maps onto the record as is."""
    return base.Job(**row)
