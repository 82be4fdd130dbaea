"""Batches and fair share in the job store, on every backend (the `job_store` fixture)."""
from __future__ import annotations

import dataclasses
import json
import uuid

from chalicelib.store import base

NOW = 1_800_000_000.0


def new_job(owner="alice", *, priority=0, labels=None) -> base.NewJob:
    options = {"metadata": None, **({"instance_labels": labels} if labels else {})}
    return base.NewJob(id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=priority,
                       request={"prompt": "a cat", "steps": 4}, options=options, webhook_secret=None,
                       idempotency_key=None)


def new_batch(owner="alice", *, key=None, jobs=3, url="https://hooks.example.com/b") -> tuple[base.NewBatch, list]:
    batch = base.NewBatch(id=str(uuid.uuid4()), owner=owner, options={"webhook_url": url, "metadata": {"run": 1}},
                          webhook_secret="s3cret" if url else None, idempotency_key=key, job_count=jobs)
    return batch, [new_job(owner) for _ in range(jobs)]


def claim(job_store, *, now=NOW, labels=()):
    return job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=now, labels=labels).job


def batch_deliveries(job_store, batch_id):
    return job_store.database.query(
        job_store.database.native("SELECT event_type, body FROM webhook_deliveries WHERE job_id = :id"),
        {"id": batch_id})


def test_a_batch_and_its_jobs_are_created_together_and_read_back_in_order(job_store):
    batch, jobs = new_batch(jobs=5)
    stored, created = job_store.create_batch(batch, jobs, now=NOW)
    assert created and stored.id == batch.id and stored.job_count == 5 and stored.finished_at is None
    members = job_store.batch_members(batch.id)
    assert [m.id for m in members] == [job.id for job in jobs]
    assert {m.status for m in members} == {"queued"}
    assert job_store.get_job(jobs[0].id).batch_id == batch.id
    assert job_store.get_batch(batch.id, owner="bob") is None
    assert job_store.get_batch(batch.id, owner="alice").options["metadata"] == {"run": 1}


def test_an_idempotency_key_creates_the_batch_once(job_store):
    batch, jobs = new_batch(key="upload-1")
    first, created = job_store.create_batch(batch, jobs, now=NOW)
    again_batch, again_jobs = new_batch(key="upload-1", jobs=7)
    again, created_again = job_store.create_batch(again_batch, again_jobs, now=NOW)
    assert created and not created_again and again.id == first.id
    assert job_store.count_by_status() == {"queued": 3}


def test_batch_jobs_page_in_submission_order_and_filter_by_status(job_store):
    batch, jobs = new_batch(jobs=5)
    job_store.create_batch(batch, jobs, now=NOW)
    first = job_store.list_batch_jobs(batch.id, status=None, limit=2, after=None)
    second = job_store.list_batch_jobs(batch.id, status=None, limit=2, after=first.next_cursor)
    third = job_store.list_batch_jobs(batch.id, status=None, limit=2, after=second.next_cursor)
    assert [j.id for j in first.jobs + second.jobs + third.jobs] == [j.id for j in jobs]
    assert third.next_cursor is None
    claim(job_store)
    processing = job_store.list_batch_jobs(batch.id, status="processing", limit=10, after=None)
    assert [j.id for j in processing.jobs] == [jobs[0].id]


def test_the_last_job_to_end_writes_one_batch_completed_delivery(job_store):
    batch, jobs = new_batch(jobs=3)
    job_store.create_batch(batch, jobs, now=NOW)
    first, second = claim(job_store), claim(job_store)
    change = job_store.complete(first.id, worker_id="w1", result={"info": ""}, image_count=0, now=NOW + 1)
    assert change.batch_event is None and not batch_deliveries(job_store, batch.id)
    job_store.fail(second.id, worker_id="w1", code="a1111_failed", message="boom", now=NOW + 2)
    last = job_store.cancel_queued(jobs[2].id, now=NOW + 3)
    assert last.batch_event == batch.id
    deliveries = batch_deliveries(job_store, batch.id)
    assert len(deliveries) == 1 and deliveries[0]["event_type"] == "batch.completed"
    body = json.loads(deliveries[0]["body"])
    assert body["type"] == "batch.completed" and body["data"]["batch_id"] == batch.id
    assert body["data"]["counts"] == {"queued": 0, "processing": 0, "completed": 1, "error": 1, "cancelled": 1}
    assert job_store.get_batch(batch.id).finished_at == NOW + 3


