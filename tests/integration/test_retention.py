"""Retention and per-owner counts against every store backend: what a purge removes and keeps."""
from __future__ import annotations

import os
import time
import uuid

from chalicelib import images as images_module
from chalicelib import rejections
from chalicelib import retention
from chalicelib import store as store_module
from chalicelib import vocabulary
from chalicelib.store import base

NOW = 1_800_000_000.0
DAY = 86400.0
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels"


def submit(job_store, owner="alice", *, now=NOW, webhook=False) -> base.Job:
    options = {"webhook_url": "https://hooks.example.com/x", "webhook_events": []} if webhook else {}
    job, _ = job_store.create_job(base.NewJob(
        id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=0, request={"prompt": "a cat"},
        options=options, webhook_secret="s3cret" if webhook else None, idempotency_key=None), now=now)
    return job


def finish(job_store, images, *, now=NOW, webhook=False, owner="alice") -> base.Job:
    """A job run to completion at `now`, with two images and a run row (and a delivery)."""
    job = submit(job_store, owner, now=now, webhook=webhook)
    claimed = job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=now).job
    assert claimed.id == job.id
    images.put(job.id, 1, [PNG, PNG])
    assert job_store.complete(job.id, worker_id="w1", result={"images": []}, image_count=2, now=now).applied
    return job


def deliver_all(job_store, *, now):
    while (delivery := job_store.claim_delivery(dispatcher_id="d1", lease_seconds=60, now=now)) is not None:
        job_store.finish_delivery(delivery.id, claim_token=delivery.claim_token, attempt=delivery.attempts,
                                  result=base.AttemptResult(200, "ok", None),
                                  status=vocabulary.DeliveryStatus.DELIVERED, next_attempt_at=None,
                                  body="{}", now=now)


def test_a_purge_removes_old_finished_jobs_with_everything_kept_for_them(job_store):
    images = images_module.make_image_store("db", store=job_store)
    old = [finish(job_store, images, now=NOW - 40 * DAY, webhook=True) for _ in range(3)]
    recent = finish(job_store, images, now=NOW - DAY, webhook=True)
    old_queued = submit(job_store, now=NOW - 50 * DAY)  # never finished: kept, whatever its age
    deliver_all(job_store, now=NOW)
    log = rejections.make_rejection_log(job_store)
    log.record("m-old", reason="invalid", problems=[], excerpt="{}", now=NOW - 40 * DAY)
    log.record("m-new", reason="invalid", problems=[], excerpt="{}", now=NOW - DAY)

    report = retention.purge(job_store, images, older_than=30 * DAY, now=NOW)

    assert (report.jobs, report.images, report.runs, report.rejections) == (3, 6, 3, 1)
    assert report.deliveries == 3 and report.attempts == 3 and report.complete
    for job in old:
        assert job_store.get_job(job.id) is None
        assert images.get_all(job.id, 1) == [] and job_store.list_runs(job.id) == []
        assert job_store.list_deliveries(job.id, limit=10, before=None).deliveries == []
    assert job_store.get_job(recent.id).status == "completed" and len(images.get_all(recent.id, 1)) == 2
    assert len(job_store.list_deliveries(recent.id, limit=10, before=None).deliveries) == 1
    assert job_store.get_job(old_queued.id).status == "queued"
    assert [item.message_id for item in log.list(limit=10)] == ["m-new"]
    again = retention.purge(job_store, images, older_than=30 * DAY, now=NOW)
    assert (again.jobs, again.rejections) == (0, 0)


def test_a_job_whose_webhook_is_still_being_retried_waits_for_it(job_store):
    images = images_module.make_image_store("db", store=job_store)
    job = finish(job_store, images, now=NOW - 40 * DAY, webhook=True)
    assert retention.purge(job_store, images, older_than=30 * DAY, now=NOW).jobs == 0
    assert job_store.get_job(job.id) is not None
    deliver_all(job_store, now=NOW)
    assert retention.purge(job_store, images, older_than=30 * DAY, now=NOW).jobs == 1


