"""The `/legacy` profile: the original async proxy's routes and shapes, for its existing clients.

Mounted under /legacy (app.py), so a client changes only its base URL. Same auth, store and queue as
the root routes: the use cases of chalicelib/service.py, answered in the original's shapes
(docs/legacy.md has every difference).
"""
from __future__ import annotations

import time

import chalice

from chalicelib import context as context_module
from chalicelib import errors

from chalicelib import model_choice
from chalicelib import openapi
from chalicelib import request_models
from chalicelib import service
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.api import catalog as catalog_routes
from chalicelib.api import http
from chalicelib.api import jobs as jobs_routes
from chalicelib.api import options as options_routes

blueprint = chalice.Blueprint(__name__)
PREFIX = "/legacy"

RECENT_SECONDS = 300  # finished jobs stay in the queue view this long, as in the original
MAX_QUEUE_ITEMS = 500
MAX_FAILURES = 100
STEPS = [vocabulary.JobStatus.QUEUED, vocabulary.JobStatus.PROCESSING, vocabulary.JobStatus.COMPLETED]
NOT_OFFERED = ("this service does not manage A1111's model files or captioning; install models on the A1111 "
               "instances themselves (GET /sdapi/v1/sd-models lists what they have)")
JOB_ID = openapi.path_param("job_id", "the job's id (`uuid`)")
NOT_IMPLEMENTED = openapi.Reply("Not offered by this service.", model="Error",
                                example={"error": "NotImplemented", "detail": NOT_OFFERED})


def _progress(job_status: str, progress: dict | None) -> float:
    if job_status == vocabulary.JobStatus.COMPLETED:
        return 1.0
    value = (progress or {}).get("progress")
    return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else 0.0


