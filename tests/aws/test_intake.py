"""SQS batch submissions: the intake handler (take_submissions) through chalice.test.Client, on both
stores, with valid, invalid and duplicated messages really sent to and received from moto's SQS."""
from __future__ import annotations

import json
import pathlib

import jsonschema
import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import intake
from chalicelib import rejections
from tests.aws import conftest as support
from tests.aws import test_handlers

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "submission.schema.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VALID = {"type": "txt2img", "request": {"prompt": "a cat", "steps": 4}, "metadata": {"order": 7}}


@pytest.fixture
def lambda_app(monkeypatch, tmp_path, queue_urls, bucket, sim, database_url):
    test_handlers.configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim,
                            database_url=database_url, SUBMISSIONS_OWNER="batch",
                            API_TOKENS="batch:tok-batch,alice:tok-alice")
    with chalice_test.Client(app_module.app) as client:
        yield client
    context_module.reset_context()


def send(sqs, queue_urls, *bodies) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queue_urls["submissions"],
                         MessageBody=body if isinstance(body, str) else json.dumps(body))


def jobs_of(client, token="tok-batch") -> list[dict]:
    response = client.http.get("/sdapi/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    return response.json_body["jobs"]


def rejected() -> list[rejections.Rejection]:
    return rejections.make_rejection_log(context_module.get_context().store).list(limit=50)


def test_a_valid_message_becomes_a_job_of_the_submissions_owner_and_rings_the_worker(
        lambda_app, sqs, queue_urls):
    send(sqs, queue_urls, {**VALID, "priority": 5})
    event = support.lambda_event(sqs, queue_urls["submissions"])

    response = lambda_app.lambda_.invoke("take_submissions", event)

    assert response.payload == {"batchItemFailures": []}
    [job] = jobs_of(lambda_app)
    assert (job["status"], job["type"], job["priority"], job["metadata"]) == ("queued", "txt2img", 5, {"order": 7})
    assert jobs_of(lambda_app, token="tok-alice") == []  # it belongs to SUBMISSIONS_OWNER only
    [doorbell] = support.drain(sqs, queue_urls["jobs"])
    assert json.loads(doorbell["Body"]) == {"job_id": job["job_id"]}


def test_a_redelivered_message_and_a_repeated_idempotency_key_make_no_second_job(lambda_app, sqs, queue_urls):
    send(sqs, queue_urls, VALID)
    first = support.lambda_event(sqs, queue_urls["submissions"])
    lambda_app.lambda_.invoke("take_submissions", first)
    # SQS delivers the same message again (at-least-once): same message id, new receipt.
    sqs.change_message_visibility(QueueUrl=queue_urls["submissions"],
                                  ReceiptHandle=first["Records"][0]["receiptHandle"], VisibilityTimeout=0)
    again = support.lambda_event(sqs, queue_urls["submissions"])
    assert test_handlers.ids(again) == test_handlers.ids(first)
    assert lambda_app.lambda_.invoke("take_submissions", again).payload == {"batchItemFailures": []}
    assert len(jobs_of(lambda_app)) == 1

    keyed = {**VALID, "idempotency_key": "order-7"}
    send(sqs, queue_urls, keyed, keyed)  # two messages, one key
    event = support.lambda_event(sqs, queue_urls["submissions"])
    assert len(set(test_handlers.ids(event))) == 2
    assert lambda_app.lambda_.invoke("take_submissions", event).payload == {"batchItemFailures": []}
    assert len(jobs_of(lambda_app)) == 2 and rejected() == []


def test_invalid_messages_are_recorded_with_their_reason_and_never_retried(lambda_app, sqs, queue_urls):
    send(sqs, queue_urls,
         "this is not JSON",
         {"type": "upscale", "request": {}},
         {"type": "txt2img", "request": {"prompt": "x", "steps": 100000}},
         {"type": "txt2img", "request": {"prompt": "x"}, "webhook_url": "https://example.com/h"},
         {"type": "img2img", "request": {"prompt": "x"}, "webhook_secret": SECRET, "colour": "red"},
         VALID)
    event = support.lambda_event(sqs, queue_urls["submissions"])
    assert len(event["Records"]) == 6

    response = lambda_app.lambda_.invoke("take_submissions", event)

    assert response.payload == {"batchItemFailures": []}  # all consumed: retrying cannot fix them
    assert len(jobs_of(lambda_app)) == 1
    reasons = {item.message_id: item.reason for item in rejected()}
    assert len(reasons) == 5
    by_body = {record["body"]: reasons.get(record["messageId"]) for record in event["Records"]}
    assert "not JSON" in by_body["this is not JSON"]
    assert "message.type" in by_body[json.dumps({"type": "upscale", "request": {}})]
    too_many_steps = json.dumps({"type": "txt2img", "request": {"prompt": "x", "steps": 100000}})
    assert "message.request.steps" in by_body[too_many_steps]
    assert "webhook_secret is required" in next(r for b, r in by_body.items() if "example.com" in b)
    colour = next(item for item in rejected() if "colour" in item.reason)
    assert SECRET not in colour.excerpt and SECRET not in json.dumps(colour.problems)
    assert '"webhook_secret": "***"' in colour.excerpt
    # A second delivery of a bad message is consumed again and recorded once.
    assert lambda_app.lambda_.invoke("take_submissions", event).payload == {"batchItemFailures": []}
    assert len(rejected()) == 5


def test_a_store_outage_fails_only_the_records_it_hit(lambda_app, sqs, queue_urls, monkeypatch):
    send(sqs, queue_urls, {**VALID, "metadata": {"n": 1}}, {**VALID, "metadata": {"n": 2}},
         {**VALID, "metadata": {"n": 3}})
    event = support.lambda_event(sqs, queue_urls["submissions"])
    unlucky = event["Records"][1]["messageId"]
    real = intake.submit_message

    def flaky(ctx, *, message_id, text):
        if message_id == unlucky:
            raise errors.StoreUnavailable("database restarting")
        return real(ctx, message_id=message_id, text=text)

    monkeypatch.setattr(intake, "submit_message", flaky)
    response = lambda_app.lambda_.invoke("take_submissions", event)

    assert response.payload == {"batchItemFailures": [{"itemIdentifier": unlucky}]}
    assert len(jobs_of(lambda_app)) == 2 and rejected() == []


def test_the_request_may_carry_the_jobs_own_fields_but_not_contradict_them(lambda_app, sqs, queue_urls):
    send(sqs, queue_urls,
         {"type": "txt2img", "request": {"prompt": "x", "priority": 3}},
         {"type": "txt2img", "request": {"prompt": "x", "priority": 3}, "priority": 4})
    lambda_app.lambda_.invoke("take_submissions", support.lambda_event(sqs, queue_urls["submissions"]))
    assert [job["priority"] for job in jobs_of(lambda_app)] == [3]
    [conflict] = rejected()
    assert "priority is given both at the top level and in request" in conflict.reason


def test_the_published_json_schema_is_the_one_the_intake_uses_and_its_examples_pass():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema == intake.message_schema(), "regenerate docs/submission.schema.json (see docs/aws.md)"
    validator = jsonschema.Draft202012Validator(schema)
    for example in schema["examples"] + [VALID]:
        validator.validate(example)
        intake.SubmissionMessage.model_validate(example)
    assert not validator.is_valid({"type": "upscale", "request": {}})
    assert not validator.is_valid({"type": "txt2img"})
    assert not validator.is_valid({**VALID, "colour": "red"})
