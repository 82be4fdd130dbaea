"""pydantic models of what the API answers: the source of the OpenAPI document's response schemas.

The views (`views.py`, `health.py`, `webhooks.history.delivery_view`) build plain dicts for speed; these
models describe them, and tests/unit/test_openapi.py plus the schemathesis run prove that every
answer validates against them. Job shapes are closed (`extra="forbid"`), so a field added to a view
without its schema fails the tests instead of going undocumented. A1111's response schemas keep
A1111's own names and fields (tests/unit/test_a1111_drift.py compares them with A1111's document).
"""
from __future__ import annotations

import datetime
import typing

import pydantic

from chalicelib import examples
from chalicelib import request_models
from chalicelib import vocabulary

_CLOSED = pydantic.ConfigDict(extra="forbid")

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
        "job_id": examples.JOB_ID, "uuid": examples.JOB_ID, "id": examples.JOB_ID, "job_status": "queued",
        "type": "txt2img", "owner": "alice", "status": "queued", "priority": 0, "queue_position": 1,
        "progress": None, "attempts": 0, "cancel_requested": False, "created_at": EXAMPLE_CREATED_AT,
        "started_at": None, "finished_at": None, "error": None, "metadata": {"order": 42}, "version": 1,
        "batch_id": None,
    })

    job_id: str = pydantic.Field(description="the job's id (a UUID)")
    uuid: str = pydantic.Field(description="= job_id, for the original proxy's clients (docs/legacy.md)")
    id: str = pydantic.Field(description="= job_id, for the original proxy's clients")
    job_status: vocabulary.JobStatus = pydantic.Field(description="= status, for the original proxy's clients")
    type: request_models.JobKind
    owner: str = pydantic.Field(description="the name of the token that submitted it (API_TOKENS): in an "
                                            "admin's listing of every owner's jobs (`?owner=*`), whose it is")
    status: vocabulary.JobStatus
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
    version: int = pydantic.Field(ge=1, description="1 when submitted, higher after every change of the job "
                                                    "(state, progress, cancel flag); the `id` of its events and "
                                                    "what `?version=` long-polls on (docs/live.md)")
    batch_id: str | None = pydantic.Field(None, description="the batch the job belongs to (null: none)")


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
    outcome: vocabulary.RunOutcome | None = pydantic.Field(description="null while the attempt runs")
    detail: str | None


class Interrupted(pydantic.BaseModel):
    """What a cancel that interrupted A1111 kept."""

    model_config = _CLOSED

    iterations_finished: int = pydantic.Field(
        ge=0, description="iterations (of `n_iter`) A1111's progress showed finished before the interrupt")
    images_kept: int = pydantic.Field(ge=0, description="their images: `batch_size` each, in `result.images`")
    images_discarded: int = pydantic.Field(
        ge=0, description="images A1111 answered for the iteration it cut short (decoded from the step it "
                          "reached, unmarked): never kept")


