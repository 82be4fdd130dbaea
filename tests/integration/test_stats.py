"""The /metrics port (`make_stats`): aggregates computed by the database, on every store backend."""
from __future__ import annotations

import uuid

from chalicelib import metrics
from chalicelib import store as store_module
from chalicelib import vocabulary
from chalicelib.store import base
from chalicelib.store import stats

NOW = 1_800_000_000.0
BOUNDS = (1.0, 5.0, 60.0)


def add(job_store, *, now=NOW, webhook_url=None) -> base.Job:
    options = {"metadata": None, "webhook_url": webhook_url} if webhook_url else {"metadata": None}
    job, created = job_store.create_job(base.NewJob(
        id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0, request={"prompt": "a cat"},
        options=options, webhook_secret="s3cret-value" if webhook_url else None, idempotency_key=None), now=now)
    assert created
    return job


def claim(job_store, job: base.Job, *, now) -> None:
    claimed = job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=300, now=now).job
    assert claimed is not None and claimed.id == job.id


def test_an_empty_store_reports_zeros_for_every_known_series(job_store):
    job_stats = store_module.make_stats(job_store)
    assert job_stats.jobs_by_status() == dict.fromkeys(stats.JOB_STATUSES, 0)
    assert job_stats.queue_wait(bounds=BOUNDS) == stats.Histogram(buckets=((1.0, 0), (5.0, 0), (60.0, 0)),
                                                                  count=0, total=0.0)
    assert set(job_stats.run_time(bounds=BOUNDS)) == {"completed", "error", "cancelled"}
    assert job_stats.a1111_errors() == dict.fromkeys(stats.A1111_ERROR_CODES, 0)
    assert job_stats.webhook_deliveries() == dict.fromkeys(stats.DELIVERY_STATUSES, 0)
    assert job_stats.webhook_attempts() == dict.fromkeys(stats.ATTEMPT_OUTCOMES, 0)


def test_jobs_by_state_and_histograms_of_queue_wait_and_run_time(job_store):
    # given jobs that waited 0.5 s, 3 s and 100 s, ran 2 s, 4 s and 30 s, and ended three ways
    quick, slow, late = add(job_store), add(job_store), add(job_store)
    add(job_store, now=NOW + 200)  # still queued: in no histogram
    cancelled = add(job_store, now=NOW + 200)
    claim(job_store, quick, now=NOW + 0.5)
    claim(job_store, slow, now=NOW + 3)
    claim(job_store, late, now=NOW + 100)
    assert job_store.complete(quick.id, worker_id="w1", result={}, image_count=1, now=NOW + 2.5).applied
    assert job_store.fail(slow.id, worker_id="w1", code="a1111_rejected", message="no such sampler",
                          now=NOW + 7).applied
    assert job_store.complete(late.id, worker_id="w1", result={}, image_count=1, now=NOW + 130).applied
    assert job_store.cancel_queued(cancelled.id, now=NOW + 201).applied
    job_stats = store_module.make_stats(job_store)

    # then each state is counted, and each histogram bucket counts the values up to its bound
    assert job_stats.jobs_by_status() == {"queued": 1, "processing": 0, "completed": 2, "error": 1, "cancelled": 1}
    wait = job_stats.queue_wait(bounds=BOUNDS)
    assert wait.buckets == ((1.0, 1), (5.0, 2), (60.0, 2)) and wait.count == 3
    assert abs(wait.total - 103.5) < 1e-6
    run = job_stats.run_time(bounds=BOUNDS)
    assert run["completed"].buckets == ((1.0, 0), (5.0, 1), (60.0, 2)) and run["completed"].count == 2
    assert abs(run["completed"].total - 32.0) < 1e-6
    assert run["error"].count == 1 and run["error"].buckets[1] == (5.0, 1)
    assert run["cancelled"].count == 0  # cancelled while queued: it never started


