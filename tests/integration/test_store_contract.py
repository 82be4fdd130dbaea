"""The job store contract, run against every backend (see the `database_url` fixture)."""
from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
import uuid

import pytest

from chalicelib import store as store_module
from chalicelib.store import base

NOW = 1_800_000_000.0


def new_job(owner="alice", *, priority=0, key=None, request=None) -> base.NewJob:
    return base.NewJob(id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=priority,
                       request=request or {"prompt": "a cat"}, options={"metadata": {"n": 1}},
                       webhook_secret="s3cret", idempotency_key=key)


def add(job_store, *args, now=NOW, **kwargs) -> base.Job:
    job, created = job_store.create_job(new_job(*args, **kwargs), now=now)
    assert created
    return job


def claim(job_store, worker="w1", *, now=NOW, lease=30.0):
    return job_store.claim_next(worker_id=worker, instance="gpu0", lease_seconds=lease, now=now).job


def test_a_job_with_instance_labels_is_claimed_only_by_an_instance_with_all_of_them(job_store):
    sdxl = job_store.create_job(base.NewJob(
        id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=5, request={"prompt": "big"},
        options={"instance_labels": ["fast", "sdxl"]}, webhook_secret=None, idempotency_key=None), now=NOW)[0]
    plain = add(job_store, now=NOW + 1)

    def claim_on(labels):
        return job_store.claim_next(worker_id="w1", instance="gpu", lease_seconds=30, now=NOW + 2, labels=labels).job

    assert claim_on(["sdxl"]).id == plain.id  # skips the more urgent job it cannot run
    assert claim_on(["sdxl"]) is None and claim_on(()) is None
    assert claim_on(["fast", "sdxl", "xl"]).id == sdxl.id


def test_created_job_reads_back_queued_with_its_fields(job_store):
    job = add(job_store)
    got = job_store.get_job(job.id, owner="alice")
    assert got.status == "queued" and got.attempts == 0
    assert got.request == {"prompt": "a cat"} and got.options == {"metadata": {"n": 1}}
    assert got.created_at == NOW


def test_the_created_job_is_the_row_as_stored(job_store):
    """create_job answers without reading the row back: what it answers must be that row, field for
    field, also for a job that takes its owner's chosen checkpoint and one that is a replay."""
    job_store.set_model_choice("alice", "sdxl.safetensors", now=NOW)
    for new in (new_job(key="k1"), dataclasses.replace(new_job(), owner_checkpoint=True)):
        job, created = job_store.create_job(new, now=NOW + 0.125)
        assert created and job == job_store.get_job(new.id)
    assert job.request == {"prompt": "a cat", "override_settings": {"sd_model_checkpoint": "sdxl.safetensors"}}
    replay, created = job_store.create_job(new_job(key="k1"), now=NOW + 1)
    assert not created and replay == job_store.get_job(replay.id)


def test_other_owner_cannot_read_a_job(job_store):
    job = add(job_store)
    assert job_store.get_job(job.id, owner="bob") is None


def test_idempotency_key_returns_first_job_per_owner(job_store):
    first, created = job_store.create_job(new_job(key="k1"), now=NOW)
    again, created_again = job_store.create_job(new_job(key="k1", request={"prompt": "other"}), now=NOW)
    bobs, bob_created = job_store.create_job(new_job("bob", key="k1"), now=NOW)
    assert created and not created_again and bob_created
    assert again.id == first.id and again.request == {"prompt": "a cat"}
    assert bobs.id != first.id
    assert job_store.count_by_status() == {"queued": 2}


def test_list_is_newest_first_and_keyset_paginated(job_store):
    ids = [add(job_store, now=NOW + i).id for i in range(5)]
    add(job_store, "bob")
    first = job_store.list_jobs("alice", status=None, limit=2, before=None)
    second = job_store.list_jobs("alice", status=None, limit=2, before=first.next_cursor)
    third = job_store.list_jobs("alice", status=None, limit=2, before=second.next_cursor)
    seen = [j.id for j in first.jobs + second.jobs + third.jobs]
    assert seen == list(reversed(ids))
    assert third.next_cursor is None


