"""The job store port: records it hands out and the protocol every backend implements.

Dependencies point inward: the service and the worker talk to `JobStore`; only the factory in
`chalicelib.store` knows which backend sits behind it.
"""
from __future__ import annotations

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class NewJob:
    """What the API knows about a job when it is submitted."""

    id: str
    owner: str
    kind: str
    priority: int
    request: dict
    options: dict
    webhook_secret: str | None
    idempotency_key: str | None


@dataclasses.dataclass(frozen=True)
class Job:
    """One row of the jobs table, JSON columns decoded."""

    seq: int
    id: str
    owner: str
    kind: str
    status: str
    priority: int
    request: dict
    options: dict
    webhook_secret: str | None
    idempotency_key: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    instance: str | None
    cancel_requested: bool
    progress: dict | None
    preview: str | None
    result: dict | None
    image_count: int
    result_attempt: int | None
    error_code: str | None
    error_message: str | None
    available_at: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float


@dataclasses.dataclass(frozen=True)
class JobRun:
    """One attempt at a job: who ran it, where, and how it ended."""

    attempt: int
    worker_id: str
    instance: str
    started_at: float
    finished_at: float | None
    outcome: str | None
    detail: str | None


@dataclasses.dataclass(frozen=True)
class Worker:
    """A worker process as its heartbeat row describes it."""

    id: str
    started_at: float
    heartbeat_at: float
    info: dict


@dataclasses.dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: int | None


# --- Webhook outbox ------------------------------------------------------------------------------
#
# Each guarded change below writes its webhook delivery row in its own transaction, when the job
# wants the event (see `wants_event`); callers pass nothing and cannot forget a terminal event:
#   claim_next → job.started · record_progress → job.progress (changed progress, ≤ 1 per second)
#   complete → job.completed · fail → job.error · finish_cancelled, cancel_queued → job.cancelled
#   expire_leases → job.error or job.cancelled (not when the job goes back to the queue)
# The row carries `event_snapshot(...)`: the job row and its runs as of the change, without the
# request (immutable, read at render time) and without the webhook secret.

EVENT_STARTED = "job.started"
EVENT_PROGRESS = "job.progress"
EVENT_COMPLETED = "job.completed"
EVENT_ERROR = "job.error"
EVENT_CANCELLED = "job.cancelled"
TERMINAL_EVENTS = frozenset({EVENT_COMPLETED, EVENT_ERROR, EVENT_CANCELLED})
PROGRESS_EVENT_INTERVAL = 1.0  # seconds: at most one job.progress delivery per job per interval

DELIVERY_PENDING = "pending"
DELIVERY_DELIVERED = "delivered"
DELIVERY_FAILED = "failed"

# Fields of `Job` that a snapshot leaves out: the request can be megabytes, the secret is secret.
SNAPSHOT_EXCLUDED = frozenset({"request", "webhook_secret"})
LOST_ATTEMPT = ("no answer recorded: the dispatcher stopped during this attempt (crashed or timed "
                "out); the delivery was retried")


def wants_event(options: dict, event_type: str) -> bool:
    """Terminal events go to every job with a webhook_url; the others only when asked for."""
    if not options.get("webhook_url"):
        return False
    return event_type in TERMINAL_EVENTS or event_type in (options.get("webhook_events") or [])


def event_snapshot(job: dict, runs: list[dict]) -> dict:
    """The job row (JSON columns decoded) and its run rows as of an event, minus the excluded fields."""
    return {"job": {k: v for k, v in job.items() if k not in SNAPSHOT_EXCLUDED}, "runs": runs}


def job_from_snapshot(snapshot: dict, *, request: dict) -> tuple[Job, list[JobRun]]:
    """The `Job` and runs an event reported; fields added to `Job` since the snapshot are None."""
    values = {field.name: None for field in dataclasses.fields(Job)}
    known = values.keys()
    values.update({k: v for k, v in snapshot["job"].items() if k in known})
    values.update(request=request, webhook_secret=None)
    run_fields = {field.name for field in dataclasses.fields(JobRun)}
    runs = [JobRun(**{k: v for k, v in run.items() if k in run_fields}) for run in snapshot["runs"]]
    return Job(**values), runs


@dataclasses.dataclass(frozen=True)
class WebhookDelivery:
    """One event for one job's webhook_url; `id` is the `webhook-id` on every attempt.

    `snapshot` and `body` are loaded by `claim_delivery` only (lists leave them None): the body is
    rendered from the snapshot at the first attempt and then kept, so retries send the same bytes.
    While pending, `next_attempt_at` is when it is due (a claim pushes it past the claim's lease).
    """

    seq: int
    id: str
    job_id: str
    event_type: str
    status: str
    event_at: float
    attempts: int
    next_attempt_at: float | None
    claim_token: str | None
    redelivery_of: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    snapshot: dict | None = None
    body: str | None = None


