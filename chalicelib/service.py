"""API use cases: submit, get, list and cancel jobs, and read their images.

Routes call these; these call the ports in `Context`. Nothing here knows which backend is in use.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time

from chalicelib import a1111_policy
from chalicelib import blocking
from chalicelib import catalog
from chalicelib import changes
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import job_ids
from chalicelib import model_choice
from chalicelib import owner_limits
from chalicelib import request_models
from chalicelib import strict_json
from chalicelib import transitions
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.queue import base as queue_base
from chalicelib.store import base as store_base
from chalicelib.webhooks import doorbell
from chalicelib.webhooks import history
from chalicelib.webhooks import redelivery
from chalicelib.webhooks import signing
from chalicelib.webhooks import url_safety

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20
MAX_IDEMPOTENCY_KEY_LENGTH = 255
CANCEL_RACE_TRIES = 5
MAX_DELIVERY_LIST_LIMIT = 100
DEFAULT_DELIVERY_LIST_LIMIT = 50
IMAGE_DELIVERIES = (views.IMAGES_BASE64, views.IMAGES_URLS)


def submit_job(ctx: context_module.Context, kind: str, *, owner: str, body: object,
               idempotency_key: str | None, batch_id: str | None = None) -> tuple[dict, bool]:
    """Validate and store a job, ring the doorbell. Returns (summary, created)."""
    check_idempotency_key(idempotency_key)
    new_job = prepare_job(ctx, kind, owner=owner, body=body, idempotency_key=idempotency_key, batch_id=batch_id)
    owner_limits.check_submit(ctx, owner, now=time.time())
    # One transaction: the job and its doorbell (a row of a table queue) commit together.
    doorbell = ctx.queue.send_on_commit(queue_base.JOBS, {"job_id": new_job.id})
    job, created = ctx.store.create_job(new_job, now=time.time(), doorbell=doorbell)
    if created:
        # SQS is rung after the commit. A lost doorbell is harmless: the sweep re-rings jobs left
        # waiting. So a queue that cannot be reached must not fail a submit whose job is stored.
        try:
            doorbell.send()
        except errors.StoreUnavailable:
            log.warning("job doorbell not sent; the sweep rings it later", exc_info=True, extra={"job_id": job.id})
    # No queue position here: counting the jobs ahead grows with the queue, and a submit must not
    # (docs/performance.md). GET the job for it.
    return views.job_summary(job, queue_position=None), created


def submit_and_wait(ctx: context_module.Context, kind: str, *, owner: str, body: object,
                    idempotency_key: str | None, wait: float) -> tuple[dict, bool, bool]:
    """`Prefer: wait`: (the job's detail if it finished within `wait` seconds, else its summary;
    created; finished)."""
    job, created = submit_and_hold(ctx, kind, owner=owner, body=body, idempotency_key=idempotency_key, wait=wait)
    if job.status in vocabulary.TERMINAL_STATUSES:
        return get_job(ctx, job.id, owner=owner), created, True
    return views.job_summary(job, queue_position=_queue_position(ctx, job)), created, False


def submit_and_hold(ctx: context_module.Context, kind: str, *, owner: str, body: object,
                    idempotency_key: str | None, wait: float) -> tuple[store_base.Job, bool]:
    """Submit, then hold up to `wait` seconds (at most SYNC_WAIT_MAX_SECONDS) for the job to end:
    (the job, finished or as it is then; created). 503 when SYNC_MAX_WAITING requests already wait
    (nothing is stored then)."""
    with blocking.slot(ctx):
        summary, created = submit_job(ctx, kind, owner=owner, body=body, idempotency_key=idempotency_key)
        job = blocking.wait_for_end(ctx, summary["job_id"], owner=owner, timeout=wait_seconds(ctx, wait))
    return job, created


def wait_seconds(ctx: context_module.Context, asked: float) -> float:
    """What a blocking request may wait: `asked`, at most SYNC_WAIT_MAX_SECONDS (25 on AWS Lambda)."""
    return max(min(asked, ctx.settings.sync_wait_limit()), 0.0)


def prepare_job(ctx: context_module.Context, kind: str, *, owner: str, body: object,
                idempotency_key: str | None = None, batch_id: str | None = None) -> store_base.NewJob:
    """A submit body validated (every problem at once, as one 422) into the job to store."""
    submission = request_models.parse_submission(kind, body, limits=request_models.Limits.from_settings(ctx.settings),
                                         policy=a1111_policy.Policy.from_settings(ctx.settings))
    options = submission.options
    check_webhook_options(ctx, options)
    _check_instance_labels(ctx, options.instance_labels)
    catalog.check_sampler(ctx, submission.payload)
    return store_base.NewJob(
        id=job_ids.new_job_id(),
        owner=owner,
        kind=submission.kind.value,
        priority=options.priority,
        request=submission.payload,
        options={
            "webhook_url": options.webhook_url,
            "webhook_events": options.webhook_events,
            "metadata": options.metadata,
            **({"webhook_format": options.webhook_format} if options.webhook_format == "legacy" else {}),
            **({"instance_labels": sorted(set(options.instance_labels))} if options.instance_labels else {}),
            **({"dropped_fields": list(submission.dropped_fields)} if submission.dropped_fields else {}),
        },
        webhook_secret=options.webhook_secret,
        idempotency_key=idempotency_key,
        batch_id=batch_id,
        owner_checkpoint=model_choice.takes_owner_choice(ctx, submission.payload),
    )


def get_job(ctx: context_module.Context, job_id: str, *, owner: str | None, images: str | None = None,
            wait: str | None = None, version: str | None = None) -> dict:
    """The job's detail, with its images inline as base64 (A1111's shape) unless `images` is "urls",
    or unless inline they would make the answer larger than MAX_RESPONSE_BYTES (AWS Lambda answers
    at most 6 MB): then `image_urls` say where they are and `image_delivery_note` says why.

    Long-poll: with `wait` (seconds, capped by LONG_POLL_MAX_SECONDS) the answer waits until the
    job's version is above `version` (default: its version now), or until `wait` runs out."""
    delivery = images or views.IMAGES_BASE64
    if delivery not in IMAGE_DELIVERIES:
        raise errors.ValidationFailed.single(["query", "images"], "must be base64 or urls", "enum")
    wait_seconds, seen = _parse_long_poll(ctx, wait, version)
    if wait_seconds:
        job = _long_poll(ctx, job_id, owner=owner, timeout=wait_seconds, seen=seen)
    else:
        job = _owned_job(ctx, job_id, owner=owner)
    position, runs = _queue_position(ctx, job), ctx.store.list_runs(job.id)
    note = None
    if delivery == views.IMAGES_BASE64:
        data = ctx.images.get_all(job.id, job.result_attempt) if job.result_attempt else None
        detail = views.job_detail(job, queue_position=position, runs=runs, images=data, base_path="")
        size, limit = len(json.dumps(detail)), ctx.settings.max_response_bytes
        if size <= limit or not data:
            return detail
        note = (f"inline, the {len(data)} images would make this answer {size} bytes, more than the {limit} "
                "an answer may have (MAX_RESPONSE_BYTES; AWS Lambda answers at most 6 MB): download them "
                "from image_urls")
    return views.job_detail(job, queue_position=position, runs=runs, images=None, base_path="",
                            image_urls=_image_urls(ctx, job), image_delivery=views.IMAGES_URLS,
                            image_delivery_note=note)


