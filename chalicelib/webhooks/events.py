"""The body of a delivery: the job detail as its event's snapshot recorded it, kept under a size."""
from __future__ import annotations

import json

from chalicelib import context as context_module
from chalicelib import views
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


def render_body(ctx: context_module.Context, delivery: store_base.WebhookDelivery,
                job: store_base.Job) -> str:
    """The body of a delivery: the job detail as the event's snapshot recorded it."""
    event_job, runs = store_base.job_from_snapshot(delivery.snapshot, request=job.request)
    images = None
    if event_job.result_attempt is not None and event_job.image_count:
        images = ctx.images.get_all(event_job.id, event_job.result_attempt)
    detail = views.job_detail(event_job, queue_position=None, runs=runs, images=images,
                              base_path=ctx.settings.public_base_url.rstrip("/"))
    return build_body(delivery.event_type, event_at=delivery.event_at, detail=detail,
                      max_inline_bytes=ctx.settings.webhook_max_inline_bytes)
