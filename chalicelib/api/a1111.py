"""The `/a1111` mount: A1111 v1.10.1 to its own clients (webuiapi, Open WebUI, editor plugins), through the queue.

A client sets its base URL to `http://host:8000/a1111` and changes nothing else. `txt2img` and
`img2img` submit a job like any other (owner, priority, retries, webhooks, the job history) and block
until it ends, answering A1111's body (the job id in `X-Job-Id`); a client that leaves does not
cancel its job. `progress`, `interrupt` and `skip` act on the caller's own running jobs only. Errors
come in A1111's shapes: `{"error", "detail", "body", "errors"}`, and FastAPI's `{"detail": [...]}`
for 422. Auth: Bearer, or HTTP Basic with the token as password (A1111's `--api-auth`).
"""
from __future__ import annotations

import base64
import datetime
import json

import chalice

from chalicelib import catalog
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import model_choice
from chalicelib import openapi
from chalicelib import request_models
from chalicelib import service
from chalicelib import vocabulary
from chalicelib.api import catalog as catalog_routes
from chalicelib.api import http
from chalicelib.api import jobs as jobs_routes
from chalicelib.api import options as options_routes
from chalicelib.store import base as store_base

blueprint = chalice.Blueprint(__name__)
PREFIX = "/a1111"
JOB_ID_HEADER = "X-Job-Id"
RUNNING_LISTED = 100  # the caller's running jobs looked at by progress, interrupt and skip

A1111_ERROR = openapi.Reply("A1111's error body.", model="A1111Error")
A1111_ERRORS = {
    413: openapi.Reply("The body is larger than MAX_BODY_BYTES.", model="A1111Error"),
    422: openapi.Reply("Invalid request: every problem at once, FastAPI's shape (as A1111).",
                       model="A1111ValidationError"),
    429: openapi.Reply("A per-owner limit was reached; nothing was stored.", model="A1111Error",
                       headers={"Retry-After": "seconds to wait"}),
    500: openapi.Reply("The job ended in error: A1111's failed-generation shape, `error` the job's error code. "
                       "The job stays in the history (X-Job-Id).", model="A1111Error",
                       headers={JOB_ID_HEADER: "the job's id"}),
    503: openapi.Reply("SYNC_MAX_WAITING requests already wait in this server, or the job store cannot be "
                       "reached; nothing was stored.", model="A1111Error", headers={"Retry-After": "seconds"}),
    504: openapi.Reply("The job did not end within SYNC_WAIT_MAX_SECONDS (25 s on AWS Lambda); it keeps "
                       "running: GET /sdapi/v1/jobs/{X-Job-Id}.", model="A1111Error",
                       headers={JOB_ID_HEADER: "the job's id"}),
}
NULL_REPLY = openapi.Reply("Done: `null`, as A1111 answers.", model="A1111Null")
ANSWER_EXAMPLE = {"images": ["iVBORw0KGgo..."], "parameters": {"prompt": "a lighthouse at dusk", "steps": 20},
                  "info": "{\"prompt\": \"a lighthouse at dusk\", \"all_seeds\": [1234], \"seed\": 1234}"}
GENERATE_DESCRIPTION = (
    "A1111's own request ({model}) plus, optionally, the job's fields (`priority`, `metadata`, `webhook_url` ...). "
    "The job goes through the queue like any other (GET /sdapi/v1/jobs lists it) and the request blocks until "
    "it ends (at most SYNC_WAIT_MAX_SECONDS): 200 with A1111's {response} (`images` raw base64, `info` a JSON "
    "string), the job id in X-Job-Id. An interrupted job answers 200 with the images it finished, as A1111 "
    "does. A client that disconnects does not cancel the job.")


# --- A1111's error shapes ------------------------------------------------------------------------

def error_body(name: str, detail: str, *, errors_text: str = "") -> dict:
    return {"error": name, "detail": detail, "body": "", "errors": errors_text}


def error_response(error: errors.ServiceError) -> chalice.Response:
    if isinstance(error, errors.ValidationFailed):
        return http.json_response({"detail": error.detail}, status=422)
    headers = dict(getattr(error, "headers", None) or {})
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="a1111"'
    return http.json_response(error_body(error.name, str(error.detail)), status=error.status, headers=headers)


