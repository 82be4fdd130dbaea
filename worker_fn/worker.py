"""The long-running worker: plays Lambda's part outside AWS by draining the doorbell queue (the
local table, or SQS with QUEUE_BACKEND=sqs: the same calls of the queue port, long polls included).

One runner thread per A1111 instance slot. A runner first leases its slot in the store (so no two
workers, threads or processes ever run two jobs at once on one instance), then runs jobs, each one's
images and outcome written by the runner's finisher thread while it claims the next; when there are
none it waits in the process's idle line (idle_line.py), and one doorbell listener thread wakes
the best placed idle runner for each doorbell. A housekeeping thread writes the heartbeat,
renews the slot leases and sweeps expired job leases. WEBHOOK_DISPATCHER_THREADS dispatcher threads
deliver webhooks from the outbox, apart from the runners, so no receiver can hold up a job. With
SUBMISSIONS_QUEUE_URL set, an intake thread turns queued submissions into jobs (consumers.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from chalicelib import a1111
from chalicelib import consumers
from chalicelib import context as context_module
from chalicelib import instance_health
from chalicelib import jobrunner
from chalicelib import placement
from chalicelib import sqs_batch
from chalicelib import store
from chalicelib import transitions
from chalicelib.queue import base as queue_base
from chalicelib.webhooks import dispatch
from worker_fn import finisher
from worker_fn import idle_line

log = logging.getLogger(__name__)

DOORBELL_WAIT = 1.0  # seconds a receive waits; one that ends empty asks the store instead
DOORBELLS_PER_RECEIVE = 10
INTAKE_WAIT = 5.0  # seconds a receive from the submissions queue waits (an SQS long poll)
SLOT_RETRY = 1.0
HEALTH_WAIT = 0.5  # how often an idle runner asks whether a re-probe of its instance is due


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Runner(threading.Thread):
    """Runs jobs on one slot of one instance, one at a time, and only while the instance answers."""

    def __init__(self, worker: "Worker", instance: a1111.Instance, index: int) -> None:
        super().__init__(name=f"runner-{instance.name}-{index}", daemon=True)
        self.worker = worker
        self.instance = instance
        self.holder = f"{worker.worker_id}/{instance.name}#{index}"
        self.client = a1111.make_client(instance, worker.ctx.settings)
        self.health = instance_health.of(instance, self.client)
        self.current_job: str | None = None
        self.slot: int | None = None
        self.finisher = finisher.Finisher(f"finisher-{instance.name}-{index}")

    def run(self) -> None:
        ctx, stopping = self.worker.ctx, self.worker.stopping
        self.finisher.start()
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
                self.finisher.wait()  # the last job's outcome is written before its slot is given back
                self.release_slot()
        self.finisher.close()

    def release_slot(self) -> None:
        """Give the slot back (idempotent): at the end of the loop, or by `Worker.stop` for a
        runner still stuck in a job, so a restarted worker need not wait for the lease to expire."""
        slot, self.slot = self.slot, None
        if slot is not None:
            ctx = self.worker.ctx
            _guarded(lambda: ctx.store.release_slot(self.instance.name, slot, holder=self.holder))

    def _drain_until_stopped(self) -> None:
        # Placement's health rule, as in the idle line: a dead instance claims nothing while another
        # is healthy; its health state re-probes it with backoff.
        if placement.may_run(self.health.usable(), any_healthy=self.worker.any_healthy()):
            self._run_next_job()  # jobs may have been queued before this runner started
        while self.worker.idle_line.wait_turn(self, every=HEALTH_WAIT, meanwhile=self.health.usable):
            self._run_next_job()

    def _run_next_job(self) -> None:
        ctx = self.worker.ctx
        _guarded(lambda: jobrunner.run_next_job(
            ctx, worker_id=self.worker.worker_id, instance=self.instance, client=self.client,
            on_claim=self._claimed, on_unavailable=self.health.mark_failed, store_later=self.finisher.hand_over))
        self.current_job = None

    def _claimed(self, job_id: str) -> None:
        self.current_job = job_id
        self.worker.idle_line.claimed(self)


class DoorbellListener(threading.Thread):
    """The one receiver of the jobs doorbell queue in this process: each doorbell wakes the best
    placed idle runner. A receive that ends empty asks the store for a queued job, so one that came
    without a doorbell (or whose doorbell another process took) still starts within DOORBELL_WAIT."""

    def __init__(self, worker: "Worker") -> None:
        super().__init__(name="doorbells", daemon=True)
        self.worker = worker

    def run(self) -> None:
        ctx, stopping, line = self.worker.ctx, self.worker.stopping, self.worker.idle_line
        while not stopping.is_set():
            messages = _guarded(lambda: ctx.queue.receive(
                queue_base.JOBS, max_messages=DOORBELLS_PER_RECEIVE, wait_seconds=DOORBELL_WAIT)) or []
            if stopping.is_set():
                return  # undeleted doorbells come back to another worker
            if not messages:
                line.wake_if_queued()
            for _ in messages:
                if not line.wake_best():
                    break
            for message in messages:  # after the wakes: a delete (an SQS call) delays no job
                _guarded(ctx.queue.delete, queue_base.JOBS, message.receipt)


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
            if _guarded(lambda: dispatch.deliver_next(ctx, dispatcher_id=self.dispatcher_id)):
                continue
            # One doorbell wakes one dispatcher, so a burst of events spreads over the threads.
            for message in _guarded(lambda: ctx.queue.receive(
                    queue_base.WEBHOOKS, max_messages=1, wait_seconds=DOORBELL_WAIT)) or []:
                _guarded(ctx.queue.delete, queue_base.WEBHOOKS, message.receipt)


class Intake(threading.Thread):
    """Takes job submissions from the submissions queue (SUBMISSIONS_QUEUE_URL) with the very
    per-record function and processor the Lambda intake runs, then settles the batch as Lambda's
    poller would: handled messages are deleted; failed ones come back after the processor's backoff."""

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
            records = [sqs_batch.record_of_message(message) for message in messages]
            processor = sqs_batch.BatchProcessor(ctx.queue, queue_base.SUBMISSIONS)
            result = processor.process(records, lambda record: consumers.take_submission(
                ctx, record, budget=sqs_batch.Budget()))
            _guarded(processor.settle, records, result)


