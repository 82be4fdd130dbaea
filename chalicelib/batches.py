"""Batch use cases: many jobs submitted as one unit, read, cancelled, and their results handed out.

A batch is stored with all its jobs in one transaction (all or nothing); each job is an ordinary
job with a `batch_id`, run, retried and cancelled like any other. The store finishes the batch (and
writes its `batch.completed` delivery) in the transaction of its last job's end. Documented in
docs/batches.md.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import typing
import uuid
import zipfile

import pydantic

from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import owner_limits
from chalicelib import request_models
from chalicelib import service
from chalicelib import strict_json
from chalicelib import transitions
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.queue import base as queue_base
from chalicelib.store import base as store_base

log = logging.getLogger(__name__)

NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
BATCH_FIELDS = frozenset({"webhook_url", "webhook_secret", "metadata", "priority"})
DEFAULT_KIND = request_models.JobKind.txt2img.value
A1111_DEFAULT_STEPS = 20
MANIFEST_NAME = "manifest.ndjson"
ZIP_CHUNK_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Upload:
    """A batch body as parsed: the batch's own fields and each job's body with its place (loc)."""

    fields: dict
    jobs: list[tuple[list, dict]]


def submit_batch(ctx: context_module.Context, *, owner: str, raw: bytes, content_type: str | None,
                 idempotency_key: str | None) -> tuple[dict, bool]:
    """Validate every job (one 422 naming each bad one), then store the batch and all its jobs at
    once and ring a doorbell per job. Returns (view, created)."""
    service.check_idempotency_key(idempotency_key)
    upload = parse_upload(raw, content_type=content_type, max_bytes=ctx.settings.max_body_bytes,
                          max_jobs=ctx.settings.batch_max_jobs)
    replayed = idempotency_key and ctx.store.find_batch(owner, idempotency_key=idempotency_key)
    if replayed:  # a retried upload: its jobs are counted already, so no limit applies
        return views.batch_view(replayed, members=ctx.store.batch_members(replayed.id), now=time.time()), False
    options = _batch_options(ctx, upload.fields)
    batch_id = str(uuid.uuid4())
    jobs, problems = [], []
    for loc, body in upload.jobs:
        try:
            jobs.append(_prepare(ctx, body, owner=owner, batch_id=batch_id, default_priority=options.priority))
        except errors.ValidationFailed as failed:
            problems.extend({**problem, "loc": [*loc, *problem["loc"][1:]]} for problem in failed.detail)
    if problems:
        raise errors.ValidationFailed(problems)
    owner_limits.check_submit(ctx, owner, now=time.time(), jobs=len(jobs))
    new_batch = store_base.NewBatch(
        id=batch_id, owner=owner, webhook_secret=options.webhook_secret, idempotency_key=idempotency_key,
        options={"webhook_url": options.webhook_url, "metadata": options.metadata, "priority": options.priority},
        job_count=len(jobs))
    batch, created = ctx.store.create_batch(new_batch, jobs, now=time.time())
    if created:
        _ring_jobs(ctx, jobs)
    return views.batch_view(batch, members=ctx.store.batch_members(batch.id), now=time.time()), created


def parse_upload(raw: bytes, *, content_type: str | None, max_bytes: int, max_jobs: int) -> Upload:
    """JSON `{"jobs": [...], ...batch fields}` or NDJSON (one job per line; a first line
    `{"batch": {...}}` may carry the batch's fields). Never raises anything but a ServiceError."""
    if len(raw) > max_bytes:
        raise errors.PayloadTooLarge(f"the body is {len(raw)} bytes; the limit is {max_bytes} (MAX_BODY_BYTES)")
    if (content_type or "").split(";")[0].strip().lower() in NDJSON_TYPES:
        upload = _parse_ndjson(raw)
    else:
        upload = _parse_json(raw)
    if not upload.jobs:
        raise errors.ValidationFailed.single(["body", "jobs"], "a batch needs at least one job", "too_short")
    if len(upload.jobs) > max_jobs:
        raise errors.PayloadTooLarge(f"the batch has {len(upload.jobs)} jobs; the limit is {max_jobs} "
                                     "(BATCH_MAX_JOBS): split it into several batches")
    return upload


def _parse_json(raw: bytes) -> Upload:
    if not raw.strip():
        raise errors.BadRequest("the body is empty; send a JSON object with a `jobs` list, or NDJSON")
    try:
        body = strict_json.loads(raw)
    except strict_json.Invalid as exc:
        raise errors.BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.ValidationFailed.single(["body"], "the body must be a JSON object", "model_type")
    unknown = sorted(set(body) - BATCH_FIELDS - {"jobs"})
    if unknown:
        raise errors.ValidationFailed([{"loc": ["body", name], "msg": "unknown field; per-job fields go in each "
                                        "job", "type": "extra_forbidden"} for name in unknown])
    jobs = body.get("jobs")
    if not isinstance(jobs, list):
        raise errors.ValidationFailed.single(["body", "jobs"], "must be a list of job objects", "list_type")
    return Upload(fields={k: v for k, v in body.items() if k != "jobs"},
                  jobs=[(["body", "jobs", index], job) for index, job in enumerate(jobs)])


def _parse_ndjson(raw: bytes) -> Upload:
    fields, jobs, problems = {}, [], []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = strict_json.loads(line)
        except strict_json.Invalid as exc:
            problems.append({"loc": ["line", number], "msg": f"not valid JSON: {exc}", "type": "json_invalid"})
            continue
        if isinstance(item, dict) and set(item) == {"batch"} and not jobs and not fields:
            if not isinstance(item["batch"], dict) or set(item["batch"]) - BATCH_FIELDS:
                problems.append({"loc": ["line", number, "batch"], "type": "value_error",
                                 "msg": f"must be an object with only {sorted(BATCH_FIELDS)}"})
            else:
                fields = item["batch"]
            continue
        jobs.append((["line", number], item))
    if problems:
        raise errors.ValidationFailed(problems)
    return Upload(fields=fields, jobs=jobs)


def _batch_options(ctx: context_module.Context, fields: dict) -> request_models.JobOptions:
    """The batch's own webhook, metadata and default priority, checked as a job's would be."""
    try:
        options = request_models.JobOptions.model_validate(fields)
    except pydantic.ValidationError as exc:
        raise errors.ValidationFailed([{"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
                                       for error in exc.errors(include_url=False, include_context=False,
                                                               include_input=False)]) from None
    service.check_webhook_options(ctx, options)
    return options


def _prepare(ctx: context_module.Context, body: object, *, owner: str, batch_id: str,
             default_priority: int) -> store_base.NewJob:
    if not isinstance(body, dict):
        raise errors.ValidationFailed.single(["body"], "each job must be a JSON object", "model_type")
    body = dict(body)
    kind = body.pop("type", DEFAULT_KIND)
    if kind not in {k.value for k in request_models.JobKind}:
        raise errors.ValidationFailed.single(["body", "type"], "must be txt2img or img2img", "enum")
    body.setdefault("priority", default_priority)
    job = service.prepare_job(ctx, kind, owner=owner, body=body, batch_id=batch_id)
    return dataclasses.replace(job, options={**job.options, "work": work_of(job.request)})


def work_of(request: dict) -> int:
    """A job's share of its batch's work: steps × images (A1111's defaults where unset)."""
    steps = request.get("steps") or A1111_DEFAULT_STEPS
    return max(1, int(steps) * int(request.get("batch_size") or 1) * int(request.get("n_iter") or 1))


def _ring_jobs(ctx: context_module.Context, jobs: list[store_base.NewJob]) -> None:
    """One doorbell per job (a Lambda doorbell runs one job); lost ones are re-rung by the sweep."""
    for job in jobs:
        try:
            ctx.queue.send(queue_base.JOBS, {"job_id": job.id})
        except errors.StoreUnavailable:
            log.warning("batch doorbells not all sent; the sweep rings the rest later", exc_info=True)
            return


def get_batch(ctx: context_module.Context, batch_id: str, *, owner: str) -> dict:
    batch = _owned_batch(ctx, batch_id, owner=owner)
    return views.batch_view(batch, members=ctx.store.batch_members(batch.id), now=time.time())


def list_batches(ctx: context_module.Context, *, owner: str, limit: str | None, cursor: str | None) -> dict:
    """The caller's batches, newest first, keyset pages."""
    problems: list[dict] = []
    size = service.parse_limit(limit, problems)
    before = service.decode_cursor(cursor, problems)
    if problems:
        raise errors.ValidationFailed(problems)
    page = ctx.store.list_batches(owner, limit=size, before=before)
    now = time.time()
    return {"batches": [views.batch_view(batch, members=ctx.store.batch_members(batch.id), now=now)
                        for batch in page.batches],
            "next_cursor": service.encode_cursor(page.next_cursor)}


def list_batch_jobs(ctx: context_module.Context, batch_id: str, *, owner: str, status: str | None,
                    limit: str | None, cursor: str | None) -> dict:
    """The batch's jobs in submission order, keyset pages, optionally of one status."""
    batch = _owned_batch(ctx, batch_id, owner=owner)
    problems: list[dict] = []
    if status is not None and status not in {s.value for s in vocabulary.JobStatus}:
        problems.append({"loc": ["query", "status"], "type": "enum", "msg": f"unknown status {status!r}; use one "
                         f"of: {', '.join(s.value for s in vocabulary.JobStatus)}"})
    size = service.parse_limit(limit, problems)
    after = service.decode_cursor(cursor, problems)
    if problems:
        raise errors.ValidationFailed(problems)
    page = ctx.store.list_batch_jobs(batch.id, status=status, limit=size, after=after)
    positions = ctx.store.queue_positions(page.jobs)
    return {"batch_id": batch.id,
            "jobs": [views.job_summary(job, queue_position=positions.get(job.id)) for job in page.jobs],
            "next_cursor": service.encode_cursor(page.next_cursor)}


def cancel_batch(ctx: context_module.Context, batch_id: str, *, owner: str) -> dict:
    """Every job not yet ended: queued → cancelled now, running → interrupted. 409 once finished."""
    batch = _owned_batch(ctx, batch_id, owner=owner)
    if batch.finished_at is not None:
        raise errors.Conflict(f"batch {batch.id} has finished; there is nothing left to cancel")
    transitions.cancel_batch(ctx, batch.id)
    return get_batch(ctx, batch.id, owner=owner)


def ensure_named_batch(ctx: context_module.Context, batch_id: str, *, owner: str) -> None:
    """A batch named by a queue message: created on first sight (no webhook); another owner's → 422."""
    if not batch_id or len(batch_id) > service.MAX_IDEMPOTENCY_KEY_LENGTH or not batch_id.isprintable():
        raise errors.ValidationFailed.single(["body", "batch_id"], "must be 1 to 255 printable characters")
    new_batch = store_base.NewBatch(id=batch_id, owner=owner, options={"webhook_url": None, "metadata": None},
                                    webhook_secret=None, idempotency_key=None, job_count=0)
    if ctx.store.ensure_batch(new_batch, now=time.time()) is None:
        raise errors.ValidationFailed.single(["body", "batch_id"], "this batch id is taken; pick another one")


# -- results --------------------------------------------------------------------------------------

def manifest(ctx: context_module.Context, batch_id: str, *, owner: str) -> typing.Iterator[str]:
    """The results manifest: one NDJSON line per job in submission order (index, job_id, status,
    error, metadata, image URLs: presigned with the S3 image store, else this API's image route)."""
    batch = _owned_batch(ctx, batch_id, owner=owner)
    expires_in = ctx.settings.image_url_expiry_seconds

    def url_of(index: int, member: store_base.BatchMember, n: int) -> str:
        return (ctx.images.url(member.id, member.result_attempt, n, expires_in=expires_in)
                or f"/sdapi/v1/jobs/{member.id}/images/{n}")
    return _manifest_lines(ctx.store.batch_members(batch.id), url_of=url_of)


def _manifest_lines(members: list[store_base.BatchMember], *,
                    url_of: typing.Callable[[int, store_base.BatchMember, int], str]) -> typing.Iterator[str]:
    for index, member in enumerate(members):
        urls = [] if member.result_attempt is None else [url_of(index, member, n) for n in range(member.image_count)]
        error = None if member.error_code is None else {"code": member.error_code, "message": member.error_message}
        yield json.dumps({"index": index, "job_id": member.id, "status": member.status, "error": error,
                          "metadata": member.options.get("metadata"), "image_urls": urls}) + "\n"


def image_name(index: int, member: store_base.BatchMember, n: int) -> str:
    return f"{index}-{member.id}-{n}.png"


def zip_chunks(ctx: context_module.Context, batch_id: str, *, owner: str) -> typing.Iterator[bytes]:
    """A zip of every image of the batch (`<index>-<job_id>-<n>.png`) and the manifest (file names
    in place of URLs), produced as it is read: one image in memory at a time, never the whole zip.
    The owner check happens at the first `next()`, before any byte is produced."""
    batch = _owned_batch(ctx, batch_id, owner=owner)
    members = ctx.store.batch_members(batch.id)
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for index, member in enumerate(members):
            for n in range(member.image_count if member.result_attempt is not None else 0):
                found = ctx.images.get(member.id, member.result_attempt, n)
                if found is None:
                    continue
                with archive.open(image_name(index, member, n), mode="w", force_zip64=True) as entry:
                    entry.write(found[0])
                yield from sink.drain()
        with archive.open(MANIFEST_NAME, mode="w", force_zip64=True) as entry:
            for line in _manifest_lines(members, url_of=image_name):
                entry.write(line.encode())
        yield from sink.drain()
    yield from sink.drain()


class _Sink:
    """A write-only, unseekable stream `zipfile` writes into; `drain` hands over what it holds."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> typing.Iterator[bytes]:
        parts, self.parts = self.parts, []
        yield from parts


def _owned_batch(ctx: context_module.Context, batch_id: str, *, owner: str) -> store_base.Batch:
    batch = ctx.store.get_batch(batch_id, owner=owner)
    if batch is None:
        raise errors.NotFound(f"no batch {batch_id!r}")
    return batch
