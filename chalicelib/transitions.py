"""Where a job changes state: the one caller of the store's guarded changes.

Each function makes one guarded change (the store's statement decides whether it applies, and
writes the webhook delivery the change reports in the same transaction), then rings the doorbells
that change calls for, once: the webhooks doorbell when a delivery row was written, the jobs
doorbell when the job went back to the queue. Both are best effort: a lost doorbell only waits for
the next poll or sweep. Each returns the store's `Change`, so callers read what happened
(`applied`, the claimed `job`, the `cancel_requested` flag) and never ring anything themselves.

    queued ──claim_next──► processing ──complete──► completed
      │  ▲                     │  ├──fail──────────► error
      │  └─retry_later/release─┘  └─finish_cancelled► cancelled
      └──cancel_queued──► cancelled            (expire_leases: any of the three, or back to queued)

A batch's jobs move the same way (cancel_batch cancels or flags all of them in one transaction);
the change that ends a batch's last job also writes its batch.completed delivery (`Change.batch_event`).
"""
from __future__ import annotations

import logging
import time
import typing

from chalicelib import context as context_module
from chalicelib import vocabulary
from chalicelib.queue import base as queue_base
from chalicelib.store import base as store_base
from chalicelib.webhooks import doorbell

log = logging.getLogger(__name__)


# -- API side -------------------------------------------------------------------------------------

def cancel_queued(ctx: context_module.Context, job_id: str) -> store_base.Change:
    """queued → cancelled (job.cancelled)."""
    return _rung(ctx, ctx.store.cancel_queued(job_id, now=time.time()))


def request_cancel(ctx: context_module.Context, job_id: str) -> store_base.Change:
    """Flag a processing job; its worker sees the flag at its next progress tick and interrupts A1111."""
    return _rung(ctx, ctx.store.request_cancel(job_id, now=time.time()))


def cancel_batch(ctx: context_module.Context, batch_id: str) -> list[store_base.Change]:
    """Every job of the batch that has not ended: queued ones → cancelled (job.cancelled each),
    processing ones flagged like `request_cancel`; batch.completed if that ended the batch."""
    return [_rung(ctx, change) for change in ctx.store.cancel_batch(batch_id, now=time.time())]


# -- worker side ----------------------------------------------------------------------------------

def claim_next(ctx: context_module.Context, *, worker_id: str, instance: str,
               labels: typing.Sequence[str] = ()) -> store_base.Change:
    """queued → processing (job.started) with a lease; `Change.job` is the claimed job."""
    return _rung(ctx, ctx.store.claim_next(worker_id=worker_id, instance=instance, labels=labels,
                                           lease_seconds=ctx.settings.job_lease_seconds, now=time.time()))


def record_progress(ctx: context_module.Context, job_id: str, *, worker_id: str, progress: dict,
                    preview: str | None) -> store_base.Change:
    """Store progress and renew the lease (job.progress when it changed); not applied when the lease
    was lost. `Change.cancel_requested` tells the worker to interrupt."""
    return _rung(ctx, ctx.store.record_progress(job_id, worker_id=worker_id, progress=progress, preview=preview,
                                                lease_seconds=ctx.settings.job_lease_seconds, now=time.time()))


def complete(ctx: context_module.Context, job_id: str, *, worker_id: str, result: dict, image_count: int,
             progress: dict) -> store_base.Change:
    """processing → completed (job.completed)."""
    return _rung(ctx, ctx.store.complete(job_id, worker_id=worker_id, result=result, image_count=image_count,
                                         progress=progress, now=time.time()))


def finish_cancelled(ctx: context_module.Context, job_id: str, *, worker_id: str, result: dict | None = None,
                     image_count: int = 0) -> store_base.Change:
    """processing → cancelled (job.cancelled), with whatever the interrupted generation returned."""
    return _rung(ctx, ctx.store.finish_cancelled(job_id, worker_id=worker_id, result=result,
                                                 image_count=image_count, now=time.time()))


def fail(ctx: context_module.Context, job_id: str, *, worker_id: str, code: str, message: str) -> store_base.Change:
    """processing → error (job.error)."""
    return _rung(ctx, ctx.store.fail(job_id, worker_id=worker_id, code=code, message=message, now=time.time()))


def retry_later(ctx: context_module.Context, job_id: str, *, worker_id: str, delay: float,
                reason: str) -> store_base.Change:
    """processing → queued, due in `delay` seconds (the attempt counts); its doorbell rings then."""
    change = ctx.store.retry_later(job_id, worker_id=worker_id, delay=delay, reason=reason, now=time.time())
    return _rung(ctx, change, delay=delay)


def release(ctx: context_module.Context, job_id: str, *, worker_id: str) -> store_base.Change:
    """processing → queued at once, the attempt not counted (the worker is stopping)."""
    return _rung(ctx, ctx.store.release(job_id, worker_id=worker_id, now=time.time()))


def expire_leases(ctx: context_module.Context) -> list[store_base.Change]:
    """Jobs whose worker stopped renewing its lease: back to queued, or error/cancelled (with their
    event) once attempts are spent or a cancel was asked for."""
    changes = ctx.store.expire_leases(max_attempts=ctx.settings.job_max_attempts, now=time.time())
    return [_rung(ctx, change) for change in changes]


# -- doorbells ------------------------------------------------------------------------------------

def _rung(ctx: context_module.Context, change: store_base.Change, *, delay: float = 0) -> store_base.Change:
    """Ring what `change` calls for, once, and hand it back."""
    if not change.applied:
        return change
    if change.event is not None:
        doorbell.ring(ctx, change.job_id)
    if change.batch_event is not None:
        doorbell.ring(ctx, change.batch_event)
    if change.status == vocabulary.JobStatus.QUEUED:
        _ring_jobs(ctx, change.job_id, delay=delay)
    return change


def _ring_jobs(ctx: context_module.Context, job_id: str, *, delay: float) -> None:
    """Best effort, like `doorbell.ring`: the sweep re-rings a queued job that waited too long."""
    try:
        ctx.queue.send(queue_base.JOBS, {"job_id": job_id}, delay=delay)
    except Exception:  # noqa: BLE001 - the change is committed; the doorbell is an optimisation
        log.warning("job doorbell not sent; the sweep rings it later", exc_info=True, extra={"job_id": job_id})