def _parse_long_poll(ctx: context_module.Context, wait: str | None, version: str | None) -> tuple[float, int | None]:
    problems = []
    seconds = 0.0
    if wait is not None:
        try:
            seconds = float(wait)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            problems.append({"loc": ["query", "wait"], "msg": "must be a number of seconds >= 0",
                             "type": "value_error"})
            seconds = 0.0
    seen = None
    if version is not None:
        if version.isascii() and version.isdigit() and len(version) <= 18:
            seen = int(version)
        else:
            problems.append({"loc": ["query", "version"], "msg": "must be an integer >= 0 (a job's `version`)",
                             "type": "int_parsing"})
    if problems:
        raise errors.ValidationFailed(problems)
    return min(seconds, ctx.settings.long_poll_max_seconds), seen


def _long_poll(ctx: context_module.Context, job_id: str, *, owner: str, timeout: float,
               seen: int | None) -> store_base.Job:
    """The job once its version is above `seen` (or its version when first read), finished, or
    after `timeout` seconds; woken by the process's change signal, never by polling."""
    deadline = time.monotonic() + timeout
    with changes.registry(ctx).subscribe(job_id=job_id, counted=True) as subscription:
        job = _owned_job(ctx, job_id, owner=owner)
        seen = job.version if seen is None else seen
        while job.version <= seen and job.status not in vocabulary.TERMINAL_STATUSES:
            wake = subscription.wait(timeout=deadline - time.monotonic())
            if not wake or wake.closed:
                break
            job = _owned_job(ctx, job_id, owner=owner)
    return job


