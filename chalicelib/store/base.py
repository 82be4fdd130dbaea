"""The job store port: records it hands out and the protocol every backend implements.

Dependencies point inward: the service and the worker talk to `JobStore`; only the factory in
`chalicelib.store` knows which backend sits behind it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import typing
import urllib.parse
import uuid

from chalicelib import vocabulary


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
    batch_id: str | None = None
    # Takes its owner's chosen checkpoint (model_choice.py), read in the job's own transaction: the
    # choice committed last before the job is the one it runs with, at no extra read per submit.
    owner_checkpoint: bool = False


class InTransaction(typing.Protocol):
    """Something written in a store method's own transaction (a queue message: `queue.base.OnCommit`)."""

    def write(self, session: typing.Any) -> None: ...


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
    version: int  # 1 at insert, bumped by every change of the row in the changing statement
    batch_id: str | None = None

    @classmethod
    def inserted(cls, new: NewJob, *, seq: int, version: int, request: dict, now: float) -> "Job":
        """The row the store's insert wrote for `new` (with `request` as stored), without reading it
        back: a submit would otherwise decode the JSON it has just encoded."""
        return cls(seq=seq, id=new.id, owner=new.owner, kind=new.kind, status=vocabulary.JobStatus.QUEUED.value,
                   priority=new.priority, request=request, options=new.options, webhook_secret=new.webhook_secret,
                   idempotency_key=new.idempotency_key, attempts=0, lease_owner=None, lease_expires_at=None,
                   instance=None, cancel_requested=False, progress=None, preview=None, result=None, image_count=0,
                   result_attempt=None, error_code=None, error_message=None, available_at=now, created_at=now,
                   started_at=None, finished_at=None, updated_at=now, version=version, batch_id=new.batch_id)


@dataclasses.dataclass(frozen=True)
class JobChange:
    """One change of a job as the store signals it (chalicelib/changes.py): the job's new `version`,
    and whether the change took it out of the queue (which moves the queue positions behind it).
    `seq` orders SQLite's change log; a Postgres notification has none (0)."""

    job_id: str
    owner: str
    version: int
    left_queue: bool
    seq: int = 0


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


# --- Batches -------------------------------------------------------------------------------------
#
# A batch is a row of its own and a `batch_id` on each of its jobs. When the last of its jobs ends
# (any terminal change), the same transaction sets the batch's `finished_at` and, if the batch has
# a webhook_url, writes its `batch.completed` delivery (job_id = the batch id, body written with it).

BATCH_COMPLETED = "batch.completed"


@dataclasses.dataclass(frozen=True)
class NewBatch:
    id: str
    owner: str
    options: dict  # webhook_url, metadata, priority
    webhook_secret: str | None
    idempotency_key: str | None
    job_count: int


@dataclasses.dataclass(frozen=True)
class Batch:
    seq: int
    id: str
    owner: str
    options: dict
    webhook_secret: str | None
    idempotency_key: str | None
    job_count: int
    created_at: float
    finished_at: float | None


@dataclasses.dataclass(frozen=True)
class BatchPage:
    batches: list[Batch]
    next_cursor: int | None


@dataclasses.dataclass(frozen=True)
class BatchMember:
    """What a batch's views read of each of its jobs (never the request: it can be megabytes)."""

    seq: int
    id: str
    status: str
    options: dict
    progress: dict | None
    image_count: int
    result_attempt: int | None
    error_code: str | None
    error_message: str | None
    started_at: float | None
    finished_at: float | None


def batch_counts(members: list[BatchMember]) -> dict[str, int]:
    """Jobs per status, every status present (0 when none)."""
    counts = {status.value: 0 for status in vocabulary.JobStatus}
    for member in members:
        counts[member.status] += 1
    return counts


def batch_completed_body(batch: dict, *, members: list[BatchMember], event_at: float) -> str:
    """The `batch.completed` webhook body: {"type", "timestamp", "data": {batch_id, counts, ...}}."""
    data = {"batch_id": batch["id"], "status": "completed", "jobs": len(members),
            "counts": batch_counts(members), "metadata": batch["options"].get("metadata"),
            "created_at": _iso(batch["created_at"]), "finished_at": _iso(event_at)}
    return json.dumps({"type": BATCH_COMPLETED, "timestamp": _iso(event_at), "data": data}, separators=(",", ":"))


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def keyset_page(items: list, *, limit: int) -> tuple[list, int | None]:
    """The first `limit` of up to `limit + 1` items fetched newest first (each with a `seq`), and the
    cursor of the next page: None when the extra item was not there (this is the last page)."""
    page = items[:limit]
    return page, (page[-1].seq if len(items) > limit else None)


