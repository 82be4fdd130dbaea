"""Webhooks end to end: real API, worker and simulator processes, and a receiver on 127.0.0.1 that
verifies every request with standardwebhooks.Webhook."""
from __future__ import annotations

import datetime
import signal
import time

import pytest
import requests

from tests import support
from tests.harness import AUTH, wait_until
from tests import webhook_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver():
    with webhook_receiver.WebhookReceiver(secret=SECRET) as running:
        yield running


def start(cluster, *, gen_seconds=0.3, **env):
    cluster.env.update({"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.3",
                        "WEBHOOK_TIMEOUT": "1", "WEBHOOK_CLAIM_SECONDS": "3", **env})
    cluster.start_simulator(gen_seconds=gen_seconds)
    cluster.start_api()
    return cluster.start_worker()


def hooked(receiver, body=None, **options) -> dict:
    return {"prompt": "a cat", "steps": 10, **(body or {}), "webhook_url": receiver.url,
            "webhook_secret": SECRET, **options}


def deliveries(cluster, job_id) -> list[dict]:
    """Oldest first."""
    response = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job_id}/webhooks", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["deliveries"]))


def settled_deliveries(cluster, job_id, *, timeout: float = 10) -> list[dict]:
    """Oldest first, once none is pending: the receiver has answered a moment before the dispatcher
    records that answer in the store."""
    def settled():
        listed = deliveries(cluster, job_id)
        return listed if listed and all(d["status"] != "pending" for d in listed) else None

    return wait_until(settled, timeout=timeout, what="the deliveries to be recorded as settled")


def of_job(received, job_id, event_type=None):
    return [r for r in received if r.event and r.event["data"]["job_id"] == job_id
            and (event_type is None or r.event["type"] == event_type)]


def seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_events_arrive_signed_and_carry_the_job_detail(cluster, receiver):
    start(cluster, gen_seconds=2.5)
    job = cluster.submit(hooked(receiver, {"steps": 30}, webhook_events=["job.started", "job.progress"]))
    got = receiver.wait_for(lambda got: of_job(got, job["job_id"], "job.completed"), timeout=30)
    assert got and all(r.verified for r in got), [r.verify_error for r in got]
    types = [r.event["type"] for r in sorted(got, key=lambda r: r.event["timestamp"])]
    assert types[0] == "job.started" and types[-1] == "job.completed"
    progress = [r.event for r in got if r.event["type"] == "job.progress"]
    assert 1 <= len(progress) <= 4  # a 2.5 s job sampled every 0.2 s, throttled to one event a second
    stamps = sorted(seconds(e["timestamp"]) for e in progress)
    assert all(b - a >= 0.99 for a, b in zip(stamps, stamps[1:], strict=False)), stamps
    assert all(e["data"]["status"] == "processing" and e["data"]["progress"]["progress"] > 0 for e in progress)
    [done] = of_job(got, job["job_id"], "job.completed")
    detail = cluster.job(job["job_id"])
    assert done.event["data"] == detail and done.event["omitted"] == []
    assert done.event["timestamp"] == detail["finished_at"] and detail["result"]["images"]
    assert done.headers["x-webhook-secret"] == SECRET and len({r.webhook_id for r in got}) == len(got)
    listed = settled_deliveries(cluster, job["job_id"])
    assert [d["type"] for d in listed] == types and {d["status"] for d in listed} == {"delivered"}
    assert all([a["status_code"] for a in d["attempts"]] == [200] for d in listed)


def test_retries_until_2xx_then_410_stops_and_redeliver_sends_it_again(cluster, receiver):
    start(cluster)
    receiver.script([500, 500, 200])
    flaky = cluster.submit(hooked(receiver))
    got = receiver.wait_for(lambda got: len(got) == 3, timeout=20)
    assert [r.status for r in got] == [500, 500, 200] and all(r.verified for r in got)
    assert len({r.webhook_id for r in got}) == 1 and len({r.body for r in got}) == 1
    [delivery] = settled_deliveries(cluster, flaky["job_id"])
    assert delivery["status"] == "delivered" and delivery["webhook_id"] == got[0].webhook_id
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["status_code"] for a in delivery["attempts"]].count(200) == 1

    receiver.script([410])
    gone = cluster.submit(hooked(receiver))
    wait_until(lambda: [d["status"] for d in deliveries(cluster, gone["job_id"])] == ["failed"], timeout=20,
               what="the 410 to end the delivery")
    time.sleep(1.0)  # well past the 0.3 s retry delay: nothing more may arrive
    [first] = of_job(receiver.received(), gone["job_id"])
    [delivery] = deliveries(cluster, gone["job_id"])
    assert [a["status_code"] for a in delivery["attempts"]] == [410] and first.status == 410

    response = requests.post(f"{cluster.api_url}/sdapi/v1/jobs/{gone['job_id']}/webhooks/redeliver",
                             headers=AUTH, timeout=10)
    assert response.status_code == 202 and response.json()["redelivery_of"] == first.webhook_id
    again = receiver.wait_for(lambda got: len(of_job(got, gone["job_id"])) == 2, timeout=10)[-1]
    assert again.status == 200 and again.verified and again.body == first.body
    assert again.webhook_id == response.json()["webhook_id"] != first.webhook_id


