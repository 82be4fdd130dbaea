"""Worker use cases: run the next job on an A1111 instance, and sweep what crashed workers left.

The same functions serve `python -m worker_fn` and the SQS-triggered Lambda handlers. Every
state change goes through `transitions`, which rings the doorbells it calls for; no webhook
receiver can slow or fail a job (its delivery waits in the outbox).
"""
from __future__ import annotations

import binascii
import functools
import json
import logging
import threading
import time

from chalicelib import a1111
from chalicelib import backoff
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import request_models
from chalicelib import retention
from chalicelib import transitions
from chalicelib.queue import base as queue_base
from chalicelib.store import base as store_base
from chalicelib.webhooks import doorbell

log = logging.getLogger(__name__)

DEFAULT_STEPS = request_models.StableDiffusionProcessingTxt2Img.model_fields["steps"].default  # what A1111 runs

MAX_RETRY_DELAY = 300.0
RETRY_JITTER = 0.2
STALE_QUEUED_SECONDS = 30.0
STALE_RERING_LIMIT = 10
PROGRESS_POLL_TIMEOUT = 5.0
STALL_INTERRUPT_TIMEOUT = 2.0
TIMED_OUT_FRACTION = 0.98  # a call that fails after this share of its time limit ran out of time


def run_next_job(ctx: context_module.Context, *, worker_id: str, instance: a1111.Instance,
                 client: a1111.A1111Client, on_claim=None, on_unavailable=None,
                 time_limit: float | None = None, store_later=None) -> str | None:
    """Claim the most urgent queued job `instance` can run (its labels include the job's
    `instance_labels`) and run it to an outcome. Returns its id, or None if idle.

    The caller must hold a slot of `instance`, so the instance never runs two of our jobs at once.
    `time_limit` (a Lambda invocation's remaining time, less a reserve) caps the A1111 call, so the
    outcome is always recorded before the invocation ends; a generation cut off by it ends the job
    in `error` at once (it would be cut off again on every attempt). `on_unavailable(message)` hears
    that the instance failed the call, so the caller stops claiming for it until it answers again.
    `store_later(write)`, if given, takes the writing of a generated job's images and outcome, so
    the instance may start its next job meanwhile (the worker's finisher); without it they are
    written before this returns (Lambda: its invocation ends with the return).
    """
    settings = ctx.settings
    timeout = settings.a1111_timeout if time_limit is None else min(settings.a1111_timeout, time_limit)
    job = transitions.claim_next(ctx, worker_id=worker_id, instance=instance.name, labels=instance.labels).job
    if job is None:
        return None
    if on_claim is not None:
        on_claim(job.id)
    log.info("job claimed", extra={"job_id": job.id, "worker_id": worker_id, "attempt": job.attempts})
    if job.cancel_requested:
        transitions.finish_cancelled(ctx, job.id, worker_id=worker_id)
        return job.id
    tracker = ProgressTracker(ctx, job=job, worker_id=worker_id, client=client)
    tracker.start()
    started = time.monotonic()
    try:
        payload = dict(job.request, force_task_id=job.id)
        response = _generate(client, job.kind, payload, timeout=timeout, tracker=tracker)
    except A1111Stalled as exc:
        # The outcome first: the tracker may still be trying to interrupt the stalled instance, and
        # waiting for it could let the lease run out, so the sweep would record a crash instead.
        _end_unavailable(ctx, job, worker_id, exc, cancelled=tracker.cancel_sent)
        tracker.stop()
        client.abandon_calls()
        if on_unavailable is not None:
            on_unavailable(exc.message)
    except errors.A1111Rejected as exc:
        tracker.stop()
        _fail(ctx, job, worker_id, exc.code, exc.message)
    except errors.A1111Failed as exc:
        tracker.stop()
        _end_failed(ctx, job, worker_id, exc, cancelled=tracker.cancel_sent)
    except errors.A1111OutOfMemory as exc:
        tracker.stop()
        if _end_out_of_memory(ctx, job, worker_id, exc, instance=instance, cancelled=tracker.cancel_sent) \
                and on_unavailable is not None:
            on_unavailable(exc.message)  # placement sends the retry to another instance meanwhile
    except errors.A1111Unavailable as exc:
        tracker.stop()
        out_of_time = (timeout < settings.a1111_timeout and not tracker.cancel_sent
                       and time.monotonic() - started >= timeout * TIMED_OUT_FRACTION)
        if out_of_time:
            _end_out_of_time(ctx, job, worker_id, timeout=timeout)
        else:
            _end_unavailable(ctx, job, worker_id, exc, cancelled=tracker.cancel_sent)
        problem = None if out_of_time else exc.message
        if exc.status is None:  # no answer: the generation may still be running on A1111
            wait = settings.a1111_settle_seconds
            if time_limit is not None:  # under Lambda, within the reserve kept after the call
                wait = min(wait, settings.lambda_time_reserve_seconds / 2)
            if not settle(client, wait=wait, interval=min(settings.progress_interval, 0.5)):
                problem = (f"A1111 at {instance.name} did not report idle within {wait:g} s of an "
                           "interrupt after a generation call that ended without an answer")
        if problem is not None and on_unavailable is not None:
            on_unavailable(problem)
    else:
        tracker.stop()
        write = functools.partial(_end_generated, ctx, job, worker_id, response, cancelled=tracker.cancel_sent,
                                  progress=tracker.final_progress(),
                                  finished_iterations=tracker.finished_iterations)
        if store_later is None:
            write()
        else:
            store_later(write)
    return job.id