def queue_window(jobs: list[Job]) -> dict | None:
    """What `JobStore.queue_positions` binds, or None when none of `jobs` is queued: the seqs of the
    queued ones (the queue's index holds seq, so numbering reads the index alone), and the last of
    them in queue order (priority DESC, seq), where numbering can stop: the work is bounded by the
    furthest position asked for, not by the queue's length."""
    queued = [job for job in jobs if job.status == vocabulary.JobStatus.QUEUED]
    if not queued:
        return None
    last = max(queued, key=lambda job: (-job.priority, job.seq))
    return {"seqs": [job.seq for job in queued], "last_priority": last.priority, "last_seq": last.seq}


def positions_by_id(jobs: list[Job], rows: list[dict]) -> dict[str, int]:
    """`queue_positions`' answer from the (seq, position) rows its query returned."""
    ids = {job.seq: job.id for job in jobs}
    return {ids[row["seq"]]: row["position"] for row in rows}


# --- Webhook outbox ------------------------------------------------------------------------------
#
# Each guarded change below writes its webhook delivery row in its own transaction, when the job
# wants the event (see `wants_event`), and says in its `Change` which event it wrote:
#   claim_next → job.started · record_progress → job.progress (changed progress, ≤ 1 per second)
#   complete → job.completed · fail → job.error · finish_cancelled, cancel_queued → job.cancelled
#   expire_leases → job.error or job.cancelled (not when the job goes back to the queue)
# The row carries `event_snapshot(...)`: the job row and its runs as of the change, without the
# request (immutable, read at render time) and without the webhook secret.

PROGRESS_EVENT_INTERVAL = 1.0  # seconds: at most one job.progress delivery per job per interval

# Fields of `Job` that a snapshot leaves out: the request can be megabytes, the secret is secret.
SNAPSHOT_EXCLUDED = frozenset({"request", "webhook_secret"})
LOST_ATTEMPT = ("no answer recorded: the dispatcher stopped during this attempt (crashed or timed "
                "out); the delivery was retried")


@dataclasses.dataclass(frozen=True)
class Change:
    """What one guarded change did, for `transitions` to act on.

    `applied` is False when the guard did not match (someone else won; nothing was written).
    `status` is the job's status after an applied change, `event` the webhook delivery written in
    the change's transaction (None: none was). `job` is the claimed job (claim_next);
    `cancel_requested` the job's cancel flag (record_progress). `batch_event` is the id of the
    batch whose `batch.completed` delivery the change wrote (it ended the batch's last job).
    """

    applied: bool
    job_id: str | None = None
    status: vocabulary.JobStatus | None = None
    event: vocabulary.JobEvent | None = None
    job: Job | None = None
    cancel_requested: bool = False
    batch_event: str | None = None

    def __bool__(self) -> bool:
        raise TypeError("a Change is not a truth value: read .applied")


NOT_APPLIED = Change(applied=False)


def wants_event(options: dict, event_type: str) -> bool:
    """Terminal events go to every job with a webhook_url; the others only when asked for."""
    if not options.get("webhook_url"):
        return False
    return event_type in vocabulary.TERMINAL_EVENTS or event_type in (options.get("webhook_events") or [])


def event_snapshot(job: dict, runs: list[dict]) -> dict:
    """The job row (JSON columns decoded) and its run rows as of an event, minus the excluded fields."""
    return {"job": {k: v for k, v in job.items() if k not in SNAPSHOT_EXCLUDED}, "runs": runs}


@dataclasses.dataclass(frozen=True)
class LeaseExpiry:
    """Where `expire_leases` sends a job whose worker stopped renewing its lease, and why."""

    status: vocabulary.JobStatus
    detail: str
    event_type: vocabulary.JobEvent | None


def final_progress(progress: dict | None) -> dict:
    """A completed job's progress: done, with the step and job counts its last tick knew."""
    last = progress or {}
    return {"progress": 1.0, "eta_relative": 0.0, "step": last.get("steps"), "steps": last.get("steps"),
            "job_no": last.get("job_count"), "job_count": last.get("job_count")}


def lease_expiry(*, attempts: int, cancel_requested: bool, max_attempts: int) -> LeaseExpiry:
    """Cancelled if a cancel was requested, error once the attempts are spent, else back to the queue
    (which reports no event: the job goes on)."""
    if cancel_requested:
        return LeaseExpiry(vocabulary.JobStatus.CANCELLED, "cancelled while its worker was lost",
                           vocabulary.JobEvent.CANCELLED)
    if attempts >= max_attempts:
        return LeaseExpiry(vocabulary.JobStatus.ERROR,
                           f"the worker running attempt {attempts} of {max_attempts} stopped renewing its "
                           "lease (crashed or timed out); no attempts left", vocabulary.JobEvent.ERROR)
    return LeaseExpiry(vocabulary.JobStatus.QUEUED,
                       "the worker stopped renewing its lease (crashed or timed out); requeued", None)


