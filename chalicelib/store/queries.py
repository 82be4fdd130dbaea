"""Every statement of the job store and its webhook outbox, each written once and named.

Statements use `:name` parameters; `for_database()` hands a store the set for its dialect, each
statement already in the driver's parameter style. A dialect overrides a statement only where
SQLite and Postgres really differ (the `SQLITE` and `POSTGRES` tables at the end): claims with
FOR UPDATE SKIP LOCKED, list parameters, and the places where Postgres does in one statement (a
data-modifying CTE) what SQLite does in several inside its write transaction. A statement a
dialect does not need is None there.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing

from chalicelib.store import base
from chalicelib.store import database as database_module

JOB_FIELDS = tuple(field.name for field in dataclasses.fields(base.Job))
JOB_COLUMNS = ", ".join(JOB_FIELDS)
SNAPSHOT_COLUMNS = ", ".join(name for name in JOB_FIELDS if name not in base.SNAPSHOT_EXCLUDED)
RUN_COLUMNS = "attempt, worker_id, instance, started_at, finished_at, outcome, detail"
DELIVERY_FIELDS = tuple(field.name for field in dataclasses.fields(base.WebhookDelivery)
                        if field.name not in ("snapshot", "body"))
DELIVERY_COLUMNS = ", ".join(DELIVERY_FIELDS)
BATCH_COLUMNS = ", ".join(field.name for field in dataclasses.fields(base.Batch))
MEMBER_COLUMNS = ", ".join(field.name for field in dataclasses.fields(base.BatchMember))

# -- jobs, API side -------------------------------------------------------------------------------

# A second submit with the same idempotency key inserts nothing and returns no row (on Postgres
# after waiting for a racing insert of that key to commit, whose row SELECT_BY_IDEMPOTENCY then sees).
INSERT_JOB = """
INSERT INTO jobs (id, owner, kind, status, priority, request, options, webhook_secret,
                  idempotency_key, batch_id, available_at, created_at, updated_at)
VALUES (:id, :owner, :kind, 'queued', :priority, :request, :options, :webhook_secret,
        :idempotency_key, :batch_id, :now, :now, :now)
ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq, version
"""

SELECT_BY_IDEMPOTENCY = f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = :owner AND idempotency_key = :idempotency_key"
SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id"
SELECT_OWNED_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id AND owner = :owner"

# Keyset pagination, newest first; served by jobs_owner_seq or jobs_owner_status_seq. {where} is
# built from LIST_FILTERS, our own text.
LIST_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {{where}} ORDER BY seq DESC LIMIT :limit"
LIST_FILTERS = {"owner": "owner = :owner", "status": "status = :status", "before": "seq < :before"}

# The queue numbered in claim order up to the last job asked about (base.queue_window), read in
# order from jobs_queued alone (an index-only scan); the seqs are picked out after numbering.
QUEUE_POSITIONS = """
SELECT seq, position FROM (
    SELECT seq, ROW_NUMBER() OVER (ORDER BY priority DESC, seq) AS position FROM jobs
    WHERE status = 'queued' AND priority >= :last_priority
      AND (priority > :last_priority OR seq <= :last_seq)
) AS queue
WHERE {seq_in_seqs}
"""

# The original proxy's queue view: an owner's unfinished jobs and those finished since :since.
LIST_RECENT_JOBS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE owner = :owner AND (status IN ('queued', 'processing') OR finished_at >= :since)
ORDER BY seq DESC LIMIT :limit
"""

# An owner's queued jobs in queue order (live streams refresh their positions when the queue moves).
OWNER_QUEUED = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE owner = :owner AND status = 'queued' ORDER BY priority DESC, seq LIMIT :limit
"""
# An owner's unfinished jobs, newest first (what an owner's event stream starts with).
OWNER_ACTIVE = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE owner = :owner AND status IN ('queued', 'processing')
ORDER BY seq DESC LIMIT :limit
"""

