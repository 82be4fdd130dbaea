"""The Lambda handlers of app.py, invoked through chalice.test.Client with events made of messages
really received from moto's SQS (each with its own message id and receipt): the worker, the webhook
dispatcher, the sweeper, and what each answers in `batchItemFailures`."""
from __future__ import annotations

import base64
import json
import time

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import consumers
from chalicelib import context as context_module
from chalicelib import handlers
from chalicelib import sqs_batch
from tests import webhook_receiver
from tests.aws import conftest as support

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# chalice.test.Client gives each invocation a Lambda context with 3 s to run; these keep the worker's
# time arithmetic in proportion.
LAMBDA_SETTINGS = {"LAMBDA_MIN_GENERATION_SECONDS": "1.0", "LAMBDA_TIME_RESERVE_SECONDS": "0.3"}


def configure(monkeypatch, tmp_path, *, queue_urls, bucket, sim, database_url=None, **extra) -> None:
    values = {
        "DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'jobs.db'}",
        "API_TOKENS": "alice:tok-alice",
        "QUEUE_BACKEND": "sqs",
        "JOBS_QUEUE_URL": queue_urls["jobs"],
        "WEBHOOKS_QUEUE_URL": queue_urls["webhooks"],
        "SUBMISSIONS_QUEUE_URL": queue_urls["submissions"],
        "IMAGE_STORE": f"s3://{bucket}/images",
        "A1111_BASE_URL": sim.url,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_TIMEOUT": "1",
        "PROGRESS_INTERVAL": "0.05",
        "HEARTBEAT_INTERVAL": "0.1",
        **LAMBDA_SETTINGS,
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    context_module.reset_context()


@pytest.fixture
def lambda_app(monkeypatch, tmp_path, queue_urls, bucket, sim):
    configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim)
    with chalice_test.Client(app_module.app) as client:
        yield client
    context_module.reset_context()


def submit(client, body=None) -> str:
    response = client.http.post("/sdapi/v1/txt2img", headers=ALICE,
                                body=json.dumps(body or {"prompt": "a cat", "steps": 4}))
    assert response.status_code == 202, response.body
    return response.json_body["job_id"]


def job(client, job_id, **query) -> dict:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    response = client.http.get(f"/sdapi/v1/jobs/{job_id}{suffix}", headers=ALICE)
    assert response.status_code == 200, response.body
    return response.json_body


def ids(event) -> list[str]:
    return [record["messageId"] for record in event["Records"]]


def test_a_job_doorbell_runs_the_job_and_its_images_land_in_s3(lambda_app, sqs, s3, queue_urls, bucket, sim):
    job_id = submit(lambda_app)
    event = support.lambda_event(sqs, queue_urls["jobs"])
    assert len(event["Records"]) == 1 and '"job_id"' in event["Records"][0]["body"]

    response = lambda_app.lambda_.invoke("run_jobs", event)

    assert response.payload == {"batchItemFailures": []}
    detail = job(lambda_app, job_id)
    assert detail["status"] == "completed" and detail["runs"][0]["worker_id"].startswith("lambda-worker-")
    stored = s3.get_object(Bucket=bucket, Key=f"images/{job_id}/1/0")
    assert stored["ContentType"] == "image/png"
    assert base64.b64decode(detail["result"]["images"][0]) == stored["Body"].read()
    assert sim.stats()["force_task_ids"] == [job_id]


def test_every_slot_busy_hands_the_doorbell_back_soon_not_after_the_visibility_timeout(
        lambda_app, sqs, queue_urls, sim, monkeypatch):
    monkeypatch.setattr(sqs_batch, "RETRY_FIRST", 0.5)  # SQS rounds up to 1 s
    job_id = submit(lambda_app)
    ctx = context_module.get_context()
    [instance] = ctx.instances
    ctx.store.ensure_slots(instance.name, 1)
    assert ctx.store.acquire_slot(instance.name, holder="someone-else/x", lease_seconds=60, now=time.time()) == 0
    event = support.lambda_event(sqs, queue_urls["jobs"])

    response = lambda_app.lambda_.invoke("run_jobs", event)

    assert response.payload == {"batchItemFailures": [{"itemIdentifier": ids(event)[0]}]}
    assert job(lambda_app, job_id)["status"] == "queued" and sim.stats()["generation_requests"] == 0
    assert support.drain(sqs, queue_urls["jobs"]) == []  # hidden for the ~1 s backoff (the queue's own: 30 s)
    time.sleep(1.3)
    [again] = support.drain(sqs, queue_urls["jobs"])
    assert again["MessageId"] == ids(event)[0]


