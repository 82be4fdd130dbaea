"""Batch routes: many jobs submitted as one unit, its progress, its jobs, cancel, and its results."""
from __future__ import annotations

import typing

import chalice
import pydantic

from chalicelib import batches
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import examples
from chalicelib import openapi
from chalicelib import service
from chalicelib import vocabulary
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

BATCH_ID = openapi.path_param("batch_id", "the batch's id, as submit answered it", example=examples.JOB_ID)
NDJSON = "application/x-ndjson"
ZIP = "application/zip"
ZIP_ONLY_STREAMED = ("format=zip is streamed by the container server (wsgi.py, `make run`) only; this "
                     "runtime answers whole bodies: download the manifest (format=ndjson), whose image_urls "
                     "point at each image")


class BatchRequest(pydantic.BaseModel):
    """The JSON form of a batch (NDJSON: one job per line, and an optional first line
    `{"batch": {webhook_url, webhook_secret, metadata, priority}}`)."""

    jobs: list[dict[str, typing.Any]] = pydantic.Field(
        min_length=1, description="each a submit body of POST /sdapi/v1/txt2img or /img2img plus `type` "
                                  "(`txt2img`, the default, or `img2img`)")
    webhook_url: str | None = pydantic.Field(None, description="receives one `batch.completed` event")
    webhook_secret: str | None = pydantic.Field(None, description="signs it (required with webhook_url)")
    metadata: dict[str, typing.Any] | None = None
    priority: int = pydantic.Field(0, ge=-100, le=100, description="default priority of the jobs")


SUBMIT_EXAMPLES = {
    "two jobs": {"jobs": [{"prompt": "a lighthouse", "steps": 20},
                          {"type": "txt2img", "prompt": "a harbour", "steps": 20}],
                 "metadata": {"run": 7}},
}
LIMIT = openapi.Param("limit", "query", "page size", {"type": "integer", "minimum": 1,
                                                       "maximum": service.MAX_LIST_LIMIT,
                                                       "default": service.DEFAULT_LIST_LIMIT})
CURSOR = openapi.Param("cursor", "query", "`next_cursor` of the previous page", {"type": "string", "minLength": 1})


@blueprint.route("/sdapi/v1/batches", methods=["POST"], content_types=[*http.JSON_BODY_CONTENT_TYPES, NDJSON])
@openapi.document(
    operation_id="submit_batch", summary="Submit a batch of jobs", tags=["batches"],
    description="Every job is validated first: one bad job and nothing is stored (422 naming each bad one by "
                "`jobs` index or NDJSON `line`). Then the batch and all its jobs are stored in one transaction. "
                "Send JSON, or NDJSON (`Content-Type: application/x-ndjson`, one job per line). At most "
                "BATCH_MAX_JOBS jobs (413 beyond). `Idempotency-Key` returns the first batch of that key.",
    parameters=(openapi.Param("Idempotency-Key", "header", "the same key from the same token returns the first "
                              "batch and creates nothing", {"type": "string", "minLength": 1, "maxLength": 255}),),
    body=openapi.Body(models=(BatchRequest,), description="the jobs and the batch's own fields",
                      examples=SUBMIT_EXAMPLES),
    responses={202: openapi.Reply("Queued: the batch.", model="Batch",
                                  headers={"Location": "the batch's URL",
                                           "Idempotent-Replayed": "`true` when an earlier batch is returned"})},
    errors=(400, 413, 422, 503))
