"""transitions: each guarded change rings what it calls for, once, and nothing when it did not apply.

A real SQLite store decides whether a change applies and whether it wrote a webhook delivery; a
recording queue shows the doorbells rung."""
from __future__ import annotations

import time
import uuid

import pytest

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import store as store_module
from chalicelib import transitions
from chalicelib.queue import base as queue_base
from chalicelib.store import base

HOOK = "https://hooks.example.com/in"


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, float]] = []
        self.broken = False

    def send(self, queue: str, body: dict, *, delay: float = 0) -> None:
        if self.broken:
            raise ConnectionError("queue down")
        self.sent.append((queue, body.get("job_id"), delay))


@pytest.fixture
def ctx(tmp_path):
    job_store = store_module.make_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job_store.migrate()
    settings = config.Settings(job_lease_seconds=30, job_max_attempts=2)
    yield context_module.Context(settings=settings, store=job_store, queue=RecordingQueue(), images=None,
                                 instances=[])
    job_store.database.close()


def add(ctx, *, url: str | None = HOOK, events: list[str] | None = None) -> base.Job:
    job, _ = ctx.store.create_job(base.NewJob(
        id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0, request={"prompt": "a cat"},
        options={"webhook_url": url, "webhook_events": events}, webhook_secret=None, idempotency_key=None),
        now=time.time() - 1)
    return job


def claimed(ctx, **job) -> base.Job:
    added = add(ctx, **job)
    change = transitions.claim_next(ctx, worker_id="w1", instance="gpu0")
    assert change.applied and change.job.id == added.id
    ctx.queue.sent.clear()
    return change.job


def rung(ctx) -> list[tuple[str, str | None, float]]:
    return ctx.queue.sent


def test_a_claim_rings_the_webhooks_doorbell_once_when_it_wrote_job_started(ctx):
    job = add(ctx, events=["job.started"])
    change = transitions.claim_next(ctx, worker_id="w1", instance="gpu0")
    assert change.applied and change.event == "job.started" and change.job.id == job.id
    assert rung(ctx) == [(queue_base.WEBHOOKS, job.id, 0)]


def test_a_claim_that_wrote_no_event_rings_nothing(ctx):
    add(ctx)  # a webhook, but job.started not asked for
    change = transitions.claim_next(ctx, worker_id="w1", instance="gpu0")
    assert change.applied and change.event is None and change.status == "processing"
    assert rung(ctx) == []


def test_a_claim_of_an_empty_queue_rings_nothing(ctx):
    change = transitions.claim_next(ctx, worker_id="w1", instance="gpu0")
    assert change == base.NOT_APPLIED and change.job is None
    assert rung(ctx) == []


@pytest.mark.parametrize("end, event", [
    (lambda ctx, job: transitions.complete(ctx, job.id, worker_id="w1", result={}, image_count=0,
                                           progress=base.final_progress(None)), "job.completed"),
    (lambda ctx, job: transitions.fail(ctx, job.id, worker_id="w1", code="a1111_rejected", message="no"),
     "job.error"),
    (lambda ctx, job: transitions.finish_cancelled(ctx, job.id, worker_id="w1"), "job.cancelled"),
])
def test_a_terminal_change_rings_the_webhooks_doorbell_once_and_a_lost_one_nothing(ctx, end, event):
    job = claimed(ctx)
    change = end(ctx, job)
    assert change.applied and change.event == event
    assert rung(ctx) == [(queue_base.WEBHOOKS, job.id, 0)]
    ctx.queue.sent.clear()
    assert not end(ctx, job).applied  # the job already ended: the guard fails
    assert rung(ctx) == []


def test_a_terminal_change_of_a_job_without_webhook_rings_nothing(ctx):
    job = claimed(ctx, url=None)
    change = transitions.complete(ctx, job.id, worker_id="w1", result={}, image_count=0, progress={})
    assert change.applied and change.event is None
    assert rung(ctx) == []