def test_a_large_backlog_goes_in_batches_and_a_budget_leaves_the_rest_for_later(job_store):
    images = images_module.make_image_store("db", store=job_store)
    count = retention.PURGE_BATCH * 2 + 5
    for n in range(count):
        job = submit(job_store, now=NOW - 40 * DAY + n)
        assert job_store.cancel_queued(job.id, now=NOW - 40 * DAY + n).applied
    partial = retention.purge(job_store, images, older_than=30 * DAY, now=NOW, budget_seconds=0)
    assert partial.jobs == retention.PURGE_BATCH and not partial.complete
    rest = retention.purge(job_store, images, older_than=30 * DAY, now=NOW)
    assert rest.jobs == count - retention.PURGE_BATCH and rest.complete
    assert job_store.count_by_status() == {}


def test_owner_counts_are_bounded_and_per_owner(job_store):
    for n in range(5):
        submit(job_store, now=NOW + n)
    running = submit(job_store, "alice", now=NOW + 10)
    done = submit(job_store, "alice", now=NOW + 11)
    job_store.cancel_queued(done.id, now=NOW + 12)
    submit(job_store, "bob", now=NOW + 13)
    assert job_store.claim_next(worker_id="w", instance="gpu", lease_seconds=30, now=NOW + 20).job is not None
    assert job_store.count_active("alice", limit=100) == 6  # 5 queued + 1 processing, not the cancelled one
    assert job_store.count_active("alice", limit=3) == 3
    assert job_store.count_active("bob", limit=100) == 1 and job_store.count_active("carol", limit=5) == 0
    assert job_store.recent_submit_times("alice", limit=2) == [NOW + 11, NOW + 10]
    assert running is not None


def test_an_admin_listing_spans_owners(job_store):
    ids = [submit(job_store, owner, now=NOW + n).id for n, owner in enumerate(["alice", "bob", "carol"])]
    page = job_store.list_jobs(None, status=None, limit=2, before=None)
    rest = job_store.list_jobs(None, status=None, limit=2, before=page.next_cursor)
    assert [job.id for job in page.jobs + rest.jobs] == list(reversed(ids))
    assert [job.owner for job in job_store.list_jobs(None, status="queued", limit=5, before=None).jobs] == \
        ["carol", "bob", "alice"]


def checkpoint_whole_wal(job_store) -> None:
    """The WAL copied into the file and emptied; tried again while the process's background
    checkpoint (sqlite_checkpoints) holds the checkpoint lock, which makes this one busy."""
    deadline = time.monotonic() + 10
    while job_store.database.query_one("PRAGMA wal_checkpoint(TRUNCATE)")["busy"]:
        assert time.monotonic() < deadline, "the WAL stayed busy"
        time.sleep(0.01)


def test_the_sqlite_file_shrinks_after_a_purge(tmp_path):
    path = tmp_path / "jobs.db"
    job_store = store_module.make_store(f"sqlite:///{path}")
    job_store.migrate()
    images = images_module.make_image_store("db", store=job_store)
    assert job_store.database.query_one("PRAGMA auto_vacuum")["auto_vacuum"] == 2  # INCREMENTAL
    big = os.urandom(64 * 1024)
    for n in range(120):
        job = submit(job_store, now=NOW - 40 * DAY + n)
        job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=NOW - 40 * DAY + n)
        images.put(job.id, 1, [PNG + big])
        job_store.complete(job.id, worker_id="w1", result={"images": []}, image_count=1, now=NOW - 40 * DAY + n)
    checkpoint_whole_wal(job_store)
    full = path.stat().st_size
    assert full > 120 * 64 * 1024

    report = retention.purge(job_store, images, older_than=30 * DAY, now=NOW)

    assert report.jobs == 120 and report.pages_reclaimed > 0
    checkpoint_whole_wal(job_store)
    assert path.stat().st_size < full / 4
    job_store.database.close()