def reshaped(response: chalice.Response) -> chalice.Response:
    """An error answered by a shared route (`{"error", "detail"}`) in A1111's shape."""
    if response.status_code < 400 or not isinstance(response.body, str):
        return response
    try:
        body = json.loads(response.body)
    except ValueError:
        return response
    if isinstance(body, dict) and set(body) == {"error", "detail"}:
        if response.status_code == 422 and isinstance(body["detail"], list):
            response.body = json.dumps({"detail": body["detail"]})
        else:
            response.body = json.dumps(error_body(str(body["error"]), str(body["detail"])))
        if response.status_code == 401:
            response.headers = {**response.headers, "WWW-Authenticate": 'Basic realm="a1111"'}
    return response


handler = http.make_handler(answer=reshaped, error_response=error_response)  # http.handler in A1111's shapes


def _body(request: chalice.app.Request, ctx: context_module.Context) -> object:
    """The JSON body; unreadable JSON is A1111's 422 (`value_error.jsondecode`), as FastAPI answers it."""
    if not (request.raw_body or b"").strip():
        raise errors.ValidationFailed.single(["body"], "field required", "value_error.missing")
    try:
        return http.json_body(request, max_bytes=ctx.settings.max_body_bytes)
    except errors.BadRequest as exc:
        raise errors.ValidationFailed.single(["body", 0], str(exc.detail), "value_error.jsondecode") from None


# --- Generation ----------------------------------------------------------------------------------

def _generate(kind: str) -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    ctx = context_module.get_context()
    body = _body(request, ctx)
    limit = ctx.settings.sync_wait_limit()
    job, _ = service.submit_and_hold(ctx, kind, owner=owner, body=body,
                                     idempotency_key=request.headers.get("idempotency-key"), wait=limit)
    headers = {JOB_ID_HEADER: job.id}
    if job.status == vocabulary.JobStatus.ERROR:
        message = job.error_message or job.error_code or "the job failed"
        return http.json_response(error_body(job.error_code or "JobFailed", message, errors_text=message),
                                  status=500, headers=headers)
    if job.status not in vocabulary.TERMINAL_STATUSES:
        return http.json_response(error_body(
            "GatewayTimeout", f"job {job.id} is still {job.status} after {limit:g} s (SYNC_WAIT_MAX_SECONDS); it "
            f"keeps going: GET /sdapi/v1/jobs/{job.id}"), status=504, headers=headers)
    return http.json_response(a1111_answer(ctx, job), headers=headers)


def a1111_answer(ctx: context_module.Context, job: store_base.Job) -> dict:
    """A finished job as A1111 answers a generation: its images (those finished before an interrupt,
    as A1111 does; none when the job was cancelled before it ran), parameters and info."""
    result = job.result or {}
    images = ctx.images.get_all(job.id, job.result_attempt) if job.result_attempt else None
    return {"images": [base64.b64encode(data).decode("ascii") for data in images or []],
            "parameters": result.get("parameters") or job.request, "info": result.get("info", "")}


def _generate_doc(kind: str, model: type, response: str) -> dict:
    return dict(
        operation_id=f"a1111_{kind}", summary=f"{kind}, blocking (A1111's answer)", tags=["a1111"],
        description=GENERATE_DESCRIPTION.format(model=model.__name__, response=response),
        body=openapi.Body(models=(model, request_models.JobOptions), name=f"A1111{kind.title()}Request",
                          description=f"A1111's {kind} request (plus the job's own fields, optional)",
                          examples=jobs_routes.IMG2IMG_EXAMPLES if kind == "img2img" else {
                              "as webuiapi sends it": {"prompt": "a lighthouse at dusk", "steps": 20,
                                                       "sampler_name": "Euler a", "scheduler": "automatic"}}),
        responses={200: openapi.Reply(f"A1111's {response}.", model=response, example=ANSWER_EXAMPLE,
                                      headers={JOB_ID_HEADER: "the job's id (GET /sdapi/v1/jobs/{id})"}),
                   **A1111_ERRORS})


@blueprint.route("/sdapi/v1/txt2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(**_generate_doc("txt2img", request_models.StableDiffusionProcessingTxt2Img,
                                  "TextToImageResponse"))
@handler
def a1111_txt2img() -> chalice.Response:
    return _generate("txt2img")