def test_list_filters_by_status(job_store):
    a = add(job_store)
    add(job_store)
    job_store.cancel_queued(a.id, now=NOW)
    page = job_store.list_jobs("alice", status="cancelled", limit=10, before=None)
    assert [j.id for j in page.jobs] == [a.id]


def test_claim_takes_higher_priority_first_then_fifo(job_store):
    low = add(job_store, priority=0)
    high1 = add(job_store, priority=5)
    high2 = add(job_store, priority=5)
    order = [claim(job_store, now=NOW + 1).id for _ in range(3)]
    assert order == [high1.id, high2.id, low.id]
    assert claim(job_store, now=NOW + 1) is None


def position(job_store, job) -> int | None:
    return job_store.queue_positions([job_store.get_job(job.id)]).get(job.id)


def test_queue_position_counts_jobs_ahead(job_store):
    a = add(job_store)
    b = add(job_store)
    urgent = add(job_store, priority=9)
    assert position(job_store, urgent) == 1
    assert position(job_store, a) == 2
    assert position(job_store, b) == 3


def test_batch_queue_positions_equal_the_single_ones_for_a_mix_of_priorities(job_store):
    # given: a queue of mixed priorities, some of its jobs already claimed, cancelled or in backoff
    priorities = [0, 5, -3, 5, 0, 9, -3, 0, 5, 100, -100, 0]
    jobs = [add(job_store, priority=p, now=NOW + i) for i, p in enumerate(priorities)]
    claimed = claim(job_store, now=NOW + 20)  # the priority-100 job
    job_store.cancel_queued(jobs[4].id, now=NOW + 20)
    backoff = claim(job_store, now=NOW + 20)  # the priority-9 job, back in the queue but not yet due
    job_store.retry_later(backoff.id, worker_id="w1", delay=60, reason="down", now=NOW + 20)
    current = [job_store.get_job(job.id) for job in jobs]
    # when: the positions of all of them are asked for at once, and one by one
    batch = job_store.queue_positions(current)
    singles = {job.id: job_store.queue_positions([job]).get(job.id) for job in current}
    # then: the same numbers, the claim order (priority first, then first in, first out), queued only
    assert batch == {job_id: n for job_id, n in singles.items() if n is not None}
    queued = sorted((job for job in current if job.status == "queued"), key=lambda job: (-job.priority, job.seq))
    assert batch == {job.id: n for n, job in enumerate(queued, start=1)}
    assert claimed.id not in batch and jobs[4].id not in batch and batch[backoff.id] == 1
    assert job_store.queue_positions([]) == {}
    # and: a page of the newest jobs numbers each the same as the whole queue does
    page = job_store.list_jobs("alice", status=None, limit=5, before=None).jobs
    assert job_store.queue_positions(page) == {job.id: batch[job.id] for job in page if job.id in batch}


def test_a_job_that_left_the_queue_since_it_was_read_has_no_position(job_store):
    job = add(job_store)
    read = job_store.get_job(job.id)
    claim(job_store)
    assert job_store.queue_positions([read]) == {}


def test_claim_sets_lease_counts_attempt_and_records_run(job_store):
    job = add(job_store)
    claimed = claim(job_store, "w1", now=NOW + 1)
    assert claimed.id == job.id and claimed.status == "processing" and claimed.attempts == 1
    assert claimed.lease_owner == "w1" and claimed.lease_expires_at == NOW + 31
    runs = job_store.list_runs(job.id)
    assert [(r.attempt, r.worker_id, r.outcome) for r in runs] == [(1, "w1", None)]


def test_job_in_backoff_is_not_claimed_until_due(job_store):
    add(job_store)
    job = claim(job_store)
    assert job_store.retry_later(job.id, worker_id="w1", delay=10, reason="down", now=NOW).applied
    assert claim(job_store, now=NOW + 5) is None
    again = claim(job_store, now=NOW + 11)
    assert again.id == job.id and again.attempts == 2