# The change log the SQLite triggers write (chalicelib/changes.py reads it; Postgres NOTIFYs instead).
LAST_CHANGE = "SELECT COALESCE(MAX(seq), 0) AS seq FROM job_changes"
CHANGES_AFTER = """
SELECT seq, job_id, owner, version, left_queue FROM job_changes WHERE seq > :after ORDER BY seq LIMIT :limit
"""

SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM job_runs WHERE job_id = :id ORDER BY attempt"
COUNT_BY_STATUS = "SELECT status, COUNT(*) AS n FROM jobs GROUP BY status"
STALE_QUEUED = """
SELECT id FROM jobs WHERE status = 'queued' AND available_at <= :cutoff ORDER BY priority DESC, seq LIMIT :limit
"""

# -- guarded changes ------------------------------------------------------------------------------
# Each returns the job's options (what `base.write_event` needs), or no row when its guard failed.

CANCEL_QUEUED = """
UPDATE jobs SET status = 'cancelled', finished_at = :now, updated_at = :now, version = version + 1
WHERE id = :id AND status = 'queued'
RETURNING options, batch_id
"""

REQUEST_CANCEL = """
UPDATE jobs SET cancel_requested = TRUE, updated_at = :now, version = version + 1
WHERE id = :id AND status = 'processing'
RETURNING options
"""

# The claim itself is per dialect (below). A released attempt is retried under the same number, so
# its run row is reset, not duplicated.
OPEN_RUN = """
INSERT INTO job_runs (job_id, attempt, worker_id, instance, started_at)
VALUES (:id, :attempt, :worker, :instance, :now)
ON CONFLICT (job_id, attempt) DO UPDATE
SET worker_id = excluded.worker_id, instance = excluded.instance, started_at = excluded.started_at,
    finished_at = NULL, outcome = NULL, detail = NULL
"""

FINISH_RUN = """
UPDATE job_runs SET finished_at = :now, outcome = :outcome, detail = :detail
WHERE job_id = :id AND worker_id = :worker AND finished_at IS NULL
"""

# The progress it replaces, read first (only the lease owner writes progress), so a changed
# progress can be reported; Postgres reads it in RECORD_PROGRESS itself.
PROGRESS_BEFORE = "SELECT progress FROM jobs WHERE id = :id AND status = 'processing' AND lease_owner = :worker"

RECORD_PROGRESS = """
UPDATE jobs SET progress = :progress, preview = COALESCE(:preview, preview),
       lease_expires_at = :expires, updated_at = :now, version = version + 1
WHERE id = :id AND status = 'processing' AND lease_owner = :worker
RETURNING cancel_requested, options
"""

OWNED = """
WHERE id = :id AND status = 'processing' AND lease_owner = :worker
RETURNING options, batch_id
"""

COMPLETE = f"""
UPDATE jobs SET status = 'completed', result = :result, image_count = :image_count,
       result_attempt = attempts, progress = :progress, preview = NULL, finished_at = :now,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now, version = version + 1
{OWNED}
"""

