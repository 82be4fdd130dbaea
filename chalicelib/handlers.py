"""What the SQS-triggered and scheduled Lambda functions do: a batch of records in, the ids of the
records to retry out (`batchItemFailures`), so one bad message never replays its whole batch.

app.py's `@app.on_sqs_message` / `@app.schedule` functions only call the `on_*` entry points here.
The per-record work is the same use case everywhere: `jobrunner.run_next_job` (which the runners of
`python -m worker_fn` call too), `dispatch.deliver_next` (its dispatchers) and
`intake.submit_message`, whose batch handler `handle_submissions` `python -m worker_fn` calls as is.

A record that cannot be handled now is not left to come back after the queue's long visibility
timeout (six times the function's): its visibility is shortened to a backoff first, so SQS offers
it again soon. Records are doorbells, so retrying one is always harmless.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import threading
import time
import typing

from chalicelib import a1111
from chalicelib import config
from chalicelib import context as context_module
from chalicelib import instance_health
from chalicelib import intake
from chalicelib import jobrunner
from chalicelib import logs
from chalicelib import store
from chalicelib.queue import base as queue_base
from chalicelib.store import instances as store_instances
from chalicelib.webhooks import dispatch

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 5.0  # a record that could not be handled is offered again after this, doubling
RETRY_MAX_SECONDS = 60.0
WEBHOOK_TIME_RESERVE_SECONDS = 1.0  # recording an attempt after the POST
SUBMISSION_TIME_RESERVE_SECONDS = 1.0
PING_TIMEOUT = 2.0
SWEEPER_ID = "lambda-sweeper"


@dataclasses.dataclass(frozen=True)
class Record:
    """One SQS message, from a Lambda event or from the queue port."""

    message_id: str
    body: str
    receipt: str
    receive_count: int


def records_of_event(event) -> list[Record]:
    """The records of a Chalice `SQSEvent` (Lambda's event shape)."""
    records = []
    for record in event:
        raw = record.to_dict()
        records.append(Record(message_id=raw["messageId"], body=record.body, receipt=record.receipt_handle,
                              receive_count=int(raw.get("attributes", {}).get("ApproximateReceiveCount", 1))))
    return records


def record_of_message(message: queue_base.Message) -> Record:
    """A message of the queue port as a record (`python -m worker_fn` plays Lambda's poller)."""
    body = message.raw if message.raw is not None else json.dumps(message.body)
    return Record(message_id=message.id, body=body, receipt=message.receipt, receive_count=message.receive_count)


class Budget:
    """The time an invocation has left (a Lambda context's), or no limit outside Lambda."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline

    @classmethod
    def of_lambda(cls, context) -> "Budget":
        if context is None or not hasattr(context, "get_remaining_time_in_millis"):
            return cls(None)
        return cls(time.monotonic() + context.get_remaining_time_in_millis() / 1000)

    @property
    def limited(self) -> bool:
        return self.deadline is not None

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


@dataclasses.dataclass
class BatchResult:
    """The records to retry; every other record of the batch was handled and may be deleted."""

    failed: list[str] = dataclasses.field(default_factory=list)

    def to_lambda(self) -> dict:
        """Lambda's partial batch response (needs ReportBatchItemFailures on the event source)."""
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failed]}


# --- Entry points for app.py ---------------------------------------------------------------------

def on_job_doorbells(event) -> dict:
    return _entry(event, queue_base.JOBS, lambda ctx, records, budget: handle_job_doorbells(
        ctx, records, budget=budget, worker_id=_invocation_id(event, "worker")))


def on_webhook_doorbells(event) -> dict:
    return _entry(event, queue_base.WEBHOOKS, lambda ctx, records, budget: handle_webhook_doorbells(
        ctx, records, budget=budget, dispatcher_id=_invocation_id(event, "webhooks")))


def on_submissions(event) -> dict:
    return _entry(event, queue_base.SUBMISSIONS, lambda ctx, records, budget: handle_submissions(
        ctx, records, budget=budget))


def on_schedule(event) -> dict:
    _configure_logging()
    return handle_sweep(context_module.get_context())


def _entry(event, queue: str, handle: typing.Callable) -> dict:
    _configure_logging()
    records = records_of_event(event)
    try:
        ctx = context_module.get_context()
    except Exception:  # noqa: BLE001 - without a store nothing can be handled: retry every record
        log.exception("cannot build the context; the whole batch is retried", extra={"queue": queue})
        return BatchResult(failed=[record.message_id for record in records]).to_lambda()
    return handle(ctx, records, Budget.of_lambda(getattr(event, "context", None))).to_lambda()


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


# --- Jobs ----------------------------------------------------------------------------------------