def new_delivery_id() -> str:
    """A `webhook-id`: unique per delivery, the same on each of its attempts."""
    return f"msg_{uuid.uuid4().hex}"


class EventWriter(typing.Protocol):
    """The statements `write_event` needs, run by a backend inside the state change's transaction."""

    def last_event_at(self, job_id: str, event_type: str) -> float | None: ...

    def snapshot_rows(self, job_id: str) -> tuple[dict, list[dict]]:
        """The job row (snapshot columns, JSON decoded) and its run rows, as of now."""

    def insert_delivery(self, values: dict) -> None:
        """Insert a pending delivery: id, job_id, event_type, event_at, snapshot (a dict), body,
        redelivery_of, now."""


def write_event(writer: EventWriter, job_id: str, event_type: vocabulary.JobEvent, *, options: dict,
                now: float) -> vocabulary.JobEvent | None:
    """After a guarded change, in its transaction: write the delivery of `event_type` if the job
    wants it (job.progress at most once per PROGRESS_EVENT_INTERVAL), with a snapshot of the job as
    the change left it. The event written, or None when nothing was."""
    if not wants_event(options, event_type):
        return None
    if event_type == vocabulary.JobEvent.PROGRESS:
        last = writer.last_event_at(job_id, event_type)
        if last is not None and now - last < PROGRESS_EVENT_INTERVAL:
            return None
    job, runs = writer.snapshot_rows(job_id)
    writer.insert_delivery({"id": new_delivery_id(), "job_id": job_id, "event_type": event_type, "event_at": now,
                            "snapshot": event_snapshot(job, runs), "body": None, "redelivery_of": None,
                            "host": destination_host(options["webhook_url"]), "now": now})
    return event_type


def destination_host(url: str) -> str | None:
    """The host a delivery goes to (lower case), which the per-host limit on attempts counts by."""
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


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

    `snapshot` and `body` are loaded by `claim_delivery` and `redeliver_latest` (lists leave them
    None): the body is rendered from the snapshot at the first attempt and then kept, so retries
    send the same bytes.
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


def group_attempts(delivery_ids: list[str], rows: list[dict]) -> dict[str, list[WebhookAttempt]]:
    """`list_attempts`' answer from its rows (ordered by delivery and attempt): every id a key."""
    attempts: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    for row in rows:
        attempts[row["delivery_id"]].append(WebhookAttempt(**row))
    return attempts


@dataclasses.dataclass(frozen=True)
class Purged:
    """Rows one purge removed, by table."""

    jobs: int = 0
    runs: int = 0
    deliveries: int = 0
    attempts: int = 0
    batches: int = 0