class JobDetail(JobSummary):
    """One job: the summary plus what was asked, where it ran and what came out."""

    model_config = _example({
        **JobSummary.model_config["json_schema_extra"]["examples"][0],
        "status": "completed", "queue_position": None, "attempts": 1,
        "progress": {"progress": 1.0, "eta_relative": 0.0, "step": 20, "steps": 20, "job_no": 0, "job_count": 1,
                     "current_image": None},
        "started_at": "2026-11-26T07:10:00.456Z", "finished_at": "2026-11-26T07:10:04.789Z",
        "request": {"prompt": "a lighthouse at dusk", "steps": 20, "save_images": False, "do_not_save_samples": True,
                    "do_not_save_grid": True, "override_settings_restore_afterwards": True},
        "dropped_fields": [],
        "webhook_url": None, "webhook_events": None, "instance": "http://127.0.0.1:7860", "instance_labels": None,
        "result": {"images": ["iVBORw0KGgo..."], "parameters": {"prompt": "a lighthouse at dusk", "steps": 20},
                   "info": "{\"prompt\": \"a lighthouse at dusk\", \"seed\": 1234}"},
        "image_urls": [f"/sdapi/v1/jobs/{examples.JOB_ID}/images/0"],
        "image_delivery": "base64", "image_delivery_note": None, "interrupted": None,
        "runs": [{"attempt": 1, "worker_id": "worker-1", "instance": "http://127.0.0.1:7860",
                  "started_at": "2026-11-26T07:10:00.456Z", "finished_at": "2026-11-26T07:10:04.789Z",
                  "outcome": "completed", "detail": None}],
    })

    progress: DetailProgress | None
    request: dict[str, typing.Any] = pydantic.Field(
        description="the A1111 request body as the worker sends it: the fields the client set as the policy "
                    "governs them (docs/security.md: saving forced off, options restored afterwards); never our "
                    "own fields, never the webhook secret")
    dropped_fields: list[str] = pydantic.Field(
        description="top-level fields of the submit that A1111 does not define and A1111_EXTRA_FIELDS does "
                    "not list: they were not forwarded (A1111 would ignore them)")
    webhook_url: str | None
    webhook_events: list[request_models.WebhookEvent] | None = pydantic.Field(
        description="non-terminal events the client asked for (terminal events are always sent)")
    instance: str | None = pydantic.Field(description="the A1111 instance that ran it")
    instance_labels: list[str] | None = pydantic.Field(
        description="the labels the job asked for: only an instance with all of them runs it")
    result: TextToImageResponse | ImageToImageResponse | None = pydantic.Field(
        description="A1111's response (images as raw base64, `info` a JSON string), once it has one")
    image_urls: list[str] = pydantic.Field(
        description="each image as a file: relative URLs of this API, or (with `image_delivery` `urls` and "
                    "IMAGE_STORE=s3://...) presigned S3 URLs valid for IMAGE_URL_EXPIRY_SECONDS")
    image_delivery: typing.Literal["base64", "urls"] = pydantic.Field(
        description="`base64`: the images are in `result.images`, as A1111 answers them. `urls`: `result.images` "
                    "is empty and `image_urls` is where they are (asked for with `?images=urls`, or chosen by the "
                    "server when inline images would make the answer larger than MAX_RESPONSE_BYTES)")
    image_delivery_note: str | None = pydantic.Field(
        description="why the server answered with URLs although base64 was asked for; null otherwise")
    interrupted: Interrupted | None = pydantic.Field(
        description="a cancelled job whose generation A1111 had begun: how many images were kept (only "
                    "those of iterations finished before the interrupt); null otherwise")
    runs: list[JobRun]


class JobList(pydantic.BaseModel):
    """A page of the token's jobs, newest first."""

    model_config = _example({"jobs": [JobSummary.model_config["json_schema_extra"]["examples"][0]],
                             "next_cursor": "eyJiZWZvcmUiOiAxMn0"})

    jobs: list[JobSummary]
    next_cursor: str | None = pydantic.Field(description="pass as `cursor` for the next page; null on the last")


# --- Batches -------------------------------------------------------------------------------------

class BatchCounts(pydantic.BaseModel):
    """Jobs of the batch per status."""

    queued: int = pydantic.Field(ge=0)
    processing: int = pydantic.Field(ge=0)
    completed: int = pydantic.Field(ge=0)
    error: int = pydantic.Field(ge=0)
    cancelled: int = pydantic.Field(ge=0)


class Batch(pydantic.BaseModel):
    """A batch at a glance (docs/batches.md)."""

    model_config = _example({
        "batch_id": examples.JOB_ID, "status": "processing", "jobs": 3,
        "counts": {"queued": 1, "processing": 1, "completed": 1, "error": 0, "cancelled": 0},
        "progress": 0.5, "eta_seconds": 12.5, "metadata": {"run": 7}, "webhook_url": None, "priority": 0,
        "created_at": EXAMPLE_CREATED_AT, "started_at": EXAMPLE_CREATED_AT, "finished_at": None,
    })

    batch_id: str
    status: typing.Literal["queued", "processing", "completed"] = pydantic.Field(
        description="completed once every job has ended (completed, error or cancelled)")
    jobs: int = pydantic.Field(ge=0)
    counts: BatchCounts
    progress: float = pydantic.Field(ge=0, le=1, description="share of the work done, each job weighted by "
                                                             "steps × images")
    eta_seconds: float | None = pydantic.Field(description="from the throughput observed since the first job "
                                                           "started; null before that")
    metadata: dict[str, typing.Any] | None
    webhook_url: str | None = pydantic.Field(description="receives batch.completed")
    priority: int | None = pydantic.Field(description="the default priority of the batch's jobs")
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None


