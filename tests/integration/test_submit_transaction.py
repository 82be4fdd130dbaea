"""A submit is one transaction: the job and its doorbell commit together, or neither does.

Run against every store backend (the table queue lives in the job database, whichever that is);
SQS, which cannot join the transaction, sends after the commit.
"""
from __future__ import annotations

import dataclasses
import uuid

import pytest

from chalicelib import config
from chalicelib import queue as queue_module
from chalicelib.queue import base as queue_base
from chalicelib.queue import sqs
from chalicelib.store import base
from chalicelib.store import jobs as jobs_module

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


def test_concurrent_submits_each_get_their_own_job_and_a_repeated_key_the_first(job_store, queue):
    """32 threads submit at once (so that group commit writes several jobs in one transaction; that
    it groups is tested in tests/unit/test_group_commit.py), some with the same idempotency key:
    every new job and its doorbell is stored once, and the repeats get the first job of their key."""
    import concurrent.futures
    import threading

    start = threading.Barrier(32)

    def submit(index: int):
        start.wait()
        return create(job_store, queue, new_job(key=f"k{index % 8}" if index % 2 else None))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(submit, range(32)))
    created = [job for job, was_created in outcomes if was_created]
    assert len(created) == 16 + 4  # every unkeyed submit, and the first of each of the 4 odd keys
    assert len({job.id for job in created}) == len(created)
    by_key: dict[str, set] = {}
    for job, _ in outcomes:
        if job.idempotency_key:
            by_key.setdefault(job.idempotency_key, set()).add(job.id)
    assert all(len(ids) == 1 for ids in by_key.values()) and len(by_key) == 4
    messages = queue.receive(queue_base.JOBS, max_messages=10) + queue.receive(queue_base.JOBS, max_messages=10) \
        + queue.receive(queue_base.JOBS, max_messages=10)
    assert sorted(m.body["job_id"] for m in messages) == sorted(job.id for job in created)


def test_a_failing_job_in_a_group_fails_alone(job_store, queue):
    """One submit whose doorbell cannot be written fails; the others written with it are stored."""
    import concurrent.futures
    import threading

    class Broken:
        def write(self, session):
            raise RuntimeError("the queue row could not be written")

    start = threading.Barrier(8)
    jobs = [new_job() for _ in range(8)]

    def submit(index: int):
        start.wait()
        doorbell = Broken() if index == 3 else queue.send_on_commit(queue_base.JOBS, {"job_id": jobs[index].id})
        try:
            return job_store.create_job(jobs[index], now=NOW, doorbell=doorbell)
        except RuntimeError:
            return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(8)))
    assert outcomes[3] is None and job_store.get_job(jobs[3].id) is None
    assert all(outcome is not None and outcome[1] for i, outcome in enumerate(outcomes) if i != 3)
    assert all(job_store.get_job(job.id) is not None for i, job in enumerate(jobs) if i != 3)


def test_a_job_takes_its_owners_checkpoint_in_its_own_transaction(job_store, queue):
    """`owner_checkpoint`: the choice committed before the job is in its request, beside its own
    override_settings; a job that does not take it, or an owner without a choice, keeps its request."""
    import dataclasses

    def submit(**changes):
        job = dataclasses.replace(new_job(), **changes)
        return create(job_store, queue, job)[0].request

    assert submit(owner_checkpoint=True) == {"prompt": "a cat"}  # alice chose nothing yet
    job_store.set_model_choice("alice", "sdxl.safetensors [31e35c80fc]", now=NOW)
    own = {"prompt": "a cat", "override_settings": {"CLIP_stop_at_last_layers": 2}}
    assert submit(owner_checkpoint=True, request=own) == {"prompt": "a cat", "override_settings": {
        "CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "sdxl.safetensors [31e35c80fc]"}}
    assert submit(owner_checkpoint=False) == {"prompt": "a cat"}
    assert submit(owner_checkpoint=True, owner="bob") == {"prompt": "a cat"}


def test_a_batchs_jobs_take_their_owners_checkpoint(job_store):
    import dataclasses

    job_store.set_model_choice("alice", "sdxl.safetensors", now=NOW)
    batch = base.NewBatch(id=str(uuid.uuid4()), owner="alice", options={}, webhook_secret=None, idempotency_key=None,
                          job_count=2)
    jobs = [dataclasses.replace(new_job(), batch_id=batch.id, owner_checkpoint=True),
            dataclasses.replace(new_job(), batch_id=batch.id, request={"prompt": "x", "override_settings": {
                "sd_model_checkpoint": "own.safetensors"}})]
    job_store.create_batch(batch, jobs, now=NOW)
    assert job_store.get_job(jobs[0].id).request == {"prompt": "a cat",
                                                     "override_settings": {"sd_model_checkpoint": "sdxl.safetensors"}}
    assert job_store.get_job(jobs[1].id).request["override_settings"] == {"sd_model_checkpoint": "own.safetensors"}


def test_a_group_reads_each_owners_checkpoint_once(job_store, monkeypatch):
    """Jobs written in one group commit (one transaction) share each owner's model choice, read once
    per owner: the choice cannot change inside the transaction."""
    job_store.set_model_choice("alice", "sdxl.safetensors", now=NOW)
    job_store.set_model_choice("bob", "flux.safetensors", now=NOW)
    reads = []
    read = jobs_module.JobStore._owner_checkpoint
    monkeypatch.setattr(jobs_module.JobStore, "_owner_checkpoint",
                        lambda self, session, owner: (reads.append(owner), read(self, session, owner))[1])
    group = [dataclasses.replace(new_job(), owner=owner, owner_checkpoint=takes)
             for owner, takes in (("alice", True), ("bob", True), ("alice", True), ("alice", False), ("bob", True))]
    written = job_store._insert_jobs([jobs_module._JobInsert(job, NOW, None) for job in group])
    assert sorted(reads) == ["alice", "bob"]
    assert [job.request.get("override_settings") for job in written] == [
        {"sd_model_checkpoint": "sdxl.safetensors"}, {"sd_model_checkpoint": "flux.safetensors"},
        {"sd_model_checkpoint": "sdxl.safetensors"}, None, {"sd_model_checkpoint": "flux.safetensors"}]
