"""The local doorbell queue behaves like SQS: visibility, receive counts, dead letters, delays.

Run against every store backend: the queue is a table in the job database, whichever that is.
"""
from __future__ import annotations

import threading
import time

import pytest

from chalicelib import config
from chalicelib import queue as queue_module
from chalicelib.queue import local


@pytest.fixture
def queue(job_store):
    settings = config.Settings(queue_backend="local", queue_max_receives=3, queue_visibility_timeout=0.3)
    queue = queue_module.make_queue(settings, store=job_store)
    yield queue
    getattr(queue, "close", lambda: None)()  # the Postgres queue's LISTEN thread


def test_sent_message_is_received_once_then_deleted(queue):
    queue.send("jobs", {"job_id": "a"})
    [message] = queue.receive("jobs")
    assert message.body == {"job_id": "a"} and message.receive_count == 1
    assert queue.receive("jobs") == []
    queue.delete("jobs", message.receipt)
    time.sleep(0.35)
    assert queue.receive("jobs") == []


def test_unacknowledged_message_returns_after_visibility_timeout(queue):
    queue.send("jobs", {"job_id": "a"})
    first = queue.receive("jobs")[0]
    time.sleep(0.35)
    second = queue.receive("jobs")[0]
    assert second.id == first.id and second.receive_count == 2 and second.receipt != first.receipt
    queue.delete("jobs", first.receipt)  # a stale receipt deletes nothing
    time.sleep(0.35)
    assert queue.receive("jobs")[0].receive_count == 3


def test_message_goes_to_dead_letter_after_max_receives(queue):
    queue.send("jobs", {"job_id": "a"})
    for _ in range(3):
        assert queue.receive("jobs", visibility_timeout=0)
    assert queue.receive("jobs") == []
    assert queue.depth("jobs") == {"visible": 0, "in_flight_or_delayed": 0, "dead_letter": 1}
    assert queue.receive(local.dead_letter_name("jobs"))[0].body == {"job_id": "a"}


def test_delayed_message_is_invisible_until_due(queue):
    queue.send("jobs", {"job_id": "later"}, delay=0.3)
    assert queue.receive("jobs") == []
    assert queue.depth("jobs")["in_flight_or_delayed"] == 1
    assert queue.receive("jobs", wait_seconds=1.0)[0].body == {"job_id": "later"}


def test_change_visibility_makes_a_message_visible_again(queue):
    queue.send("jobs", {"job_id": "a"})
    message = queue.receive("jobs", visibility_timeout=60)[0]
    queue.change_visibility("jobs", message.receipt, timeout=0)
    assert queue.receive("jobs")[0].id == message.id


def test_queues_are_separate(queue):
    queue.send("jobs", {"job_id": "a"})
    assert queue.receive("webhooks") == []


def test_long_poll_wakes_within_100ms_of_a_send_from_another_connection(queue):
    latencies = []

    def sender():
        for _ in range(5):
            time.sleep(0.2)
            sent_at = time.monotonic()
            queue.send("jobs", {"sent_at": sent_at})

    thread = threading.Thread(target=sender)
    thread.start()
    while len(latencies) < 5:
        for message in queue.receive("jobs", wait_seconds=2):
            latencies.append(time.monotonic() - message.body["sent_at"])
            queue.delete("jobs", message.receipt)
    thread.join()
    assert max(latencies) < 0.1, latencies


def test_long_poll_returns_empty_after_its_wait(queue):
    started = time.monotonic()
    assert queue.receive("jobs", wait_seconds=0.3) == []
    assert 0.28 <= time.monotonic() - started < 1.0