def handle_job_doorbells(ctx: context_module.Context, records: list[Record], *, budget: Budget,
                         worker_id: str) -> BatchResult:
    """One doorbell, at most one job: hold a free A1111 slot (else retry the doorbell later), then
    run the most urgent queued job with the A1111 call capped by the time left."""
    settings = ctx.settings
    result = BatchResult()
    for record in records:
        if budget.remaining() - settings.lambda_time_reserve_seconds < settings.lambda_min_generation_seconds:
            # Backoff, not 0: a function timeout set too short would otherwise spin on its doorbells.
            log.warning("too little time left to start a generation (is the function's timeout shorter "
                        "than LAMBDA_MIN_GENERATION_SECONDS + LAMBDA_TIME_RESERVE_SECONDS?); doorbell retried later",
                        extra={"worker_id": worker_id, "message_id": record.message_id})
            _retry(ctx, queue_base.JOBS, record, result, delay=backoff(record.receive_count))
            continue
        try:
            with held_slot(ctx, holder=worker_id, head=_head_job_if_it_matters(ctx)) as instance:
                if instance is None:
                    log.info("every A1111 slot is busy; doorbell retried later",
                             extra={"worker_id": worker_id, "message_id": record.message_id})
                    _retry(ctx, queue_base.JOBS, record, result, delay=backoff(record.receive_count))
                    continue
                time_limit = None
                if budget.limited:
                    time_limit = budget.remaining() - settings.lambda_time_reserve_seconds
                client = client_for(ctx, instance)
                ran = jobrunner.run_next_job(ctx, worker_id=worker_id, instance=instance, client=client,
                                             time_limit=time_limit,
                                             on_unavailable=instance_health.of(instance, client).mark_failed)
            if ran is None and ctx.store.stale_queued(older_than=0, now=time.time(), limit=1):
                # Jobs wait that this instance cannot run (their instance_labels): hand the doorbell
                # back, so that an invocation holding another instance's slot takes it.
                log.info("no queued job fits this instance; doorbell retried later",
                         extra={"worker_id": worker_id, "instance": instance.name})
                _retry(ctx, queue_base.JOBS, record, result, delay=backoff(record.receive_count))
        except Exception:  # noqa: BLE001 - one record's failure must not fail the batch
            log.exception("job doorbell failed; retried later", extra={"message_id": record.message_id})
            _retry(ctx, queue_base.JOBS, record, result, delay=backoff(record.receive_count))
    return result


def _head_job_if_it_matters(ctx: context_module.Context) -> store_instances.NextJob | None:
    """The most urgent queued job, when instances differ in labels or loaded model (else no query)."""
    models = [instance_health.of(i, client_for(ctx, i)).snapshot().loaded_model for i in ctx.instances]
    if not store_instances.choice_matters([i.labels for i in ctx.instances], models):
        return None
    return store.make_instance_stats(ctx.store).next_job(now=time.time())


@contextlib.contextmanager
def held_slot(ctx: context_module.Context, *, holder: str,
              head: store_instances.NextJob | None = None) -> typing.Iterator[a1111.Instance | None]:
    """A free slot of some A1111 instance, held (and its lease renewed) for the block; None if every
    slot is busy (healthy instances only, unless all are down). The Lambda counterpart of a worker
    runner's slot: one job per slot, always. Instances that fit the `head` job are tried first: those
    with its labels, then of those the ones with its checkpoint loaded (as this container last saw)."""
    settings = ctx.settings
    instances = list(ctx.instances)
    random.shuffle(instances)  # spread invocations over equally free instances
    # An instance that is down is skipped until its backoff has passed, so no job's attempt is
    # burnt on it while another is healthy; when all are down, jobs are tried (and end by the retry rules).
    usable = [i for i in instances if instance_health.of(i, client_for(ctx, i)).usable()]
    candidates = usable or instances
    if head is not None:
        candidates.sort(key=lambda i: (not i.has_labels(head.labels), not store_instances.same_model(
            head.model, instance_health.of(i, client_for(ctx, i)).snapshot().loaded_model)))
    for instance in candidates:
        _ensure_slots(ctx, instance)
        slot_holder = f"{holder}/{instance.name}"
        slot = ctx.store.acquire_slot(instance.name, holder=slot_holder,
                                      lease_seconds=settings.job_lease_seconds, now=time.time())
        if slot is not None:
            break
    else:
        yield None
        return
    renewer = SlotRenewer(ctx, holder_prefix=f"{holder}/")
    renewer.start()
    try:
        yield instance
    finally:
        renewer.stop()
        ctx.store.release_slot(instance.name, slot, holder=slot_holder)