def _submit(kind: str) -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    ctx = context_module.get_context()
    body = http.json_body(request, max_bytes=ctx.settings.max_body_bytes)
    summary, created = service.submit_job(ctx, kind, owner=owner, body=body,
                                          idempotency_key=request.headers.get("idempotency-key"))
    headers = {"Location": f"{PREFIX}/sdapi/v1/jobs/{summary['job_id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return http.json_response(summary, status=202, headers=headers)


SUBMITTED = openapi.Reply("Queued: `uuid` (also `id`, `job_id`) is the job's id.", model="JobSummary",
                          headers={"Location": "the job's URL under /legacy"})


EXAMPLES = {
    "txt2img": {"a job with the original's webhook": {
        "prompt": "a lighthouse at dusk", "steps": 20, "webhookUrl": "https://example.com/api/webhook",
        "webhookKey": "3f6c1d52-8a0e-4a57-9d7a-2b1f3c4d5e6f"}},
    "img2img": {"an edit": {"prompt": "an oil painting", "init_images": [jobs_routes.EXAMPLE_IMAGE],
                            "denoising_strength": 0.6, "steps": 20}},
}


def _submit_doc(kind: str, model: type) -> dict:
    return dict(operation_id=f"legacy_{kind}", summary=f"Submit a {kind} job (original proxy)", tags=["legacy"],
                description="A1111's body plus `webhookUrl` and `webhookKey` (or this service's own fields); the "
                            "webhook then comes in the original's shape with `x-webhook-key`.",
                body=openapi.Body(models=(model, request_models.JobOptions), name=f"Legacy{kind.title()}Request",
                                  description="A1111's request plus the job's own fields",
                                  examples=EXAMPLES[kind]),
                responses={202: SUBMITTED}, errors=(400, 413, 422, 503))


@blueprint.route("/sdapi/v1/txt2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(**_submit_doc("txt2img", request_models.StableDiffusionProcessingTxt2Img))
@http.handler
def legacy_txt2img() -> chalice.Response:
    return _submit("txt2img")


@blueprint.route("/sdapi/v1/img2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(**_submit_doc("img2img", request_models.StableDiffusionProcessingImg2Img))
@http.handler
def legacy_img2img() -> chalice.Response:
    return _submit("img2img")


@blueprint.route("/sdapi/v1/jobs", methods=["GET"])
@openapi.document(operation_id="legacy_list_jobs", summary="The queue view (original proxy)", tags=["legacy"],
                  description="A bare array: your queued and processing jobs and those finished in the last "
                              "5 minutes, newest first, with a numeric `progress` (0..1).",
                  responses={200: openapi.Reply("The jobs.", model="LegacyQueue")}, errors=(503,))
@http.handler
def legacy_list_jobs() -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    ctx = context_module.get_context()
    jobs = ctx.store.list_recent(owner, since=time.time() - RECENT_SECONDS, limit=MAX_QUEUE_ITEMS)
    return http.json_response([{
        "uuid": job.id, "job_status": job.status, "progress": _progress(job.status, job.progress),
        "workflow": job.kind, "retry_count": max(job.attempts - 1, 0), "created_at": views.iso(job.created_at),
    } for job in jobs])


@blueprint.route("/sdapi/v1/jobs/{job_id}", methods=["GET"])
@openapi.document(operation_id="legacy_get_job", summary="A job (original proxy)", tags=["legacy"],
                  description="`{uuid, job_status, progress, images, info}`.", parameters=(JOB_ID,),
                  responses={200: openapi.Reply("The job.", model="LegacyJob")}, errors=(404, 503))
@http.handler
def legacy_get_job(job_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    detail = service.get_job(context_module.get_context(), job_id, owner=owner)
    result = detail["result"] or {}
    return http.json_response({"uuid": detail["job_id"], "job_status": detail["status"],
                               "progress": _progress(detail["status"], detail["progress"]),
                               "images": result.get("images") or [], "info": result.get("info") or ""})


@blueprint.route("/sdapi/v1/jobs/{job_id}", methods=["DELETE"])
@openapi.document(operation_id="legacy_delete_job", summary="Cancel a job (original proxy)", tags=["legacy"],
                  description="204 for a queued or running job (a running one is really interrupted in A1111); "
                              "404 for an unknown or finished one.", parameters=(JOB_ID,),
                  responses={204: openapi.Reply("Cancelled (or being interrupted).", media_types=())},
                  errors=(404, 503))
@http.handler
def legacy_delete_job(job_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    try:
        service.cancel_job(context_module.get_context(), job_id, owner=owner)
    except errors.Conflict as exc:
        raise errors.NotFound(f"no unfinished job {job_id!r}") from exc
    return chalice.Response(body="", status_code=204, headers={})


@blueprint.route("/sdapi/v1/workflows", methods=["GET"])
@openapi.document(operation_id="legacy_workflows", summary="Workflows (original proxy)", tags=["legacy"],
                  responses={200: openapi.Reply("The workflows.", model="LegacyWorkflows")})
@http.handler
def legacy_workflows() -> chalice.Response:
    http.owner_of(blueprint.current_request)
    return http.json_response([{"workflow": kind.value, "steps": [step.value for step in STEPS]}
                               for kind in request_models.JobKind])


@blueprint.route("/sdapi/v1/errors", methods=["GET"])
@openapi.document(operation_id="legacy_errors", summary="Failed jobs (original proxy)", tags=["legacy"],
                  responses={200: openapi.Reply("The failed jobs.", model="LegacyFailures")}, errors=(503,))
@http.handler
def legacy_errors() -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    page = context_module.get_context().store.list_jobs(owner, status=vocabulary.JobStatus.ERROR,
                                                        limit=MAX_FAILURES, before=None)
    return http.json_response([{
        "uuid": job.id, "job_status": job.status, "error": job.error_message or job.error_code or "",
        "workflow": job.kind, "created_at": views.iso(job.created_at), "finished_at": views.iso(job.finished_at),
    } for job in page.jobs])


@blueprint.route("/sdapi/v1/sd-models", methods=["GET"])
@openapi.document(operation_id="legacy_sd_models", summary="Checkpoints (original proxy)", tags=["legacy"],
                  responses={200: openapi.Reply("A1111's list, merged.", model="SDModelList")}, errors=(422, 502))
@http.handler
def legacy_sd_models() -> chalice.Response:
    return catalog_routes.get_sd_models()


@blueprint.route("/sdapi/v1/loras", methods=["GET"])
@openapi.document(operation_id="legacy_loras", summary="LoRAs (original proxy)", tags=["legacy"],
                  responses={200: openapi.Reply("A1111's list, merged.", model="LoraList")}, errors=(422, 502))
@http.handler
def legacy_loras() -> chalice.Response:
    return catalog_routes.get_loras()


@blueprint.route("/sdapi/v1/options", methods=["GET"])
@openapi.document(operation_id="legacy_get_options", summary="Settings (original proxy)", tags=["legacy"],
                  responses={200: openapi.Reply("A1111's settings with your checkpoint.", model="Options")},
                  errors=(422, 502))
@http.handler
def legacy_get_options() -> chalice.Response:
    return catalog_routes.passthrough_response(model_choice.OPTIONS_PATH)


@blueprint.route("/sdapi/v1/options", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(operation_id="legacy_set_options", summary="Choose your default checkpoint (original proxy)",
                  tags=["legacy"], description=options_routes.DESCRIPTION, body=options_routes.BODY,
                  responses={200: options_routes.REPLY}, errors=(400, 405, 422, 502, 503))
@http.handler
def legacy_set_options() -> chalice.Response:
    return options_routes.choose(blueprint.current_request)


def _not_offered() -> chalice.Response:
    http.owner_of(blueprint.current_request)
    return http.json_response({"error": "NotImplemented", "detail": NOT_OFFERED}, status=501)


@blueprint.route("/sdapi/v1/assets", methods=["GET"])
@openapi.document(operation_id="legacy_assets", summary="Assets (not offered)", tags=["legacy"],
                  responses={501: NOT_IMPLEMENTED})
@http.handler
def legacy_assets() -> chalice.Response:
    return _not_offered()


@blueprint.route("/sdapi/v1/assets/download", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(operation_id="legacy_assets_download", summary="Asset download (not offered)", tags=["legacy"],
                  responses={501: NOT_IMPLEMENTED})
@http.handler
def legacy_assets_download() -> chalice.Response:
    return _not_offered()


@blueprint.route("/sdapi/v1/florence", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(operation_id="legacy_florence", summary="Captioning (not offered)", tags=["legacy"],
                  responses={501: NOT_IMPLEMENTED})
@http.handler
def legacy_florence() -> chalice.Response:
    return _not_offered()


@blueprint.route("/health", methods=["GET"])
@openapi.document(operation_id="legacy_health", summary="Health (original proxy)", tags=["legacy"], public=True,
                  responses={200: openapi.Reply("The store answers.", model="LegacyHealth")}, errors=(503,))
@http.handler
def legacy_health() -> chalice.Response:
    context_module.get_context().store.ping()
    return http.json_response({"status": "ok"})