FINISH_CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', result = :result, image_count = :image_count,
       result_attempt = attempts, preview = NULL, finished_at = :now,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now, version = version + 1
{OWNED}
"""

FAIL = f"""
UPDATE jobs SET status = 'error', error_code = :code, error_message = :message, preview = NULL,
       finished_at = :now, lease_owner = NULL, lease_expires_at = NULL, updated_at = :now, version = version + 1
{OWNED}
"""

RETRY_LATER = f"""
UPDATE jobs SET status = 'queued', available_at = :available_at, lease_owner = NULL,
       lease_expires_at = NULL, instance = NULL, progress = NULL, preview = NULL, updated_at = :now,
       version = version + 1
{OWNED}
"""

RELEASE = f"""
UPDATE jobs SET status = 'queued', attempts = attempts - 1, available_at = :now, lease_owner = NULL,
       lease_expires_at = NULL, instance = NULL, progress = NULL, preview = NULL, updated_at = :now,
       version = version + 1
{OWNED}
"""

EXPIRED_LEASES = """
SELECT id, attempts, lease_owner, cancel_requested FROM jobs
WHERE status = 'processing' AND lease_expires_at < :now
"""

EXPIRED_GUARD = """
WHERE id = :id AND status = 'processing' AND lease_owner = :worker AND lease_expires_at < :now
RETURNING options, batch_id
"""

EXPIRE_TO_QUEUED = f"""
UPDATE jobs SET status = 'queued', available_at = :now, lease_owner = NULL, lease_expires_at = NULL,
       instance = NULL, progress = NULL, preview = NULL, updated_at = :now, version = version + 1
{EXPIRED_GUARD}
"""

EXPIRE_TO_ERROR = f"""
UPDATE jobs SET status = 'error', error_code = 'lease_expired', error_message = :message,
       preview = NULL, finished_at = :now, lease_owner = NULL, lease_expires_at = NULL, updated_at = :now,
       version = version + 1
{EXPIRED_GUARD}
"""

EXPIRE_TO_CANCELLED = f"""
UPDATE jobs SET status = 'cancelled', preview = NULL, finished_at = :now, lease_owner = NULL,
       lease_expires_at = NULL, updated_at = :now, version = version + 1
{EXPIRED_GUARD}
"""

# -- fair share -----------------------------------------------------------------------------------
# Within the highest priority waiting, a claim serves the owner served least recently, and within
# that owner the lane (one batch, or lane '' for the owner's single jobs) served least recently;
# those never served go first, in the order they came (first_seq). Each owner and each lane keeps
# its head_priority, the most urgent priority it has queued: the schema's triggers raise it as jobs
# enter the queue; it is never below the truth, and the claim lowers it to the truth (under the
# owner's row lock on Postgres, taken before the lane's as the triggers do) when it serves a lane
# or finds a lane or an owner with nothing left at its head. So a claim reads the first waiting
# owner and its first lane by index, whatever the number of owners, batches or queued jobs; it
# reads further only past owners whose head jobs are not due or need other instance labels. When
# no head job can be claimed, the claim takes the first lane's most urgent job that can: fairness
# and priority then hold among what this instance can run, as far as the lanes' order gives it.

WAITING_OWNERS = """
SELECT owner, head_priority FROM owners WHERE head_priority IS NOT NULL
ORDER BY head_priority DESC, last_served_at, first_seq LIMIT :limit OFFSET :skip
"""
WAITING_LANES = """
SELECT lane FROM lanes WHERE owner = :owner AND head_priority = :priority
ORDER BY head_priority DESC, last_served_at, first_seq LIMIT :limit OFFSET :skip
"""
OWNER_LANES = """
SELECT lane FROM lanes WHERE owner = :owner AND head_priority IS NOT NULL
ORDER BY head_priority DESC, last_served_at, first_seq LIMIT :limit OFFSET :skip
"""
LANE_HAS_PRIORITY = """
SELECT 1 AS found FROM jobs
WHERE owner = :owner AND COALESCE(batch_id, '') = :lane AND priority = :priority AND status = 'queued' LIMIT 1
"""
# :served is the claim's time when it served the lane, NULL when it only corrects a head. ORDER BY
# ... LIMIT 1, not MAX(): Postgres reads MAX over an expression index entry by entry.
REFRESH_LANE = """
UPDATE lanes SET last_served_at = COALESCE(CAST(:served AS DOUBLE PRECISION), last_served_at), head_priority = (
    SELECT priority FROM jobs WHERE owner = :owner AND COALESCE(batch_id, '') = :lane AND status = 'queued'
    ORDER BY priority DESC LIMIT 1)
WHERE owner = :owner AND lane = :lane
RETURNING head_priority
"""
DROP_EMPTY_LANE = "DELETE FROM lanes WHERE owner = :owner AND lane = :lane AND head_priority IS NULL"
REFRESH_OWNER = """
UPDATE owners SET last_served_at = COALESCE(CAST(:served AS DOUBLE PRECISION), last_served_at), head_priority = (
    SELECT head_priority FROM lanes WHERE owner = :owner AND head_priority IS NOT NULL
    ORDER BY head_priority DESC LIMIT 1)
