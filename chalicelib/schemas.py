"""pydantic models of what the API answers: the source of the OpenAPI document's response schemas.

The views (`views.py`, `health.py`, `webhooks.delivery_view`) build plain dicts for speed; these
models describe them, and tests/unit/test_openapi.py plus the schemathesis run prove that every
answer validates against them. Job shapes are closed (`extra="forbid"`), so a field added to a view
without its schema fails the tests instead of going undocumented. A1111's response schemas keep
A1111's own names and fields (tests/unit/test_a1111_drift.py compares them with A1111's document).
"""
from __future__ import annotations

import datetime
import typing

import pydantic

from chalicelib import models

_CLOSED = pydantic.ConfigDict(extra="forbid")

RunOutcome = typing.Literal["completed", "error", "cancelled", "retry", "lost", "released"]
DeliveryStatus = typing.Literal["pending", "delivered", "failed"]

EXAMPLE_JOB_ID = "b11f2730-5cde-4f0e-9d4c-8a4c0e1f2a3b"
EXAMPLE_CREATED_AT = "2026-11-26T07:09:59.123Z"


def _example(value: dict) -> pydantic.ConfigDict:
    return pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [value]})


# --- Jobs ----------------------------------------------------------------------------------------

class Progress(pydantic.BaseModel):
    """The job's last progress as A1111's `GET /sdapi/v1/progress` reported it (null before any)."""

    model_config = _CLOSED

    progress: float | None = pydantic.Field(description="0 to 1")
    eta_relative: float | None = pydantic.Field(description="seconds left, as A1111 estimates them")
    step: int | None = pydantic.Field(description="sampling step of the current image")
    steps: int | None = pydantic.Field(description="sampling steps per image")
    job_no: int | None = pydantic.Field(description="index of the image batch being generated (from 0)")
    job_count: int | None = pydantic.Field(description="number of image batches (n_iter)")


class DetailProgress(Progress):
    """Progress in the job detail: also the live preview while the job runs."""

    current_image: str | None = pydantic.Field(description="live preview, raw base64 (PNG), while running")


class JobError(pydantic.BaseModel):
    """Why a job ended in `error`."""

    model_config = _CLOSED

    code: str = pydantic.Field(description="a1111_rejected | a1111_unavailable | a1111_bad_response | "
                                           "lease_expired")
    message: str | None


class JobSummary(pydantic.BaseModel):
    """A job as lists, submits and cancels show it."""

    model_config = _example({
        "job_id": EXAMPLE_JOB_ID, "type": "txt2img", "status": "queued", "priority": 0, "queue_position": 1,
        "progress": None, "attempts": 0, "cancel_requested": False, "created_at": EXAMPLE_CREATED_AT,
        "started_at": None, "finished_at": None, "error": None, "metadata": {"order": 42},
    })

    job_id: str = pydantic.Field(description="the job's id (a UUID)")
    type: models.JobKind
    status: models.JobStatus
    priority: int = pydantic.Field(ge=-100, le=100, description="higher runs first")
    queue_position: int | None = pydantic.Field(ge=1, description="while queued: 1 = next to run")
    progress: Progress | None
    attempts: int = pydantic.Field(ge=0, description="attempts started so far")
    cancel_requested: bool = pydantic.Field(description="a cancel is waiting for the worker to interrupt A1111")
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    error: JobError | None
    metadata: dict[str, typing.Any] | None = pydantic.Field(description="the client's metadata, as sent")


class TextToImageResponse(pydantic.BaseModel):
    """A1111's txt2img response: what a finished txt2img job holds in `result`."""

    images: list[str] = pydantic.Field(title="Image", description="The generated image in base64 format.")
    parameters: dict[str, typing.Any] = pydantic.Field(title="Parameters")
    info: str = pydantic.Field(title="Info", description="A1111's generation info: a JSON object as a string")


class ImageToImageResponse(pydantic.BaseModel):
    """A1111's img2img response: what a finished img2img job holds in `result`."""

    images: list[str] = pydantic.Field(title="Image", description="The generated image in base64 format.")
    parameters: dict[str, typing.Any] = pydantic.Field(title="Parameters")
    info: str = pydantic.Field(title="Info", description="A1111's generation info: a JSON object as a string")