def test_progress_extends_lease_and_reports_cancel_flag(job_store):
    add(job_store)
    job = claim(job_store)
    progressed = job_store.record_progress(job.id, worker_id="w1", progress={"progress": 0.5}, preview="abc",
                                           lease_seconds=30, now=NOW + 10)
    assert progressed.applied and progressed.cancel_requested is False
    got = job_store.get_job(job.id)
    assert got.lease_expires_at == NOW + 40 and got.progress == {"progress": 0.5} and got.preview == "abc"
    assert job_store.request_cancel(job.id, now=NOW + 11).applied
    assert job_store.record_progress(job.id, worker_id="w1", progress={"progress": 0.6}, preview=None,
                                     lease_seconds=30, now=NOW + 12).cancel_requested is True
    assert job_store.get_job(job.id).preview == "abc"


def test_only_the_lease_owner_changes_a_running_job(job_store):
    add(job_store)
    job = claim(job_store, "w1")
    assert job_store.record_progress(job.id, worker_id="w2", progress={}, preview=None,
                                     lease_seconds=30, now=NOW) == base.NOT_APPLIED
    assert not job_store.complete(job.id, worker_id="w2", result={}, image_count=0, now=NOW).applied
    assert not job_store.fail(job.id, worker_id="w2", code="x", message="y", now=NOW).applied
    done = job_store.complete(job.id, worker_id="w1", result={"info": "{}"}, image_count=2, now=NOW + 5)
    assert done == base.Change(applied=True, job_id=job.id, status="completed", event=None)
    done = job_store.get_job(job.id)
    assert done.status == "completed" and done.image_count == 2 and done.result_attempt == 1
    assert done.finished_at == NOW + 5 and done.lease_owner is None
    assert [r.outcome for r in job_store.list_runs(job.id)] == ["completed"]


def expired(job_store, *, max_attempts, now) -> list[tuple[str, str]]:
    return [(change.job_id, change.status) for change in job_store.expire_leases(max_attempts=max_attempts, now=now)]


def test_expired_lease_requeues_then_errors_when_attempts_are_spent(job_store):
    add(job_store)
    job = claim(job_store, "w1", lease=5)
    assert job_store.expire_leases(max_attempts=2, now=NOW + 4) == []
    assert expired(job_store, max_attempts=2, now=NOW + 6) == [(job.id, "queued")]
    again = claim(job_store, "w2", now=NOW + 7, lease=5)
    assert again.attempts == 2
    assert expired(job_store, max_attempts=2, now=NOW + 13) == [(job.id, "error")]
    ended = job_store.get_job(job.id)
    assert ended.status == "error" and ended.error_code == "lease_expired"
    assert "attempt 2 of 2" in ended.error_message
    assert [r.outcome for r in job_store.list_runs(job.id)] == ["lost", "lost"]
    # the first worker comes back from the dead: nothing changes
    assert not job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW + 14).applied


def test_expired_lease_of_a_cancel_requested_job_ends_cancelled(job_store):
    add(job_store)
    job = claim(job_store, lease=5)
    job_store.request_cancel(job.id, now=NOW + 1)
    assert expired(job_store, max_attempts=3, now=NOW + 6) == [(job.id, "cancelled")]


def test_release_returns_the_job_without_counting_the_attempt(job_store):
    add(job_store)
    job = claim(job_store)
    released = job_store.release(job.id, worker_id="w1", now=NOW + 1)
    assert released == base.Change(applied=True, job_id=job.id, status="queued")
    got = job_store.get_job(job.id)
    assert got.status == "queued" and got.attempts == 0
    assert claim(job_store, "w2", now=NOW + 2).attempts == 1


def test_cancel_only_applies_to_its_state(job_store):
    job = add(job_store)
    assert job_store.request_cancel(job.id, now=NOW) == base.NOT_APPLIED
    assert job_store.cancel_queued(job.id, now=NOW) == base.Change(applied=True, job_id=job.id, status="cancelled")
    assert job_store.cancel_queued(job.id, now=NOW) == base.NOT_APPLIED
    assert claim(job_store) is None