@dataclasses.dataclass(frozen=True)
class WebhookAttempt:
    """One POST of a delivery: the answer's status and first KiB, or why there was none."""

    delivery_id: str
    attempt: int
    dispatcher_id: str
    started_at: float
    finished_at: float | None
    status_code: int | None
    response: str | None
    error: str | None


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    response: str | None
    error: str | None


@dataclasses.dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    next_cursor: int | None


class JobStore(typing.Protocol):
    """Durable job state. Every state change is a guarded update: False/None means someone else won."""

    backend: str

    def migrate(self) -> None: ...
    def ping(self) -> None: ...

    # API side
    def create_job(self, job: NewJob, *, now: float) -> tuple[Job, bool]: ...
    def get_job(self, job_id: str, *, owner: str | None = None) -> Job | None: ...
    def list_jobs(self, owner: str, *, status: str | None, limit: int, before: int | None) -> Page: ...
    def queue_position(self, job: Job) -> int: ...
    def cancel_queued(self, job_id: str, *, now: float) -> bool: ...
    def request_cancel(self, job_id: str, *, now: float) -> bool: ...
    def list_runs(self, job_id: str) -> list[JobRun]: ...
    def count_by_status(self) -> dict[str, int]: ...

    # Worker side
    def claim_next(self, *, worker_id: str, instance: str, lease_seconds: float, now: float) -> Job | None: ...
    def record_progress(self, job_id: str, *, worker_id: str, progress: dict, preview: str | None,
                        lease_seconds: float, now: float) -> bool | None: ...
    def complete(self, job_id: str, *, worker_id: str, result: dict, image_count: int, now: float) -> bool: ...
    def finish_cancelled(self, job_id: str, *, worker_id: str, result: dict | None, image_count: int,
                         now: float) -> bool: ...
    def fail(self, job_id: str, *, worker_id: str, code: str, message: str, now: float) -> bool: ...
    def retry_later(self, job_id: str, *, worker_id: str, delay: float, reason: str, now: float) -> bool: ...
    def release(self, job_id: str, *, worker_id: str, now: float) -> bool: ...
    def expire_leases(self, *, max_attempts: int, now: float) -> list[tuple[str, str]]: ...
    def stale_queued(self, *, older_than: float, now: float, limit: int) -> list[str]: ...

    # Instance slots and workers
    def ensure_slots(self, instance: str, capacity: int) -> None: ...
    def acquire_slot(self, instance: str, *, holder: str, lease_seconds: float, now: float) -> int | None: ...
    def renew_slots(self, holder_prefix: str, *, lease_seconds: float, now: float) -> None: ...
    def release_slot(self, instance: str, slot: int, *, holder: str) -> None: ...
    def busy_instances(self) -> dict[str, int]: ...
    def heartbeat(self, worker_id: str, *, info: dict, now: float) -> None: ...
    def remove_worker(self, worker_id: str) -> None: ...
    def list_workers(self, *, now: float, keep_seconds: float) -> list[Worker]: ...

    # Webhook outbox (the delivery rows themselves are written by the guarded changes above)
    def claim_delivery(self, *, dispatcher_id: str, lease_seconds: float,
                       now: float) -> WebhookDelivery | None:
        """Take the most overdue pending delivery: attempts + 1, a new claim token, due again at
        now + lease (so a dispatcher that dies mid-attempt loses nothing), an open attempt row, and
        any attempt left open by an earlier claim closed with `LOST_ATTEMPT`."""
    def finish_delivery(self, delivery_id: str, *, claim_token: str, attempt: int, result: AttemptResult,
                        status: str, next_attempt_at: float | None, body: str | None,
                        now: float) -> bool:
        """Record the attempt's result; move the delivery to `status` (pending: due at
        next_attempt_at) and keep `body` if none is kept yet. False when the claim was superseded
        (the attempt is recorded all the same)."""
    def list_deliveries(self, job_id: str, *, limit: int, before: int | None) -> DeliveryPage:
        """Newest first, without snapshot and body."""
    def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]: ...
    def redeliver_latest(self, job_id: str, *, now: float) -> WebhookDelivery | None:
        """A new pending delivery (new id) of the job's latest event, with its snapshot and body."""
    def count_due_deliveries(self, *, now: float) -> int: ...