@blueprint.route("/sdapi/v1/img2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(**_generate_doc("img2img", request_models.StableDiffusionProcessingImg2Img,
                                  "ImageToImageResponse"))
@handler
def a1111_img2img() -> chalice.Response:
    return _generate("img2img")


# --- The caller's running jobs -------------------------------------------------------------------

def _running(ctx: context_module.Context, owner: str) -> list[store_base.Job]:
    """The caller's processing jobs, oldest first."""
    page = ctx.store.list_jobs(owner, status=vocabulary.JobStatus.PROCESSING, limit=RUNNING_LISTED, before=None)
    return list(reversed(page.jobs))


def progress_view(job: store_base.Job | None, *, skip_current_image: bool) -> dict:
    """A1111's progress answer for `job` (running), or its idle shape (None)."""
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": {
            "skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
            "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0},
            "current_image": None, "textinfo": None}
    known = job.progress or {}
    started = job.started_at or job.created_at
    return {
        "progress": float(known.get("progress") or 0.0),
        "eta_relative": float(known.get("eta_relative") or 0.0),
        "state": {
            "skipped": False, "interrupted": job.cancel_requested, "stopping_generation": False,
            "job": f"scripts_{job.kind}", "job_count": int(known.get("job_count") or job.request.get("n_iter") or 1),
            "job_timestamp": _timestamp(started), "job_no": int(known.get("job_no") or 0),
            "sampling_step": int(known.get("step") or 0),
            "sampling_steps": int(known.get("steps") or job.request.get("steps") or 0)},
        "current_image": None if skip_current_image else job.preview,
        "textinfo": None,
    }


def _timestamp(moment: float) -> str:
    """A1111's `job_timestamp`: YYYYmmddHHMMSS (UTC here)."""
    return datetime.datetime.fromtimestamp(moment, tz=datetime.timezone.utc).strftime("%Y%m%d%H%M%S")


@blueprint.route("/sdapi/v1/progress", methods=["GET"])
@openapi.document(
    operation_id="a1111_progress", summary="Progress of your running job (A1111's shape)", tags=["a1111"],
    description="A1111's ProgressResponse for the caller's running job (the oldest, if several); the idle shape "
                "when none runs. Never another token's job.",
    parameters=(openapi.Param("skip_current_image", "query", "`true`: no live preview",
                              {"type": "boolean", "default": False}),),
    responses={200: openapi.Reply("The progress.", model="A1111Progress"), 503: A1111_ERROR})
@handler
def a1111_progress() -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    skip = (http.query_param(request, "skip_current_image") or "false").lower() in {"true", "1", "yes", "on"}
    running = _running(context_module.get_context(), owner)
    return http.json_response(progress_view(running[0] if running else None, skip_current_image=skip))


def _interrupt_running(owner: str) -> None:
    """Cancel the caller's running jobs: the worker interrupts A1111 and keeps the finished images."""
    ctx = context_module.get_context()
    for job in _running(ctx, owner):
        try:
            service.cancel_job(ctx, job.id, owner=owner)
        except errors.Conflict:
            pass  # it finished meanwhile


@blueprint.route("/sdapi/v1/interrupt", methods=["POST"])
@openapi.document(
    operation_id="a1111_interrupt", summary="Interrupt your running jobs", tags=["a1111"],
    description="Interrupts the caller's running jobs (never another token's); each ends `cancelled`, and its "
                "blocked txt2img/img2img answers 200 with the images finished, as A1111 does. Answers `{}`.",
    responses={200: openapi.Reply("Done.", schema={"type": "object"}), 503: A1111_ERROR})
@handler
def a1111_interrupt() -> chalice.Response:
    _interrupt_running(http.owner_of(blueprint.current_request))
    return http.json_response({})


@blueprint.route("/sdapi/v1/skip", methods=["POST"])
@openapi.document(
    operation_id="a1111_skip", summary="Skip: as interrupt", tags=["a1111"],
    description="A1111 skips the current image of a batch; a job here is one unit, so skip interrupts the "
                "caller's running jobs as interrupt does. Answers `null`, as A1111.",
    responses={200: NULL_REPLY, 503: A1111_ERROR})
@handler
def a1111_skip() -> chalice.Response:
    _interrupt_running(http.owner_of(blueprint.current_request))
    return http.json_response(None)