def test_a_doorbell_for_a_job_its_instance_cannot_run_is_handed_back_for_another(
        monkeypatch, tmp_path, sqs, queue_urls, bucket, sim):
    monkeypatch.setattr(sqs_batch, "RETRY_FIRST", 0.5)  # SQS rounds up to 1 s
    plain, sdxl = sim.url, sim.url.replace("127.0.0.1", "localhost")  # two instances, one simulator
    configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim,
              A1111_BASE_URL=f"{plain},{sdxl};labels=sdxl")
    with chalice_test.Client(app_module.app) as client:
        job_id = submit(client, {"prompt": "a cat", "steps": 4, "instance_labels": ["sdxl"]})
        ctx = context_module.get_context()
        labelled = next(instance for instance in ctx.instances if instance.labels)
        ctx.store.ensure_slots(labelled.name, 1)
        held = ctx.store.acquire_slot(labelled.name, holder="someone-else/x", lease_seconds=60, now=time.time())
        event = support.lambda_event(sqs, queue_urls["jobs"])

        response = client.lambda_.invoke("run_jobs", event)  # only the unlabelled instance is free

        assert response.payload == {"batchItemFailures": [{"itemIdentifier": ids(event)[0]}]}
        assert job(client, job_id)["status"] == "queued" and sim.stats()["generation_requests"] == 0
        ctx.store.release_slot(labelled.name, held, holder="someone-else/x")
        other = next(instance for instance in ctx.instances if not instance.labels)
        ctx.store.ensure_slots(other.name, 1)
        assert ctx.store.acquire_slot(other.name, holder="someone-else/y", lease_seconds=60, now=time.time()) == 0
        time.sleep(1.3)
        again = support.lambda_event(sqs, queue_urls["jobs"])
        assert ids(again) == ids(event)
        assert client.lambda_.invoke("run_jobs", again).payload == {"batchItemFailures": []}
        detail = job(client, job_id)
        assert detail["status"] == "completed" and detail["instance"] == labelled.name
    context_module.reset_context()


def test_an_invocation_takes_the_slot_of_an_instance_that_fits_the_head_job(
        monkeypatch, tmp_path, sqs, queue_urls, bucket, sim):
    plain, sdxl = sim.url, sim.url.replace("127.0.0.1", "localhost")  # two instances, one simulator
    configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim,
              A1111_BASE_URL=f"{plain},{sdxl};labels=sdxl")
    with chalice_test.Client(app_module.app) as client:
        for n in range(4):  # a random pick of the free instance would miss at least once in 16
            job_id = submit(client, {"prompt": f"xl {n}", "steps": 4, "instance_labels": ["sdxl"]})
            event = support.lambda_event(sqs, queue_urls["jobs"])
            assert client.lambda_.invoke("run_jobs", event).payload == {"batchItemFailures": []}
            assert job(client, job_id)["instance"] == sdxl
    context_module.reset_context()


def test_invocations_take_the_instance_idle_longest_in_turn_not_at_random(
        monkeypatch, tmp_path, sqs, queue_urls, bucket, sim):
    first, second = sim.url, sim.url.replace("127.0.0.1", "localhost")  # two instances, one simulator
    configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim,
              A1111_BASE_URL=f"{first},{second}")
    monkeypatch.setattr(consumers, "_released_at", {})  # this container has used neither yet
    with chalice_test.Client(app_module.app) as client:
        ran_on = []
        for n in range(4):
            job_id = submit(client, {"prompt": f"cat {n}", "steps": 4})
            event = support.lambda_event(sqs, queue_urls["jobs"])
            assert client.lambda_.invoke("run_jobs", event).payload == {"batchItemFailures": []}
            ran_on.append(job(client, job_id)["instance"])
    context_module.reset_context()
    assert ran_on == [first, second, first, second]


