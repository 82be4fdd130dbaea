"""JSON views of jobs: the summary for lists and the detail for one job (documented in docs/api.md).

Secrets never reach a view: the webhook secret lives in its own column and is not read here.
"""
from __future__ import annotations

import base64
import datetime

from chalicelib import vocabulary
from chalicelib.store import base

PROGRESS_KEYS = ("progress", "eta_relative", "step", "steps", "job_no", "job_count")


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-26T07:09:59.123Z."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_summary(job: base.Job, *, queue_position: int | None) -> dict:
    progress = None
    if job.progress is not None:
        progress = {key: job.progress.get(key) for key in PROGRESS_KEYS}
    error = None
    if job.error_code is not None:
        error = {"code": job.error_code, "message": job.error_message}
    return {
        "job_id": job.id,
        "uuid": job.id,  # the original proxy's clients read `jobId || id || uuid` and `job_status`
        "id": job.id,
        "job_status": job.status,
        "type": job.kind,
        "owner": job.owner,  # an admin's listing of every owner's jobs tells them apart
        "status": job.status,
        "priority": job.priority,
        "queue_position": queue_position,
        "progress": progress,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "error": error,
        "metadata": job.options.get("metadata"),
        "version": job.version,
        "batch_id": job.batch_id,
    }


IMAGES_BASE64 = "base64"
IMAGES_URLS = "urls"


def job_detail(job: base.Job, *, queue_position: int | None, runs: list[base.JobRun],
               images: list[bytes] | None, base_path: str, image_urls: list[str] | None = None,
               image_delivery: str = IMAGES_BASE64, image_delivery_note: str | None = None) -> dict:
    """Summary + request + result in A1111's response shape (raw base64 images, `info` string).

    With `image_delivery` "urls", `result.images` stays empty and `image_urls` (direct links, e.g.
    presigned S3 URLs, when given) are where the images are; `image_delivery_note` says why when the
    server chose it.
    """
    detail = job_summary(job, queue_position=queue_position)
    if detail["progress"] is not None:
        detail["progress"]["current_image"] = job.preview
    result = None
    if job.result is not None:
        result = {
            "images": [base64.b64encode(data).decode("ascii") for data in images or []],
            "parameters": job.result.get("parameters", {}),
            "info": job.result.get("info", ""),
        }
    detail.update({
        "request": job.request,
        "dropped_fields": job.options.get("dropped_fields", []),
        "webhook_url": job.options.get("webhook_url"),
        "webhook_events": job.options.get("webhook_events"),
        "instance": job.instance,
        "instance_labels": job.options.get("instance_labels"),
        "result": result,
        "image_urls": image_urls if image_urls is not None else [
            f"{base_path}/sdapi/v1/jobs/{job.id}/images/{n}" for n in range(job.image_count)],
        "image_delivery": image_delivery,
        "image_delivery_note": image_delivery_note,
        "interrupted": job.result.get("interrupted") if job.result is not None else None,
        "runs": [{
            "attempt": run.attempt,
            "worker_id": run.worker_id,
            "instance": run.instance,
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "outcome": run.outcome,
            "detail": run.detail,
        } for run in runs],
    })
    return detail


def batch_view(batch: base.Batch, *, members: list[base.BatchMember], now: float) -> dict:
    """A batch at a glance: counts by status, progress weighted by each job's work (steps ×
    images), and an ETA from the work finished since the batch's first job started."""
    counts = base.batch_counts(members)
    total = done = finished_work = 0.0
    for member in members:
        weight = member.options.get("work") or 1
        total += weight
        if member.status in vocabulary.TERMINAL_STATUSES:
            done += weight
            finished_work += weight
        elif member.status == "processing" and member.progress:
            done += weight * min(max(member.progress.get("progress") or 0.0, 0.0), 1.0)
    started = [m.started_at for m in members if m.started_at is not None]
    first_start = min(started) if started else None
    eta = None
    if batch.finished_at is None and first_start is not None and done > 0 and now > first_start:
        eta = round((total - done) / (done / (now - first_start)), 1)
    return {
        "batch_id": batch.id,
        "status": ("completed" if batch.finished_at is not None else
                   "processing" if first_start is not None else "queued"),
        "jobs": len(members),
        "counts": counts,
        "progress": round(done / total, 4) if total else 1.0,
        "eta_seconds": 0.0 if batch.finished_at is not None else eta,
        "metadata": batch.options.get("metadata"),
        "webhook_url": batch.options.get("webhook_url"),
        "priority": batch.options.get("priority"),
        "created_at": iso(batch.created_at),
        "started_at": iso(first_start),
        "finished_at": iso(batch.finished_at),
    }