WHERE owner = :owner
"""

# -- batches --------------------------------------------------------------------------------------

INSERT_BATCH = f"""
INSERT INTO batches (id, owner, options, webhook_secret, idempotency_key, job_count, created_at)
VALUES (:id, :owner, :options, :webhook_secret, :idempotency_key, :job_count, :now)
ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {BATCH_COLUMNS}
"""

# SQS intake names its batches: the first message creates the row, the others find it.
ENSURE_BATCH = """
INSERT INTO batches (id, owner, options, webhook_secret, idempotency_key, job_count, created_at)
VALUES (:id, :owner, :options, :webhook_secret, NULL, 0, :now)
ON CONFLICT (id) DO NOTHING
"""

COUNT_BATCH_JOB = "UPDATE batches SET job_count = job_count + 1, finished_at = NULL WHERE id = :id"
SELECT_BATCH_BY_IDEMPOTENCY = f"""
SELECT {BATCH_COLUMNS} FROM batches WHERE owner = :owner AND idempotency_key = :idempotency_key
"""
SELECT_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = :id"
SELECT_OWNED_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = :id AND owner = :owner"
LIST_BATCHES = f"""
SELECT {BATCH_COLUMNS} FROM batches
WHERE owner = :owner AND (CAST(:before AS BIGINT) IS NULL OR seq < CAST(:before AS BIGINT))
ORDER BY seq DESC LIMIT :limit
"""
BATCH_MEMBERS = f"SELECT {MEMBER_COLUMNS} FROM jobs WHERE batch_id = :id ORDER BY seq"
# Submission order, served by jobs_batch_seq or jobs_batch_status; {where} from BATCH_JOB_FILTERS.
LIST_BATCH_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {{where}} ORDER BY seq LIMIT :limit"
BATCH_JOB_FILTERS = {"batch_id": "batch_id = :batch_id", "status": "status = :status", "after": "seq > :after"}

CANCEL_BATCH_QUEUED = """
UPDATE jobs SET status = 'cancelled', finished_at = :now, updated_at = :now, version = version + 1
WHERE batch_id = :batch_id AND status = 'queued'
RETURNING id, options
"""

REQUEST_CANCEL_BATCH = """
UPDATE jobs SET cancel_requested = TRUE, updated_at = :now, version = version + 1
WHERE batch_id = :batch_id AND status = 'processing' AND cancel_requested = FALSE
RETURNING id
"""

# The last job of a batch to end finishes the batch, in that job's transaction. On Postgres the
# batch row is locked first (LOCK_BATCH, None on SQLite), so of two last jobs ending at once the
# second sees the first.
FINISH_BATCH = f"""
UPDATE batches SET finished_at = :now
WHERE id = :id AND finished_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE batch_id = :id AND status IN ('queued', 'processing'))
RETURNING {BATCH_COLUMNS}
"""

INSERT_BATCH_DELIVERY = """
INSERT INTO webhook_deliveries (id, job_id, event_type, status, event_at, snapshot, body, attempts,
                                next_attempt_at, redelivery_of, host, created_at, updated_at)