class A1111Stalled(errors.A1111Unavailable):
    """The instance stopped answering progress polls for A1111_STALL_SECONDS: the run was abandoned
    (the generation call is left to its timeout on a thread of its own)."""


def _generate(client: a1111.A1111Client, kind: str, payload: dict, *, timeout: float,
              tracker: "ProgressTracker") -> dict:
    """The generation call, waited for until it answers or the tracker finds A1111 stalled."""
    future = client.submit_generate(kind, payload, timeout=timeout)
    future.add_done_callback(lambda _future: tracker.wake.set())
    tracker.wake.wait()
    if future.done():
        return future.result()
    raise A1111Stalled(tracker.stall_message)


def _end_generated(ctx: context_module.Context, job: store_base.Job, worker_id: str, response: dict,
                   *, cancelled: bool, progress: dict, finished_iterations: int) -> None:
    try:
        images = _decode_images(response)
    except (binascii.Error, TypeError, ValueError):
        _fail(ctx, job, worker_id, "a1111_bad_response", "A1111 returned images that are not base64")
        return
    info = response.get("info", "")
    result = {
        "parameters": response.get("parameters") or {},
        "info": info if isinstance(info, str) else json.dumps(info),
    }
    if cancelled:
        # A1111 answers an interrupt with the iteration it cut short decoded from the step reached,
        # unmarked: keep only the images of the iterations its progress showed finished.
        batch_size = job.request.get("batch_size") or 1
        kept = images[:finished_iterations * batch_size]
        result["interrupted"] = {"iterations_finished": finished_iterations, "images_kept": len(kept),
                            "images_discarded": len(images) - len(kept)}
        images = kept
    ctx.images.put(job.id, job.attempts, images)
    if cancelled:
        change = transitions.finish_cancelled(ctx, job.id, worker_id=worker_id, result=result,
                                              image_count=len(images))
    else:
        change = transitions.complete(ctx, job.id, worker_id=worker_id, result=result,
                                      image_count=len(images), progress=progress)
    if not change.applied:
        log.warning("job finished after its lease was lost; result dropped",
                    extra={"job_id": job.id, "worker_id": worker_id})
    else:
        log.info("job %s", change.status,
                 extra={"job_id": job.id, "worker_id": worker_id, "images": len(images)})


def _decode_images(response: dict) -> list[bytes]:
    """A1111's base64 images as bytes. Takes them out of `response` and drops each string once it is
    decoded, so a batch is never held in full as base64 and as bytes at once."""
    encoded = response.pop("images", None) or []
    if not isinstance(encoded, list):
        raise TypeError(f"images is a {type(encoded).__name__}, not a list")
    images = []
    for n, item in enumerate(encoded):
        images.append(binascii.a2b_base64(item, strict_mode=True))  # reads a str in place, no ASCII copy
        encoded[n] = None
    return images


def _end_failed(ctx: context_module.Context, job: store_base.Job, worker_id: str, exc: errors.A1111Failed,
                *, cancelled: bool) -> None:
    """A1111 crashed on this request: it would crash on every attempt, so the job ends now."""
    if cancelled:
        transitions.finish_cancelled(ctx, job.id, worker_id=worker_id)
        return
    _fail(ctx, job, worker_id, exc.code, exc.message)


