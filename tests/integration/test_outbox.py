"""The webhook outbox: the store writes a delivery with the state change it reports (run against
every store backend), and the dispatcher delivers it to a real receiver on 127.0.0.1."""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid

import certifi
import pytest

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib.store import base
from chalicelib.webhooks import attempt
from chalicelib.webhooks import dispatch
from chalicelib.webhooks import events as webhook_events
from chalicelib.webhooks import url_safety
from tests import support
from tests import webhook_receiver

NOW = 1_800_000_000.0
HOOK = "https://hooks.example.com/sd"
SECRET = "s3cret-value"


def add(job_store, *, events=None, url=HOOK, now=NOW) -> base.Job:
    options = {"metadata": None}
    if url is not None:
        options.update(webhook_url=url, webhook_events=events)
    job, created = job_store.create_job(base.NewJob(
        id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0, request={"prompt": "a cat"},
        options=options, webhook_secret=SECRET, idempotency_key=None), now=now)
    assert created
    return job


def claim(job_store, *, worker="w1", now=NOW, lease=30.0) -> base.Job:
    job = job_store.claim_next(worker_id=worker, instance="gpu0", lease_seconds=lease, now=now).job
    assert job is not None
    return job


def deliveries(job_store, job_id) -> list[base.WebhookDelivery]:
    """Oldest first."""
    return list(reversed(job_store.list_deliveries(job_id, limit=100, before=None).deliveries))


def events(job_store, job_id) -> list[str]:
    return [d.event_type for d in deliveries(job_store, job_id)]


def claim_delivery(job_store, *, now, dispatcher="d1", lease=30.0):
    return job_store.claim_delivery(dispatcher_id=dispatcher, lease_seconds=lease, now=now)


def progress(step: int) -> dict:
    return {"progress": step / 10, "eta_relative": 1.0, "step": step, "steps": 10, "job_no": 0, "job_count": 1}


# --- the store writes deliveries with state changes ---------------------------------------------

def test_completion_writes_its_delivery_with_a_snapshot_of_the_completed_job(job_store):
    job = add(job_store)
    claim(job_store)
    change = job_store.complete(job.id, worker_id="w1", result={"info": "{}", "parameters": {}}, image_count=2,
                                now=NOW + 5)
    assert change == base.Change(applied=True, job_id=job.id, status="completed", event="job.completed")
    [delivery] = deliveries(job_store, job.id)
    assert (delivery.event_type, delivery.status, delivery.event_at, delivery.attempts) == (
        "job.completed", "pending", NOW + 5, 0)
    assert delivery.id.startswith("msg_") and delivery.next_attempt_at == NOW + 5
    claimed = claim_delivery(job_store, now=NOW + 5)
    snapshot_job, runs = base.job_from_snapshot(claimed.snapshot, request={"prompt": "a cat"})
    assert snapshot_job.status == "completed" and snapshot_job.image_count == 2 and snapshot_job.finished_at == NOW + 5
    assert snapshot_job.webhook_secret is None and [r.outcome for r in runs] == ["completed"]
    assert SECRET not in json.dumps(claimed.snapshot) and "request" not in claimed.snapshot["job"]


def test_a_job_without_webhook_url_gets_no_deliveries(job_store):
    job = add(job_store, url=None)
    claim(job_store)
    change = job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW)
    assert change.applied and change.event is None
    assert events(job_store, job.id) == [] and job_store.count_due_deliveries(now=NOW + 100) == 0


def test_started_and_progress_only_when_asked_and_terminal_events_always(job_store):
    quiet = add(job_store, events=["job.error"])
    chatty = add(job_store, events=["job.started", "job.progress"])
    for job in (quiet, chatty):
        claim(job_store)
        job_store.record_progress(job.id, worker_id="w1", progress=progress(3), preview=None, lease_seconds=30,
                                  now=NOW + 1)
        job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW + 2)
    assert events(job_store, quiet.id) == ["job.completed"]
    assert events(job_store, chatty.id) == ["job.started", "job.progress", "job.completed"]


