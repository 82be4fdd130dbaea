"""`GET /health`: no token needed, so load balancers and orchestrators can call it."""
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
    description="No token needed. Each A1111 instance is pinged (at most 1.5 s).",
    responses={200: openapi.Reply("The service can take and run jobs.", model="Health"),
               503: openapi.Reply("The job store cannot be reached.", model="Health",
                                  example={"status": "unavailable", "store": {"ok": False}})},
    public=True)
@http.handler
def get_health() -> chalice.Response:
    try:
        ctx = context_module.get_context()
    except errors.StoreUnavailable:
        log.exception("the job store cannot be reached")
        return http.json_response({"status": "unavailable", "store": {"ok": False}}, status=503)
    report, healthy = health.check(ctx)
    return http.json_response(report, status=200 if healthy else 503)


@blueprint.route("/sdapi/v1/instances", methods=["GET"])
@openapi.document(
    operation_id="list_instances", summary="Each A1111 instance: health, load, model, jobs done", tags=["health"],
    description="Every instance is probed now (GET /sdapi/v1/options, at most 1.5 s each, in parallel); "
                "busy, current jobs, jobs done and the latest failure come from the job store.",
    responses={200: openapi.Reply("The configured instances.", model="Instances")},
    errors=(401, 503))
@http.handler
def list_instances() -> chalice.Response:
    http.owner_of(blueprint.current_request)
    ctx = context_module.get_context()
    return http.json_response({"instances": health.instances(ctx)}, status=200)