def _end_out_of_memory(ctx: context_module.Context, job: store_base.Job, worker_id: str,
                       exc: errors.A1111OutOfMemory, *, instance: a1111.Instance, cancelled: bool) -> bool:
    """Retry once, on another instance that may run the job, else end it. True if retried."""
    if cancelled:
        transitions.finish_cancelled(ctx, job.id, worker_id=worker_id)
        return False
    labels = job.options.get("instance_labels") or []
    others = [other for other in ctx.instances if other.name != instance.name and other.has_labels(labels)]
    earlier = [run for run in ctx.store.list_runs(job.id) if (run.detail or "").startswith(exc.code)]
    if not others or earlier or job.attempts >= ctx.settings.job_max_attempts:
        why = "no other instance may run it" if not others else "it ran out of memory on another one too" \
            if earlier else "no attempts left"
        _fail(ctx, job, worker_id, exc.code, f"{exc.message} (not retried: {why})")
        return False
    return _retry(ctx, job, worker_id, exc)


def _end_unavailable(ctx: context_module.Context, job: store_base.Job, worker_id: str,
                     exc: errors.A1111Error, *, cancelled: bool) -> None:
    settings = ctx.settings
    if cancelled:
        transitions.finish_cancelled(ctx, job.id, worker_id=worker_id)
        return
    if job.attempts >= settings.job_max_attempts:
        _fail(ctx, job, worker_id, exc.code,
              f"{exc.message} (attempt {job.attempts} of {settings.job_max_attempts}; no attempts left)")
        return
    _retry(ctx, job, worker_id, exc)


def _retry(ctx: context_module.Context, job: store_base.Job, worker_id: str, exc: errors.A1111Error) -> bool:
    """Requeue after a backoff; the run keeps the error's code and message (`code: message`)."""
    settings = ctx.settings
    delay = backoff.delay(job.attempts, first=settings.job_retry_base_seconds, cap=MAX_RETRY_DELAY,
                          jitter=RETRY_JITTER)
    reason = f"{exc.code}: {exc.message}"
    applied = transitions.retry_later(ctx, job.id, worker_id=worker_id, delay=delay, reason=reason).applied
    if applied:
        log.warning("A1111 could not run the job; requeued",
                    extra={"job_id": job.id, "worker_id": worker_id, "delay": round(delay, 2), "reason": reason})
    return applied


def _end_out_of_time(ctx: context_module.Context, job: store_base.Job, worker_id: str, *,
                     timeout: float) -> None:
    """The generation outlasted the time this invocation had: end the job (`settle` stops A1111),
    since every attempt would be cut off the same way instead of looping."""
    _fail(ctx, job, worker_id, "time_limit_exceeded",
          f"the generation did not finish within the {timeout:.0f} s this AWS Lambda invocation had left "
          f"(a Lambda function runs at most 15 minutes); A1111 was interrupted. Ask for fewer steps, "
          f"images or pixels, or run such jobs on a `python -m worker_fn` worker, which has no time limit")