class SlotRenewer(threading.Thread):
    """Renews the held slot's lease every HEARTBEAT_INTERVAL while the job runs (a worker's
    housekeeper does this for its runners)."""

    def __init__(self, ctx: context_module.Context, *, holder_prefix: str) -> None:
        super().__init__(name="slot-renewer", daemon=True)
        self.ctx = ctx
        self.holder_prefix = holder_prefix
        self._stop_event = threading.Event()

    def run(self) -> None:
        settings = self.ctx.settings
        while not self._stop_event.wait(settings.heartbeat_interval):
            try:
                self.ctx.store.renew_slots(self.holder_prefix, lease_seconds=settings.job_lease_seconds,
                                           now=time.time())
            except Exception:  # noqa: BLE001 - the next tick tries again; the lease outlives a few misses
                log.warning("slot lease renewal failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


_ensured: set[tuple[str, int]] = set()
_clients: dict[tuple[str, str], a1111.A1111Client] = {}


def _ensure_slots(ctx: context_module.Context, instance: a1111.Instance) -> None:
    """Create the instance's slot rows once per process (and database)."""
    key = (f"{ctx.settings.database_url}|{instance.name}", instance.capacity)
    if key not in _ensured:
        ctx.store.ensure_slots(instance.name, instance.capacity)
        _ensured.add(key)


def client_for(ctx: context_module.Context, instance: a1111.Instance) -> a1111.A1111Client:
    """One client per instance and process, so warm invocations reuse its connections."""
    settings = ctx.settings
    key = (instance.url, settings.a1111_auth)
    if key not in _clients:
        _clients[key] = a1111.A1111Client(instance.url, auth=settings.a1111_auth,
                                          connect_timeout=settings.a1111_connect_timeout,
                                          timeout=settings.a1111_timeout)
    return _clients[key]


# --- Webhooks ------------------------------------------------------------------------------------

def handle_webhook_doorbells(ctx: context_module.Context, records: list[Record], *, budget: Budget,
                             dispatcher_id: str) -> BatchResult:
    """Deliver due webhooks while any are due and an attempt still fits in the time left."""
    needed = ctx.settings.webhook_timeout + WEBHOOK_TIME_RESERVE_SECONDS
    result = BatchResult()
    for record in records:
        try:
            while budget.remaining() > needed:
                if not dispatch.deliver_next(ctx, dispatcher_id=dispatcher_id):
                    break
            else:  # out of time with deliveries perhaps still due: another invocation goes on
                _retry(ctx, queue_base.WEBHOOKS, record, result, delay=0)
        except Exception:  # noqa: BLE001 - one record's failure must not fail the batch
            log.exception("webhook doorbell failed; retried later", extra={"message_id": record.message_id})
            _retry(ctx, queue_base.WEBHOOKS, record, result, delay=backoff(record.receive_count))
    return result


# --- Submissions ---------------------------------------------------------------------------------

def handle_submissions(ctx: context_module.Context, records: list[Record], *,
                       budget: Budget | None = None) -> BatchResult:
    """Each record becomes a job, a duplicate of one, or a recorded rejection (all consumed); only
    a store outage keeps a record for a retry."""
    budget = budget or Budget()
    result = BatchResult()
    for record in records:
        if budget.remaining() < SUBMISSION_TIME_RESERVE_SECONDS:
            _retry(ctx, queue_base.SUBMISSIONS, record, result, delay=0)
            continue
        try:
            intake.submit_message(ctx, message_id=record.message_id, text=record.body)
        except Exception:  # noqa: BLE001 - one record's failure must not fail the batch
            log.exception("submission not stored; retried later", extra={"message_id": record.message_id})
            _retry(ctx, queue_base.SUBMISSIONS, record, result, delay=backoff(record.receive_count))
    return result


# --- Sweep ---------------------------------------------------------------------------------------

def handle_sweep(ctx: context_module.Context) -> dict:
    """Expired leases, jobs and deliveries waiting without a doorbell, due webhook retries (the
    sweep re-rings them), and whether each A1111 instance answers; recorded as the sweeper's
    heartbeat, so GET /health shows when it last ran."""
    report = jobrunner.sweep(ctx)
    reachable = {instance.name: client_for(ctx, instance).ping(timeout=PING_TIMEOUT) for instance in ctx.instances}
    for name, up in reachable.items():
        if not up:
            log.warning("A1111 instance does not answer", extra={"instance": name})
    report["instances"] = reachable
    ctx.store.heartbeat(SWEEPER_ID, info={"current_jobs": [], "sweep": report}, now=time.time())
    log.info("sweep done", extra=report)
    return report


# --- Retrying a record ---------------------------------------------------------------------------

def backoff(receive_count: int) -> float:
    """5 s, 10 s, 20 s … up to a minute, ±20 % so that retried doorbells do not arrive together."""
    delay = min(RETRY_BASE_SECONDS * 2 ** max(receive_count - 1, 0), RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


def _retry(ctx: context_module.Context, queue: str, record: Record, result: BatchResult, *,
           delay: float) -> None:
    """Report the record as failed, and have SQS offer it again after `delay` rather than after
    the queue's visibility timeout. If that call fails, the visibility timeout applies: still safe."""
    result.failed.append(record.message_id)
    try:
        ctx.queue.change_visibility(queue, record.receipt, timeout=delay)
    except Exception:  # noqa: BLE001 - best effort, see above
        log.warning("could not shorten a retried message's visibility", exc_info=True,
                    extra={"message_id": record.message_id})


def settle(ctx: context_module.Context, queue: str, records: list[Record], result: BatchResult) -> None:
    """What Lambda's poller does with a batch response: delete every record not reported failed."""
    failed = set(result.failed)
    for record in records:
        if record.message_id not in failed:
            ctx.queue.delete(queue, record.receipt)