VALUES (:id, :batch_id, :event_type, 'pending', :now, :snapshot, :body, 0, :now, NULL, :host, :now, :now)
"""

# -- instance slots and workers -------------------------------------------------------------------

ENSURE_SLOTS = """
WITH RECURSIVE numbers (slot) AS (SELECT 0 UNION ALL SELECT slot + 1 FROM numbers WHERE slot + 1 < :capacity)
INSERT INTO instance_slots (instance, slot)
SELECT :instance, slot FROM numbers WHERE :capacity > 0
ON CONFLICT (instance, slot) DO NOTHING
"""

DROP_EXTRA_SLOTS = "DELETE FROM instance_slots WHERE instance = :instance AND slot >= :capacity"

RENEW_SLOTS = """
UPDATE instance_slots SET expires_at = :expires
WHERE substr(holder, 1, length(CAST(:prefix AS TEXT))) = :prefix
"""

RELEASE_SLOT = """
UPDATE instance_slots SET holder = NULL, expires_at = NULL
WHERE instance = :instance AND slot = :slot AND holder = :holder
"""

HEARTBEAT = """
INSERT INTO workers (id, started_at, heartbeat_at, info) VALUES (:id, :now, :now, :info)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, info = excluded.info
"""

REMOVE_WORKER = "DELETE FROM workers WHERE id = :id"
PRUNE_WORKERS = "DELETE FROM workers WHERE heartbeat_at < :cutoff"
SELECT_WORKERS = "SELECT id, started_at, heartbeat_at, info FROM workers ORDER BY id"

# -- webhook outbox -------------------------------------------------------------------------------

EVENT_JOB = f"SELECT {SNAPSHOT_COLUMNS} FROM jobs WHERE id = :id"

LAST_EVENT_AT = """
SELECT MAX(event_at) AS last FROM webhook_deliveries WHERE job_id = :id AND event_type = :event_type
"""

INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (id, job_id, event_type, status, event_at, snapshot, body, attempts,
                                next_attempt_at, redelivery_of, host, created_at, updated_at)
VALUES (:id, :job_id, :event_type, 'pending', :event_at, :snapshot, :body, 0, :now, :redelivery_of,
        :host, :now, :now)
"""

# A due delivery may be claimed unless its host already has :per_host attempts in flight (claimed,
# claim not expired); NULL :per_host means no limit. Concurrent claims on Postgres may each see the
# other's attempt not yet in flight, so the limit can be exceeded by the number of racing dispatchers.
CLAIMABLE = """
status = 'pending' AND next_attempt_at <= :now
AND (CAST(:per_host AS INTEGER) IS NULL OR host IS NULL OR (
    SELECT COUNT(*) FROM webhook_deliveries AS busy
    WHERE busy.host = webhook_deliveries.host AND busy.status = 'pending'
      AND busy.claim_token IS NOT NULL AND busy.next_attempt_at > :now) < CAST(:per_host AS INTEGER))
"""

# Idle dispatchers poll: on SQLite a read, not a write lock, when nothing is due.
ANY_DUE_DELIVERY = """
SELECT 1 AS due FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now LIMIT 1
"""

CLOSE_LOST_ATTEMPTS = """
UPDATE webhook_attempts SET finished_at = :now, error = :lost_attempt
WHERE delivery_id = :id AND finished_at IS NULL
"""

OPEN_ATTEMPT = """
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
WHERE job_id = :job_id AND (CAST(:before AS BIGINT) IS NULL OR seq < CAST(:before AS BIGINT))
ORDER BY seq DESC LIMIT :limit
"""

LIST_ATTEMPTS = """
SELECT delivery_id, attempt, dispatcher_id, started_at, finished_at, status_code, response, error
FROM webhook_attempts WHERE {delivery_id_in_ids} ORDER BY delivery_id, attempt
"""

# A copy of the job's latest delivery under a new id: same event, snapshot and (frozen) body.
REDELIVER_LATEST = f"""
INSERT INTO webhook_deliveries (id, job_id, event_type, status, event_at, snapshot, body, attempts,
                                next_attempt_at, redelivery_of, host, created_at, updated_at)
SELECT :id, job_id, event_type, 'pending', event_at, snapshot, body, 0, :now, id, host, :now, :now
FROM webhook_deliveries WHERE job_id = :job_id ORDER BY seq DESC LIMIT 1
RETURNING {DELIVERY_COLUMNS}, snapshot, body
"""

COUNT_DUE_DELIVERIES = """
SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now
"""

# -- per-owner model choice (chalicelib/model_choice.py) ---------------------------------------------

SELECT_MODEL_CHOICE = "SELECT checkpoint FROM model_choices WHERE owner = :owner"
SET_MODEL_CHOICE = """
INSERT INTO model_choices (owner, checkpoint, updated_at) VALUES (:owner, :checkpoint, :now)
ON CONFLICT (owner) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = excluded.updated_at
"""

