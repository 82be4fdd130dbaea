"""The SQS queue adapter against moto: the Queue port's semantics on SQS, and its error edge."""
from __future__ import annotations

import json
import time

import pytest

from chalicelib import config
from chalicelib import errors
from chalicelib import queue as queue_module
from chalicelib.queue import base
from chalicelib.queue import sqs as sqs_queue
from tests.aws import conftest as support


@pytest.fixture
def queue(queue_urls) -> sqs_queue.SqsQueue:
    return sqs_queue.SqsQueue({base.JOBS: queue_urls["jobs"], base.WEBHOOKS: queue_urls["webhooks"],
                               base.SUBMISSIONS: queue_urls["submissions"]})


def test_the_factory_builds_it_from_the_settings_and_names_what_is_missing(queue_urls):
    settings = config.Settings(queue_backend="sqs", jobs_queue_url=queue_urls["jobs"],
                               webhooks_queue_url=queue_urls["webhooks"])
    built = queue_module.make_queue(settings, store=None)
    assert isinstance(built, sqs_queue.SqsQueue) and built.url(base.JOBS) == queue_urls["jobs"]
    with pytest.raises(ValueError, match="SUBMISSIONS_QUEUE_URL"):
        built.url(base.SUBMISSIONS)
    with pytest.raises(ValueError, match="WEBHOOKS_QUEUE_URL"):
        queue_module.make_queue(config.Settings(queue_backend="sqs", jobs_queue_url=queue_urls["jobs"]), store=None)


def test_a_message_goes_round_trip_with_its_receive_count_and_is_gone_once_deleted(queue):
    queue.send(base.JOBS, {"job_id": "j1"})
    [message] = queue.receive(base.JOBS, max_messages=10, visibility_timeout=30)
    assert message.body == {"job_id": "j1"} and message.receive_count == 1
    assert json.loads(message.raw) == {"job_id": "j1"} and message.id and message.receipt
    assert queue.receive(base.JOBS, max_messages=10) == []  # in flight: invisible
    queue.delete(base.JOBS, message.receipt)
    assert queue.depth(base.JOBS) == {"visible": 0, "in_flight_or_delayed": 0, "dead_letter": 0}


def test_change_visibility_offers_a_message_again_with_a_higher_receive_count(queue):
    queue.send(base.WEBHOOKS, {"job_id": "j2"})
    [first] = queue.receive(base.WEBHOOKS, visibility_timeout=300)
    queue.change_visibility(base.WEBHOOKS, first.receipt, timeout=0)
    [again] = queue.receive(base.WEBHOOKS)
    assert again.id == first.id and again.receive_count == 2 and again.receipt != first.receipt


def test_a_delayed_message_stays_invisible_until_its_delay_has_passed(queue):
    queue.send(base.JOBS, {"job_id": "later"}, delay=0.4)  # SQS counts whole seconds: 1 s
    assert queue.receive(base.JOBS) == []
    assert queue.depth(base.JOBS)["in_flight_or_delayed"] == 1
    time.sleep(1.1)
    assert [m.body for m in queue.receive(base.JOBS)] == [{"job_id": "later"}]


def test_a_long_poll_returns_as_soon_as_a_message_arrives_or_after_the_wait(queue):
    started = time.monotonic()
    assert queue.receive(base.JOBS, wait_seconds=1) == []
    assert time.monotonic() - started >= 0.9
    queue.send(base.JOBS, {"job_id": "now"})
    assert [m.body for m in queue.receive(base.JOBS, wait_seconds=20)] == [{"job_id": "now"}]


def test_sqs_limits_are_clamped_not_exceeded(queue):
    queue.send(base.JOBS, {"job_id": "j"}, delay=5000)  # SQS refuses > 900 s; clamped, so accepted
    assert queue.depth(base.JOBS)["in_flight_or_delayed"] == 1
    assert sqs_queue._whole_seconds(0.01, 900) == 1 and sqs_queue._whole_seconds(-3, 900) == 0


def test_depth_counts_the_dead_letter_queue(queue, sqs, queue_urls):
    queue.send(base.JOBS, {"job_id": "poison"})
    for _ in range(6):  # maxReceiveCount is 5: the sixth receive moves it to the dead-letter queue
        for message in queue.receive(base.JOBS, max_messages=10):
            queue.change_visibility(base.JOBS, message.receipt, timeout=0)
    assert queue.depth(base.JOBS) == {"visible": 0, "in_flight_or_delayed": 0, "dead_letter": 1}


def test_a_body_that_is_not_a_json_object_keeps_its_text(queue, sqs, queue_urls):
    sqs.send_message(QueueUrl=queue_urls["submissions"], MessageBody="not json {")
    [message] = queue.receive(base.SUBMISSIONS)
    assert message.body == {} and message.raw == "not json {"


def test_send_batch_reports_each_message(queue, sqs, queue_urls):
    outcome = queue.send_batch(base.SUBMISSIONS, ['{"n": 1}', '{"n": 2}'])
    assert outcome == [None, None]
    received = support.drain(sqs, queue_urls["submissions"])
    assert sorted(m["Body"] for m in received) == ['{"n": 1}', '{"n": 2}']


def test_a_stale_receipt_is_a_no_op_like_the_local_queue(queue):
    queue.send(base.JOBS, {"job_id": "j"})
    [message] = queue.receive(base.JOBS)
    queue.delete(base.JOBS, message.receipt)
    queue.delete(base.JOBS, message.receipt)  # already gone: no error
    queue.change_visibility(base.JOBS, "not-a-receipt", timeout=0)


def test_aws_errors_become_store_unavailable_naming_the_action(aws, queue_urls):
    missing = sqs_queue.SqsQueue({base.JOBS: queue_urls["jobs"].rsplit("/", 1)[0] + "/no-such-queue"})
    with pytest.raises(errors.StoreUnavailable, match=r"SQS: could not send to the jobs queue: .*NonExistentQueue"):
        missing.send(base.JOBS, {"job_id": "x"})
    with pytest.raises(errors.StoreUnavailable, match="could not receive"):
        missing.receive(base.JOBS)


def test_without_a_configured_region_the_queue_url_names_it(monkeypatch):
    support.fake_aws_environment(monkeypatch)
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    client = sqs_queue.make_client("https://sqs.eu-west-3.amazonaws.com/123456789012/jobs")
    assert client.meta.region_name == "eu-west-3"
