"""Job routes: A1111's generation endpoints answered asynchronously, and the job resource.

Each route's `@openapi.document` is its entry in the OpenAPI document (GET /openapi.json).
"""
from __future__ import annotations

import chalice

from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import examples
from chalicelib import openapi
from chalicelib import request_models
from chalicelib import service
from chalicelib import vocabulary
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

# A 1x1 PNG, so that img2img's example runs as it is in Swagger UI's "Try it out".
EXAMPLE_IMAGE = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
SUBMIT_EXAMPLES = {
    "a small image": {"prompt": "a lighthouse at dusk", "steps": 20, "width": 512, "height": 512},
    "priority and metadata": {"prompt": "a lighthouse at dusk", "steps": 20, "priority": 5,
                              "metadata": {"order": 42}},
    "with a webhook": {"prompt": "a lighthouse at dusk", "steps": 20,
                       "webhook_url": "https://example.com/hooks/a1111",
                       "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                       "webhook_events": ["job.started"]},
}
IMG2IMG_EXAMPLES = {
    "an edit": {"prompt": "an oil painting", "init_images": [EXAMPLE_IMAGE], "denoising_strength": 0.6,
                "steps": 20, "width": 512, "height": 512},
}
ALL_OWNERS = "*"
LIMITED = openapi.Reply(
    "A per-owner limit (MAX_QUEUED_PER_OWNER or SUBMITS_PER_MINUTE_PER_OWNER) was reached; nothing was stored.",
    model="Error", headers={"Retry-After": "seconds to wait before submitting again"},
    example={"error": "TooManyRequests", "detail": "alice has 100 jobs queued or running, the most one owner may "
                                                   "have (MAX_QUEUED_PER_OWNER); submit again once some have finished"})
JOB_ID = openapi.path_param("job_id", "the job's id, as submit answered it", example=examples.JOB_ID)
PREFER = openapi.Param(
    name="Prefer", location="header",
    description="`wait=N` (RFC 7240): hold the request up to N seconds (at most SYNC_WAIT_MAX_SECONDS; 25 on "
                "AWS Lambda) for the job to end; 200 with the job's detail (result included) and "
                "`Preference-Applied: wait=N` if it does, else the usual 202. See docs/a1111-clients.md.",
    schema={"type": "string", "pattern": "^wait=[0-9]+(\\.[0-9]+)?$"})
FINISHED = openapi.Reply(
    "With `Prefer: wait=N`: the job ended within N seconds; its detail, `result` included.", model="JobDetail",
    headers={"Preference-Applied": "`wait=N`, the seconds waited at most", "Location": "the job's URL"})
BUSY = openapi.Reply(
    "The job store cannot be reached, or (with `Prefer: wait`) SYNC_MAX_WAITING requests already wait in this "
    "server: nothing was stored.",
    model="Error", headers={"Retry-After": "seconds to wait before trying again"})
IDEMPOTENCY_KEY = openapi.Param(  # no example: Swagger UI would send it with every "Try it out"
    name="Idempotency-Key", location="header",
    description="e.g. `order-42`. The same key from the same token returns the first job (with "
                "`Idempotent-Replayed: true`) and creates no second one, whatever the body.",
    schema={"type": "string", "minLength": 1, "maxLength": service.MAX_IDEMPOTENCY_KEY_LENGTH})
IMAGES = openapi.Param(
    "images", "query", "`base64` (default): images inline in `result.images`, as A1111 answers; `urls`: links in "
    "`image_urls` instead (presigned S3 URLs with IMAGE_STORE=s3://...)",
    {"type": "string", "enum": list(service.IMAGE_DELIVERIES), "default": "base64"})
WAIT = openapi.Param(
    "wait", "query", "long-poll: wait up to this many seconds (capped by LONG_POLL_MAX_SECONDS) for the job to "
    "change, then answer; answers at once when the job is finished",
    {"type": "number", "minimum": 0})
VERSION = openapi.Param(
    "version", "query", "long-poll: the `version` you have; the answer comes as soon as the job's version is "
    "above it (default: the job's version now, so the next change)", {"type": "integer", "minimum": 0})
PREVIEWS = openapi.Param("previews", "query", "`true`: `progress.current_image` (A1111's live preview, base64) "
                         "in progress events", {"type": "boolean", "default": False})
LAST_EVENT_ID = openapi.Param("last_event_id", "query", "resume: the last event `id` (version) you received; "
                              "nothing at or below it is sent again", {"type": "integer", "minimum": 0})
LAST_EVENT_ID_HEADER = openapi.Param("Last-Event-ID", "header", "as `last_event_id` (browsers send it when they "
                                     "reconnect)", {"type": "integer", "minimum": 0})
EVENT_STREAM = openapi.Reply(
    "`text/event-stream`: per change `event:` job.queued | job.started | job.progress | job.completed | job.error "
    "| job.cancelled, `id:` the job's version, `data:` the job summary as JSON; a `:` comment line every "
    "STREAM_KEEPALIVE_SECONDS.", media_types=("text/event-stream",), schema={
        "type": "object", "description": "one event of the stream (its fields as the SSE format names them)",
        "properties": {"event": {"type": "string", "enum": ["job.queued", "job.started", "job.progress",
                                                            "job.completed", "job.error", "job.cancelled"]},
                       "id": {"type": "string", "description": "the job's version (absent on job.queued "
                                                                 "position changes)"},
                       "data": {"type": "string", "description": "the job summary, JSON on one line"},
                       "retry": {"type": "integer"}}})
STREAMING_UNAVAILABLE = ("event streams need a server that streams (python wsgi.py, make run, the container "
                         "image); this one answers whole bodies (chalice local or AWS Lambda). Long-poll instead: "
                         "GET /sdapi/v1/jobs/{job_id}?wait=20&version=<the version you have>")
NO_STREAMING = openapi.Reply(
    "This runtime cannot stream (chalice local, AWS Lambda): the JSON error says to long-poll instead.",
    model="Error", example={"error": "StreamingUnavailable", "detail": STREAMING_UNAVAILABLE})
JOB_EVENTS_DESCRIPTION = (
    "The job's state now, then one event per change until a terminal one (job.completed, job.error, "
    "job.cancelled) ends the stream. `data` is the job summary (no images). Resume with `Last-Event-ID` (or "
    "`?last_event_id=`): nothing already seen is sent again. While queued, position changes come as job.queued "
    "events without an `id` (they do not change the job's version). Served by the streaming WSGI server "
    "(`python wsgi.py`); 503 with Retry-After when STREAM_MAX_OPEN streams are open. See docs/live.md.")
OWNER_EVENTS_DESCRIPTION = (
    "The same events for every job of your token, each `data` with its `job_id`: first the state of your "
    "queued and processing jobs, then each change, for as long as you stay connected. For dashboards "
    "(GET /ui uses it). See docs/live.md.")
JOB_LINKS = {
    "GetJob": {"operationId": "get_job", "parameters": {"job_id": "$response.body#/job_id"},
               "description": "the job's state, progress and result"},
    "CancelJob": {"operationId": "cancel_job", "parameters": {"job_id": "$response.body#/job_id"},
                  "description": "cancel the job"},
    "DeleteJob": {"operationId": "delete_job", "parameters": {"job_id": "$response.body#/job_id"},
                  "description": "cancel the job (as DELETE)"},
}
SUBMITTED = openapi.Reply(
    "Queued: the job, with its id. Poll GET /sdapi/v1/jobs/{job_id} or wait for the webhook.",
    model="JobSummary", links=JOB_LINKS,
    headers={"Location": "the job's URL",
             "Idempotent-Replayed": "`true` when an earlier job with the same Idempotency-Key is returned"})
SUBMIT_DESCRIPTION = (
    "A1111's own request body ({model}, every field, type and default of A1111 v1.10.1; what reaches A1111 is "
    "governed: no saving, allow-listed override_settings and scripts, base64 images only, and unknown fields are "
    "not forwarded but listed in the job's `dropped_fields`; see docs/security.md) plus the job's own fields: "
    "`priority` (-100..100, higher runs first), `metadata` "
    "(a JSON object up to 16 KiB, returned with the job), `webhook_url` + `webhook_secret` (+ `webhook_events`) "
    "to be notified, `instance_labels` to run only on an A1111 instance configured with all those labels. "
    "Answers 202 at once with a queued job (or, with `Prefer: wait=N`, 200 with the finished job if it ends "
    "within N seconds); the result is A1111's {response} in the job's `result`. The body is parsed as JSON "
    "whatever its Content-Type says.")
CANCEL_REPLIES = {
    200: openapi.Reply("Cancelled: the job was still queued.", model="JobSummary"),
    202: openapi.Reply("Cancel requested: the job is running; the worker interrupts A1111 and the job ends "
                       "`cancelled` shortly (`cancel_requested` is true until then).", model="JobSummary"),
}
CANCEL_DESCRIPTION = ("A queued job is cancelled at once (200). A running job is interrupted in A1111 and "
                      "ends `cancelled` (202 now). A finished job cannot be cancelled (409). An admin token "
                      "(API_ADMIN_TOKENS) may cancel any owner's job.")


def _submit(kind: str) -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    ctx = context_module.get_context()
    body = http.json_body(request, max_bytes=ctx.settings.max_body_bytes)
    wait = http.prefer_wait(request)
    if wait is None:
        answer, created = service.submit_job(ctx, kind, owner=owner, body=body,
                                             idempotency_key=request.headers.get("idempotency-key"))
        finished, headers = False, {}
    else:
        answer, created, finished = service.submit_and_wait(
            ctx, kind, owner=owner, body=body, idempotency_key=request.headers.get("idempotency-key"), wait=wait)
        headers = {"Vary": "Prefer"}
        if finished:
            headers["Preference-Applied"] = f"wait={service.wait_seconds(ctx, wait):g}"
    headers["Location"] = f"/sdapi/v1/jobs/{answer['job_id']}"
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return http.json_response(answer, status=200 if finished else 202, headers=headers)


@blueprint.route("/sdapi/v1/txt2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(
    operation_id="text2imgapi_sdapi_v1_txt2img_post",  # A1111's, so generated A1111 clients keep working
    summary="Submit a txt2img job", tags=["generation"],
    description=SUBMIT_DESCRIPTION.format(model="StableDiffusionProcessingTxt2Img", response="TextToImageResponse"),
    parameters=(IDEMPOTENCY_KEY, PREFER),
    body=openapi.Body(models=(request_models.StableDiffusionProcessingTxt2Img, request_models.JobOptions),
                      name="Txt2ImgJobRequest",
                      description="A1111's txt2img request plus the job's own fields", examples=SUBMIT_EXAMPLES),
    responses={200: FINISHED, 202: SUBMITTED, 429: LIMITED, 503: BUSY}, errors=(400, 413, 422),
    webhook_callback=True)
@http.handler
def txt2img() -> chalice.Response:
    return _submit("txt2img")


@blueprint.route("/sdapi/v1/img2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(
    operation_id="img2imgapi_sdapi_v1_img2img_post",  # A1111's, so generated A1111 clients keep working
    summary="Submit an img2img job", tags=["generation"],
    description=SUBMIT_DESCRIPTION.format(model="StableDiffusionProcessingImg2Img", response="ImageToImageResponse")
    + " `init_images` needs at least one image (raw base64 or a data: URI).",
    parameters=(IDEMPOTENCY_KEY, PREFER),
    body=openapi.Body(models=(request_models.StableDiffusionProcessingImg2Img, request_models.JobOptions),
                      name="Img2ImgJobRequest",
                      description="A1111's img2img request plus the job's own fields", examples=IMG2IMG_EXAMPLES),
    responses={200: FINISHED, 202: SUBMITTED, 429: LIMITED, 503: BUSY}, errors=(400, 413, 422),
    webhook_callback=True)
@http.handler
def img2img() -> chalice.Response:
    return _submit("img2img")


@blueprint.route("/sdapi/v1/jobs", methods=["GET"])
@openapi.document(
    operation_id="list_jobs", summary="List your jobs, newest first", tags=["jobs"],
    parameters=(
        openapi.Param("status", "query", "only jobs in this state", openapi.enum_schema(vocabulary.JobStatus)),
        openapi.Param("limit", "query", "page size", {"type": "integer", "minimum": 1,
                                                      "maximum": service.MAX_LIST_LIMIT,
                                                      "default": service.DEFAULT_LIST_LIMIT}),
        openapi.Param("cursor", "query", "`next_cursor` of the previous page", {"type": "string", "minLength": 1}),
        openapi.Param("owner", "query", "admin tokens only (API_ADMIN_TOKENS): this owner's jobs, or `*` for "
                      "every owner's; another token may name only itself", {"type": "string", "minLength": 1}),
    ),
    responses={200: openapi.Reply("A page of jobs.", model="JobList")}, errors=(403, 422, 503))
@http.handler
def list_jobs() -> chalice.Response:
    request = blueprint.current_request
    owner = _listed_owner(http.owner_of(request), http.query_param(request, "owner"))
    return http.json_response(service.list_jobs(
        context_module.get_context(), owner=owner, status=http.query_param(request, "status"),
        limit=http.query_param(request, "limit"), cursor=http.query_param(request, "cursor")))


def _listed_owner(caller: str, asked: str | None) -> str | None:
    """Whose jobs a listing shows: the caller's own unless an admin names another owner, or `*`
    (None: every owner's)."""
    if asked is None or asked == caller:
        return caller
    if not http.is_admin(caller):
        raise errors.Forbidden("listing another owner's jobs (?owner=) needs an admin token (a token named in "
                               "API_ADMIN_TOKENS)")
    return None if asked == ALL_OWNERS else asked


def _visible_to(caller: str) -> str | None:
    """The owner whose jobs `caller` may read and cancel by id: its own, any (None) for an admin."""
    return None if http.is_admin(caller) else caller


@blueprint.route("/sdapi/v1/jobs/{job_id}", methods=["GET"])
@openapi.document(
    operation_id="get_job", summary="Get a job: state, progress, result", tags=["jobs"],
    description="While queued: `queue_position`. While running: `progress` with A1111's live preview. "
                "Once completed: `result` in A1111's response shape (`images` raw base64, `info` a JSON string) "
                "and `image_urls`. After an error: `error`. With `?images=urls`, `result.images` is empty and "
                "`image_urls` are links to the files (presigned S3 URLs when images are kept in S3); the server "
                "answers so by itself, and says why in `image_delivery_note`, when inline images would make the "
                "answer larger than MAX_RESPONSE_BYTES (AWS Lambda answers at most 6 MB).",
    parameters=(JOB_ID, IMAGES, WAIT, VERSION), responses={200: openapi.Reply("The job.", model="JobDetail")},
    errors=(404, 422, 503))
@http.handler
def get_job(job_id: str) -> chalice.Response:
    request = blueprint.current_request
    owner = _visible_to(http.owner_of(request))
    return http.json_response(service.get_job(context_module.get_context(), job_id, owner=owner,
                                              images=http.query_param(request, "images"),
                                              wait=http.query_param(request, "wait"),
                                              version=http.query_param(request, "version")))


@blueprint.route("/sdapi/v1/jobs/{job_id}/events", methods=["GET"])
@openapi.document(
    operation_id="job_events", summary="A job's events, live (Server-Sent Events)", tags=["live"],
    description=JOB_EVENTS_DESCRIPTION, parameters=(JOB_ID, PREVIEWS, LAST_EVENT_ID, LAST_EVENT_ID_HEADER),
    responses={200: EVENT_STREAM, 501: NO_STREAMING}, errors=(404, 422, 503))
@http.handler
def job_events(job_id: str) -> chalice.Response:
    return _no_streaming()


@blueprint.route("/sdapi/v1/events", methods=["GET"])
@openapi.document(
    operation_id="owner_events", summary="Events of all your jobs, live (Server-Sent Events)", tags=["live"],
    description=OWNER_EVENTS_DESCRIPTION,
    parameters=(openapi.Param("status", "query", "only events that leave a job in this state",
                              openapi.enum_schema(vocabulary.JobStatus)), PREVIEWS),
    responses={200: EVENT_STREAM, 501: NO_STREAMING}, errors=(422, 503))
@http.handler
def owner_events() -> chalice.Response:
    return _no_streaming()


def _no_streaming() -> chalice.Response:
    """Under Chalice alone (`chalice local`, AWS Lambda) answers are whole bodies: no stream."""
    http.owner_of(blueprint.current_request)
    return http.json_response({"error": "StreamingUnavailable", "detail": STREAMING_UNAVAILABLE}, status=501)


@blueprint.route("/sdapi/v1/jobs/{job_id}/cancel", methods=["POST"])
@openapi.document(
    operation_id="cancel_job", summary="Cancel a job", tags=["jobs"], description=CANCEL_DESCRIPTION,
    parameters=(JOB_ID,), responses=CANCEL_REPLIES, errors=(404, 409, 503))
@http.handler
def cancel_job(job_id: str) -> chalice.Response:
    return _cancel(job_id)


@blueprint.route("/sdapi/v1/jobs/{job_id}", methods=["DELETE"])
@openapi.document(
    operation_id="delete_job", summary="Cancel a job (as DELETE)", tags=["jobs"],
    description=CANCEL_DESCRIPTION + " The job's record stays.",
    parameters=(JOB_ID,), responses=CANCEL_REPLIES, errors=(404, 409, 503))
@http.handler
def delete_job(job_id: str) -> chalice.Response:
    return _cancel(job_id)


def _cancel(job_id: str) -> chalice.Response:
    owner = _visible_to(http.owner_of(blueprint.current_request))
    summary = service.cancel_job(context_module.get_context(), job_id, owner=owner)
    return http.json_response(summary, status=200 if summary["status"] == vocabulary.JobStatus.CANCELLED else 202)


@blueprint.route("/sdapi/v1/jobs/{job_id}/images/{n}", methods=["GET"])
@openapi.document(
    operation_id="get_job_image", summary="Download one image of a job", tags=["jobs"],
    description="Image `n` (from 0) of the job's result as a file. The request's `Accept` header must name the "
                "image's type or `*/*` (browsers and curl send one); without it the answer is 400.",
    parameters=(JOB_ID, openapi.path_param("n", "the image's index, from 0",
                                           schema={"type": "integer", "minimum": 0}, example=0)),
    responses={200: openapi.Reply("The image.", media_types=("image/png", "image/jpeg", "image/webp"),
                                  headers={"Cache-Control": "the image never changes"})},
    errors=(400, 404, 503))
@http.handler
def get_image(job_id: str, n: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    data, content_type = service.get_image(context_module.get_context(), job_id, n, owner=owner)
    return chalice.Response(body=data, status_code=200,
                            headers={"Content-Type": content_type, "Cache-Control": "private, max-age=86400"})
