"""Every change of a job bumps its version, and the store's own signal (SQLite's change log,
Postgres's NOTIFY) wakes the waiters of chalicelib.changes; run on both databases."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from chalicelib import changes
from chalicelib import errors
from chalicelib import store as store_module
from chalicelib.store import base

NOW = 1_000_000.0


def add(job_store, owner="alice", *, priority=0) -> base.Job:
    job, _ = job_store.create_job(base.NewJob(id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=priority,
                                              request={"prompt": "x"}, options={}, webhook_secret=None,
                                              idempotency_key=None), now=NOW)
    return job


def version(job_store, job_id) -> int:
    return job_store.get_job(job_id).version


@pytest.fixture
def registry(job_store):
    registry = changes.make_registry(job_store, max_counted=2, watch_interval=0.005)
    with registry.subscribe(job_id="-") as subscription:  # starts the listener: wait for its first resync
        assert subscription.wait(timeout=10).resync
    yield registry
    registry.close()


def test_every_change_bumps_the_version_once(job_store):
    job = add(job_store)
    assert job.version == 1
    claimed = job_store.claim_next(worker_id="w", instance="i", lease_seconds=30, now=NOW).job
    assert claimed.version == 2 == version(job_store, job.id)
    progress = {"progress": 0.5, "step": 5, "steps": 10}
    job_store.record_progress(job.id, worker_id="w", progress=progress, preview=None, lease_seconds=30, now=NOW)
    assert version(job_store, job.id) == 3
    job_store.request_cancel(job.id, now=NOW)
    assert version(job_store, job.id) == 4
    job_store.complete(job.id, worker_id="w", result={"images": []}, image_count=0, now=NOW)
    assert version(job_store, job.id) == 5
    assert not job_store.cancel_queued(job.id, now=NOW).applied  # a guard that fails changes nothing
    assert version(job_store, job.id) == 5

    queued = add(job_store)
    job_store.cancel_queued(queued.id, now=NOW)
    assert version(job_store, queued.id) == 2


def wait_for(registry, job_id, above, timeout=5.0):
    started = time.monotonic()
    return registry.wait_for_change(job_id, above_version=above, timeout=timeout), time.monotonic() - started


def test_a_waiter_is_woken_by_a_change_made_through_another_connection(job_store, registry):
    job = add(job_store)
    timer = threading.Timer(0.3, lambda: job_store.cancel_queued(job.id, now=NOW))
    timer.start()
    woken, waited = wait_for(registry, job.id, above=1)
    timer.join()
    assert woken and 0.25 < waited < 2.0, waited
    assert registry.known_version(job.id) == 2
    # The change is remembered: a waiter that read version 1 before it returns at once.
    assert wait_for(registry, job.id, above=1, timeout=5)[1] < 0.1


def test_a_waiter_times_out_without_a_change_and_ignores_other_jobs(job_store, registry):
    job, other = add(job_store), add(job_store)
    threading.Timer(0.1, lambda: job_store.cancel_queued(other.id, now=NOW)).start()
    woken, waited = wait_for(registry, job.id, above=1, timeout=0.6)
    assert not woken and waited >= 0.6


def test_an_owner_subscription_sees_its_jobs_only_and_queue_moves(job_store, registry):
    with registry.subscribe(owner="alice", watch_queue=True) as subscription:
        mine = add(job_store, "alice")
        add(job_store, "bob")
        deadline = time.monotonic() + 5
        seen: dict = {}
        while mine.id not in seen and time.monotonic() < deadline:
            seen.update(subscription.wait(timeout=1).versions)
        assert seen == {mine.id: 1}
        job_store.claim_next(worker_id="w", instance="i", lease_seconds=30, now=NOW)  # alice's job leaves
        wake = subscription.wait(timeout=5)
        while not wake.queue_moved and time.monotonic() < deadline:
            wake = subscription.wait(timeout=1)
        assert wake.queue_moved


def test_counted_subscriptions_are_capped_and_freed(registry):
    first, second = registry.subscribe(job_id="a", counted=True), registry.subscribe(job_id="b", counted=True)
    with pytest.raises(errors.ServerBusy) as busy:
        registry.subscribe(job_id="c", counted=True)
    assert busy.value.status == 503 and busy.value.headers["Retry-After"]
    registry.subscribe(job_id="d").close()  # uncounted ones are not capped
    first.close()
    registry.subscribe(job_id="c", counted=True).close()
    second.close()
    assert registry.open_counted() == 0


def test_closing_the_registry_wakes_every_waiter(job_store, registry):
    job = add(job_store)
    threading.Timer(0.2, registry.close).start()
    woken, waited = wait_for(registry, job.id, above=1)
    assert woken and waited < 2


def test_sqlites_change_log_keeps_its_last_10000_changes_pruning_100_at_a_time(tmp_path):
    """Pruned at every 100th change, by inserts and by updates alike; a change in between deletes
    nothing (which would write the log's oldest page at every write of a job)."""
    job_store = store_module.make_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job_store.migrate()
    db = job_store.database
    with db.transaction() as session:
        session.executemany(
            "INSERT INTO jobs (id, owner, kind, status, priority, request, options, available_at, created_at, "
            "updated_at) VALUES (:id, 'alice', 'txt2img', 'queued', 0, '{}', '{}', 0, 0, 0)",
            [{"id": str(uuid.uuid4())} for _ in range(10_150)])

    def log() -> dict:
        return db.query_one("SELECT COUNT(*) AS n, MIN(seq) AS first, MAX(seq) AS last FROM job_changes")

    assert log() == {"n": 10_050, "first": 101, "last": 10_150}  # pruned at 10,100: seq <= 100 went
    db.execute("UPDATE jobs SET version = version + 1 WHERE seq <= 49")
    assert log() == {"n": 10_099, "first": 101, "last": 10_199}
    db.execute("UPDATE jobs SET version = version + 1 WHERE seq = 50")  # the 10,200th change
    assert log() == {"n": 10_000, "first": 201, "last": 10_200}
    db.close()
