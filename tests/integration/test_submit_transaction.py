"""A submit is one transaction: the job and its doorbell commit together, or neither does.

Run against every store backend (the table queue lives in the job database, whichever that is);
SQS, which cannot join the transaction, sends after the commit.
"""
from __future__ import annotations

import uuid

import pytest

from chalicelib import config
from chalicelib import queue as queue_module
from chalicelib.queue import base as queue_base
from chalicelib.queue import sqs
from chalicelib.store import base

NOW = 1_700_000_000.0


@pytest.fixture
def queue(job_store):
    settings = config.Settings(queue_backend="local", queue_max_receives=3, queue_visibility_timeout=30)
    queue = queue_module.make_queue(settings, store=job_store)
    yield queue
    getattr(queue, "close", lambda: None)()


def new_job(*, key: str | None = None) -> base.NewJob:
    return base.NewJob(id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0,
                       request={"prompt": "a cat"}, options={}, webhook_secret=None, idempotency_key=key)


def create(job_store, queue, job: base.NewJob):
    return job_store.create_job(job, now=NOW, doorbell=queue.send_on_commit(queue_base.JOBS, {"job_id": job.id}))


def test_a_new_job_and_its_doorbell_are_committed_together(job_store, queue):
    job, created = create(job_store, queue, new_job())
    assert created
    [message] = queue.receive(queue_base.JOBS)
    assert message.body == {"job_id": job.id}


def test_a_failed_doorbell_write_leaves_no_job(job_store, queue):
    class Broken:
        def write(self, session):
            raise RuntimeError("the queue row could not be written")

    job = new_job()
    with pytest.raises(RuntimeError):
        job_store.create_job(job, now=NOW, doorbell=Broken())
    assert job_store.get_job(job.id) is None
    assert queue.receive(queue_base.JOBS) == []


def test_a_repeated_idempotency_key_rings_no_second_doorbell(job_store, queue):
    first, created = create(job_store, queue, new_job(key="k1"))
    again, created_again = create(job_store, queue, new_job(key="k1"))
    assert created and not created_again and again.id == first.id
    assert [m.body["job_id"] for m in queue.receive(queue_base.JOBS, max_messages=10)] == [first.id]


def test_sqs_writes_nothing_in_the_transaction_and_sends_after_commit(job_store):
    class Client:
        def __init__(self):
            self.sent = []

        def send_message(self, **request):
            self.sent.append(request)

    client = Client()
    sqs_queue = sqs.SqsQueue({queue_base.JOBS: "https://sqs.example/jobs"}, client=client)
    job = new_job()
    doorbell = sqs_queue.send_on_commit(queue_base.JOBS, {"job_id": job.id})
    _, created = job_store.create_job(job, now=NOW, doorbell=doorbell)
    assert created and client.sent == []
    doorbell.send()
    assert [request["MessageBody"] for request in client.sent] == [f'{{"job_id": "{job.id}"}}']
