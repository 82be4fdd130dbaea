"""Requests that wait for their job to end: A1111's own clients (/a1111) and `Prefer: wait`.

A waiting request holds a server thread, so at most SYNC_MAX_WAITING wait at once per API process
(`slot`: 503 with Retry-After beyond it) and each for at most SYNC_WAIT_MAX_SECONDS. The wait itself
is a subscription to the process's change signal (chalicelib/changes.py): no polling per request,
the request wakes when its job's change is signalled.
"""
from __future__ import annotations

import contextlib
import threading
import time
import typing

from chalicelib import changes
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import vocabulary
from chalicelib.store import base as store_base

BUSY_RETRY_AFTER = 5


class Slots:
    """A counter of waiting requests with a ceiling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = 0

    @contextlib.contextmanager
    def take(self, *, limit: int) -> typing.Iterator[None]:
        with self._lock:
            if self._taken >= limit:
                raise errors.ServerBusy(
                    f"all {limit} waiting requests of this server are taken (SYNC_MAX_WAITING); retry later, "
                    "or submit without waiting (POST /sdapi/v1/txt2img answers 202) and poll the job",
                    retry_after=BUSY_RETRY_AFTER)
            self._taken += 1
        try:
            yield
        finally:
            with self._lock:
                self._taken -= 1

    def taken(self) -> int:
        with self._lock:
            return self._taken


_slots = Slots()


def slot(ctx: context_module.Context) -> typing.ContextManager[None]:
    """One of the process's SYNC_MAX_WAITING slots, for as long as the `with` lasts; take it before
    submitting, so a request turned away leaves no job behind."""
    return _slots.take(limit=ctx.settings.sync_waiting_limit())


def waiting() -> int:
    """How many requests of this process wait now."""
    return _slots.taken()


def wait_for_end(ctx: context_module.Context, job_id: str, *, owner: str | None,
                 timeout: float) -> store_base.Job:
    """The job once it is finished (completed, error, cancelled), or as it is after `timeout`
    seconds (or when the server stops). Woken by the change signal, never by polling."""
    deadline = time.monotonic() + timeout
    with changes.registry(ctx).subscribe(job_id=job_id) as subscription:
        job = _read(ctx, job_id, owner=owner)
        while job.status not in vocabulary.TERMINAL_STATUSES:
            wake = subscription.wait(timeout=deadline - time.monotonic())
            if not wake or wake.closed:
                break
            job = _read(ctx, job_id, owner=owner)
    return job


def _read(ctx: context_module.Context, job_id: str, *, owner: str | None) -> store_base.Job:
    job = ctx.store.get_job(job_id, owner=owner)
    if job is None:  # purged while waiting: as the job routes answer for it
        raise errors.NotFound(f"no job {job_id!r}")
    return job
