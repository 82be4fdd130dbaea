"""The batch processor: partial failures, retry delays named by the handler or backed off by
receive count, a failing visibility call, and settling a batch as Lambda's poller does."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from chalicelib import errors
from chalicelib import sqs_batch
from chalicelib.queue import base as queue_base

ROOT = pathlib.Path(__file__).resolve().parents[2]


class FakeQueue:
    def __init__(self, *, visibility_fails: bool = False) -> None:
        self.visibility: dict[str, float] = {}
        self.deleted: list[str] = []
        self.visibility_fails = visibility_fails

    def change_visibility(self, queue: str, receipt: str, *, timeout: float) -> None:
        assert queue == "jobs"
        if self.visibility_fails:
            raise errors.StoreUnavailable("SQS: could not change a message's visibility")
        self.visibility[receipt] = timeout

    def delete(self, queue: str, receipt: str) -> None:
        assert queue == "jobs"
        self.deleted.append(receipt)


def record(n: int, *, receive_count: int = 1) -> sqs_batch.Record:
    return sqs_batch.Record(message_id=f"m{n}", body=f'{{"n": {n}}}', receipt=f"r{n}", receive_count=receive_count)


def handler(record: sqs_batch.Record) -> None:
    if record.message_id == "m1":
        raise sqs_batch.RetryLater("every slot is busy")
    if record.message_id == "m2":
        raise sqs_batch.RetryLater("out of time", delay=0)
    if record.message_id == "m3":
        raise RuntimeError("boom")


def test_only_the_records_not_done_are_reported_each_with_its_delay():
    queue = FakeQueue()
    processor = sqs_batch.BatchProcessor(queue, queue_base.JOBS)
    records = [record(0), record(1), record(2), record(3, receive_count=3), record(4)]

    result = processor.process(records, handler)

    assert result.to_lambda() == {"batchItemFailures": [{"itemIdentifier": m} for m in ("m1", "m2", "m3")]}
    assert 4.0 <= queue.visibility["r1"] <= 6.0  # RetryLater without a delay: the backoff
    assert queue.visibility["r2"] == 0  # the delay it named
    assert 16.0 <= queue.visibility["r3"] <= 24.0  # an exception: the backoff of its third receive
    assert set(queue.visibility) == {"r1", "r2", "r3"}


@pytest.mark.parametrize("receive_count, low, high", [(1, 4, 6), (2, 8, 12), (4, 32, 48), (9, 48, 72)])
def test_the_retry_delay_doubles_per_receive_up_to_a_minute_with_jitter(receive_count, low, high):
    delays = [sqs_batch.retry_delay(receive_count) for _ in range(50)]

    assert all(low <= delay <= high for delay in delays)
    assert len(set(delays)) > 1


def test_a_failing_visibility_call_still_reports_the_record():
    processor = sqs_batch.BatchProcessor(FakeQueue(visibility_fails=True), queue_base.JOBS)

    result = processor.process([record(1), record(0)], handler)

    assert result.failed == ["m1"]


def test_settle_deletes_every_record_not_reported_failed():
    queue = FakeQueue()
    processor = sqs_batch.BatchProcessor(queue, queue_base.JOBS)
    records = [record(n) for n in range(5)]

    processor.settle(records, processor.process(records, handler))

    assert queue.deleted == ["r0", "r4"]


def test_fail_all_reports_every_record():
    assert sqs_batch.fail_all([record(0), record(1)]).to_lambda() == {
        "batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}


def test_a_queue_message_becomes_a_record_with_its_text_as_sent():
    raw = queue_base.Message(id="1", body={}, receipt="r", receive_count=2, raw="not json")
    parsed = queue_base.Message(id="2", body={"job_id": "j"}, receipt="s", receive_count=1)

    assert sqs_batch.record_of_message(raw) == sqs_batch.Record("1", "not json", "r", 2)
    assert sqs_batch.record_of_message(parsed).body == '{"job_id": "j"}'


def test_a_budget_without_a_deadline_never_runs_out():
    assert sqs_batch.Budget().remaining() == float("inf") and not sqs_batch.Budget().limited
    assert sqs_batch.Budget(deadline=0.0).remaining() < 0


def test_the_worker_does_not_import_the_lambda_module():
    code = "import sys, worker_fn.__main__, worker_fn.worker; print('chalicelib.handlers' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert found.stdout.strip() == "False"
