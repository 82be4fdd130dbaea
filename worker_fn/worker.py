"""The long-running worker: plays Lambda's part outside AWS by draining the doorbell queue (the
local table, or SQS with QUEUE_BACKEND=sqs: the same calls of the queue port, long polls included).

One runner thread per A1111 instance slot. A runner first leases its slot in the store (so no two
workers, threads or processes ever run two jobs at once on one instance), then drains queued jobs
and waits on the doorbell queue when there are none. A housekeeping thread writes the heartbeat,
renews the slot leases and sweeps expired job leases. WEBHOOK_DISPATCHER_THREADS dispatcher threads
deliver webhooks from the outbox, apart from the runners, so no receiver can hold up a job. With
SUBMISSIONS_QUEUE_URL set, an intake thread turns queued submissions into jobs (handlers.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from chalicelib import a1111
from chalicelib import context as context_module
from chalicelib import handlers
from chalicelib import instance_health
from chalicelib import jobrunner
from chalicelib import store
from chalicelib import webhooks
from chalicelib.queue import base as queue_base
from chalicelib.store import instances as store_instances

log = logging.getLogger(__name__)

DOORBELL_WAIT = 1.0
INTAKE_WAIT = 5.0  # seconds a receive from the submissions queue waits (an SQS long poll)
SLOT_RETRY = 1.0
HEALTH_WAIT = 0.5  # how often a runner of an unhealthy instance asks whether a re-probe is due
DEFER_WAIT = 0.05
MODEL_DEFER_SECONDS = 2.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Runner(threading.Thread):
    """Runs jobs on one slot of one instance, one at a time, and only while the instance answers."""

    def __init__(self, worker: "Worker", instance: a1111.Instance, index: int) -> None:
        super().__init__(name=f"runner-{instance.name}-{index}", daemon=True)
        self.worker = worker
        self.instance = instance
        self.holder = f"{worker.worker_id}/{instance.name}#{index}"
        self.client = a1111.A1111Client(instance.url, auth=worker.ctx.settings.a1111_auth,
                                        connect_timeout=worker.ctx.settings.a1111_connect_timeout,
                                        timeout=worker.ctx.settings.a1111_timeout)
        self.health = instance_health.of(instance, self.client)
        self.current_job: str | None = None
        self.slot: int | None = None

    def run(self) -> None:
        ctx, stopping = self.worker.ctx, self.worker.stopping
        while not stopping.is_set():
            slot = _guarded(lambda: ctx.store.acquire_slot(
                self.instance.name, holder=self.holder,
                lease_seconds=ctx.settings.job_lease_seconds, now=time.time()))
            if slot is None:
                stopping.wait(SLOT_RETRY)
                continue
            self.slot = slot
            try:
                self._drain_until_stopped()
            finally:
                self.release_slot()

    def release_slot(self) -> None:
        """Give the slot back (idempotent): at the end of the loop, or by `Worker.stop` for a
        runner still stuck in a job, so a restarted worker need not wait for the lease to expire."""
        slot, self.slot = self.slot, None
        if slot is not None:
            ctx = self.worker.ctx
            _guarded(lambda: ctx.store.release_slot(self.instance.name, slot, holder=self.holder))

    def _drain_until_stopped(self) -> None:
        ctx, stopping = self.worker.ctx, self.worker.stopping
        while not stopping.is_set():
            if not self.health.usable() and self.worker.any_healthy():
                # A dead instance claims nothing while another is healthy, so no job's attempts are
                # burnt here; the health state re-probes it with backoff. When every instance is
                # down, jobs are still tried, so they end in `error` by the retry rules, not wait forever.
                stopping.wait(HEALTH_WAIT)
                continue
            if self._leave_to_another():
                stopping.wait(DEFER_WAIT)
                continue
            job_id = _guarded(lambda: jobrunner.run_next_job(
                ctx, worker_id=self.worker.worker_id, instance=self.instance, client=self.client,
                on_claim=self._set_current, on_unavailable=self.health.mark_failed))
            self.current_job = None
            if job_id is not None:
                continue
            # One doorbell wakes one runner, so jobs spread over idle instances.
            for message in _guarded(lambda: ctx.queue.receive(
                    queue_base.JOBS, max_messages=1, wait_seconds=DOORBELL_WAIT)) or []:
                _guarded(lambda: ctx.queue.delete(queue_base.JOBS, message.receipt))

    def _leave_to_another(self) -> bool:
        """Model-aware routing: leave the next job to an idle runner of this worker whose instance
        has the checkpoint it names loaded (a model switch costs seconds), for at most
        MODEL_DEFER_SECONDS per job so that nothing waits on a runner that does not come."""
        mine = self.health.snapshot().loaded_model
        if all(store_instances.same_model(runner.health.snapshot().loaded_model, mine)
               for runner in self.worker.runners):
            return False  # every instance has the same model: nothing to prefer (and no query)
        head = _guarded(lambda: self.worker.instance_stats.next_job(now=time.time()))
        if head is None or head[1] is None:
            return False
        job_id, model = head
        if store_instances.same_model(model, mine):
            return False
        if not any(runner.idle_with(model) for runner in self.worker.runners if runner is not self):
            return False
        first_seen = self.worker.deferred.setdefault(job_id, time.monotonic())
        if len(self.worker.deferred) > 1000:
            self.worker.deferred.clear()
        return time.monotonic() - first_seen < MODEL_DEFER_SECONDS

    def idle_with(self, model: str) -> bool:
        """Idle, healthy, holding its slot, and its instance has `model` loaded."""
        snapshot = self.health.snapshot()
        return (self.current_job is None and self.slot is not None and bool(snapshot.healthy)
                and store_instances.same_model(model, snapshot.loaded_model))

    def _set_current(self, job_id: str) -> None:
        self.current_job = job_id


class Dispatcher(threading.Thread):
    """Delivers due webhooks one at a time; sleeps on the webhooks doorbell (and polls the store
    every DOORBELL_WAIT seconds, so retries coming due and lost doorbells need no message)."""

    def __init__(self, worker: "Worker", index: int) -> None:
        super().__init__(name=f"webhooks-{index}", daemon=True)
        self.worker = worker
        self.dispatcher_id = f"{worker.worker_id}/webhooks#{index}"

    def run(self) -> None:
        ctx, stopping = self.worker.ctx, self.worker.stopping
        while not stopping.is_set():
            if _guarded(lambda: webhooks.deliver_next(ctx, dispatcher_id=self.dispatcher_id)):
                continue
            # One doorbell wakes one dispatcher, so a burst of events spreads over the threads.
            for message in _guarded(lambda: ctx.queue.receive(
                    queue_base.WEBHOOKS, max_messages=1, wait_seconds=DOORBELL_WAIT)) or []:
                _guarded(lambda: ctx.queue.delete(queue_base.WEBHOOKS, message.receipt))


class Intake(threading.Thread):
    """Takes job submissions from the submissions queue (SUBMISSIONS_QUEUE_URL) with the very
    handler the Lambda intake runs, then settles the batch as Lambda's poller would: handled
    messages are deleted; failed ones come back after the backoff the handler set."""

    def __init__(self, worker: "Worker") -> None:
        super().__init__(name="intake", daemon=True)
        self.worker = worker

    def run(self) -> None:
        ctx, stopping = self.worker.ctx, self.worker.stopping
        while not stopping.is_set():
            messages = _guarded(lambda: ctx.queue.receive(queue_base.SUBMISSIONS, max_messages=10,
                                                          wait_seconds=INTAKE_WAIT))
            if not messages:
                continue
            records = [handlers.record_of_message(message) for message in messages]
            result = _guarded(lambda: handlers.handle_submissions(ctx, records))
            if result is not None:
                _guarded(lambda: handlers.settle(ctx, queue_base.SUBMISSIONS, records, result))


class Worker:
    """A worker process: runners, webhook dispatchers, heartbeat, sweeper and a graceful stop."""

    def __init__(self, ctx: context_module.Context, *, worker_id: str | None = None) -> None:
        self.ctx = ctx
        self.worker_id = worker_id or new_worker_id()
        self.stopping = threading.Event()
        self.instance_stats = store.make_instance_stats(ctx.store)
        self.deferred: dict[str, float] = {}  # job id → when a runner first left it to another
        self.runners: list[Runner] = []
        for instance in ctx.instances:
            ctx.store.ensure_slots(instance.name, instance.capacity)
            self.runners += [Runner(self, instance, index) for index in range(instance.capacity)]
        self.dispatchers = [Dispatcher(self, index) for index in range(ctx.settings.webhook_dispatcher_threads)]
        self.intake = Intake(self) if ctx.settings.submissions_queue_url else None
        self._housekeeper = threading.Thread(target=self._housekeep, name="housekeeper", daemon=True)

    def any_healthy(self) -> bool:
        """Whether some instance answered its last probe (as this process sees them)."""
        return any(runner.health.snapshot().healthy for runner in self.runners)

    def start(self) -> None:
        self._heartbeat()
        self._housekeeper.start()
        for runner in self.runners:
            runner.start()
        for dispatcher in self.dispatchers:
            dispatcher.start()
        if self.intake is not None:
            self.intake.start()
        log.info("worker started", extra={"worker_id": self.worker_id,
                                          "instances": [i.name for i in self.ctx.instances]})

    def stop(self, *, grace: float) -> None:
        """Stop taking jobs; let running ones finish within `grace` seconds, then release them."""
        self.stopping.set()
        deadline = time.monotonic() + grace
        for runner in self.runners:
            runner.join(max(deadline - time.monotonic(), 0))
        for runner in self.runners:
            if runner.is_alive() and runner.current_job is not None:
                self._release(runner)
            if runner.is_alive():
                runner.release_slot()
        # A delivery still in flight after the grace is retried once its claim runs out.
        for dispatcher in self.dispatchers:
            dispatcher.join(max(deadline - time.monotonic(), 0))
        self._housekeeper.join(timeout=5)
        _guarded(lambda: self.ctx.store.remove_worker(self.worker_id))
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    def _release(self, runner: Runner) -> None:
        job_id = runner.current_job
        released = _guarded(lambda: self.ctx.store.release(job_id, worker_id=self.worker_id,
                                                           now=time.time()))
        if released:
            _guarded(lambda: self.ctx.queue.send(queue_base.JOBS, {"job_id": job_id}))
            try:
                runner.client.interrupt()
            except Exception:  # noqa: BLE001 - best effort: A1111 may be the reason we stop
                pass
            log.warning("job released to the queue at shutdown", extra={"job_id": job_id,
                                                                       "worker_id": self.worker_id})

    def _housekeep(self) -> None:
        settings = self.ctx.settings
        next_sweep = 0.0
        while not self.stopping.wait(min(settings.heartbeat_interval, settings.sweep_interval)):
            self._heartbeat()
            if time.monotonic() >= next_sweep:
                _guarded(lambda: jobrunner.sweep(self.ctx))
                next_sweep = time.monotonic() + settings.sweep_interval

    def _heartbeat(self) -> None:
        settings = self.ctx.settings
        now = time.time()
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "instances": [i.name for i in self.ctx.instances],
            "current_jobs": [r.current_job for r in self.runners if r.current_job],
        }
        _guarded(lambda: self.ctx.store.heartbeat(self.worker_id, info=info, now=now))
        _guarded(lambda: self.ctx.store.renew_slots(f"{self.worker_id}/",
                                                    lease_seconds=settings.job_lease_seconds, now=now))


def _guarded(action):
    """Run a store/queue call; a failing store makes the worker wait and retry, never crash."""
    try:
        return action()
    except Exception:  # noqa: BLE001 - the loop must survive anything and say what happened
        log.exception("worker step failed; retrying shortly")
        time.sleep(1.0)
        return None
