"""`GET /health`: no token needed, so load balancers and orchestrators can call it; the detail needs an
operator's token (`http.require_operator`)."""
from __future__ import annotations

import logging

import chalice

from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import health
from chalicelib import openapi
from chalicelib.api import http

log = logging.getLogger(__name__)
blueprint = chalice.Blueprint(__name__)


@blueprint.route("/health", methods=["GET"])
@openapi.document(
    operation_id="get_health", summary="Health of the store, queue, workers and A1111 instances", tags=["health"],
    description="Without a token: one word per component (`up`, `degraded`, `down`), answered from a cache "
                "refreshed at most every HEALTH_CACHE_SECONDS (default 5), so that anyone may call it often. "
                "With an admin token (any valid token while API_ADMIN_TOKENS is empty): the detailed report, "
                "checked now (each A1111 instance is probed, at most 1.5 s), with job counts, worker "
                "heartbeats and instances. An invalid token is 401, a valid token that is not an admin's 403.",
    responses={200: openapi.Reply("The service can take and run jobs (the summary, without a token).",
                                  model="HealthReport", example={"status": "ok", "components": {
                                      "store": "up", "queue": "up", "workers": "up", "instances": "up"}}),
               503: openapi.Reply("The job store cannot be reached.", model="HealthReport",
                                  example={"status": "unavailable", "components": {"store": "down"}})},
    token_optional=True)
@http.handler
def get_health() -> chalice.Response:
    request = blueprint.current_request
    detailed = bool(request.headers.get("authorization"))
    if detailed:
        http.require_operator(request, what="the detailed health")
    try:
        ctx = context_module.get_context()
    except errors.StoreUnavailable:
        log.exception("the job store cannot be reached")
        body = {"status": "unavailable", "store": {"ok": False}} if detailed else \
            {"status": "unavailable", "components": {"store": health.DOWN}}
        return http.json_response(body, status=503)
    report, healthy = health.check(ctx) if detailed else health.summary(ctx)
    return http.json_response(report, status=200 if healthy else 503)


@blueprint.route("/sdapi/v1/instances", methods=["GET"])
@openapi.document(
    operation_id="list_instances", summary="Each A1111 instance: health, load, model, jobs done", tags=["health"],
    description="The `instances` of the detailed GET /health, nothing more: every instance is probed now "
                "(GET /sdapi/v1/options, at most 1.5 s each, in parallel); busy, current jobs, jobs done and the "
                "latest failure come from the job store. An admin token may read it (any valid token while "
                "API_ADMIN_TOKENS is empty).",
    responses={200: openapi.Reply("The configured instances.", model="Instances")},
    errors=(401, 403, 503))
@http.handler
def list_instances() -> chalice.Response:
    http.require_operator(blueprint.current_request, what="the instance list")
    ctx = context_module.get_context()
    return http.json_response({"instances": health.instances(ctx)}, status=200)
