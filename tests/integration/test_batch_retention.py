"""Retention of batch rows on every store backend: a batch goes once all its jobs went."""
from __future__ import annotations

import uuid

from chalicelib import images as images_module
from chalicelib import retention
from chalicelib import vocabulary
from chalicelib.store import base

NOW = 1_800_000_000.0
DAY = 86400.0


def new_batch(job_store, *, jobs: int, now: float, url: str | None = None) -> tuple[base.Batch, list[str]]:
    batch = base.NewBatch(id=str(uuid.uuid4()), owner="alice", options={"webhook_url": url, "metadata": None},
                          webhook_secret="s3cret" if url else None, idempotency_key=None, job_count=jobs)
    new_jobs = [base.NewJob(id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0,
                            request={"prompt": "a cat"}, options={}, webhook_secret=None, idempotency_key=None)
                for _ in range(jobs)]
    stored, _ = job_store.create_batch(batch, new_jobs, now=now)
    return stored, [job.id for job in new_jobs]


def run_all(job_store, *, now: float) -> None:
    while (change := job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=now)).applied:
        assert job_store.complete(change.job_id, worker_id="w1", result={"images": []}, image_count=0,
                                  now=now).applied


def deliver_all(job_store, *, now: float) -> None:
    while (delivery := job_store.claim_delivery(dispatcher_id="d1", lease_seconds=60, now=now)) is not None:
        job_store.finish_delivery(delivery.id, claim_token=delivery.claim_token, attempt=delivery.attempts,
                                  result=base.AttemptResult(200, "ok", None),
                                  status=vocabulary.DeliveryStatus.DELIVERED, next_attempt_at=None,
                                  body="{}", now=now)


def test_a_batch_goes_with_its_last_purged_job_and_its_webhook_deliveries(job_store):
    images = images_module.make_image_store("db", store=job_store)
    old, _ = new_batch(job_store, jobs=3, now=NOW - 40 * DAY, url="https://hooks.example.com/b")
    run_all(job_store, now=NOW - 40 * DAY)
    deliver_all(job_store, now=NOW - 40 * DAY)
    assert job_store.list_deliveries(old.id, limit=10, before=None).deliveries  # batch.completed
    recent, _ = new_batch(job_store, jobs=2, now=NOW - DAY)
    run_all(job_store, now=NOW - DAY)

    report = retention.purge(job_store, images, older_than=30 * DAY, now=NOW)

    assert (report.jobs, report.batches, report.deliveries, report.attempts) == (3, 1, 1, 1)
    assert job_store.get_batch(old.id) is None
    assert job_store.list_deliveries(old.id, limit=10, before=None).deliveries == []
    assert job_store.get_batch(recent.id) is not None and len(job_store.batch_members(recent.id)) == 2
    assert retention.purge(job_store, images, older_than=30 * DAY, now=NOW).batches == 0


def test_an_old_batch_with_a_job_left_is_kept(job_store):
    images = images_module.make_image_store("db", store=job_store)
    batch, job_ids = new_batch(job_store, jobs=2, now=NOW - 40 * DAY)
    change = job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=NOW - 40 * DAY)
    job_store.complete(change.job_id, worker_id="w1", result={"images": []}, image_count=0, now=NOW - 40 * DAY)

    report = retention.purge(job_store, images, older_than=30 * DAY, now=NOW)

    assert (report.jobs, report.batches) == (1, 0)
    assert [member.status for member in job_store.batch_members(batch.id)] == ["queued"]
    assert job_store.get_batch(batch.id).job_count == 2