def settle(client: a1111.A1111Client, *, wait: float, interval: float) -> bool:
    """Interrupt A1111 until it reports idle, at most `wait` seconds; False if it did not (or could
    not be asked). The caller still holds the instance's slot, so no other job is sent to an A1111
    that is still busy with a generation this worker gave up on. The interrupt is repeated because
    A1111 forgets one that arrives before its generation has begun."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if a1111.is_idle(client.progress(skip_current_image=True)):
                return True
            client.interrupt()
        except errors.A1111Error as exc:
            log.warning("A1111 could not be interrupted after a call without an answer: %s", exc.message)
            return False
        if time.monotonic() + interval > deadline:
            return False
        time.sleep(interval)


def _fail(ctx: context_module.Context, job: store_base.Job, worker_id: str, code: str,
          message: str) -> None:
    transitions.fail(ctx, job.id, worker_id=worker_id, code=code, message=message)
    log.warning("job failed", extra={"job_id": job.id, "worker_id": worker_id, "code": code})


class ProgressTracker:
    """While the generation call blocks, poll A1111's progress, store it, renew the lease, and
    interrupt A1111 when the job's cancel flag appears. When the polls have failed for
    A1111_STALL_SECONDS (0: never) the instance is taken as stalled: `wake` is set, so the runner
    stops waiting for the call, and an interrupt is attempted."""

    def __init__(self, ctx: context_module.Context, *, job: store_base.Job, worker_id: str,
                 client: a1111.A1111Client) -> None:
        self.ctx = ctx
        self.job = job
        self.worker_id = worker_id
        self.client = client
        self.cancel_sent = False
        self.wake = threading.Event()  # set when the call returns or A1111 stalled
        self.stall_message = ""
        self._answered_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{job.id[:8]}", daemon=True)
        self._last: dict = {"progress": 0.0, "eta_relative": None, "step": 0, "steps": None,
                            "job_no": 0, "job_count": None}
        self.finished_iterations = 0  # of this job, as A1111's progress last showed them while it ran

    def start(self) -> None:
        self._thread.start()

    def final_progress(self) -> dict:
        """The progress of the finished job: its step and job counts as A1111 last told them, else
        as the request asked (a job shorter than one progress tick was never polled)."""
        request = self.job.request
        known = dict(self._last)
        known["steps"] = known.get("steps") or request.get("steps") or DEFAULT_STEPS
        known["job_count"] = known.get("job_count") or request.get("n_iter") or 1
        return store_base.final_progress(known)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.ctx.settings.progress_interval
        while not self._stop.wait(interval):
            self.tick()

    def tick(self) -> None:
        preview = None
        try:
            # A poll A1111 leaves unanswered must not outlast the lease it is meant to renew.
            poll_timeout = min(PROGRESS_POLL_TIMEOUT, self.ctx.settings.job_lease_seconds / 3)
            snapshot = self.client.progress(skip_current_image=False, timeout=poll_timeout)
        except errors.A1111Error as exc:
            snapshot = None  # the lease is still renewed: this worker is alive
            if self._stalled(exc):
                return
        if snapshot is not None:
            self._answered_at = time.monotonic()
            self._last = _progress_of(snapshot)
            self._count_finished(self._last)
            preview = snapshot.get("current_image") or None
        change = transitions.record_progress(self.ctx, self.job.id, worker_id=self.worker_id,
                                             progress=self._last, preview=preview)
        if not change.applied:
            self._stop.set()  # the lease is lost: another worker may own the job now
        elif change.cancel_requested:
            # Sent at every tick until the call returns: A1111 forgets an interrupt that arrives
            # before its generation has begun.
            try:
                self.client.interrupt()
                self.cancel_sent = True
            except errors.A1111Error as exc:
                log.warning("interrupt failed: %s", exc.message, extra={"job_id": self.job.id})


    def _count_finished(self, progress: dict) -> None:
        """Iterations before `job_no` are done; the current one too once its last step is sampled.
        Only while A1111 runs a generation: idle, it leaves `job_no` at a stale value."""
        job_no, job_count = progress.get("job_no"), progress.get("job_count")
        if not isinstance(job_no, int) or not isinstance(job_count, int) or job_count <= 0:
            return
        step, steps = progress.get("step"), progress.get("steps")
        done = job_no + (1 if isinstance(step, int) and isinstance(steps, int) and 0 < steps <= step else 0)
        self.finished_iterations = max(self.finished_iterations, min(done, job_count))

    def _stalled(self, exc: errors.A1111Error) -> bool:
        """Whether polls have failed for A1111_STALL_SECONDS; if so, wake the runner and stop."""
        limit = self.ctx.settings.a1111_stall_seconds
        silent = time.monotonic() - self._answered_at
        if not limit or silent < limit:
            return False
        self.stall_message = (f"A1111 at {self.client.name} stalled: its progress went unanswered for "
                              f"{silent:.0f} s (A1111_STALL_SECONDS is {limit:g}); the run was abandoned "
                              f"({exc.message})")
        self._stop.set()
        self.wake.set()
        try:
            self.client.interrupt(timeout=STALL_INTERRUPT_TIMEOUT)
        except errors.A1111Error:
            log.warning("a stalled A1111 could not be interrupted", extra={"job_id": self.job.id})
        return True


def _progress_of(snapshot: dict) -> dict:
    state = snapshot.get("state") or {}
    return {
        "progress": snapshot.get("progress"),
        "eta_relative": snapshot.get("eta_relative"),
        "step": state.get("sampling_step"),
        "steps": state.get("sampling_steps"),
        "job_no": state.get("job_no"),
        "job_count": state.get("job_count"),
    }


def sweep(ctx: context_module.Context) -> dict:
    """Requeue or end jobs whose worker vanished; re-ring jobs and webhook deliveries that waited
    without a doorbell; purge what retention no longer keeps (when due)."""
    expired = transitions.expire_leases(ctx)
    for change in expired:
        log.warning("lease expired; job is now %s", change.status, extra={"job_id": change.job_id})
    now = time.time()
    stale = ctx.store.stale_queued(older_than=STALE_QUEUED_SECONDS, now=now, limit=STALE_RERING_LIMIT)
    rerung = 0
    if stale and ctx.queue.depth(queue_base.JOBS).get("visible", 0) == 0:
        for job_id in stale:
            ctx.queue.send(queue_base.JOBS, {"job_id": job_id})
        rerung = len(stale)
    webhooks_rerung = doorbell.rering_due(ctx, now=now)
    purged = retention.purge_if_due(ctx)
    return {"expired": len(expired), "rerung": rerung, "webhooks_rerung": webhooks_rerung,
            **({"purged": purged} if purged is not None else {})}