def _image_urls(ctx: context_module.Context, job: store_base.Job) -> list[str]:
    """Direct links where the image store has them (S3: presigned), else this API's image route."""
    if job.result_attempt is None:
        return []
    expires_in = ctx.settings.image_url_expiry_seconds
    return [ctx.images.url(job.id, job.result_attempt, n, expires_in=expires_in)
            or f"/sdapi/v1/jobs/{job.id}/images/{n}" for n in range(job.image_count)]


def list_jobs(ctx: context_module.Context, *, owner: str | None, status: str | None, limit: str | None,
              cursor: str | None) -> dict:
    """Newest first, keyset-paginated by an opaque cursor; every owner's when `owner` is None (an
    admin's listing)."""
    problems = []
    if status is not None and status not in {s.value for s in vocabulary.JobStatus}:
        allowed = ", ".join(s.value for s in vocabulary.JobStatus)
        problems.append({"loc": ["query", "status"], "msg": f"unknown status {status!r}; use one of: {allowed}",
                         "type": "enum"})
    size = parse_limit(limit, problems)
    before = decode_cursor(cursor, problems)
    if problems:
        raise errors.ValidationFailed(problems)
    page = ctx.store.list_jobs(owner, status=status, limit=size, before=before)
    positions = ctx.store.queue_positions(page.jobs)  # one query for the page, none without queued jobs
    return {
        "jobs": [views.job_summary(job, queue_position=positions.get(job.id)) for job in page.jobs],
        "next_cursor": encode_cursor(page.next_cursor),
    }


def cancel_job(ctx: context_module.Context, job_id: str, *, owner: str | None) -> dict:
    """queued → cancelled now; processing → flag the worker, which interrupts A1111; finished → 409."""
    for _ in range(CANCEL_RACE_TRIES):
        job = _owned_job(ctx, job_id, owner=owner)
        if job.status == vocabulary.JobStatus.QUEUED:
            change = transitions.cancel_queued(ctx, job.id)
        elif job.status == vocabulary.JobStatus.PROCESSING:
            change = transitions.request_cancel(ctx, job.id)
        else:
            raise errors.Conflict(f"job {job.id} is already {job.status}; only queued or processing "
                                  "jobs can be cancelled")
        if change.applied:
            job = _owned_job(ctx, job_id, owner=owner)
            return views.job_summary(job, queue_position=_queue_position(ctx, job))
    raise errors.Conflict(f"job {job_id} changed state while being cancelled; try again")


def list_webhook_deliveries(ctx: context_module.Context, job_id: str, *, owner: str, limit: str | None,
                            cursor: str | None) -> dict:
    """The job's webhook deliveries, newest first, each with its attempts."""
    job = _owned_job(ctx, job_id, owner=owner)
    problems: list[dict] = []
    size = parse_limit(limit, problems, default=DEFAULT_DELIVERY_LIST_LIMIT, maximum=MAX_DELIVERY_LIST_LIMIT)
    before = decode_cursor(cursor, problems)
    if problems:
        raise errors.ValidationFailed(problems)
    page = ctx.store.list_deliveries(job.id, limit=size, before=before)
    attempts = ctx.store.list_attempts([delivery.id for delivery in page.deliveries])
    now = time.time()
    return {
        "job_id": job.id,
        "webhook_url": job.options.get("webhook_url"),
        "deliveries": [history.delivery_view(delivery, attempts[delivery.id], now=now)
                       for delivery in page.deliveries],
        "next_cursor": encode_cursor(page.next_cursor),
    }


def redeliver_webhook(ctx: context_module.Context, job_id: str, *, owner: str) -> dict:
    """Send the job's latest event again: same body, new webhook-id, a fresh retry schedule."""
    job = _owned_job(ctx, job_id, owner=owner)
    if not job.options.get("webhook_url"):
        raise errors.Conflict(f"job {job.id} has no webhook_url; there is nothing to redeliver")
    redelivery.check_allowed(ctx, job.id, now=time.time())
    delivery = ctx.store.redeliver_latest(job.id, now=time.time())
    if delivery is None:
        raise errors.Conflict(f"job {job.id} has sent no webhook event yet; there is nothing to redeliver")
    doorbell.ring(ctx, job.id)
    return history.delivery_view(delivery, [], now=time.time())