class BatchList(pydantic.BaseModel):
    """A page of the token's batches, newest first."""

    model_config = _example({"batches": [Batch.model_config["json_schema_extra"]["examples"][0]],
                             "next_cursor": None})

    batches: list[Batch]
    next_cursor: str | None = pydantic.Field(description="pass as `cursor` for the next page; null on the last")


class BatchJobList(pydantic.BaseModel):
    """A page of a batch's jobs, in submission order."""

    model_config = _example({"batch_id": examples.JOB_ID,
                             "jobs": [JobSummary.model_config["json_schema_extra"]["examples"][0]],
                             "next_cursor": "eyJiZWZvcmUiOiAxMn0"})

    batch_id: str
    jobs: list[JobSummary]
    next_cursor: str | None = pydantic.Field(description="pass as `cursor` for the next page; null on the last")


# --- Errors --------------------------------------------------------------------------------------

class Error(pydantic.BaseModel):
    """Every error but validation: the error's name and a sentence saying what to do."""

    model_config = _example({"error": "NotFound", "detail": f"no job '{examples.JOB_ID}'"})

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
    ok: bool = pydantic.Field(description="the store answered")
    writes_failing: bool | None = pydantic.Field(
        None, description="the store refused a write of this API process within the last minute (a full "
                          "disk, a read-only server): it reads, but jobs may be refused (503) or not run")
    last_write_error: str | None = pydantic.Field(None, description="why the last refused write was refused")
    last_write_failed_at: str | None = pydantic.Field(None, description="when (ISO 8601, UTC)")
    error: str | None = None


class HealthQueue(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    jobs: dict[str, int] = pydantic.Field(description="jobs by status")
    doorbells: dict[str, int] = pydantic.Field(
        description="the jobs queue's messages: visible, in_flight_or_delayed, dead_letter")


class HealthWebhooks(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    due: int = pydantic.Field(description="webhook deliveries whose (first or next) attempt is due now; a number that "
                                          "keeps growing means the dispatchers are behind or down")


class HealthWorker(pydantic.BaseModel):
    id: str
    heartbeat_age_seconds: float
    current_jobs: list[str]


class HealthInstance(pydantic.BaseModel):
    """One A1111 instance: probed now by the API, plus what the store says ran on it."""

    name: str
    capacity: int
    labels: list[str] = []
    reachable: bool = pydantic.Field(description="same as healthy (kept for older clients)")
    healthy: bool = pydantic.Field(description="answered GET /sdapi/v1/options just now")
    busy: bool = pydantic.Field(description="runs as many jobs as its capacity")
    running_jobs: int
    current_jobs: list[str] = pydantic.Field(description="ids of the jobs running on it")
    loaded_model: str | None = pydantic.Field(description="its sd_model_checkpoint option, if it answered")
    jobs_done: int = pydantic.Field(description="attempts it completed")
    last_error: str | None = pydantic.Field(
        description="why the probe failed, else the latest failed attempt on it (may be old)")


class Instances(pydantic.BaseModel):
    """Every configured A1111 instance (A1111_BASE_URL or A1111_INSTANCES)."""

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{"instances": [{
        "name": "http://127.0.0.1:7860", "capacity": 1, "labels": ["sdxl"], "reachable": True,
        "healthy": True, "busy": True, "running_jobs": 1, "current_jobs": [examples.JOB_ID],
        "loaded_model": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "jobs_done": 12,
        "last_error": None}]}]})

    instances: list[HealthInstance]