class JobRun(pydantic.BaseModel):
    """One attempt at a job."""

    model_config = _CLOSED

    attempt: int = pydantic.Field(ge=1)
    worker_id: str
    instance: str = pydantic.Field(description="the A1111 instance it ran on")
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    outcome: RunOutcome | None = pydantic.Field(description="null while the attempt runs")
    detail: str | None


class JobDetail(JobSummary):
    """One job: the summary plus what was asked, where it ran and what came out."""

    model_config = _example({
        **JobSummary.model_config["json_schema_extra"]["examples"][0],
        "status": "completed", "queue_position": None, "attempts": 1,
        "progress": {"progress": 1.0, "eta_relative": 0.0, "step": 20, "steps": 20, "job_no": 0, "job_count": 1,
                     "current_image": None},
        "started_at": "2026-11-26T07:10:00.456Z", "finished_at": "2026-11-26T07:10:04.789Z",
        "request": {"prompt": "a lighthouse at dusk", "steps": 20},
        "webhook_url": None, "webhook_events": None, "instance": "http://127.0.0.1:7860",
        "result": {"images": ["iVBORw0KGgo..."], "parameters": {"prompt": "a lighthouse at dusk", "steps": 20},
                   "info": "{\"prompt\": \"a lighthouse at dusk\", \"seed\": 1234}"},
        "image_urls": [f"/sdapi/v1/jobs/{EXAMPLE_JOB_ID}/images/0"],
        "runs": [{"attempt": 1, "worker_id": "worker-1", "instance": "http://127.0.0.1:7860",
                  "started_at": "2026-11-26T07:10:00.456Z", "finished_at": "2026-11-26T07:10:04.789Z",
                  "outcome": "completed", "detail": None}],
    })

    progress: DetailProgress | None
    request: dict[str, typing.Any] = pydantic.Field(
        description="the A1111 request body as the worker sends it (the fields the client set; never our own "
                    "fields, never the webhook secret)")
    webhook_url: str | None
    webhook_events: list[models.WebhookEvent] | None = pydantic.Field(
        description="non-terminal events the client asked for (terminal events are always sent)")
    instance: str | None = pydantic.Field(description="the A1111 instance that ran it")
    result: TextToImageResponse | ImageToImageResponse | None = pydantic.Field(
        description="A1111's response (images as raw base64, `info` a JSON string), once it has one")
    image_urls: list[str] = pydantic.Field(description="each image as a file (relative URLs)")
    runs: list[JobRun]


class JobList(pydantic.BaseModel):
    """A page of the token's jobs, newest first."""

    model_config = _example({"jobs": [JobSummary.model_config["json_schema_extra"]["examples"][0]],
                             "next_cursor": "eyJiZWZvcmUiOiAxMn0"})

    jobs: list[JobSummary]
    next_cursor: str | None = pydantic.Field(description="pass as `cursor` for the next page; null on the last")


# --- Errors --------------------------------------------------------------------------------------

class Error(pydantic.BaseModel):
    """Every error but validation: the error's name and a sentence saying what to do."""

    model_config = _example({"error": "NotFound", "detail": f"no job '{EXAMPLE_JOB_ID}'"})

    error: str = pydantic.Field(description="BadRequest, Unauthorized, NotFound, Conflict, PayloadTooLarge, "
                                            "StoreUnavailable, MethodNotAllowedError, UnsupportedMediaType, ...")
    detail: str


class ValidationError(pydantic.BaseModel):
    """One problem with the request, as FastAPI (and so A1111) reports it."""

    loc: list[str | int] = pydantic.Field(title="Location")
    msg: str = pydantic.Field(title="Message")
    type: str = pydantic.Field(title="Error Type")


class HTTPValidationError(pydantic.BaseModel):
    """422: every problem at once. FastAPI's shape (`detail`), plus our `error`."""

    model_config = _example({"error": "ValidationError", "detail": [
        {"loc": ["body", "steps"], "msg": "steps is 500; the limit is 150 (MAX_STEPS)", "type": "less_than_equal"}]})

    error: typing.Literal["ValidationError"]
    detail: list[ValidationError]


# --- Health --------------------------------------------------------------------------------------

class HealthStore(pydantic.BaseModel):
    backend: str | None = None
    ok: bool
    error: str | None = None


