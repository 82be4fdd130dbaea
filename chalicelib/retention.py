"""Retention: finished jobs older than JOB_RETENTION go, with everything kept for them.

A job is purged with its images (database rows or S3 objects), its runs, its webhook deliveries
and their attempts; rejected submissions older than the same age go too, and so does a batch once
all its jobs went (with its `batch.completed` deliveries). Work is done in batches
of PURGE_BATCH jobs, each batch one short transaction (SQLite's single writer is never held for
long), images first: a crash between the two leaves a job without images that the next purge
removes, never images without a job that nothing would remove. After a purge SQLite gives the
freed pages back to the file system (`reclaim_space`), so the file stays bounded under steady load.

The sweep calls `purge_if_due` at most every RETENTION_INTERVAL seconds per process; a purge that
ran out of its time budget leaves the rest for the next sweep, not the next interval.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

from chalicelib import context as context_module
from chalicelib import errors
from chalicelib.images import base as images_base
from chalicelib.store import base as store_base

log = logging.getLogger(__name__)

PURGE_BATCH = 100
SWEEP_BUDGET_SECONDS = 5.0

_due_lock = threading.Lock()
_next_purge = {"at": 0.0}


@dataclasses.dataclass
class Report:
    """What one purge removed; `complete` is False when its time budget ran out first."""

    jobs: int = 0
    images: int = 0
    runs: int = 0
    deliveries: int = 0
    attempts: int = 0
    batches: int = 0
    rejections: int = 0
    pages_reclaimed: int = 0
    complete: bool = True

    def add(self, purged: store_base.Purged) -> None:
        self.jobs += purged.jobs
        self.runs += purged.runs
        self.deliveries += purged.deliveries
        self.attempts += purged.attempts
        self.batches += purged.batches

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def purge(store: store_base.JobStore, images: images_base.ImageStore, *, older_than: float,
          now: float, budget_seconds: float | None = None) -> Report:
    """Purge jobs that finished more than `older_than` seconds before `now`, and rejections received
    before then, batch by batch until none is left or `budget_seconds` (None: no limit) ran out."""
    cutoff = now - older_than
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    report = Report()
    while True:
        job_ids = store.finished_before(cutoff, limit=PURGE_BATCH)
        if job_ids:
            report.images += images.delete(job_ids)
            report.add(store.purge_jobs(job_ids))
        batches = store.purge_batches(cutoff, limit=PURGE_BATCH)
        report.add(batches)
        rejections = store.purge_rejections(cutoff, limit=PURGE_BATCH)
        report.rejections += rejections
        if len(job_ids) < PURGE_BATCH and batches.batches < PURGE_BATCH and rejections < PURGE_BATCH:
            break
        if deadline is not None and time.monotonic() >= deadline:
            report.complete = False
            break
    if report.jobs or report.batches or report.rejections:
        report.pages_reclaimed = store.database.reclaim_space()
    return report


def purge_if_due(ctx: context_module.Context) -> dict | None:
    """The sweep's purge, at most every RETENTION_INTERVAL seconds in this process (sooner while a
    backlog is left); None when not due or retention is off (JOB_RETENTION=0)."""
    older_than = ctx.settings.job_retention_seconds()
    if older_than is None:
        return None
    with _due_lock:
        if time.monotonic() < _next_purge["at"]:
            return None
        _next_purge["at"] = time.monotonic() + ctx.settings.retention_interval
    try:
        report = purge(ctx.store, ctx.images, older_than=older_than, now=time.time(),
                       budget_seconds=SWEEP_BUDGET_SECONDS)
    except errors.StoreUnavailable as exc:  # the rest of the sweep is done; the next purge goes on
        log.warning("retention purge stopped: %s", exc)
        return {"error": str(exc)}
    if not report.complete:
        with _due_lock:
            _next_purge["at"] = 0.0
    if report.jobs or report.rejections:
        log.info("retention purged finished jobs", extra=report.as_dict())
    return report.as_dict()