def test_started_snapshot_shows_the_job_as_it_started(job_store):
    job = add(job_store, events=["job.started"])
    claim(job_store, now=NOW + 1)
    job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW + 9)
    started = claim_delivery(job_store, now=NOW + 10)
    snapshot_job, runs = base.job_from_snapshot(started.snapshot, request={})
    assert started.event_type == "job.started" and snapshot_job.status == "processing"
    assert snapshot_job.finished_at is None and [r.finished_at for r in runs] == [None]


def test_progress_events_are_at_most_one_per_second_and_only_on_change(job_store):
    job = add(job_store, events=["job.progress"])
    claim(job_store)

    def tick(step, at, *, sent):
        change = job_store.record_progress(job.id, worker_id="w1", progress=progress(step), preview=None,
                                           lease_seconds=30, now=NOW + at)
        assert change.applied and change.cancel_requested is False
        assert change.event == ("job.progress" if sent else None)  # says whether it wrote a delivery

    tick(1, 0.0, sent=True)
    tick(2, 0.5, sent=False)  # too soon
    tick(3, 1.1, sent=True)
    tick(3, 2.5, sent=False)  # unchanged
    tick(4, 2.6, sent=True)
    assert [d.event_at - NOW for d in deliveries(job_store, job.id)] == pytest.approx([0.0, 1.1, 2.6])


@pytest.mark.parametrize("end, expected", [
    ("fail", "job.error"), ("finish_cancelled", "job.cancelled"), ("cancel_queued", "job.cancelled"),
])
def test_every_terminal_change_reports_its_event(job_store, end, expected):
    job = add(job_store)
    if end == "cancel_queued":
        change = job_store.cancel_queued(job.id, now=NOW)
    else:
        claim(job_store)
        if end == "fail":
            change = job_store.fail(job.id, worker_id="w1", code="a1111_rejected", message="bad", now=NOW)
        else:
            change = job_store.finish_cancelled(job.id, worker_id="w1", result=None, image_count=0, now=NOW)
    assert change.applied and change.event == expected
    assert events(job_store, job.id) == [expected]


def test_expired_leases_report_error_or_cancelled(job_store):
    failed, cancelled = add(job_store), add(job_store)
    claim(job_store, lease=1)
    claim(job_store, lease=1)
    job_store.request_cancel(cancelled.id, now=NOW)
    changes = job_store.expire_leases(max_attempts=1, now=NOW + 5)
    assert {change.job_id: (change.status, change.event) for change in changes} == {
        failed.id: ("error", "job.error"), cancelled.id: ("cancelled", "job.cancelled")}
    assert events(job_store, failed.id) == ["job.error"] and events(job_store, cancelled.id) == ["job.cancelled"]


def test_a_requeue_after_a_lost_lease_reports_nothing(job_store):
    job = add(job_store, events=["job.progress"])
    claim(job_store, lease=1)
    changes = job_store.expire_leases(max_attempts=3, now=NOW + 5)
    assert [(change.job_id, change.status, change.event) for change in changes] == [(job.id, "queued", None)]
    assert events(job_store, job.id) == []


def test_a_change_that_loses_its_guard_writes_no_delivery(job_store):
    job = add(job_store)
    claim(job_store, worker="w1")
    assert not job_store.complete(job.id, worker_id="someone-else", result={}, image_count=0, now=NOW).applied
    assert not job_store.cancel_queued(job.id, now=NOW).applied
    assert events(job_store, job.id) == []


def test_the_delivery_commits_or_rolls_back_with_the_state_change(job_store):
    job = add(job_store)
    claim(job_store)
    break_outbox = "ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_gone"
    job_store.database.execute(break_outbox)
    with pytest.raises(errors.StoreUnavailable):
        job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW)
    assert job_store.get_job(job.id).status == "processing"
    assert [run.finished_at for run in job_store.list_runs(job.id)] == [None]


# --- claiming and finishing deliveries -----------------------------------------------------------

def ended_job(job_store, *, now=NOW) -> base.Job:
    job = add(job_store, now=now)
    claim(job_store, now=now)
    job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=now)
    return job