class Health(pydantic.BaseModel):
    """The service at a glance; 503 with `status: unavailable` when the store cannot be used.

    Open to new keys: it is an operations report that grows with the service.
    """

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "status": "ok", "store": {"backend": "sqlite", "ok": True},
        "queue": {"jobs": {"queued": 1, "processing": 1, "completed": 10, "error": 0, "cancelled": 2},
                  "doorbells": {"visible": 1, "in_flight_or_delayed": 1, "dead_letter": 0}},
        "webhooks": {"due": 0},
        "workers": [{"id": "worker-1", "heartbeat_age_seconds": 0.8, "current_jobs": [examples.JOB_ID]}],
        "instances": [{"name": "http://127.0.0.1:7860", "capacity": 1, "labels": [], "reachable": True,
                       "healthy": True, "busy": True, "running_jobs": 1, "current_jobs": [examples.JOB_ID],
                       "loaded_model": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "jobs_done": 12,
                       "last_error": None}],
    }]})

    status: typing.Literal["ok", "degraded", "down", "unavailable"] = pydantic.Field(
        description="as in the summary without a token")
    store: HealthStore
    queue: HealthQueue | None = None
    webhooks: HealthWebhooks | None = None
    workers: list[HealthWorker] | None = None
    instances: list[HealthInstance] | None = None


ComponentState = typing.Literal["up", "degraded", "down"]


class HealthSummary(pydantic.BaseModel):
    """What GET /health tells without a token: one word per component, nothing about jobs or hosts."""

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "status": "degraded", "components": {"store": "up", "queue": "up", "workers": "up", "instances": "degraded"}}]})

    status: typing.Literal["ok", "degraded", "down", "unavailable"] = pydantic.Field(
        description="ok: every component is up; degraded: the store is up but something else is not (an "
                    "instance down); down: no job can run (no instance answers, or no worker is alive), "
                    "submissions still wait in the queue; unavailable (503): the job store cannot be reached")
    components: dict[str, ComponentState] = pydantic.Field(
        description="store, queue, workers (a heartbeat is fresh), instances (up: all answer, degraded: some)")


class HealthReport(pydantic.RootModel[typing.Union[HealthSummary, Health]]):
    """GET /health: the summary without a token, the detailed `Health` with one."""


# --- Webhooks ------------------------------------------------------------------------------------

class WebhookEvent(pydantic.BaseModel):
    """The body POSTed to a job's `webhook_url`, signed per Standard Webhooks."""

    model_config = _example({"type": "job.completed", "timestamp": "2026-11-26T07:10:04.789Z",
                             "data": JobDetail.model_config["json_schema_extra"]["examples"][0], "omitted": []})

    type: request_models.WebhookEvent
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
    type: request_models.WebhookEvent
    status: vocabulary.DeliveryStatus
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
        "job_id": examples.JOB_ID, "webhook_url": "https://example.com/hooks/a1111",
        "deliveries": [WebhookDelivery.model_config["json_schema_extra"]["examples"][0]], "next_cursor": None})

    job_id: str
    webhook_url: str | None
    deliveries: list[WebhookDelivery]
    next_cursor: str | None


# --- Models, LoRAs and A1111 discovery -----------------------------------------------------------
# A1111's shapes under A1111's names (as in A1111 v1.10.1's openapi.json), open to extra keys: what an instance
# answers is passed on as it is. Checkpoints and LoRAs add `instances`, `stale` and `civitai`.

EXAMPLE_INSTANCE = "http://127.0.0.1:7860"


class CivitaiImage(pydantic.BaseModel):
    """One preview image of the model version on Civitai."""

    model_config = _CLOSED

    url: str
    nsfw_level: int | None = pydantic.Field(
        description="Civitai browsing level: 1 PG, 2 PG-13, 4 R, 8 X, 16 the most explicit")
    width: int | None
    height: int | None
    type: str | None = pydantic.Field(description="image or video")