def test_a1111_errors_count_every_failed_attempt_by_kind(job_store):
    # given a job retried twice because A1111 was down, then failed for good, and two other failures
    flaky, rejected, garbled = add(job_store), add(job_store), add(job_store)
    for attempt in range(2):
        claim(job_store, flaky, now=NOW + 10 * attempt)
        assert job_store.retry_later(flaky.id, worker_id="w1", delay=0, reason="connection refused",
                                     now=NOW + 10 * attempt + 1).applied
    claim(job_store, flaky, now=NOW + 30)
    assert job_store.fail(flaky.id, worker_id="w1", code="a1111_unavailable", message="down", now=NOW + 31).applied
    claim(job_store, rejected, now=NOW + 40)
    assert job_store.fail(rejected.id, worker_id="w1", code="a1111_rejected", message="422", now=NOW + 41).applied
    claim(job_store, garbled, now=NOW + 50)
    assert job_store.fail(garbled.id, worker_id="w1", code="a1111_bad_response", message="bad", now=NOW + 51).applied

    # then: 3 unavailable (2 retries + the last attempt), 1 rejected, 1 bad response
    assert store_module.make_stats(job_store).a1111_errors() == {
        "a1111_unavailable": 3, "a1111_rejected": 1, "a1111_bad_response": 1}


def test_a_lost_lease_is_not_an_a1111_error(job_store):
    job = add(job_store)
    claim(job_store, job, now=NOW)
    [expired] = job_store.expire_leases(max_attempts=1, now=NOW + 1000)
    assert (expired.job_id, expired.status) == (job.id, "error")
    assert sum(store_module.make_stats(job_store).a1111_errors().values()) == 0


def test_webhook_deliveries_by_state_and_attempts_by_outcome(job_store):
    # given a job's delivery that failed twice (no answer, then a 500) and then got a 204, and a
    # later job's delivery still in its first attempt
    def complete_with_webhook(at):
        job = add(job_store, webhook_url="https://hooks.example.com/sd", now=at)
        claim(job_store, job, now=at)
        assert job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=at + 1).applied

    complete_with_webhook(NOW)
    first = job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW + 5)
    assert job_store.finish_delivery(first.id, claim_token=first.claim_token, attempt=first.attempts,
                                     result=base.AttemptResult(None, None, "connection refused"),
                                     status=vocabulary.DeliveryStatus.PENDING, next_attempt_at=NOW + 6, body="{}",
                                     now=NOW + 5)
    again = job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW + 6)
    assert again.id == first.id
    assert job_store.finish_delivery(again.id, claim_token=again.claim_token, attempt=again.attempts,
                                     result=base.AttemptResult(500, "oops", None),
                                     status=vocabulary.DeliveryStatus.PENDING, next_attempt_at=NOW + 7, body=None,
                                     now=NOW + 6)
    third = job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW + 7)
    assert third.id == first.id
    assert job_store.finish_delivery(third.id, claim_token=third.claim_token, attempt=third.attempts,
                                     result=base.AttemptResult(204, "", None),
                                     status=vocabulary.DeliveryStatus.DELIVERED, next_attempt_at=None, body=None,
                                     now=NOW + 7)
    complete_with_webhook(NOW + 10)
    assert job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW + 12) is not None

    job_stats = store_module.make_stats(job_store)
    assert job_stats.webhook_deliveries() == {"pending": 1, "delivered": 1, "failed": 0}
    assert job_stats.webhook_attempts() == {"success": 1, "http_error": 1, "no_response": 1}  # not the one in flight


def test_without_the_webhook_tables_the_webhook_metrics_are_left_out(tmp_path):
    # given a SQLite store whose outbox tables are missing (a database the outbox never reached)
    job_store = store_module.make_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job_store.migrate()
    with job_store.database.write() as conn:
        conn.execute("DROP TABLE webhook_attempts")
        conn.execute("DROP TABLE webhook_deliveries")
    job_stats = store_module.make_stats(job_store)
    assert job_stats.webhook_deliveries() is None and job_stats.webhook_attempts() is None
    # then /metrics still answers, with every other family
    text = metrics.render(job_store)
    assert "a1111_async_jobs{" in text and "a1111_async_webhook" not in text