def test_a_claim_hides_the_delivery_for_its_lease_and_opens_an_attempt(job_store):
    job = ended_job(job_store)
    first = claim_delivery(job_store, now=NOW, lease=30)
    assert first.attempts == 1 and first.claim_token and first.next_attempt_at == NOW + 30
    assert claim_delivery(job_store, now=NOW + 29) is None
    [attempt] = job_store.list_attempts([first.id])[first.id]
    assert (attempt.attempt, attempt.dispatcher_id, attempt.finished_at) == (1, "d1", None)
    assert job_store.count_due_deliveries(now=NOW + 29) == 0 and job_store.count_due_deliveries(now=NOW + 31) == 1
    assert job.id == first.job_id


def test_a_dispatcher_that_died_mid_attempt_loses_nothing(job_store):
    ended_job(job_store)
    lost = claim_delivery(job_store, now=NOW, lease=30, dispatcher="dead")
    again = claim_delivery(job_store, now=NOW + 31, dispatcher="alive")
    assert again.id == lost.id and again.attempts == 2 and again.claim_token != lost.claim_token
    result = base.AttemptResult(status_code=200, response="ok", error=None)
    assert not job_store.finish_delivery(lost.id, claim_token=lost.claim_token, attempt=1, result=result,
                                         status="delivered", next_attempt_at=None, body="{}", now=NOW + 32)
    assert job_store.finish_delivery(again.id, claim_token=again.claim_token, attempt=2, result=result,
                                     status="delivered", next_attempt_at=None, body="{}", now=NOW + 33)
    first, second = job_store.list_attempts([again.id])[again.id]
    assert first.status_code == 200 and first.dispatcher_id == "dead"  # its late answer is still recorded
    assert second.status_code == 200 and second.finished_at == NOW + 33
    [delivery] = job_store.list_deliveries(again.job_id, limit=5, before=None).deliveries
    assert delivery.status == "delivered" and delivery.finished_at == NOW + 33


def test_dispatchers_claiming_at_once_never_take_the_same_delivery(job_store):
    # given: 40 due deliveries
    for i in range(40):
        ended_job(job_store, now=NOW + i)
    claimed: list[str] = []

    def dispatch(name):
        while (delivery := claim_delivery(job_store, now=NOW + 100, dispatcher=name)) is not None:
            claimed.append(delivery.id)

    # when: four dispatcher threads claim until nothing is due
    threads = [threading.Thread(target=dispatch, args=(f"d{n}",)) for n in range(4)]
    [thread.start() for thread in threads]
    [thread.join(timeout=60) for thread in threads]
    # then: every delivery was claimed exactly once
    assert len(claimed) == 40 and len(set(claimed)) == 40
    assert job_store.count_due_deliveries(now=NOW + 100) == 0


def test_a_lost_attempt_is_marked_when_the_delivery_is_claimed_again(job_store):
    ended_job(job_store)
    lost = claim_delivery(job_store, now=NOW, lease=5)
    claim_delivery(job_store, now=NOW + 6)
    first, second = job_store.list_attempts([lost.id])[lost.id]
    assert first.error == base.LOST_ATTEMPT and first.finished_at == NOW + 6 and second.finished_at is None


def test_a_failed_attempt_waits_for_its_retry_and_keeps_the_first_body(job_store):
    ended_job(job_store)
    first = claim_delivery(job_store, now=NOW)
    fail = base.AttemptResult(status_code=500, response="x" * 10, error=None)
    assert job_store.finish_delivery(first.id, claim_token=first.claim_token, attempt=1, result=fail,
                                     status="pending", next_attempt_at=NOW + 60, body='{"v":1}', now=NOW + 1)
    assert claim_delivery(job_store, now=NOW + 59) is None
    second = claim_delivery(job_store, now=NOW + 60)
    assert second.body == '{"v":1}' and second.attempts == 2
    job_store.finish_delivery(second.id, claim_token=second.claim_token, attempt=2, result=fail, status="failed",
                              next_attempt_at=None, body='{"v":2}', now=NOW + 61)
    assert claim_delivery(job_store, now=NOW + 1000) is None
    [delivery] = job_store.list_deliveries(second.job_id, limit=5, before=None).deliveries
    assert delivery.status == "failed" and delivery.next_attempt_at is None