# --- Options and discovery -----------------------------------------------------------------------

@blueprint.route(model_choice.OPTIONS_PATH, methods=["GET"])
@openapi.document(operation_id="a1111_get_options", summary="Settings, with your checkpoint", tags=["a1111"],
                  description="A1111's settings of an instance, `sd_model_checkpoint` being your own choice.",
                  responses={200: openapi.Reply("The settings.", model="Options"), 502: A1111_ERROR})
@handler
def a1111_get_options() -> chalice.Response:
    return catalog_routes.passthrough_response(model_choice.OPTIONS_PATH)


@blueprint.route(model_choice.OPTIONS_PATH, methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(operation_id="a1111_set_options", summary="Choose your default checkpoint", tags=["a1111"],
                  description=options_routes.DESCRIPTION.replace("Answers `{}`.", "Answers `null`, as A1111.")
                  + " Open WebUI sends the whole options object back: keys whose value is unchanged are ignored.",
                  body=options_routes.BODY, responses={200: NULL_REPLY, 405: A1111_ERROR,
                                                       422: A1111_ERRORS[422], 502: A1111_ERROR})
@handler
def a1111_set_options() -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    ctx = context_module.get_context()
    body = _body(request, ctx)
    if isinstance(body, dict) and len(body) > 1:
        body = _changed_options(ctx, body, owner=owner)
    if body != {}:
        model_choice.choose(ctx, body, owner=owner)
    return http.json_response(None)


def _changed_options(ctx: context_module.Context, body: dict, *, owner: str) -> dict:
    """Open WebUI posts every option it read back, one changed: keep the keys that differ from what
    GET options shows this owner."""
    shown = model_choice.show(catalog.passthrough(ctx, model_choice.OPTIONS_PATH).body,
                              checkpoint=model_choice.current(ctx, owner=owner))
    if not isinstance(shown, dict):
        return body
    return {key: value for key, value in body.items() if key not in shown or shown[key] != value}


@blueprint.route("/sdapi/v1/sd-models", methods=["GET"])
@openapi.document(operation_id="a1111_sd_models", summary="Checkpoints", tags=["a1111"],
                  responses={200: openapi.Reply("A1111's list, merged.", model="SDModelList"), 502: A1111_ERROR})
@handler
def a1111_sd_models() -> chalice.Response:
    return catalog_routes.get_sd_models()


@blueprint.route("/sdapi/v1/loras", methods=["GET"])
@openapi.document(operation_id="a1111_loras", summary="LoRAs", tags=["a1111"],
                  responses={200: openapi.Reply("A1111's list, merged.", model="LoraList"), 502: A1111_ERROR})
@handler
def a1111_loras() -> chalice.Response:
    return catalog_routes.get_loras()


def _discovery(path: str, *, name: str, model: str) -> None:
    """GET `path` under the mount, passed through from an instance as at the root."""
    def view() -> chalice.Response:
        return catalog_routes.passthrough_response(path)

    view.__name__ = f"a1111_{name}"
    documented = openapi.document(
        operation_id=f"a1111_{name}", summary=f"{path.rsplit('/', 1)[-1]} (passed through)", tags=["a1111"],
        responses={200: openapi.Reply("A1111's answer.", model=model), 502: A1111_ERROR})(handler(view))
    blueprint.route(path, methods=["GET"])(documented)


_discovery("/sdapi/v1/samplers", name="samplers", model="SamplerList")
_discovery("/sdapi/v1/schedulers", name="schedulers", model="SchedulerList")
_discovery("/sdapi/v1/sd-vae", name="sd_vae", model="SDVaeList")
_discovery("/sdapi/v1/upscalers", name="upscalers", model="UpscalerList")
_discovery("/sdapi/v1/scripts", name="scripts", model="ScriptsList")
_discovery("/sdapi/v1/embeddings", name="embeddings", model="EmbeddingsResponse")


@blueprint.route("/internal/ping", methods=["GET"])
@openapi.document(operation_id="a1111_ping", summary="Ping", tags=["a1111"], public=True,
                  description="`{}`, without a token, as A1111.", responses={200: openapi.Reply("Up.", schema={
                      "type": "object"})})
@handler
def a1111_ping() -> chalice.Response:
    return http.json_response({})