def test_cancel_racing_a_claim_has_exactly_one_winner(job_store):
    for _ in range(30):
        job = add(job_store)
        results = {}
        barrier = threading.Barrier(2)

        def do_claim(barrier=barrier, results=results):
            barrier.wait()
            results["claimed"] = claim(job_store, now=NOW + 1)

        def do_cancel(barrier=barrier, results=results, job=job):
            barrier.wait()
            results["cancelled"] = job_store.cancel_queued(job.id, now=NOW + 1).applied

        threads = [threading.Thread(target=do_claim), threading.Thread(target=do_cancel)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        claimed = results["claimed"] is not None
        assert claimed != results["cancelled"]
        final = job_store.get_job(job.id).status
        assert final == ("processing" if claimed else "cancelled")
        if claimed:
            job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW + 2)


def _claim_all(url: str, worker: str, out) -> None:
    job_store = store_module.make_store(url)
    claimed = []
    while True:
        job = job_store.claim_next(worker_id=worker, instance="gpu0", lease_seconds=60, now=time.time()).job
        if job is None:
            break
        claimed.append(job.id)
    out.put(claimed)


def test_eight_processes_claiming_at_once_never_double_claim(job_store, database_url):
    ids = {add(job_store, now=time.time() - 1).id for _ in range(200)}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    processes = [ctx.Process(target=_claim_all, args=(database_url, f"w{i}", out)) for i in range(8)]
    [p.start() for p in processes]
    claimed = [job_id for _ in processes for job_id in out.get(timeout=60)]
    [p.join(timeout=30) for p in processes]
    assert all(p.exitcode == 0 for p in processes)
    assert len(claimed) == len(set(claimed)) == 200
    assert set(claimed) == ids


def test_slots_admit_one_holder_until_released_or_expired(job_store):
    job_store.ensure_slots("gpu0", 1)
    assert job_store.acquire_slot("gpu0", holder="w1/a", lease_seconds=10, now=NOW) == 0
    assert job_store.acquire_slot("gpu0", holder="w2/a", lease_seconds=10, now=NOW + 1) is None
    job_store.renew_slots("w1/", lease_seconds=10, now=NOW + 8)
    assert job_store.acquire_slot("gpu0", holder="w2/a", lease_seconds=10, now=NOW + 12) is None
    assert job_store.acquire_slot("gpu0", holder="w2/a", lease_seconds=10, now=NOW + 19) == 0
    job_store.release_slot("gpu0", 0, holder="w1/a")  # not the holder any more: no effect
    assert job_store.acquire_slot("gpu0", holder="w3/a", lease_seconds=10, now=NOW + 20) is None
    job_store.release_slot("gpu0", 0, holder="w2/a")
    assert job_store.acquire_slot("gpu0", holder="w3/a", lease_seconds=10, now=NOW + 21) == 0


def test_capacity_two_gives_two_slots(job_store):
    job_store.ensure_slots("gpu0", 2)
    got = {job_store.acquire_slot("gpu0", holder=f"w{i}/x", lease_seconds=10, now=NOW) for i in range(3)}
    assert got == {0, 1, None}


def test_heartbeats_list_workers_and_prune_old_ones(job_store):
    job_store.heartbeat("w1", info={"pid": 1}, now=NOW)
    job_store.heartbeat("w2", info={"pid": 2}, now=NOW - 100)
    job_store.heartbeat("w1", info={"pid": 1, "current_jobs": ["j"]}, now=NOW + 1)
    workers = job_store.list_workers(now=NOW + 2, keep_seconds=50)
    assert [(w.id, w.heartbeat_at, w.info["current_jobs"]) for w in workers] == [("w1", NOW + 1, ["j"])]


def test_migrate_is_idempotent(database_url):
    first = store_module.make_store(database_url)
    first.migrate()
    first.migrate()
    second = store_module.make_store(database_url)
    second.migrate()
    assert second.count_by_status() == {}


@pytest.mark.parametrize("url", ["mysql://x", "postgres-but-wrong"])
def test_unknown_database_url_is_refused_clearly(url):
    with pytest.raises(ValueError, match="unsupported DATABASE_URL"):
        store_module.make_store(url)
