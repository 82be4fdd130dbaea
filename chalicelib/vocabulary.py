"""The words the job system speaks: job statuses, event names, run outcomes, delivery statuses.

One small module without pydantic, so the store, the worker, stats and health import it at no cost.
Each enum is a `StrEnum`: its members are the strings stored in the database and sent in JSON, so
`JobStatus.QUEUED == "queued"` and a member can go wherever a string went.
"""
from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Life of a job: queued → processing → completed | error | cancelled (or queued → cancelled)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.CANCELLED})


class JobEvent(enum.StrEnum):
    """What a state change reports (webhook `type`)."""

    STARTED = "job.started"
    PROGRESS = "job.progress"
    COMPLETED = "job.completed"
    ERROR = "job.error"
    CANCELLED = "job.cancelled"


TERMINAL_EVENTS = frozenset({JobEvent.COMPLETED, JobEvent.ERROR, JobEvent.CANCELLED})


class RunOutcome(enum.StrEnum):
    """How one attempt (a `job_runs` row) ended."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"
    RETRY = "retry"  # A1111 was unavailable: the job waits for a later attempt
    RELEASED = "released"  # the worker stopped first and handed the job back, attempt not counted
    LOST = "lost"  # the worker stopped renewing its lease


class DeliveryStatus(enum.StrEnum):
    """A webhook delivery's state in the outbox."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