def test_a_claim_skips_hosts_that_already_have_their_share_of_attempts_in_flight(job_store):
    slow = [add(job_store, url="https://Slow.example.org/hook") for _ in range(3)]
    other = add(job_store, url="https://fast.example.net/hook")
    for job in slow + [other]:
        job_store.cancel_queued(job.id, now=NOW)  # each writes one job.cancelled delivery, due at NOW

    first = job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW, per_host=2)
    second = job_store.claim_delivery(dispatcher_id="d2", lease_seconds=30, now=NOW, per_host=2)
    third = job_store.claim_delivery(dispatcher_id="d3", lease_seconds=30, now=NOW, per_host=2)
    assert [first.job_id, second.job_id] == [slow[0].id, slow[1].id]
    assert third.job_id == other.id  # the slow host's third delivery waits; another host's does not
    assert job_store.claim_delivery(dispatcher_id="d4", lease_seconds=30, now=NOW, per_host=2) is None
    unlimited = job_store.claim_delivery(dispatcher_id="d4", lease_seconds=30, now=NOW)
    assert unlimited.job_id == slow[2].id  # without a limit the host's third attempt goes out too

    job_store.finish_delivery(first.id, claim_token=first.claim_token, attempt=1,
                              result=base.AttemptResult(200, "", None), status="delivered",
                              next_attempt_at=None, body="{}", now=NOW + 1)
    late = add(job_store, url="https://slow.example.org/other")
    job_store.cancel_queued(late.id, now=NOW + 1)
    # second and slow[2] are still in flight: a limit of 2 holds the new one back, 3 lets it go
    assert job_store.claim_delivery(dispatcher_id="d5", lease_seconds=30, now=NOW + 1, per_host=2) is None
    assert job_store.claim_delivery(dispatcher_id="d5", lease_seconds=30, now=NOW + 1, per_host=3).job_id == late.id
    # a claim that expired (its dispatcher died) no longer counts as in flight
    assert job_store.claim_delivery(dispatcher_id="d6", lease_seconds=30, now=NOW + 31, per_host=1) is not None


def test_redeliver_copies_the_latest_event_under_a_new_id(job_store):
    job = add(job_store, events=["job.started"])
    claim(job_store)
    job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=NOW)
    started = claim_delivery(job_store, now=NOW)
    completed = claim_delivery(job_store, now=NOW)
    for delivery, body in ((started, "{}"), (completed, '{"frozen":true}')):
        job_store.finish_delivery(delivery.id, claim_token=delivery.claim_token, attempt=1,
                                  result=base.AttemptResult(200, "", None), status="delivered",
                                  next_attempt_at=None, body=body, now=NOW + 1)
    again = job_store.redeliver_latest(job.id, now=NOW + 100)
    assert again.id not in (started.id, completed.id) and again.redelivery_of == completed.id
    assert (again.event_type, again.status, again.attempts, again.event_at) == ("job.completed", "pending", 0, NOW)
    claimed = claim_delivery(job_store, now=NOW + 100)
    assert claimed.id == again.id and claimed.body == '{"frozen":true}' and claimed.snapshot == completed.snapshot
    assert job_store.redeliver_latest(add(job_store).id, now=NOW) is None


# --- the dispatcher against a real receiver ------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 600


@pytest.fixture
def receiver():
    with webhook_receiver.WebhookReceiver(secret=SECRET) as running:
        yield running


def make_ctx(database_url, **settings) -> context_module.Context:
    defaults = {"webhook_allow_private": True, "webhook_retry_schedule": "0.05,0.05", "webhook_timeout": 2.0}
    return context_module.build_context(config.Settings(database_url=database_url, **{**defaults, **settings}))