def test_a_batch_without_webhook_finishes_without_delivery(job_store):
    batch, jobs = new_batch(jobs=1, url=None)
    job_store.create_batch(batch, jobs, now=NOW)
    change = job_store.cancel_queued(jobs[0].id, now=NOW + 1)
    assert change.batch_event is None and not batch_deliveries(job_store, batch.id)
    assert job_store.get_batch(batch.id).finished_at == NOW + 1


def test_cancel_batch_cancels_queued_jobs_and_flags_running_ones(job_store):
    batch, jobs = new_batch(jobs=4)
    job_store.create_batch(batch, jobs, now=NOW)
    running = claim(job_store)
    changes = job_store.cancel_batch(batch.id, now=NOW + 1)
    statuses = sorted(change.status for change in changes)
    assert statuses == ["cancelled", "cancelled", "cancelled", "processing"]
    assert job_store.get_job(running.id).cancel_requested
    assert not batch_deliveries(job_store, batch.id)  # the running job has not ended yet
    ended = job_store.finish_cancelled(running.id, worker_id="w1", result=None, image_count=0, now=NOW + 2)
    assert ended.batch_event == batch.id and len(batch_deliveries(job_store, batch.id)) == 1
    assert job_store.cancel_batch(batch.id, now=NOW + 3) == []


def test_claims_rotate_between_owners_whatever_their_queue(job_store):
    batch, jobs = new_batch("alice", jobs=20, url=None)
    job_store.create_batch(batch, jobs, now=NOW)
    bobs = job_store.create_job(new_job("bob"), now=NOW + 1)[0]
    carols = job_store.create_job(new_job("carol"), now=NOW + 2)[0]
    owners = [claim(job_store, now=NOW + 10 + i).owner for i in range(5)]
    assert owners[:3] == ["alice", "bob", "carol"]  # none served yet: first in, first served
    assert owners[3:] == ["alice", "alice"]
    assert job_store.get_job(bobs.id).status == job_store.get_job(carols.id).status == "processing"


def test_the_owner_served_least_recently_goes_first(job_store):
    for _ in range(3):
        job_store.create_job(new_job("alice"), now=NOW)
    assert claim(job_store, now=NOW + 1).owner == "alice"
    late = job_store.create_job(new_job("bob"), now=NOW + 2)[0]
    assert claim(job_store, now=NOW + 3).id == late.id  # bob was never served: before alice's older jobs
    assert claim(job_store, now=NOW + 4).owner == "alice"


def test_priority_wins_over_fair_share(job_store):
    job_store.create_job(new_job("bob"), now=NOW)
    urgent = job_store.create_job(new_job("alice", priority=5), now=NOW + 1)[0]
    job_store.create_job(new_job("alice", priority=5), now=NOW + 2)
    assert claim(job_store, now=NOW + 3).id == urgent.id
    assert claim(job_store, now=NOW + 4).owner == "alice"  # still more urgent than bob's
    assert claim(job_store, now=NOW + 5).owner == "bob"


def test_an_owner_whose_jobs_need_other_labels_does_not_block_the_others(job_store):
    job_store.create_job(new_job("alice", labels=["sdxl"]), now=NOW)
    plain = job_store.create_job(new_job("bob"), now=NOW + 1)[0]
    assert claim(job_store, now=NOW + 2, labels=["sd15"]).id == plain.id
    assert claim(job_store, now=NOW + 3, labels=["sd15"]) is None
    assert claim(job_store, now=NOW + 4, labels=["sdxl"]).owner == "alice"


def test_a_job_of_a_named_batch_counts_into_it_and_reopens_it(job_store):
    batch, _ = new_batch(jobs=0, url=None)
    ensured = job_store.ensure_batch(batch, now=NOW)
    assert ensured.id == batch.id and job_store.ensure_batch(batch, now=NOW + 1).created_at == NOW
    other = base.NewBatch(id=batch.id, owner="bob", options={}, webhook_secret=None, idempotency_key=None,
                          job_count=0)
    assert job_store.ensure_batch(other, now=NOW) is None
    job = dataclasses.replace(new_job("alice"), batch_id=batch.id)
    job_store.create_job(job, now=NOW)
    assert job_store.get_batch(batch.id).job_count == 1
    assert [m.id for m in job_store.batch_members(batch.id)] == [job.id]