def test_retry_later_rings_the_jobs_doorbell_once_with_its_delay(ctx):
    job = claimed(ctx)
    change = transitions.retry_later(ctx, job.id, worker_id="w1", delay=12.5, reason="down")
    assert change.applied and change.status == "queued" and change.event is None
    assert rung(ctx) == [(queue_base.JOBS, job.id, 12.5)]
    ctx.queue.sent.clear()
    assert not transitions.retry_later(ctx, job.id, worker_id="w1", delay=1, reason="down").applied
    assert rung(ctx) == []


def test_release_rings_the_jobs_doorbell_once_and_a_stranger_rings_nothing(ctx):
    job = claimed(ctx)
    assert not transitions.release(ctx, job.id, worker_id="someone-else").applied
    assert rung(ctx) == []
    assert transitions.release(ctx, job.id, worker_id="w1").applied
    assert rung(ctx) == [(queue_base.JOBS, job.id, 0)]
    assert ctx.store.get_job(job.id).status == "queued"


def test_progress_rings_only_when_it_wrote_job_progress_and_reports_the_cancel_flag(ctx):
    job = claimed(ctx, events=["job.progress"])
    first = transitions.record_progress(ctx, job.id, worker_id="w1", progress={"progress": 0.1}, preview=None)
    assert first.applied and first.event == "job.progress" and first.cancel_requested is False
    assert rung(ctx) == [(queue_base.WEBHOOKS, job.id, 0)]
    ctx.queue.sent.clear()
    same = transitions.record_progress(ctx, job.id, worker_id="w1", progress={"progress": 0.1}, preview=None)
    assert same.applied and same.event is None and rung(ctx) == []  # unchanged: no event, no doorbell
    assert transitions.request_cancel(ctx, job.id).applied and rung(ctx) == []
    flagged = transitions.record_progress(ctx, job.id, worker_id="w1", progress={"progress": 0.1}, preview=None)
    assert flagged.cancel_requested is True
    lost = transitions.record_progress(ctx, job.id, worker_id="w2", progress={"progress": 0.9}, preview=None)
    assert lost == base.NOT_APPLIED and rung(ctx) == []


def test_cancel_queued_rings_the_webhooks_doorbell_once(ctx):
    job = add(ctx)
    assert not transitions.request_cancel(ctx, job.id).applied  # only a processing job is flagged
    change = transitions.cancel_queued(ctx, job.id)
    assert change.applied and change.status == "cancelled" and change.event == "job.cancelled"
    assert rung(ctx) == [(queue_base.WEBHOOKS, job.id, 0)]
    ctx.queue.sent.clear()
    assert not transitions.cancel_queued(ctx, job.id).applied
    assert rung(ctx) == []


def test_expired_leases_ring_the_jobs_doorbell_for_a_requeue_and_the_webhooks_one_for_an_end(ctx):
    ctx.settings = config.Settings(job_lease_seconds=0.01, job_max_attempts=2)
    job = claimed(ctx)
    time.sleep(0.05)
    [requeued] = transitions.expire_leases(ctx)
    assert (requeued.job_id, requeued.status, requeued.event) == (job.id, "queued", None)
    assert rung(ctx) == [(queue_base.JOBS, job.id, 0)]
    ctx.queue.sent.clear()
    assert transitions.claim_next(ctx, worker_id="w2", instance="gpu0").job.attempts == 2
    ctx.queue.sent.clear()
    time.sleep(0.05)
    [ended] = transitions.expire_leases(ctx)
    assert (ended.job_id, ended.status, ended.event) == (job.id, "error", "job.error")
    assert rung(ctx) == [(queue_base.WEBHOOKS, job.id, 0)]
    ctx.queue.sent.clear()
    assert transitions.expire_leases(ctx) == [] and rung(ctx) == []


def test_a_lost_doorbell_never_fails_the_committed_change(ctx):
    job = claimed(ctx)
    ctx.queue.broken = True
    assert transitions.retry_later(ctx, job.id, worker_id="w1", delay=0, reason="down").applied
    assert ctx.store.get_job(job.id).status == "queued"


def test_a_change_is_not_a_truth_value():
    with pytest.raises(TypeError, match="applied"):
        bool(base.NOT_APPLIED)
