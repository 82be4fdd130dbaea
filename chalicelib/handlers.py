"""The SQS-triggered and scheduled Lambda functions: what only Lambda has. app.py's
`@app.on_sqs_message` / `@app.schedule` functions call the `on_*` entry points here; each turns
Chalice's event into records and the invocation's context into a time budget, and hands the records
to `sqs_batch.BatchProcessor` with the per-record function of its queue (consumers.py), which
`python -m worker_fn` runs too. The answer is Lambda's partial batch response (`batchItemFailures`).
"""
from __future__ import annotations

import functools
import logging
import os
import time
import typing

from chalicelib import config
from chalicelib import consumers
from chalicelib import context as context_module
from chalicelib import jobrunner
from chalicelib import logs
from chalicelib import sqs_batch
from chalicelib.queue import base as queue_base

log = logging.getLogger(__name__)

PING_TIMEOUT = 2.0
SWEEPER_ID = "lambda-sweeper"


def on_job_doorbells(event) -> dict:
    return _process(event, queue_base.JOBS, functools.partial(
        consumers.run_job_doorbell, worker_id=_invocation_id(event, "worker")))


def on_webhook_doorbells(event) -> dict:
    return _process(event, queue_base.WEBHOOKS, functools.partial(
        consumers.deliver_webhook_doorbell, dispatcher_id=_invocation_id(event, "webhooks")))


def on_submissions(event) -> dict:
    return _process(event, queue_base.SUBMISSIONS, consumers.take_submission)


def on_schedule(event) -> dict:
    _configure_logging()
    return handle_sweep(context_module.get_context())


def records_of_event(event) -> list[sqs_batch.Record]:
    """The records of a Chalice `SQSEvent` (Lambda's event shape)."""
    records = []
    for record in event:
        raw = record.to_dict()
        records.append(sqs_batch.Record(
            message_id=raw["messageId"], body=record.body, receipt=record.receipt_handle,
            receive_count=int(raw.get("attributes", {}).get("ApproximateReceiveCount", 1))))
    return records


def budget_of(context) -> sqs_batch.Budget:
    """The time the invocation has left, from its Lambda context (no limit without one)."""
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return sqs_batch.Budget()
    return sqs_batch.Budget(time.monotonic() + context.get_remaining_time_in_millis() / 1000)


def _process(event, queue: str, handle: typing.Callable[..., None]) -> dict:
    """The batch through the processor, each record given to `handle(ctx, record, budget=...)`."""
    _configure_logging()
    records = records_of_event(event)
    try:
        ctx = context_module.get_context()
    except Exception:  # noqa: BLE001 - without a store nothing can be handled: retry every record
        log.exception("cannot build the context; the whole batch is retried", extra={"queue": queue})
        return sqs_batch.fail_all(records).to_lambda()
    budget = budget_of(getattr(event, "context", None))
    processor = sqs_batch.BatchProcessor(ctx.queue, queue)
    return processor.process(records, lambda record: handle(ctx, record, budget=budget)).to_lambda()


def _invocation_id(event, role: str) -> str:
    request_id = getattr(getattr(event, "context", None), "aws_request_id", None) or f"{time.time_ns():x}"
    return f"lambda-{role}-{request_id}"


_logging_configured = False


def _configure_logging() -> None:
    """JSON log lines with secrets masked, as the other processes write them: once per Lambda
    container (elsewhere, e.g. under chalice.test.Client, the host process owns its logging)."""
    global _logging_configured
    if not _logging_configured and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        logs.configure(config.get_settings().log_level)
        _logging_configured = True


def handle_sweep(ctx: context_module.Context) -> dict:
    """Expired leases, jobs and deliveries waiting without a doorbell, due webhook retries (the
    sweep re-rings them), and whether each A1111 instance answers; recorded as the sweeper's
    heartbeat, so GET /health shows when it last ran."""
    report = jobrunner.sweep(ctx)
    reachable = {instance.name: consumers.client_for(ctx, instance).ping(timeout=PING_TIMEOUT)
                 for instance in ctx.instances}
    for name, up in reachable.items():
        if not up:
            log.warning("A1111 instance does not answer", extra={"instance": name})
    report["instances"] = reachable
    ctx.store.heartbeat(SWEEPER_ID, info={"current_jobs": [], "sweep": report}, now=time.time())
    log.info("sweep done", extra=report)
    return report