# -- retention and per-owner limits ------------------------------------------------------------

# Finished jobs past retention, oldest first (jobs_finished); a job with a delivery still pending
# waits for it, so retention never drops a webhook that is still being retried.
FINISHED_BEFORE = """
SELECT id FROM jobs WHERE finished_at < :cutoff
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS pending
                  WHERE pending.job_id = jobs.id AND pending.status = 'pending')
ORDER BY finished_at LIMIT :limit
"""

# Purge templates: {in_ids} is the dialect's list test (SQLITE / POSTGRES below).
PURGE_ATTEMPTS = """
DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE job_id {in_ids})
"""
PURGE_DELIVERIES = "DELETE FROM webhook_deliveries WHERE job_id {in_ids}"
PURGE_RUNS = "DELETE FROM job_runs WHERE job_id {in_ids}"
PURGE_JOBS = "DELETE FROM jobs WHERE id {in_ids} AND finished_at IS NOT NULL"

# A batch goes once retention took all its jobs (jobs_batch_seq answers "any job left?"); batches
# arrive in time order, so the oldest by seq come first.
EMPTY_BATCHES_BEFORE = """
SELECT id FROM batches WHERE created_at < :cutoff
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS pending
                  WHERE pending.job_id = batches.id AND pending.status = 'pending')
ORDER BY seq LIMIT :limit
"""
PURGE_BATCHES = """
DELETE FROM batches WHERE id {in_ids} AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id)
"""

# Rows arrive in time order, so the oldest by seq are the ones past the cutoff (no index needed).
PURGE_REJECTIONS = """
DELETE FROM rejected_submissions WHERE seq IN (
    SELECT seq FROM rejected_submissions WHERE received_at < :cutoff ORDER BY seq LIMIT :limit)
"""

# Reads at most :limit index entries of jobs_owner_status_seq, whatever the owner has queued.
COUNT_ACTIVE_FOR_OWNER = """
SELECT COUNT(*) AS n FROM (
    SELECT 1 FROM jobs WHERE owner = :owner AND status IN ('queued', 'processing') LIMIT :limit
) AS active
"""

# The owner's latest :limit submissions (jobs_owner_seq), newest first.
RECENT_SUBMITS = "SELECT created_at FROM jobs WHERE owner = :owner ORDER BY seq DESC LIMIT :limit"

# -- per-dialect overrides ------------------------------------------------------------------------

PURGE_TEMPLATES = ("PURGE_ATTEMPTS", "PURGE_DELIVERIES", "PURGE_RUNS", "PURGE_JOBS", "PURGE_BATCHES")


def _purges(in_ids: str) -> dict[str, str]:
    return {name: globals()[name].format(in_ids=in_ids) for name in PURGE_TEMPLATES}

SQLITE_LABELS_MATCH = """NOT EXISTS (SELECT 1 FROM json_each(jobs.options, '$.instance_labels')
                                 WHERE value NOT IN (SELECT value FROM json_each(:labels)))"""
POSTGRES_LABELS_MATCH = "COALESCE(jobs.options::jsonb -> 'instance_labels', '[]'::jsonb) <@ CAST(:labels AS jsonb)"