def finished_job(ctx, url, *, events=None, images=(PNG,), outcome="complete") -> base.Job:
    job, _ = ctx.store.create_job(base.NewJob(
        id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0, request={"prompt": "a cat"},
        options={"webhook_url": url, "webhook_events": events, "metadata": {"order": 7}},
        webhook_secret=SECRET, idempotency_key=None), now=time.time())
    claimed = ctx.store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=time.time()).job
    ctx.images.put(job.id, claimed.attempts, list(images))
    if outcome == "complete":
        ctx.store.complete(job.id, worker_id="w1", result={"parameters": {"prompt": "a cat"}, "info": "{}"},
                           image_count=len(images), now=time.time())
    else:
        ctx.store.fail(job.id, worker_id="w1", code="a1111_rejected", message="no", now=time.time())
    return job


def drain(ctx, *, until, timeout=5.0) -> None:
    """Run the dispatcher until `until()` is true."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "dispatcher did not get there in time"
        if not dispatch.deliver_next(ctx, dispatcher_id="d1"):
            time.sleep(0.01)


def attempts_of(ctx, job_id) -> list[tuple[str, list[base.WebhookAttempt]]]:
    page = ctx.store.list_deliveries(job_id, limit=10, before=None)
    found = ctx.store.list_attempts([d.id for d in page.deliveries])
    return [(d.status, found[d.id]) for d in reversed(page.deliveries)]


def test_500_twice_then_200_is_three_attempts_under_one_webhook_id(database_url, receiver):
    ctx = make_ctx(database_url)
    receiver.script([{"status": 500, "body": "E" * 3000}, 500, 200])
    job = finished_job(ctx, receiver.url)
    drain(ctx, until=lambda: len(receiver.answered()) == 3)
    got = receiver.answered()
    assert [r.status for r in got] == [500, 500, 200] and all(r.verified for r in got)
    assert len({r.webhook_id for r in got}) == 1 and len({r.body for r in got}) == 1
    assert all(r.headers["x-webhook-secret"] == SECRET for r in got)
    [(status, attempts)] = attempts_of(ctx, job.id)
    assert status == "delivered" and [a.status_code for a in attempts] == [500, 500, 200]
    assert len(attempts[0].response) == 1024 and attempts[2].response == "answer 200"
    event = got[-1].event
    assert event["type"] == "job.completed" and event["data"]["job_id"] == job.id and event["omitted"] == []
    assert event["data"]["status"] == "completed" and event["data"]["metadata"] == {"order": 7}
    assert event["data"]["result"]["images"] and SECRET not in got[-1].body


def test_410_stops_at_once(database_url, receiver):
    ctx = make_ctx(database_url, webhook_retry_schedule="0.01,0.01,0.01")
    receiver.script([410])
    job = finished_job(ctx, receiver.url)
    drain(ctx, until=lambda: attempts_of(ctx, job.id)[0][0] != "pending")
    time.sleep(0.1)
    assert not dispatch.deliver_next(ctx, dispatcher_id="d1")
    [(status, attempts)] = attempts_of(ctx, job.id)
    assert status == "failed" and [a.status_code for a in attempts] == [410] and len(receiver.received()) == 1


def test_redirects_are_not_followed(database_url, receiver):
    ctx = make_ctx(database_url, webhook_retry_schedule="10s")
    receiver.script([{"status": 307, "headers": {"Location": receiver.url + "/elsewhere"}}])
    job = finished_job(ctx, receiver.url)
    drain(ctx, until=lambda: receiver.answered())
    [(status, [attempt])] = attempts_of(ctx, job.id)
    assert status == "pending" and attempt.status_code == 307
    assert [r.path for r in receiver.received()] == ["/hook"]


def test_a_hanging_receiver_times_out_and_is_retried(database_url, receiver):
    ctx = make_ctx(database_url, webhook_timeout=0.3, webhook_retry_schedule="0.01")
    receiver.script([{"status": 200, "delay": 3}, 200])
    job = finished_job(ctx, receiver.url)
    started = time.monotonic()
    assert dispatch.deliver_next(ctx, dispatcher_id="d1")
    assert time.monotonic() - started < 1.5
    drain(ctx, until=lambda: attempts_of(ctx, job.id)[0][0] == "delivered")
    [(_, attempts)] = attempts_of(ctx, job.id)
    assert "timed out" in attempts[0].error and attempts[0].status_code is None
    assert attempts[1].status_code == 200


def test_a_dripping_receiver_cannot_stretch_an_attempt_past_its_deadline(database_url, receiver):
    """One byte every 0.2 s never trips a per-read timeout of 1 s; the total deadline still ends it."""
    ctx = make_ctx(database_url, webhook_timeout=1.0, webhook_retry_schedule="10s")
    receiver.script([{"drip": 0.2}])
    job = finished_job(ctx, receiver.url)
    started = time.monotonic()
    assert dispatch.deliver_next(ctx, dispatcher_id="d1")
    assert time.monotonic() - started < 1.0 + 1.0
    [(status, [attempt_row])] = attempts_of(ctx, job.id)
    assert status == "pending" and attempt_row.status_code is None and "timed out" in attempt_row.error
    assert attempt_row.finished_at - attempt_row.started_at < 1.0 + 1.0
    support.wait_until(receiver.dropped, timeout=3, what="the receiver to see the connection cut")
    assert receiver.answered() == []  # cut, never answered


def test_a_body_dripped_after_the_status_line_does_not_undo_the_status(database_url):
    """Headers in time, then a body that never ends: the status decides, within the deadline."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.2):
            try:
                conn.sendall(b"x")
            except OSError:
                break
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    ctx = make_ctx(database_url, webhook_timeout=1.0)
    job = finished_job(ctx, f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
    started = time.monotonic()
    try:
        assert dispatch.deliver_next(ctx, dispatcher_id="d1")
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 2.0
    [(status, [attempt_row])] = attempts_of(ctx, job.id)
    assert status == "delivered" and attempt_row.status_code == 200


def test_an_attempt_ends_before_its_claim_runs_out(database_url, receiver, monkeypatch):
    """A body that took long to prepare shortens the attempt, so no other dispatcher can take the
    delivery while it is open."""
    ctx = make_ctx(database_url, webhook_timeout=1.5, webhook_claim_seconds=3.5, webhook_retry_schedule="10s")
    render = webhook_events.render_body

    def slow_render(*args, **kwargs):
        time.sleep(1.0)
        return render(*args, **kwargs)

    monkeypatch.setattr(webhook_events, "render_body", slow_render)
    receiver.script([{"status": 200, "delay": 10}])
    job = finished_job(ctx, receiver.url)
    claimed_at = time.time()
    assert dispatch.deliver_next(ctx, dispatcher_id="d1")
    [delivery] = ctx.store.list_deliveries(job.id, limit=1, before=None).deliveries
    [(status, [attempt_row])] = attempts_of(ctx, job.id)
    assert status == "pending" and "timed out" in attempt_row.error  # recorded: the claim still held
    assert attempt_row.finished_at < claimed_at + 3.5 - 1.0 and delivery.claim_token is None


def test_an_internationalized_host_is_sent_in_its_idna_form(database_url, receiver, monkeypatch):
    ctx = make_ctx(database_url)
    asked = []
    monkeypatch.setattr(url_safety, "resolve_host", lambda host, port: asked.append(host) or ["127.0.0.1"])
    port = receiver.url.split(":")[2].split("/")[0]
    job = finished_job(ctx, f"http://bücher.test:{port}/hoök")
    drain(ctx, until=lambda: receiver.answered())
    [got] = receiver.answered()
    assert got.verified and got.headers["host"] == f"xn--bcher-kva.test:{port}" and got.path == "/ho%C3%B6k"
    assert asked == ["xn--bcher-kva.test"] and attempts_of(ctx, job.id)[0][0] == "delivered"


def test_a_dead_receiver_fails_after_the_schedule(database_url):
    ctx = make_ctx(database_url, webhook_retry_schedule="0.01,0.01")
    job = finished_job(ctx, "http://127.0.0.1:9/hook")
    drain(ctx, until=lambda: attempts_of(ctx, job.id)[0][0] == "failed")
    [(_, attempts)] = attempts_of(ctx, job.id)
    assert len(attempts) == 3 and all("Connection refused" in a.error for a in attempts)


def test_delivery_time_ssrf_check_sends_nothing_to_a_private_address(database_url, receiver, monkeypatch):
    ctx = make_ctx(database_url, webhook_allow_private=False, webhook_retry_schedule="10s")
    monkeypatch.setattr(url_safety, "resolve_host", lambda host, port: ["127.0.0.1"])
    job = finished_job(ctx, receiver.url.replace("127.0.0.1", "rebound.example.com"))
    assert dispatch.deliver_next(ctx, dispatcher_id="d1")
    [(status, [attempt])] = attempts_of(ctx, job.id)
    assert status == "pending" and "loopback" in attempt.error and receiver.received() == []


def test_large_images_travel_as_urls(database_url, receiver):
    ctx = make_ctx(database_url, webhook_max_inline_bytes=2000, public_base_url="https://api.example.com/")
    job = finished_job(ctx, receiver.url, images=(PNG, PNG, PNG))
    drain(ctx, until=lambda: receiver.answered())
    event = receiver.answered()[0].event
    assert event["omitted"] == ["data.result.images"] and event["data"]["result"]["images"] == []
    assert event["data"]["image_urls"] == [f"https://api.example.com/sdapi/v1/jobs/{job.id}/images/{n}"
                                          for n in range(3)]


def test_a_redelivery_sends_the_same_body_under_a_new_webhook_id(database_url, receiver):
    ctx = make_ctx(database_url)
    job = finished_job(ctx, receiver.url, outcome="fail")
    drain(ctx, until=lambda: len(receiver.answered()) == 1)
    ctx.store.redeliver_latest(job.id, now=time.time())
    drain(ctx, until=lambda: len(receiver.answered()) == 2)
    first, again = receiver.answered()
    assert first.body == again.body and first.webhook_id != again.webhook_id and again.verified
    assert again.event["type"] == "job.error" and again.event["data"]["error"]["code"] == "a1111_rejected"


def test_https_connects_to_the_checked_address_and_verifies_the_name(tmp_path, monkeypatch):
    """The attempt connects to the address that passed the check (no second DNS lookup) while TLS
    still sends and verifies the URL's host name."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate authority")
    ca, cert, key = make_certificates(tmp_path, name="hooks.test")
    seen = {"sni": [], "host": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server naming
            self.rfile.read(int(self.headers["Content-Length"]))
            seen["host"].append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    def remember_sni(sock, name, context):
        seen["sni"].append(name)  # returning None lets the handshake go on

    tls.sni_callback = remember_sni
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = server.server_address[1]
    resolved = []

    def resolve(host, port):
        resolved.append(host)
        return ["127.0.0.1"]

    def send(url):
        return attempt.send(url, secret="k3y", webhook_id="msg_tls", body="{}", timeout=3,
                                allow_private=True, send_secret_header=True, resolver=resolve)

    try:
        untrusted = send(f"https://hooks.test:{port}/h")
        monkeypatch.setattr(certifi, "where", lambda: str(ca))
        trusted = send(f"https://hooks.test:{port}/h")
        wrong_name = send(f"https://other.test:{port}/h")
    finally:
        server.shutdown()
        server.server_close()
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    assert trusted.status_code == 204
    assert seen == {"sni": ["hooks.test", "hooks.test", "other.test"], "host": [f"hooks.test:{port}"]}
    assert wrong_name.status_code is None and "doesn't match" in wrong_name.error
    assert resolved == ["hooks.test", "hooks.test", "other.test"]


def make_certificates(directory, *, name: str):
    """A throwaway CA and a server certificate for `name` signed by it: (ca, cert, key) paths."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", f"/CN={name}")
    (directory / "san.cnf").write_text(f"subjectAltName=DNS:{name}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "san.cnf")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"
