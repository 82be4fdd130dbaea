"""What one record of each queue does, in every runtime: a job doorbell, a webhook doorbell, a
submission. Lambda's SQS functions (handlers.py) and `python -m worker_fn` run these through
`sqs_batch.BatchProcessor`, which owns the loop, the partial failures and the retries; each function
returns when its record is done and raises `sqs_batch.RetryLater` when it should come back later.

A job doorbell here holds a free A1111 slot for the job, as a worker's runner does for good: the
slots are tried in placement's order (placement.py), and their leases are renewed while the job runs.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import typing

from chalicelib import a1111
from chalicelib import context as context_module
from chalicelib import instance_health
from chalicelib import intake
from chalicelib import jobrunner
from chalicelib import placement
from chalicelib import sqs_batch
from chalicelib import store
from chalicelib.webhooks import dispatch

log = logging.getLogger(__name__)

WEBHOOK_TIME_RESERVE_SECONDS = 1.0  # recording an attempt after the POST
SUBMISSION_TIME_RESERVE_SECONDS = 1.0


# --- Jobs ----------------------------------------------------------------------------------------

def run_job_doorbell(ctx: context_module.Context, record: sqs_batch.Record, *, budget: sqs_batch.Budget,
                     worker_id: str) -> None:
    """One doorbell, at most one job: hold a free A1111 slot (else retry the doorbell later), then
    run the most urgent queued job with the A1111 call capped by the time left."""
    settings = ctx.settings
    if budget.remaining() - settings.lambda_time_reserve_seconds < settings.lambda_min_generation_seconds:
        # A backoff, not 0: a function timeout set too short would otherwise spin on its doorbells.
        log.warning("too little time left to start a generation (is the function's timeout shorter "
                    "than LAMBDA_MIN_GENERATION_SECONDS + LAMBDA_TIME_RESERVE_SECONDS?)",
                    extra={"worker_id": worker_id, "message_id": record.message_id})
        raise sqs_batch.RetryLater("too little time left to start a generation")
    with held_slot(ctx, holder=worker_id) as instance:
        if instance is None:
            raise sqs_batch.RetryLater("every A1111 slot is busy")
        time_limit = budget.remaining() - settings.lambda_time_reserve_seconds if budget.limited else None
        client = client_for(ctx, instance)
        ran = jobrunner.run_next_job(ctx, worker_id=worker_id, instance=instance, client=client,
                                     time_limit=time_limit, on_unavailable=health_of(ctx, instance).mark_failed)
    if ran is None and ctx.store.stale_queued(older_than=0, now=time.time(), limit=1):
        # Jobs wait that this instance cannot run (their instance_labels): hand the doorbell back,
        # so that an invocation holding another instance's slot takes it.
        raise sqs_batch.RetryLater(f"no queued job fits {instance.name}")


@contextlib.contextmanager
def held_slot(ctx: context_module.Context, *, holder: str) -> typing.Iterator[a1111.Instance | None]:
    """A free slot of some A1111 instance, held (and its lease renewed) for the block; None if every
    slot is busy. The instances are tried in placement's order."""
    settings = ctx.settings
    for instance in placement_order(ctx):
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
        _released_at[instance.name] = time.monotonic()


def placement_order(ctx: context_module.Context) -> list[a1111.Instance]:
    """The instances in the order to try their slots. Each one's health is probed when a probe is
    due; "idle since" is when this process last released one of its slots (the store does not
    record it), and an instance this process never used counts as idle longest, in the order the
    configuration lists them: a stable answer, not a random one."""
    candidates = []
    for instance in ctx.instances:
        health = health_of(ctx, instance)
        health.usable()
        snapshot = health.snapshot()
        candidates.append(placement.Candidate(
            member=instance, instance=instance, idle_since=_released_at.get(instance.name, float("-inf")),
            healthy=snapshot.healthy, loaded_model=snapshot.loaded_model))
    head = None
    if placement.head_matters(placement.usable(candidates)):
        head = store.make_instance_stats(ctx.store).next_job(now=time.time())
    return [candidate.member for candidate in placement.order(candidates, head=head)]


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
_released_at: dict[str, float] = {}  # instance name → time.monotonic() of this process's last release


def _ensure_slots(ctx: context_module.Context, instance: a1111.Instance) -> None:
    """Create the instance's slot rows once per process (and database)."""
    key = (f"{ctx.settings.database_url}|{instance.name}", instance.capacity)
    if key not in _ensured:
        ctx.store.ensure_slots(instance.name, instance.capacity)
        _ensured.add(key)


def client_for(ctx: context_module.Context, instance: a1111.Instance) -> a1111.A1111Client:
    """One client per instance and process, so warm invocations reuse its connections."""
    key = (instance.url, ctx.settings.a1111_auth)
    if key not in _clients:
        _clients[key] = a1111.make_client(instance, ctx.settings)
    return _clients[key]


def health_of(ctx: context_module.Context, instance: a1111.Instance) -> instance_health.InstanceHealth:
    """The process's health state of `instance`."""
    return instance_health.of(instance, client_for(ctx, instance))


# --- Webhooks ------------------------------------------------------------------------------------

def deliver_webhook_doorbell(ctx: context_module.Context, record: sqs_batch.Record, *,
                             budget: sqs_batch.Budget, dispatcher_id: str) -> None:
    """Deliver due webhooks while any are due and an attempt still fits in the time left."""
    needed = ctx.settings.webhook_timeout + WEBHOOK_TIME_RESERVE_SECONDS
    while budget.remaining() > needed:
        if not dispatch.deliver_next(ctx, dispatcher_id=dispatcher_id):
            return
    raise sqs_batch.RetryLater("out of time with deliveries perhaps still due", delay=0)


# --- Submissions ---------------------------------------------------------------------------------

def take_submission(ctx: context_module.Context, record: sqs_batch.Record, *, budget: sqs_batch.Budget) -> None:
    """The record becomes a job, a duplicate of one, or a recorded rejection (all done); only a
    store outage (raised) keeps it for a retry."""
    if budget.remaining() < SUBMISSION_TIME_RESERVE_SECONDS:
        raise sqs_batch.RetryLater("no time left for a submission", delay=0)
    intake.submit_message(ctx, message_id=record.message_id, text=record.body)
