"""Job routes: A1111's generation endpoints answered asynchronously, and the job resource."""
from __future__ import annotations

import chalice

from chalicelib import context as context_module
from chalicelib import service
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)


def _submit(kind: str) -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    ctx = context_module.get_context()
    body = http.json_body(request, max_bytes=ctx.settings.max_body_bytes)
    summary, created = service.submit_job(ctx, kind, owner=owner, body=body,
                                          idempotency_key=request.headers.get("idempotency-key"))
    headers = {"Location": f"/sdapi/v1/jobs/{summary['job_id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return http.json_response(summary, status=202, headers=headers)


@blueprint.route("/sdapi/v1/txt2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@http.handler
def txt2img() -> chalice.Response:
    return _submit("txt2img")


@blueprint.route("/sdapi/v1/img2img", methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@http.handler
def img2img() -> chalice.Response:
    return _submit("img2img")


@blueprint.route("/sdapi/v1/jobs", methods=["GET"])
@http.handler
def list_jobs() -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    return http.json_response(service.list_jobs(
        context_module.get_context(), owner=owner, status=http.query_param(request, "status"),
        limit=http.query_param(request, "limit"), cursor=http.query_param(request, "cursor")))


@blueprint.route("/sdapi/v1/jobs/{job_id}", methods=["GET"])
@http.handler
def get_job(job_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    return http.json_response(service.get_job(context_module.get_context(), job_id, owner=owner))


@blueprint.route("/sdapi/v1/jobs/{job_id}/cancel", methods=["POST"])
@http.handler
def cancel_job(job_id: str) -> chalice.Response:
    return _cancel(job_id)


@blueprint.route("/sdapi/v1/jobs/{job_id}", methods=["DELETE"])
@http.handler
def delete_job(job_id: str) -> chalice.Response:
    return _cancel(job_id)


def _cancel(job_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    summary = service.cancel_job(context_module.get_context(), job_id, owner=owner)
    return http.json_response(summary, status=200 if summary["status"] == "cancelled" else 202)


@blueprint.route("/sdapi/v1/jobs/{job_id}/images/{n}", methods=["GET"])
@http.handler
def get_image(job_id: str, n: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    data, content_type = service.get_image(context_module.get_context(), job_id, n, owner=owner)
    return chalice.Response(body=data, status_code=200,
                            headers={"Content-Type": content_type, "Cache-Control": "private, max-age=86400"})