class Worker:
    """A worker process: runners and the idle line they wait in, the doorbell listener, webhook
    dispatchers, heartbeat, sweeper and a graceful stop."""

    def __init__(self, ctx: context_module.Context, *, worker_id: str | None = None) -> None:
        self.ctx = ctx
        self.worker_id = worker_id or new_worker_id()
        self.stopping = threading.Event()
        self.instance_stats = store.make_instance_stats(ctx.store)
        self.idle_line = idle_line.IdleLine(
            next_job=lambda: _guarded(lambda: self.instance_stats.next_job(now=time.time())),
            any_healthy=self.any_healthy)
        self.runners: list[Runner] = []
        for instance in ctx.instances:
            ctx.store.ensure_slots(instance.name, instance.capacity)
            self.runners += [Runner(self, instance, index) for index in range(instance.capacity)]
        self.doorbells = DoorbellListener(self)
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
        self.doorbells.start()
        for dispatcher in self.dispatchers:
            dispatcher.start()
        if self.intake is not None:
            self.intake.start()
        log.info("worker started", extra={"worker_id": self.worker_id,
                                          "instances": [i.name for i in self.ctx.instances]})

    def stop(self, *, grace: float) -> None:
        """Stop taking jobs; let running ones finish within `grace` seconds, then release them."""
        self.stopping.set()
        self.idle_line.stop()
        deadline = time.monotonic() + grace
        for runner in self.runners:
            runner.join(max(deadline - time.monotonic(), 0))
        for runner in self.runners:
            if runner.is_alive() and runner.current_job is not None:
                self._release(runner)
            if runner.is_alive():
                runner.release_slot()
        self.doorbells.join(max(deadline - time.monotonic(), 0))
        # A delivery still in flight after the grace is retried once its claim runs out.
        for dispatcher in self.dispatchers:
            dispatcher.join(max(deadline - time.monotonic(), 0))
        self._housekeeper.join(timeout=5)
        _guarded(lambda: self.ctx.store.remove_worker(self.worker_id))
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    def _release(self, runner: Runner) -> None:
        job_id = runner.current_job
        change = _guarded(lambda: transitions.release(self.ctx, job_id, worker_id=self.worker_id))
        if change is not None and change.applied:
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


def _guarded(action, *args):
    """Run a store/queue call; a failing store makes the worker wait and retry, never crash."""
    try:
        return action(*args)
    except Exception:  # noqa: BLE001 - the loop must survive anything and say what happened
        log.exception("worker step failed; retrying shortly")
        time.sleep(1.0)
        return None