def test_a_receiver_that_never_answers_does_not_slow_jobs(cluster, receiver):
    start(cluster, gen_seconds=0.2, WEBHOOK_DISPATCHER_THREADS="2")

    def run_batch(target) -> float:
        began = time.monotonic()
        jobs = [cluster.submit(hooked(target, {"prompt": f"job {i}"})) for i in range(8)]
        for job in jobs:
            assert cluster.wait_status(job["job_id"], {"completed", "error"}, timeout=30)["status"] == "completed"
        return time.monotonic() - began

    with webhook_receiver.WebhookReceiver(secret=SECRET) as hanging:
        answering = run_batch(receiver)
        hanging.script([{"status": 200, "delay": 60}] * 8)
        silent = run_batch(hanging)
        assert len(hanging.received()) >= 2 and hanging.answered() == []  # dispatchers really were stuck
    # Coupled to delivery, 8 jobs would wait 8 x 10 s / 2 dispatchers = 40 s.
    assert silent < answering * 1.5 + 0.5, (silent, answering)


@pytest.mark.both_databases
def test_a_dispatcher_killed_mid_delivery_delivers_after_restart(cluster, receiver):
    worker = start(cluster, WEBHOOK_TIMEOUT="4", WEBHOOK_CLAIM_SECONDS="6")
    receiver.script([{"status": 200, "delay": 30}])
    job = cluster.submit(hooked(receiver))
    wait_until(lambda: receiver.received(), timeout=15, what="the first attempt to arrive")
    assert cluster.job(job["job_id"])["status"] == "completed"
    worker.popen.send_signal(signal.SIGKILL)
    worker.popen.wait(timeout=10)
    cluster.start_worker("worker-replacement")
    [delivered] = receiver.wait_for(lambda got: got, timeout=25)
    first = receiver.received()[0]
    assert delivered.verified and delivered.status == 200 and delivered.webhook_id == first.webhook_id
    [delivery] = settled_deliveries(cluster, job["job_id"])
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == 2
    lost, retried = delivery["attempts"]
    assert "dispatcher stopped" in lost["error"] and retried["status_code"] == 200


def test_error_and_cancel_send_their_terminal_events(cluster, receiver):
    start(cluster, gen_seconds=5)
    running = cluster.submit(hooked(receiver, {"steps": 50}))
    wait_until(lambda: (cluster.job(running["job_id"])["progress"] or {}).get("progress"), timeout=15,
               what="progress")
    queued = cluster.submit(hooked(receiver))
    for job in (queued, running):
        response = requests.post(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}/cancel", headers=AUTH,
                                 timeout=10)
        assert response.status_code in (200, 202)
    cluster.sim("POST", "/_sim/faults", json={"gen_seconds": 0.1})
    rejected = cluster.submit(hooked(receiver, {"init_images": ["not-an-image"]}), kind="img2img")
    got = receiver.wait_for(lambda got: len(got) == 3, timeout=20)
    assert all(r.verified for r in got)
    by_job = {r.event["data"]["job_id"]: r.event for r in got}
    assert by_job[queued["job_id"]]["type"] == "job.cancelled"
    assert by_job[queued["job_id"]]["data"]["started_at"] is None  # it never reached A1111
    assert by_job[running["job_id"]]["type"] == "job.cancelled"
    assert by_job[running["job_id"]]["data"]["status"] == "cancelled"
    error = by_job[rejected["job_id"]]
    assert error["type"] == "job.error" and error["data"]["error"]["code"] == "a1111_rejected"


OTHER_TENANT = {"Authorization": "Bearer other-token"}


def test_dripping_receivers_neither_stretch_an_attempt_nor_hold_up_another_tenant(cluster, receiver):
    """Two receivers that answer one byte every 0.2 s (a per-read timeout never fires) hold both
    dispatcher threads for at most WEBHOOK_TIMEOUT per attempt; another tenant's webhook still
    arrives within seconds."""
    start(cluster, gen_seconds=0.2, WEBHOOK_TIMEOUT="2", WEBHOOK_CLAIM_SECONDS="4",
          WEBHOOK_DISPATCHER_THREADS="2", WEBHOOK_RETRY_SCHEDULE="0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2")
    with webhook_receiver.WebhookReceiver(secret=SECRET) as drip_a, \
            webhook_receiver.WebhookReceiver(secret=SECRET) as drip_b:
        for dripping in (drip_a, drip_b):
            dripping.script([{"drip": 0.2}] * 20)
            cluster.submit(hooked(dripping))
        wait_until(lambda: drip_a.received() and drip_b.received(), timeout=20,
                   what="both dripping receivers to hold an attempt")
        other = cluster.submit(hooked(receiver), headers=OTHER_TENANT)
        done = wait_until(lambda: (lambda job: job if job["status"] == "completed" else None)(requests.get(
            f"{cluster.api_url}/sdapi/v1/jobs/{other['job_id']}", headers=OTHER_TENANT, timeout=10).json()),
            timeout=20, what="the other tenant's job to complete")
        [got] = of_job(receiver.wait_for(lambda got: of_job(got, other["job_id"]), timeout=10), other["job_id"])
        assert got.verified and got.event["type"] == "job.completed"
        assert got.received_at - seconds(done["finished_at"]) < 2 + 1 + 1.5  # at most one attempt's wait
        support.wait_until(lambda: len(drip_a.dropped()) >= 2 and len(drip_b.dropped()) >= 2, timeout=20,
                           what="the dispatcher to cut two attempts at each dripping receiver")
        for dripping in (drip_a, drip_b):
            cut = dripping.dropped()
            assert dripping.answered() == [] and all(r.dropped_at - r.received_at < 2 + 1 for r in cut)
        for job_id in {r.event["data"]["job_id"] for r in drip_a.received() + drip_b.received()}:
            attempts = [a for d in deliveries(cluster, job_id) for a in d["attempts"] if a["finished_at"]]
            assert len(attempts) >= 2 and all("timed out" in a["error"] for a in attempts)
            assert all(seconds(a["finished_at"]) - seconds(a["started_at"]) < 2 + 1 for a in attempts)