class CivitaiInfo(pydantic.BaseModel):
    """What Civitai knows of the file, looked up by its best hash (only when CIVITAI_ENABLED)."""

    model_config = _example({
        "status": "found", "hash": "bf82986f8597", "hash_type": "AutoV3", "fetched_at": EXAMPLE_CREATED_AT,
        "model_id": 1117241, "model_name": "Enchanted Whimsy style (Flux)", "version_id": 1255556,
        "version_name": "v1.0", "type": "LORA", "base_model": "Flux.1 D", "trained_words": ["in the style of ppWhimsy"],
        "nsfw": False, "nsfw_level": None, "air": "urn:air:flux1:lora:civitai:1117241@1255556",
        "page_url": "https://civitai.com/models/1117241?modelVersionId=1255556",
        "download_url": "https://civitai.com/api/download/models/1255556",
        "preview_images": [{"url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/707aef9b-36fb-46c2-ac41-"
                                   "adcab539d3a6/width=832/50270101.jpeg",
                            "nsfw_level": 1, "width": 832, "height": 1216, "type": "image"}],
    })

    status: typing.Literal["found", "not_found", "no_hash", "unavailable"] = pydantic.Field(
        description="found; not_found (Civitai has no file with this hash); no_hash (A1111 shows no hash for "
                    "the file yet: A1111 hashes a checkpoint when it is first loaded); unavailable (Civitai did "
                    "not answer within CIVITAI_BUDGET: asked again on a later request)")
    hash: str | None = pydantic.Field(description="the hash looked up (lower-case hex)")
    hash_type: typing.Literal["SHA256", "AutoV2", "AutoV3"] | None
    fetched_at: datetime.datetime | None = pydantic.Field(description="when Civitai gave this answer")
    model_id: int | None
    model_name: str | None
    version_id: int | None
    version_name: str | None
    type: str | None = pydantic.Field(description="Checkpoint, LORA, LoCon, TextualInversion, ...")
    base_model: str | None = pydantic.Field(description="SD 1.5, SDXL 1.0, Pony, Flux.1 D, ...")
    trained_words: list[str] = pydantic.Field(description="trigger words")
    nsfw: bool | None
    nsfw_level: int | None
    air: str | None = pydantic.Field(description="Civitai's AIR URN of the version")
    page_url: str | None
    download_url: str | None
    preview_images: list[CivitaiImage]


_ITEM_EXTRAS_DOC = {
    "instances": "the A1111 instances that have it (A1111_BASE_URL names)",
    "stale": "every instance that has it is unreachable: this is their last answer",
    "civitai": "Civitai's metadata (only when CIVITAI_ENABLED)",
}


class SDModelItem(pydantic.BaseModel):
    """A1111's checkpoint entry (`hash` and `sha256` are null until A1111 loaded the file once)."""

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689", "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/stable-diffusion-webui/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None, "instances": [EXAMPLE_INSTANCE], "stale": False}]})

    title: str = pydantic.Field(title="Title")
    model_name: str = pydantic.Field(title="Model Name")
    hash: str | None = pydantic.Field(None, title="Short hash")
    sha256: str | None = pydantic.Field(None, title="sha256 hash")
    filename: str = pydantic.Field(title="Filename")
    config: str | None = pydantic.Field(None, title="Config file")
    instances: list[str] = pydantic.Field(description=_ITEM_EXTRAS_DOC["instances"])
    stale: bool = pydantic.Field(description=_ITEM_EXTRAS_DOC["stale"])
    civitai: CivitaiInfo | None = pydantic.Field(None, description=_ITEM_EXTRAS_DOC["civitai"])


class LoraItem(pydantic.BaseModel):
    """A1111's LoRA entry; its hash is only in `metadata.sshs_model_hash`, when kohya wrote one."""

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "name": "pp-enchanted-whimsy", "alias": "pp-enchanted-whimsy",
        "path": "/stable-diffusion-webui/models/Lora/pp-enchanted-whimsy.safetensors",
        "metadata": {"ss_output_name": "pp-enchanted-whimsy", "sshs_model_hash": "bf82986f8597" + "0" * 52},
        "instances": [EXAMPLE_INSTANCE], "stale": False,
        "civitai": CivitaiInfo.model_config["json_schema_extra"]["examples"][0]}]})

    name: str = pydantic.Field(description="the file name without extension (no subfolder)")
    alias: str | None = pydantic.Field(None, description="metadata.ss_output_name, else name")
    path: str | None = None
    metadata: dict[str, typing.Any] = pydantic.Field(default_factory=dict,
                                                     description="the safetensors header's __metadata__")
    instances: list[str] = pydantic.Field(description=_ITEM_EXTRAS_DOC["instances"])
    stale: bool = pydantic.Field(description=_ITEM_EXTRAS_DOC["stale"])
    civitai: CivitaiInfo | None = pydantic.Field(None, description=_ITEM_EXTRAS_DOC["civitai"])