# The claim of one lane's job: only of the lane's head priority (CLAIM_NEXT), or of any (CLAIM_BLOCKED).
SQLITE_CLAIM = """
UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease_owner = :worker,
       lease_expires_at = :expires, instance = :instance, started_at = COALESCE(started_at, :now),
       progress = NULL, preview = NULL, updated_at = :now, version = version + 1
WHERE seq = (SELECT seq FROM jobs WHERE owner = :owner AND COALESCE(batch_id, '') = :lane
             {priority_match} AND status = 'queued' AND available_at <= :now
             AND {labels}
             ORDER BY priority DESC, seq LIMIT 1)
  AND status = 'queued'
RETURNING {columns}
"""
POSTGRES_CLAIM = """
WITH candidate AS (
    SELECT seq FROM jobs
    WHERE owner = :owner AND COALESCE(batch_id, '') = :lane {priority_match}
      AND status = 'queued' AND available_at <= :now AND {labels}
    ORDER BY priority DESC, seq LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease_owner = :worker,
           lease_expires_at = :expires, instance = :instance,
           started_at = COALESCE(started_at, :now), progress = NULL, preview = NULL,
           updated_at = :now, version = jobs.version + 1
    FROM candidate WHERE jobs.seq = candidate.seq AND jobs.status = 'queued'
    RETURNING {jobs_columns}
), run AS (
    INSERT INTO job_runs (job_id, attempt, worker_id, instance, started_at)
    SELECT id, attempts, :worker, :instance, :now FROM claimed
    ON CONFLICT (job_id, attempt) DO UPDATE
    SET worker_id = EXCLUDED.worker_id, instance = EXCLUDED.instance, started_at = EXCLUDED.started_at,
        finished_at = NULL, outcome = NULL, detail = NULL
)
SELECT {columns} FROM claimed
"""


def _claims(template: str, *, labels: str) -> dict[str, str]:
    fill = {"labels": labels, "columns": JOB_COLUMNS, "jobs_columns": ", ".join(f"jobs.{name}" for name in JOB_FIELDS)}
    return {"CLAIM_NEXT": template.format(priority_match="AND priority = :priority", **fill),
            "CLAIM_BLOCKED": template.format(priority_match="", **fill)}


SQLITE = {
    **_purges("IN (SELECT value FROM json_each(:ids))"),
    "QUEUE_POSITIONS": QUEUE_POSITIONS.format(seq_in_seqs="seq IN (SELECT value FROM json_each(:seqs))"),
    "LIST_ATTEMPTS": LIST_ATTEMPTS.format(delivery_id_in_ids="delivery_id IN (SELECT value FROM json_each(:ids))"),
    "LOCK_BATCH": None,
    "LOCK_OWNER": None,
    # One writer at a time: the lane's most urgent due job with the instance's labels (of its head
    # priority, or of any when those are blocked), taken in one statement (jobs_lane_queued); its
    # run row is opened by OPEN_RUN in the same transaction.
    **_claims(SQLITE_CLAIM, labels=SQLITE_LABELS_MATCH),
    "ACQUIRE_SLOT": """
UPDATE instance_slots SET holder = :holder, expires_at = :expires
WHERE instance = :instance AND slot = (
    SELECT slot FROM instance_slots
    WHERE instance = :instance AND (holder IS NULL OR holder = :holder OR expires_at < :now)
    ORDER BY holder = :holder DESC, slot LIMIT 1)
RETURNING slot
""",
    "CLAIM_DELIVERY": f"""
UPDATE webhook_deliveries SET attempts = attempts + 1, claim_token = :token,
       next_attempt_at = :lease_until, updated_at = :now
WHERE seq = (SELECT seq FROM webhook_deliveries WHERE {CLAIMABLE}
             ORDER BY next_attempt_at, seq LIMIT 1)
  AND status = 'pending'
RETURNING {DELIVERY_COLUMNS}, snapshot, body
""",
}