class JobStore(typing.Protocol):
    """Durable job state (one implementation, `jobs.JobStore`, over either database).

    Every state change is a guarded update that returns a `Change`; only `chalicelib.transitions`
    calls them, so it can ring the doorbells each change calls for."""

    backend: str
    database: typing.Any

    def migrate(self) -> None: ...
    def ping(self) -> None: ...
    def last_write_failure(self) -> typing.Any:
        """The last write of this process the database refused (`database.WriteFailure`), or None."""

    # API side
    def create_job(self, job: NewJob, *, now: float) -> tuple[Job, bool]: ...
    def get_job(self, job_id: str, *, owner: str | None = None) -> Job | None: ...
    def list_jobs(self, owner: str | None, *, status: str | None, limit: int, before: int | None) -> Page:
        """Newest first; every owner's when `owner` is None."""
    def queue_positions(self, jobs: list[Job]) -> dict[str, int]:
        """Where each of `jobs` that is queued stands in the queue (1 = runs next; priority DESC,
        then first in, first out), in one query. Jobs not queued (by their record, or any more by
        the time of the query) are left out."""
    def list_runs(self, job_id: str) -> list[JobRun]: ...
    def list_recent(self, owner: str, *, since: float, limit: int) -> list[Job]:
        """Newest first: the owner's queued and processing jobs and those finished since `since`."""
    def get_model_choice(self, owner: str) -> str | None: ...
    def set_model_choice(self, owner: str, checkpoint: str, *, now: float) -> None: ...
    def owner_jobs(self, owner: str, *, queued_only: bool, limit: int) -> list[Job]: ...
    def changes_after(self, seq: int | None, *, limit: int) -> tuple[int, list[JobChange]]: ...
    def count_by_status(self) -> dict[str, int]: ...
    def stale_queued(self, *, older_than: float, now: float, limit: int) -> list[str]: ...
    def count_active(self, owner: str, *, limit: int) -> int:
        """The owner's queued and processing jobs, counted up to `limit` at most."""
    def recent_submit_times(self, owner: str, *, limit: int) -> list[float]:
        """`created_at` of the owner's latest `limit` jobs, newest first."""

    # Retention (chalicelib/retention.py)
    def finished_before(self, cutoff: float, *, limit: int) -> list[str]:
        """Ids of up to `limit` jobs that finished before `cutoff`, oldest first, leaving out jobs
        with a webhook delivery still pending."""
    def purge_jobs(self, job_ids: list[str]) -> Purged:
        """Delete those of `job_ids` that are finished, with their runs, deliveries and attempts, in
        one transaction (their images are the image store's)."""
    def purge_batches(self, cutoff: float, *, limit: int) -> Purged:
        """Delete up to `limit` batches created before `cutoff` that have no job left (all purged)
        and no webhook delivery pending, with their deliveries and attempts."""
    def purge_rejections(self, cutoff: float, *, limit: int) -> int:
        """Delete up to `limit` rejected submissions received before `cutoff`; how many went."""

    # Guarded changes (called by chalicelib.transitions only)
    def cancel_queued(self, job_id: str, *, now: float) -> Change: ...
    def request_cancel(self, job_id: str, *, now: float) -> Change: ...
    def claim_next(self, *, worker_id: str, instance: str, lease_seconds: float, now: float,
                   labels: typing.Sequence[str] = ()) -> Change:
        """The most urgent queued job whose `instance_labels` are all among `labels`, now running
        on `instance` (`Change.job`); not applied when there is none."""
    def record_progress(self, job_id: str, *, worker_id: str, progress: dict, preview: str | None,
                        lease_seconds: float, now: float) -> Change:
        """Not applied when the lease is lost; else `Change.cancel_requested` is the cancel flag."""
    def complete(self, job_id: str, *, worker_id: str, result: dict, image_count: int, now: float,
                 progress: dict | None = None) -> Change:
        """`progress` is the job's final progress (default: 1.0 with nothing else known)."""
    def finish_cancelled(self, job_id: str, *, worker_id: str, result: dict | None, image_count: int,
                         now: float) -> Change: ...
    def fail(self, job_id: str, *, worker_id: str, code: str, message: str, now: float) -> Change: ...
    def retry_later(self, job_id: str, *, worker_id: str, delay: float, reason: str, now: float) -> Change: ...
    def release(self, job_id: str, *, worker_id: str, now: float) -> Change: ...
    def expire_leases(self, *, max_attempts: int, now: float) -> list[Change]:
        """The applied changes only, one per job whose lease had expired."""

    # Instance slots and workers
    def ensure_slots(self, instance: str, capacity: int) -> None: ...
    def acquire_slot(self, instance: str, *, holder: str, lease_seconds: float, now: float) -> int | None: ...
    def renew_slots(self, holder_prefix: str, *, lease_seconds: float, now: float) -> None: ...
    def release_slot(self, instance: str, slot: int, *, holder: str) -> None: ...
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

    # Batches
    def create_batch(self, batch: NewBatch, jobs: list[NewJob], *, now: float) -> tuple[Batch, bool]:
        """The batch and all its jobs in one transaction; or, for an idempotency key the owner used
        before, that batch and nothing new (created False)."""
    def ensure_batch(self, batch: NewBatch, *, now: float) -> Batch | None:
        """The batch `batch.id`, created on first sight; None when another owner holds that id."""
    def get_batch(self, batch_id: str, *, owner: str | None = None) -> Batch | None: ...
    def find_batch(self, owner: str, *, idempotency_key: str) -> Batch | None:
        """The owner's batch created with `idempotency_key`, if any."""
    def list_batches(self, owner: str, *, limit: int, before: int | None) -> BatchPage: ...
    def batch_members(self, batch_id: str) -> list[BatchMember]:
        """Every job of the batch in submission order."""
    def list_batch_jobs(self, batch_id: str, *, status: str | None, limit: int, after: int | None) -> Page:
        """Submission order, keyset pages (`next_cursor` is the last seq of the page)."""
    def cancel_batch(self, batch_id: str, *, now: float) -> list[Change]:
        """Queued jobs cancelled (job.cancelled each), processing ones flagged: the applied changes."""
