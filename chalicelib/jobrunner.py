"""Worker use cases: run the next job on an A1111 instance, and sweep what crashed workers left.

The same functions serve `python -m worker_fn` and the SQS-triggered Lambda handlers. Every
state change goes through `transitions`, which rings the doorbells it calls for; no webhook
receiver can slow or fail a job (its delivery waits in the outbox).
"""
from __future__ import annotations

import binascii
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
TIMED_OUT_FRACTION = 0.98  # a call that fails after this share of its time limit ran out of time


def run_next_job(ctx: context_module.Context, *, worker_id: str, instance: a1111.Instance,
                 client: a1111.A1111Client, on_claim=None, on_unavailable=None,
                 time_limit: float | None = None) -> str | None:
    """Claim the most urgent queued job `instance` can run (its labels include the job's
    `instance_labels`) and run it to an outcome. Returns its id, or None if idle.

    The caller must hold a slot of `instance`, so the instance never runs two of our jobs at once.
    `time_limit` (a Lambda invocation's remaining time, less a reserve) caps the A1111 call, so the
    outcome is always recorded before the invocation ends; a generation cut off by it ends the job
    in `error` at once (it would be cut off again on every attempt). `on_unavailable(message)` hears
    that the instance failed the call, so the caller stops claiming for it until it answers again.
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
        response = client.generate(job.kind, payload, timeout=timeout)
    except errors.A1111Rejected as exc:
        tracker.stop()
        _end_rejected(ctx, job, worker_id, exc)
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
        _end_generated(ctx, job, worker_id, response, cancelled=tracker.cancel_sent,
                       progress=tracker.final_progress())
    return job.id


def _end_generated(ctx: context_module.Context, job: store_base.Job, worker_id: str, response: dict,
                   *, cancelled: bool, progress: dict) -> None:
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


def _end_rejected(ctx: context_module.Context, job: store_base.Job, worker_id: str,
                  exc: errors.A1111Error) -> None:
    _fail(ctx, job, worker_id, "a1111_rejected", exc.message)


def _end_unavailable(ctx: context_module.Context, job: store_base.Job, worker_id: str,
                     exc: errors.A1111Error, *, cancelled: bool) -> None:
    settings = ctx.settings
    if cancelled:
        transitions.finish_cancelled(ctx, job.id, worker_id=worker_id)
        return
    if job.attempts >= settings.job_max_attempts:
        _fail(ctx, job, worker_id, "a1111_unavailable",
              f"{exc.message} (attempt {job.attempts} of {settings.job_max_attempts}; no attempts left)")
        return
    delay = backoff.delay(job.attempts, first=settings.job_retry_base_seconds, cap=MAX_RETRY_DELAY,
                          jitter=RETRY_JITTER)
    if transitions.retry_later(ctx, job.id, worker_id=worker_id, delay=delay, reason=exc.message).applied:
        log.warning("A1111 unavailable; job requeued",
                    extra={"job_id": job.id, "worker_id": worker_id, "delay": round(delay, 2),
                           "reason": exc.message})


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
    interrupt A1111 when the job's cancel flag appears."""

    def __init__(self, ctx: context_module.Context, *, job: store_base.Job, worker_id: str,
                 client: a1111.A1111Client) -> None:
        self.ctx = ctx
        self.job = job
        self.worker_id = worker_id
        self.client = client
        self.cancel_sent = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{job.id[:8]}", daemon=True)
        self._last: dict = {"progress": 0.0, "eta_relative": None, "step": 0, "steps": None,
                            "job_no": 0, "job_count": None}

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
            snapshot = self.client.progress(skip_current_image=False)
        except errors.A1111Error:
            snapshot = None  # the lease is still renewed: this worker is alive
        if snapshot is not None:
            self._last = _progress_of(snapshot)
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