@http.handler
def submit_batch() -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    view, created = batches.submit_batch(context_module.get_context(), owner=owner, raw=request.raw_body or b"",
                                         content_type=request.headers.get("content-type"),
                                         idempotency_key=request.headers.get("idempotency-key"))
    headers = {"Location": f"/sdapi/v1/batches/{view['batch_id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return http.json_response(view, status=202, headers=headers)


@blueprint.route("/sdapi/v1/batches", methods=["GET"])
@openapi.document(
    operation_id="list_batches", summary="List your batches, newest first", tags=["batches"],
    parameters=(LIMIT, CURSOR), responses={200: openapi.Reply("A page of batches.", model="BatchList")},
    errors=(422, 503))
@http.handler
def list_batches() -> chalice.Response:
    request = blueprint.current_request
    return http.json_response(batches.list_batches(
        context_module.get_context(), owner=http.owner_of(request), limit=http.query_param(request, "limit"),
        cursor=http.query_param(request, "cursor")))


@blueprint.route("/sdapi/v1/batches/{batch_id}", methods=["GET"])
@openapi.document(
    operation_id="get_batch", summary="Get a batch: counts, progress, ETA", tags=["batches"],
    parameters=(BATCH_ID,), responses={200: openapi.Reply("The batch.", model="Batch")}, errors=(404, 503))
@http.handler
def get_batch(batch_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    return http.json_response(batches.get_batch(context_module.get_context(), batch_id, owner=owner))


@blueprint.route("/sdapi/v1/batches/{batch_id}/jobs", methods=["GET"])
@openapi.document(
    operation_id="list_batch_jobs", summary="List a batch's jobs, in submission order", tags=["batches"],
    parameters=(BATCH_ID, openapi.Param("status", "query", "only jobs in this state",
                                        openapi.enum_schema(vocabulary.JobStatus)), LIMIT, CURSOR),
    responses={200: openapi.Reply("A page of the batch's jobs.", model="BatchJobList")}, errors=(404, 422, 503))
@http.handler
def list_batch_jobs(batch_id: str) -> chalice.Response:
    request = blueprint.current_request
    return http.json_response(batches.list_batch_jobs(
        context_module.get_context(), batch_id, owner=http.owner_of(request),
        status=http.query_param(request, "status"), limit=http.query_param(request, "limit"),
        cursor=http.query_param(request, "cursor")))


@blueprint.route("/sdapi/v1/batches/{batch_id}/cancel", methods=["POST"])
@openapi.document(
    operation_id="cancel_batch", summary="Cancel what has not finished", tags=["batches"],
    description="Queued jobs are cancelled at once; running ones are interrupted and end `cancelled` shortly. "
                "409 once every job has ended.",
    parameters=(BATCH_ID,), responses={200: openapi.Reply("The batch after the cancel.", model="Batch")},
    errors=(404, 409, 503))
@http.handler
def cancel_batch(batch_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    return http.json_response(batches.cancel_batch(context_module.get_context(), batch_id, owner=owner))


@blueprint.route("/sdapi/v1/batches/{batch_id}/results", methods=["GET"])
@openapi.document(
    operation_id="get_batch_results", summary="Download a batch's results", tags=["batches"],
    description="`format=ndjson` (default): the manifest, one line per job in submission order: `index`, "
                "`job_id`, `status`, `error`, `metadata`, `image_urls` (presigned with IMAGE_STORE=s3://...). "
                "`format=zip` (container server only; 422 elsewhere): every image as `<index>-<job_id>-<n>.png` "
                "and the manifest as manifest.ndjson, streamed.",
    parameters=(BATCH_ID, openapi.Param("format", "query", "ndjson or zip",
                                        {"type": "string", "enum": ["ndjson", "zip"], "default": "ndjson"})),
    responses={200: openapi.Reply("The manifest (or the zip).", media_types=(NDJSON, ZIP))},
    errors=(404, 422, 503))
@http.handler
def get_batch_results(batch_id: str) -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    form = http.query_param(request, "format") or "ndjson"
    if form == "zip":
        raise errors.ValidationFailed.single(["query", "format"], ZIP_ONLY_STREAMED, "unsupported")
    if form != "ndjson":
        raise errors.ValidationFailed.single(["query", "format"], "must be ndjson or zip", "enum")
    lines = batches.manifest(context_module.get_context(), batch_id, owner=owner)
    return chalice.Response(body="".join(lines), status_code=200, headers={"Content-Type": NDJSON})