def get_image(ctx: context_module.Context, job_id: str, n: str, *, owner: str) -> tuple[bytes, str]:
    job = _owned_job(ctx, job_id, owner=owner)
    if not (n.isascii() and n.isdigit()) or int(n) >= job.image_count or job.result_attempt is None:
        raise errors.NotFound(f"job {job.id} has no image {n} (it has {job.image_count})")
    found = ctx.images.get(job.id, job.result_attempt, int(n))
    if found is None:
        raise errors.NotFound(f"image {n} of job {job.id} is missing from the image store")
    return found


def _owned_job(ctx: context_module.Context, job_id: str, *, owner: str | None) -> store_base.Job:
    """The job if `owner` owns it (any owner's when None: an admin); 404 otherwise, as if absent."""
    job = ctx.store.get_job(job_id, owner=owner)
    if job is None:
        raise errors.NotFound(f"no job {job_id!r}")
    return job


def _queue_position(ctx: context_module.Context, job: store_base.Job) -> int | None:
    """None unless queued (also when the job left the queue since it was read)."""
    return ctx.store.queue_positions([job]).get(job.id)


def _check_instance_labels(ctx: context_module.Context, labels: list[str] | None) -> None:
    """A job that names labels must have an instance to run on, or it would wait forever."""
    if not labels or any(instance.has_labels(labels) for instance in ctx.instances):
        return
    configured = "; ".join(f"{instance.name}: {'+'.join(instance.labels) or 'no labels'}"
                           for instance in ctx.instances)
    raise errors.ValidationFailed.single(
        ["body", "instance_labels"], f"no A1111 instance has every one of the labels {sorted(set(labels))} "
        f"(instances: {configured})", "value_error")


def check_webhook_options(ctx: context_module.Context, options: request_models.JobOptions) -> None:
    """A webhook needs a usable secret, and a URL whose host is public (checked again at delivery)."""
    problems = []
    if options.webhook_url is not None and options.webhook_secret is None:
        problems.append({"loc": ["body", "webhook_secret"], "type": "missing",
                         "msg": "webhook_secret is required with webhook_url: every webhook is signed with it"})
    if options.webhook_secret is not None:
        problem = signing.secret_problem(options.webhook_secret)
        if problem is not None:
            problems.append({"loc": ["body", "webhook_secret"], "msg": problem, "type": "value_error"})
    if options.webhook_url is not None:
        allow_private = ctx.settings.webhook_allow_private
        try:
            url_safety.check_url(options.webhook_url, allow_private=allow_private, resolve_names=not allow_private)
        except url_safety.UnresolvableWebhookHost as exc:
            problems.append({"loc": ["body", "webhook_url"], "msg": exc.reason, "type": "url_unresolvable"})
        except url_safety.WebhookUrlError as exc:
            problems.append({"loc": ["body", "webhook_url"], "msg": exc.reason, "type": "url_unsafe"})
    if problems:
        raise errors.ValidationFailed(problems)


def check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise errors.ValidationFailed.single(
            ["header", "Idempotency-Key"],
            f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters")


def parse_limit(value: str | None, problems: list, *, default: int = DEFAULT_LIST_LIMIT,
                maximum: int = MAX_LIST_LIMIT) -> int:
    """ASCII digits only: `str.isdigit` also accepts "²", which `int` refuses."""
    if value is None:
        return default
    if value.isascii() and value.isdigit() and len(value) <= len(str(maximum)) and 1 <= int(value) <= maximum:
        return int(value)
    problems.append({"loc": ["query", "limit"], "msg": f"must be an integer from 1 to {maximum}",
                     "type": "int_range"})
    return default


MAX_CURSOR_LENGTH = 64  # an encoded {"before": <int64>} is about 40 characters
MAX_CURSOR_SEQ = 2**63 - 1  # the stores' 64-bit integers: a larger one overflows SQLite's driver


def encode_cursor(seq: int | None) -> str | None:
    if seq is None:
        return None
    return base64.urlsafe_b64encode(json.dumps({"before": seq}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, problems: list) -> int | None:
    """The position a cursor of `encode_cursor` names; anything else (tampered, too long, out of the
    stores' range) is a problem, never an exception."""
    if cursor is None:
        return None
    if len(cursor) <= MAX_CURSOR_LENGTH:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            before = strict_json.loads(base64.urlsafe_b64decode(padded.encode()))["before"]
            if isinstance(before, int) and not isinstance(before, bool) and 0 < before <= MAX_CURSOR_SEQ:
                return before
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError):
            pass
    problems.append({"loc": ["query", "cursor"], "msg": "not a cursor returned by this API",
                     "type": "value_error"})
    return None
