"""Fair share between the batches of one owner, and the kept head priorities staying true through
cancels, retries and releases, on every store backend (the `job_store` fixture)."""
from __future__ import annotations

import threading
import uuid

from chalicelib import store as store_module
from chalicelib.store import base
from chalicelib.store import sqlite_schema

NOW = 1_800_000_000.0


def new_job(owner="alice", *, priority=0) -> base.NewJob:
    return base.NewJob(id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=priority,
                       request={"prompt": "a cat"}, options={"metadata": None}, webhook_secret=None,
                       idempotency_key=None)


def new_batch(job_store, owner="alice", *, jobs: int, priority=0, now=NOW) -> tuple[str, list[str]]:
    batch = base.NewBatch(id=str(uuid.uuid4()), owner=owner, options={"webhook_url": None, "metadata": None},
                          webhook_secret=None, idempotency_key=None, job_count=jobs)
    new_jobs = [new_job(owner, priority=priority) for _ in range(jobs)]
    job_store.create_batch(batch, new_jobs, now=now)
    return batch.id, [job.id for job in new_jobs]


def claim(job_store, *, now):
    return job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=now).job


def test_claims_rotate_between_the_batches_and_single_jobs_of_one_owner(job_store):
    first, _ = new_batch(job_store, jobs=10)
    second, _ = new_batch(job_store, jobs=10, now=NOW + 1)
    single = job_store.create_job(new_job(), now=NOW + 2)[0]
    lanes = [claim(job_store, now=NOW + 10 + i).batch_id for i in range(6)]
    assert lanes == [first, second, None, first, second, first]  # in the order they came, then rotating
    assert job_store.get_job(single.id).status == "processing"


def test_owners_rotate_first_and_then_each_owner_its_batches(job_store):
    a1, _ = new_batch(job_store, "alice", jobs=5)
    a2, _ = new_batch(job_store, "alice", jobs=5, now=NOW + 1)
    b1, _ = new_batch(job_store, "bob", jobs=5, now=NOW + 2)
    served = [(job.owner, job.batch_id) for job in (claim(job_store, now=NOW + 10 + i) for i in range(6))]
    assert served == [("alice", a1), ("bob", b1), ("alice", a2), ("bob", b1), ("alice", a1), ("bob", b1)]


def test_a_batch_of_higher_priority_is_served_before_the_owners_other_lanes(job_store):
    low, _ = new_batch(job_store, jobs=3)
    high, high_ids = new_batch(job_store, jobs=2, priority=5, now=NOW + 1)
    assert [claim(job_store, now=NOW + 10 + i).batch_id for i in range(3)] == [high, high, low]


def test_cancelled_heads_are_corrected_by_the_claim_and_nothing_is_left_behind(job_store):
    urgent = [job_store.create_job(new_job("alice", priority=9), now=NOW)[0] for _ in range(2)]
    plain = job_store.create_job(new_job("bob"), now=NOW + 1)[0]
    for job in urgent:
        assert job_store.cancel_queued(job.id, now=NOW + 2).applied  # alice's head stays 9: stale
    assert claim(job_store, now=NOW + 3).id == plain.id
    assert claim(job_store, now=NOW + 4) is None
    again = job_store.create_job(new_job("alice", priority=1), now=NOW + 5)[0]
    assert claim(job_store, now=NOW + 6).id == again.id


def test_a_job_back_in_the_queue_raises_its_lanes_head_again(job_store):
    _, (first, second) = new_batch(job_store, jobs=2, priority=3)
    job_store.create_job(new_job("bob", priority=1), now=NOW + 1)
    assert claim(job_store, now=NOW + 2).id == first
    assert claim(job_store, now=NOW + 3).id == second  # alice's batch is emptied and its lane dropped
    assert job_store.release(second, worker_id="w1", now=NOW + 4).applied
    assert job_store.retry_later(first, worker_id="w1", delay=0, reason="busy", now=NOW + 4).applied
    assert {claim(job_store, now=NOW + 5 + i).id for i in range(2)} == {first, second}  # priority 3 first
    assert claim(job_store, now=NOW + 8).owner == "bob"


def test_a_lane_below_a_blocked_head_is_still_claimed(job_store):
    blocked = base.NewJob(id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=5, request={},
                          options={"instance_labels": ["sdxl"]}, webhook_secret=None, idempotency_key=None)
    job_store.create_job(blocked, now=NOW)
    _, (plain,) = new_batch(job_store, jobs=1, now=NOW + 1)
    assert claim(job_store, now=NOW + 2).id == plain
    assert claim(job_store, now=NOW + 3) is None
    assert job_store.claim_next(worker_id="w2", instance="xl", lease_seconds=30, now=NOW + 4,
                                labels=["sdxl"]).job.id == blocked.id


def test_jobs_submitted_while_claims_correct_the_heads_are_never_lost(job_store):
    """Submitters and claimers of one owner at once: whatever the interleaving, every job submitted
    is claimed in the end (a head lowered past a job it could not see would strand that job)."""
    submitted, claimed, failures = [], [], []

    def submit(n: int) -> None:
        try:
            for i in range(n):
                submitted.append(job_store.create_job(new_job(priority=i % 2), now=NOW)[0].id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    def drain(until: threading.Event) -> None:
        try:
            while True:
                job = claim(job_store, now=NOW + 1)
                if job is not None:
                    claimed.append(job.id)
                elif until.is_set():
                    return
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)

    done = threading.Event()
    submitters = [threading.Thread(target=submit, args=(40,)) for _ in range(3)]
    claimers = [threading.Thread(target=drain, args=(done,)) for _ in range(2)]
    for thread in submitters + claimers:
        thread.start()
    for thread in submitters:
        thread.join(timeout=120)
    done.set()
    for thread in claimers:
        thread.join(timeout=120)
    assert failures == []
    while (job := claim(job_store, now=NOW + 2)) is not None:
        claimed.append(job.id)
    assert sorted(claimed) == sorted(submitted) and len(submitted) == 120


def test_the_head_priorities_of_jobs_queued_before_the_migration_are_filled_in(tmp_path, monkeypatch):
    latest = list(sqlite_schema.MIGRATIONS)
    job_store = store_module.make_store(f"sqlite:///{tmp_path}/old.db")
    lanes = next(number for number, script in enumerate(latest) if "CREATE TABLE lanes" in script)
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", latest[:lanes])
    job_store.migrate()
    job_store.database.execute(
        "INSERT INTO jobs (id, owner, kind, status, priority, request, options, available_at, created_at, "
        "updated_at) VALUES ('old', 'carol', 'txt2img', 'queued', 2, '{}', '{}', 0, 0, 0)")
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", latest)
    job_store.migrate()
    assert claim(job_store, now=NOW).id == "old"
