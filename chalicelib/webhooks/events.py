"""The body of a delivery: the job detail as its event's snapshot recorded it, kept under a size; or,
for jobs that asked for the original proxy's format, that proxy's body."""
from __future__ import annotations

import base64
import json

from chalicelib import context as context_module
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.store import base as store_base


def _drop_result_images(data: dict) -> bool:
    result = data.get("result") or {}
    if not result.get("images"):
        return False
    result["images"] = []
    return True


def _drop_preview(data: dict) -> bool:
    progress = data.get("progress") or {}
    if not progress.get("current_image"):
        return False
    progress["current_image"] = None
    return True


def _drop_request_field(name: str, empty):
    def drop(data: dict) -> bool:
        request = data.get("request") or {}
        if not request.get(name):
            return False
        request[name] = empty
        return True
    return drop


# What leaves an oversized body, in order, named by its path (listed in the body's "omitted").
SIZE_REDUCTIONS = (
    ("data.result.images", _drop_result_images),
    ("data.progress.current_image", _drop_preview),
    ("data.request.init_images", _drop_request_field("init_images", [])),
    ("data.request.mask", _drop_request_field("mask", None)),
)


def build_body(event_type: str, *, event_at: float, detail: dict, max_inline_bytes: int) -> str:
    """{"type", "timestamp", "data": job detail, "omitted": [...]} as compact JSON.

    While the body is over `max_inline_bytes`, result images (then the preview, then the request's
    init images and mask) are left out and named in "omitted"; `data.image_urls` stays.
    """
    body = {"type": event_type, "timestamp": views.iso(event_at), "data": detail, "omitted": []}
    encoded = _encode(body)
    for path, drop in SIZE_REDUCTIONS:
        if len(encoded) <= max_inline_bytes:
            break
        if drop(detail):
            body["omitted"].append(path)
            encoded = _encode(body)
    return encoded


def _encode(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


LEGACY = "legacy"


def is_legacy(job: store_base.Job) -> bool:
    """Whether the job's deliveries take the original proxy's shape and its `x-webhook-key` header."""
    return job.options.get("webhook_format") == LEGACY


def build_legacy_body(job: store_base.Job, *, images: list[bytes] | None) -> str:
    """The original proxy's body: {uuid, job_status, status, progress, images, seed, info, tags} (+ error).

    Images are always inline, as the original sent them (its receivers know no other place to look);
    `seed` is the one A1111 used, read from its info string.
    """
    info = (job.result or {}).get("info") or ""
    body = {
        "uuid": job.id,
        "job_id": job.id,
        "job_status": job.status,
        "status": job.status,
        "progress": 1 if job.status == vocabulary.JobStatus.COMPLETED else (job.progress or {}).get("progress") or 0,
        "images": [base64.b64encode(data).decode("ascii") for data in images or []],
        "seed": _seed(info),
        "info": info,
        "tags": None,
    }
    if job.error_code is not None:
        body["error"] = job.error_message or job.error_code
    elif job.status == vocabulary.JobStatus.CANCELLED:
        body["error"] = "cancelled"  # receivers treat any status but completed as a failure
    return _encode(body)


def _seed(info: str) -> int | None:
    try:
        seed = json.loads(info).get("seed") if info else None
    except (ValueError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def render_body(ctx: context_module.Context, delivery: store_base.WebhookDelivery,
                job: store_base.Job) -> str:
    """The body of a delivery: the job detail as the event's snapshot recorded it."""
    event_job, runs = store_base.job_from_snapshot(delivery.snapshot, request=job.request)
    images = None
    if event_job.result_attempt is not None and event_job.image_count:
        images = ctx.images.get_all(event_job.id, event_job.result_attempt)
    if is_legacy(job):
        return build_legacy_body(event_job, images=images)
    detail = views.job_detail(event_job, queue_position=None, runs=runs, images=images,
                              base_path=ctx.settings.public_base_url.rstrip("/"))
    return build_body(delivery.event_type, event_at=delivery.event_at, detail=detail,
                      max_inline_bytes=ctx.settings.webhook_max_inline_bytes)