def _list_of(item: type[pydantic.BaseModel], name: str, doc: str) -> type[pydantic.RootModel]:
    example = item.model_config["json_schema_extra"]["examples"][0]
    model = pydantic.create_model(name, __base__=pydantic.RootModel[list[item]], __doc__=doc)
    model.model_config = pydantic.ConfigDict(json_schema_extra={"examples": [[example]]})
    model.model_rebuild(force=True)
    return model


class SamplerItem(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {"uses_ensd": "True"}}]})

    name: str = pydantic.Field(title="Name")
    aliases: list[str] = pydantic.Field(title="Aliases")
    options: dict[str, str] = pydantic.Field(title="Options")


class SchedulerItem(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": None}]})

    name: str = pydantic.Field(title="Name")
    label: str = pydantic.Field(title="Label")
    aliases: list[str] | None = pydantic.Field(None, title="Aliases")
    default_rho: float | None = pydantic.Field(None, title="Default Rho")
    need_inner_model: bool | None = pydantic.Field(None, title="Needs Inner Model")


class SDVaeItem(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model_name": "vae-ft-mse-840000-ema-pruned.safetensors",
         "filename": "/stable-diffusion-webui/models/VAE/vae-ft-mse-840000-ema-pruned.safetensors"}]})

    model_name: str = pydantic.Field(title="Model Name")
    filename: str = pydantic.Field(title="Filename")


class UpscalerItem(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"name": "R-ESRGAN 4x+", "model_name": "R-ESRGAN 4x+", "model_path": None, "model_url": None,
         "scale": 4.0}]})

    name: str = pydantic.Field(title="Name")
    model_name: str | None = pydantic.Field(None, title="Model Name")
    model_path: str | None = pydantic.Field(None, title="Path")
    model_url: str | None = pydantic.Field(None, title="URL")
    scale: float | None = pydantic.Field(None, title="Scale")


class ScriptsList(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"txt2img": ["prompt matrix", "x/y/z plot"], "img2img": ["img2img alternative test", "x/y/z plot"]}]})

    txt2img: list[typing.Any] | None = pydantic.Field(None, title="Txt2img", description="Titles of scripts (txt2img)")
    img2img: list[typing.Any] | None = pydantic.Field(None, title="Img2img", description="Titles of scripts (img2img)")


class EmbeddingItem(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    step: int | None = pydantic.Field(None, title="Step")
    sd_checkpoint: str | None = pydantic.Field(None, title="SD Checkpoint")
    sd_checkpoint_name: str | None = pydantic.Field(None, title="SD Checkpoint Name")
    shape: int = pydantic.Field(title="Shape")
    vectors: int = pydantic.Field(title="Vectors")


class EmbeddingsResponse(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "loaded": {"easynegative": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768,
                                    "vectors": 8}}, "skipped": {}}]})

    loaded: dict[str, EmbeddingItem] = pydantic.Field(title="Loaded")
    skipped: dict[str, EmbeddingItem] = pydantic.Field(title="Skipped")


class Options(pydantic.BaseModel):
    """A1111's settings (about 300 keys), as the instance answers them."""

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "sd_checkpoint_hash": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "samples_format": "png"}]})


SDModelList = _list_of(SDModelItem, "SDModelList", "A1111's checkpoints, of every instance")
LoraList = _list_of(LoraItem, "LoraList", "A1111's LoRAs, of every instance")
SamplerList = _list_of(SamplerItem, "SamplerList", "A1111's samplers")
SchedulerList = _list_of(SchedulerItem, "SchedulerList", "A1111's schedulers")
SDVaeList = _list_of(SDVaeItem, "SDVaeList", "A1111's VAEs")
UpscalerList = _list_of(UpscalerItem, "UpscalerList", "A1111's upscalers")


# --- The original proxy's shapes (the /legacy profile, docs/legacy.md) -----------------------------

class ModelChoice(pydantic.BaseModel):
    """Answer to `POST /sdapi/v1/options`: empty, as the original proxy's clients expect any JSON."""

    model_config = pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})


class LegacyJob(pydantic.BaseModel):
    """A job as the original proxy showed it."""

    model_config = _example({"uuid": examples.JOB_ID, "job_status": "completed", "progress": 1,
                             "images": ["iVBORw0KGgo..."], "info": "{\"seed\": 1234}"})

    uuid: str
    job_status: vocabulary.JobStatus
    progress: float = pydantic.Field(ge=0, le=1, description="0..1")
    images: list[str] = pydantic.Field(description="base64 PNGs once completed")
    info: str = pydantic.Field(description="A1111's info string once completed, else empty")