POSTGRES = {
    **_purges("= ANY(:ids)"),
    "QUEUE_POSITIONS": QUEUE_POSITIONS.format(seq_in_seqs="seq = ANY(:seqs)"),
    "LIST_ATTEMPTS": LIST_ATTEMPTS.format(delivery_id_in_ids="delivery_id = ANY(:ids)"),
    "LOCK_BATCH": "SELECT id FROM batches WHERE id = :id FOR UPDATE",
    "LOCK_OWNER": "SELECT owner FROM owners WHERE owner = :owner FOR UPDATE",
    # One statement: pick the lane's most urgent due job nobody else holds (SKIP LOCKED: concurrent
    # workers never queue up behind each other's candidate row), take it, open its run row.
    **_claims(POSTGRES_CLAIM, labels=POSTGRES_LABELS_MATCH),
    "OPEN_RUN": None,
    "LAST_CHANGE": None,
    "CHANGES_AFTER": None,
    # Also returns the progress it replaced (from the statement's snapshot).
    "PROGRESS_BEFORE": None,
    "RECORD_PROGRESS": """
WITH before AS (
    SELECT id, progress FROM jobs WHERE id = :id AND status = 'processing' AND lease_owner = :worker
)
UPDATE jobs SET progress = :progress, preview = COALESCE(:preview, jobs.preview),
       lease_expires_at = :expires, updated_at = :now, version = jobs.version + 1
FROM before
WHERE jobs.id = before.id AND jobs.status = 'processing' AND jobs.lease_owner = :worker
RETURNING jobs.cancel_requested, jobs.options, before.progress AS progress_before
""",
    # SKIP LOCKED here too: two acquirers never take the same free slot, and a second one moves on
    # to the next free slot instead of failing behind the first one's lock.
    "ACQUIRE_SLOT": """
WITH candidate AS (
    SELECT instance, slot FROM instance_slots
    WHERE instance = :instance AND (holder IS NULL OR holder = :holder OR expires_at < :now)
    ORDER BY holder IS NOT DISTINCT FROM :holder DESC, slot LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE instance_slots SET holder = :holder, expires_at = :expires
FROM candidate
WHERE instance_slots.instance = candidate.instance AND instance_slots.slot = candidate.slot
RETURNING instance_slots.slot
""",
    "ANY_DUE_DELIVERY": None,
    # One statement: take the most overdue pending delivery nobody else holds, push it past the
    # claim's lease, close any attempt an earlier claim left open, and open this attempt.
    "CLAIM_DELIVERY": f"""
WITH candidate AS (
    SELECT seq FROM webhook_deliveries
    WHERE {CLAIMABLE}
    ORDER BY next_attempt_at, seq LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries SET attempts = attempts + 1, claim_token = :token,
           next_attempt_at = :lease_until, updated_at = :now
    FROM candidate
    WHERE webhook_deliveries.seq = candidate.seq AND webhook_deliveries.status = 'pending'
    RETURNING {", ".join(f"webhook_deliveries.{name}" for name in DELIVERY_FIELDS)},
              webhook_deliveries.snapshot, webhook_deliveries.body
), lost AS (
    UPDATE webhook_attempts SET finished_at = :now, error = :lost_attempt
    FROM claimed
    WHERE webhook_attempts.delivery_id = claimed.id AND webhook_attempts.finished_at IS NULL
), attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, dispatcher_id, started_at)
    SELECT id, attempts, :dispatcher, :now FROM claimed
)
SELECT {DELIVERY_COLUMNS}, snapshot, body FROM claimed
""",
    "CLOSE_LOST_ATTEMPTS": None,
    "OPEN_ATTEMPT": None,
    # One statement: record the attempt's answer (always), then move the delivery on if the claim
    # is still ours.
    "FINISH_ATTEMPT": None,
    "FINISH_DELIVERY": f"""
WITH attempt AS (
    UPDATE webhook_attempts SET finished_at = :now, status_code = :status_code,
           response = :response, error = :error
    WHERE delivery_id = :id AND attempt = :attempt
)
{FINISH_DELIVERY.strip()}
""",
}

OVERRIDES = {"sqlite": SQLITE, "postgres": POSTGRES}


@functools.cache
def _statements(dialect: str, native: typing.Callable[[str], str]) -> types.SimpleNamespace:
    """Every statement above (the templates with `{...}` holes only as their overrides fill them)."""
    common = {name: value for name, value in globals().items()
              if name.isupper() and isinstance(value, str) and "{" not in value}
    chosen = common | OVERRIDES[dialect]
    return types.SimpleNamespace(**{name: None if sql is None else native(sql) for name, sql in chosen.items()})


def for_database(database: database_module.Database) -> types.SimpleNamespace:
    """The statements for `database`'s dialect, in its parameter style (attribute per name)."""
    return _statements(database.dialect, database.native)