def test_a_partial_batch_failure_retries_only_the_record_there_was_no_time_for(
        lambda_app, sqs, queue_urls, sim):
    sim.set_faults(gen_seconds=1.9)  # one generation leaves too little of the 3 s for a second
    first, second = submit(lambda_app), submit(lambda_app)
    event = support.lambda_event(sqs, queue_urls["jobs"])
    assert len(set(ids(event))) == 2

    response = lambda_app.lambda_.invoke("run_jobs", event)

    assert response.payload == {"batchItemFailures": [{"itemIdentifier": ids(event)[1]}]}
    assert job(lambda_app, first)["status"] == "completed"
    assert job(lambda_app, second)["status"] == "queued"


def test_a_generation_longer_than_the_invocation_has_left_ends_in_error_and_does_not_loop(
        lambda_app, sqs, queue_urls, sim):
    sim.set_faults(gen_seconds=30)
    job_id = submit(lambda_app)
    event = support.lambda_event(sqs, queue_urls["jobs"])

    started = time.monotonic()
    response = lambda_app.lambda_.invoke("run_jobs", event)

    assert time.monotonic() - started < 4.0  # bounded by the invocation's 3 s, not A1111_TIMEOUT (600 s)
    assert response.payload == {"batchItemFailures": []}  # consumed: a retry would be cut off again
    detail = job(lambda_app, job_id)
    assert detail["status"] == "error" and detail["attempts"] == 1
    assert detail["error"]["code"] == "time_limit_exceeded"
    assert "AWS Lambda invocation had left" in detail["error"]["message"]
    assert sim.stats()["interrupts"] >= 1  # A1111 was stopped: its slot is free for the next job
    assert support.drain(sqs, queue_urls["jobs"]) == []  # and no retry doorbell was sent


def test_a_webhook_doorbell_delivers_the_signed_event(lambda_app, sqs, queue_urls):
    with webhook_receiver.WebhookReceiver(secret=SECRET) as receiver:
        job_id = submit(lambda_app, {"prompt": "a cat", "steps": 4, "webhook_url": receiver.url,
                                     "webhook_secret": SECRET})
        lambda_app.lambda_.invoke("run_jobs", support.lambda_event(sqs, queue_urls["jobs"]))
        event = support.lambda_event(sqs, queue_urls["webhooks"])
        assert event["Records"], "the completed job rang the webhooks queue"

        response = lambda_app.lambda_.invoke("deliver_webhooks", event)

        assert response.payload == {"batchItemFailures": []}
        [got] = receiver.received()
    assert got.verified and got.event["type"] == "job.completed" and got.event["data"]["job_id"] == job_id


def test_the_sweeper_requeues_an_expired_job_and_shows_in_health(lambda_app, sqs, queue_urls):
    job_id = submit(lambda_app)
    support.drain(sqs, queue_urls["jobs"])  # the doorbell is lost
    ctx = context_module.get_context()
    assert ctx.store.claim_next(worker_id="crashed", instance=ctx.instances[0].name, lease_seconds=0.01,
                                now=time.time()).job.id == job_id
    time.sleep(0.05)
    event = lambda_app.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                detail={}, resources=[])

    report = lambda_app.lambda_.invoke("sweep", event).payload

    assert report["expired"] == 1 and report["instances"] == {ctx.instances[0].name: True}
    [doorbell] = support.drain(sqs, queue_urls["jobs"])
    assert job_id in doorbell["Body"] and job(lambda_app, job_id)["status"] == "queued"
    workers = lambda_app.http.get("/health", headers=ALICE).json_body["workers"]
    assert [w["id"] for w in workers] == [handlers.SWEEPER_ID]


def test_without_a_store_every_record_is_reported_failed_and_nothing_is_lost(
        monkeypatch, tmp_path, queue_urls, bucket, sim, sqs):
    configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim,
              database_url="sqlite:////proc/no-such-dir/jobs.db")
    for n in range(3):
        sqs.send_message(QueueUrl=queue_urls["jobs"], MessageBody=f'{{"job_id": "j{n}"}}')
    event = support.lambda_event(sqs, queue_urls["jobs"])
    with chalice_test.Client(app_module.app) as client:
        response = client.lambda_.invoke("run_jobs", event)
    context_module.reset_context()
    assert sorted(item["itemIdentifier"] for item in response.payload["batchItemFailures"]) == sorted(ids(event))
    assert len(ids(event)) == 3