class LegacyQueueItem(pydantic.BaseModel):
    model_config = _example({"uuid": examples.JOB_ID, "job_status": "processing", "progress": 0.4,
                             "workflow": "txt2img", "retry_count": 0, "created_at": EXAMPLE_CREATED_AT})

    uuid: str
    job_status: vocabulary.JobStatus
    progress: float = pydantic.Field(ge=0, le=1)
    workflow: request_models.JobKind
    retry_count: int = pydantic.Field(ge=0, description="attempts after the first")
    created_at: datetime.datetime


LegacyQueue = _list_of(LegacyQueueItem, "LegacyQueue",
                       "your unfinished jobs and those finished in the last 5 minutes, newest first")


class LegacyWorkflow(pydantic.BaseModel):
    model_config = _example({"workflow": "txt2img", "steps": ["queued", "processing", "completed"]})

    workflow: request_models.JobKind
    steps: list[str]


LegacyWorkflows = _list_of(LegacyWorkflow, "LegacyWorkflows", "the kinds of job and the states they pass")


class LegacyFailure(pydantic.BaseModel):
    model_config = _example({"uuid": examples.JOB_ID, "job_status": "error", "error": "A1111 failed",
                             "workflow": "txt2img", "created_at": EXAMPLE_CREATED_AT,
                             "finished_at": EXAMPLE_CREATED_AT})

    uuid: str
    job_status: vocabulary.JobStatus
    error: str
    workflow: request_models.JobKind
    created_at: datetime.datetime
    finished_at: datetime.datetime | None


LegacyFailures = _list_of(LegacyFailure, "LegacyFailures", "your failed jobs, newest first")


class LegacyHealth(pydantic.BaseModel):
    model_config = _example({"status": "ok"})

    status: typing.Literal["ok"]


# --- A1111's own shapes (the /a1111 mount, docs/a1111-clients.md) ----------------------------------

class A1111State(pydantic.BaseModel):
    """A1111's `State.dict()`: the running job of the caller."""

    skipped: bool
    interrupted: bool = pydantic.Field(description="true once an interrupt or skip was asked for")
    stopping_generation: bool
    job: str = pydantic.Field(description="`scripts_txt2img` / `scripts_img2img` while running, else empty")
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class A1111Progress(pydantic.BaseModel):
    """A1111's `ProgressResponse`, for the caller's running job (the oldest if several); idle otherwise."""

    model_config = _example({"progress": 0.45, "eta_relative": 1.2, "state": {
        "skipped": False, "interrupted": False, "stopping_generation": False, "job": "scripts_txt2img",
        "job_count": 1, "job_timestamp": "20261126070959", "job_no": 0, "sampling_step": 9,
        "sampling_steps": 20}, "current_image": None, "textinfo": None})

    progress: float
    eta_relative: float
    state: A1111State
    current_image: str | None = pydantic.Field(description="the live preview, base64 (null with "
                                                           "skip_current_image=true)")
    textinfo: str | None


class A1111Error(pydantic.BaseModel):
    """A1111's error body (its exception handler's shape): a failed generation is a 500 naming what failed."""

    model_config = _example({"error": "a1111_failed", "detail": "A1111 failed: ZeroDivisionError", "body": "",
                             "errors": "A1111 failed: ZeroDivisionError"})

    error: str
    detail: str
    body: str
    errors: str


class A1111ValidationError(pydantic.BaseModel):
    """A1111's (FastAPI's) 422: `detail` lists every problem."""

    model_config = _example({"detail": [{"loc": ["body", "steps"], "msg": "steps is 500; the limit is 150 "
                                                                          "(MAX_STEPS)", "type": "less_than_equal"}]})

    detail: list[ValidationError]


class A1111Null(pydantic.RootModel[dict[str, typing.Any] | None]):
    """A1111's answer to some commands (skip, POST options): the JSON `null` (a nullable object in OpenAPI 3.0)."""

    model_config = pydantic.ConfigDict(json_schema_extra={"example": None})