class HealthQueue(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    jobs: dict[str, int] = pydantic.Field(description="jobs by status")
    doorbells: dict[str, int] = pydantic.Field(
        description="the jobs queue's messages: visible, in_flight_or_delayed, dead_letter")


class HealthWorker(pydantic.BaseModel):
    id: str
    heartbeat_age_seconds: float
    current_jobs: list[str]


class HealthInstance(pydantic.BaseModel):
    name: str
    capacity: int
    reachable: bool
    busy: bool
    running_jobs: int


class Health(pydantic.BaseModel):
    """The service at a glance; 503 with `status: unavailable` when the store cannot be used.

    Open to new keys: it is an operations report that grows with the service.
    """

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "status": "ok", "store": {"backend": "sqlite", "ok": True},
        "queue": {"jobs": {"queued": 1, "processing": 1, "completed": 10, "error": 0, "cancelled": 2},
                  "doorbells": {"visible": 1, "in_flight_or_delayed": 1, "dead_letter": 0}},
        "workers": [{"id": "worker-1", "heartbeat_age_seconds": 0.8, "current_jobs": [EXAMPLE_JOB_ID]}],
        "instances": [{"name": "http://127.0.0.1:7860", "capacity": 1, "reachable": True, "busy": True,
                       "running_jobs": 1}],
    }]})

    status: typing.Literal["ok", "unavailable"]
    store: HealthStore
    queue: HealthQueue | None = None
    workers: list[HealthWorker] | None = None
    instances: list[HealthInstance] | None = None


# --- Webhooks ------------------------------------------------------------------------------------

class WebhookEvent(pydantic.BaseModel):
    """The body POSTed to a job's `webhook_url`, signed per Standard Webhooks."""

    model_config = _example({"type": "job.completed", "timestamp": "2026-11-26T07:10:04.789Z",
                             "data": JobDetail.model_config["json_schema_extra"]["examples"][0], "omitted": []})

    type: models.WebhookEvent
    timestamp: datetime.datetime
    data: JobDetail
    omitted: list[str] = pydantic.Field(
        description="parts left out to keep the body small (e.g. data.result.images; fetch data.image_urls)")


class WebhookAttempt(pydantic.BaseModel):
    """One POST of a delivery to the receiver."""

    model_config = _CLOSED

    attempt: int = pydantic.Field(ge=1)
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    status_code: int | None = pydantic.Field(description="the receiver's HTTP status, if it answered")
    response: str | None = pydantic.Field(description="the start of the receiver's answer")
    error: str | None = pydantic.Field(description="why there was no usable answer")


class WebhookDelivery(pydantic.BaseModel):
    """One event for a job's webhook; `webhook_id` is the `webhook-id` header of every attempt."""

    model_config = _example({
        "webhook_id": "msg_2b8f0c0e6c4d4e1f9a7b3c2d1e0f9a8b", "type": "job.completed", "status": "delivered",
        "in_flight": False, "event_timestamp": "2026-11-26T07:10:04.789Z", "created_at": "2026-11-26T07:10:04.790Z",
        "next_attempt_at": None, "finished_at": "2026-11-26T07:10:04.912Z", "redelivery_of": None,
        "attempt_count": 1, "attempts": [{"attempt": 1, "started_at": "2026-11-26T07:10:04.800Z",
                                          "finished_at": "2026-11-26T07:10:04.912Z", "status_code": 204,
                                          "response": "", "error": None}],
    })

    webhook_id: str
    type: models.WebhookEvent
    status: DeliveryStatus
    in_flight: bool = pydantic.Field(description="an attempt is being made right now")
    event_timestamp: datetime.datetime | None
    created_at: datetime.datetime
    next_attempt_at: datetime.datetime | None = pydantic.Field(description="when the next attempt is due")
    finished_at: datetime.datetime | None
    redelivery_of: str | None = pydantic.Field(description="the webhook_id this delivery sends again")
    attempt_count: int = pydantic.Field(ge=0)
    attempts: list[WebhookAttempt]


class WebhookDeliveryList(pydantic.BaseModel):
    """A page of a job's webhook deliveries, newest first."""

    model_config = _example({
        "job_id": EXAMPLE_JOB_ID, "webhook_url": "https://example.com/hooks/a1111",
        "deliveries": [WebhookDelivery.model_config["json_schema_extra"]["examples"][0]], "next_cursor": None})

    job_id: str
    webhook_url: str | None
    deliveries: list[WebhookDelivery]
    next_cursor: str | None
