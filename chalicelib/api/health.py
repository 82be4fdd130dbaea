"""`GET /health`: no token needed, so load balancers and orchestrators can call it."""
from __future__ import annotations

import logging

import chalice

from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import health
from chalicelib.api import http

log = logging.getLogger(__name__)
blueprint = chalice.Blueprint(__name__)


@blueprint.route("/health", methods=["GET"])
@http.handler
def get_health() -> chalice.Response:
    try:
        ctx = context_module.get_context()
    except errors.StoreUnavailable:
        log.exception("the job store cannot be reached")
        return http.json_response({"status": "unavailable", "store": {"ok": False}}, status=503)
    report, healthy = health.check(ctx)
    return http.json_response(report, status=200 if healthy else 503)
