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
