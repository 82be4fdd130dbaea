"""`GET /metrics`: Prometheus's text format, behind a token.

On the API's own port and behind a token rather than on a second port: Lambda and API Gateway have
only one, and the route then works the same in every runtime. METRICS_TOKEN is a scrape-only
credential (it opens this route and nothing else), so Prometheus need not hold a token that can
submit or read jobs; an admin token is accepted too (any API token while there are no admins).
The Prometheus client is imported at the first scrape, so it adds nothing to the API's cold start.
"""
from __future__ import annotations

import hmac

import chalice

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import openapi
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

EXAMPLE = """# HELP a1111_async_jobs Jobs in the store by state.
# TYPE a1111_async_jobs gauge
a1111_async_jobs{status="queued"} 3.0
a1111_async_jobs{status="processing"} 1.0
"""


@blueprint.route("/metrics", methods=["GET"])
@openapi.document(
    operation_id="get_metrics", summary="Prometheus metrics of the whole service", tags=["metrics"],
    description="Jobs by state, queue wait and run time histograms, A1111 errors and webhook deliveries, read "
                "from the job store (the same numbers from every replica). The token is METRICS_TOKEN (it "
                "opens this route only) or an admin token (any API token while API_ADMIN_TOKENS is empty).",
    responses={200: openapi.Reply("Prometheus text format 0.0.4.", media_types=("text/plain",),
                                  schema={"type": "string", "example": EXAMPLE})},
    errors=(503,))
@http.handler
def get_metrics() -> chalice.Response:
    from chalicelib import metrics  # noqa: PLC0415 - see the module docstring

    authorize_scrape(blueprint.current_request)
    ctx = context_module.get_context()
    return chalice.Response(body=metrics.render(ctx.store), status_code=200,
                            headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"})


def authorize_scrape(request: chalice.app.Request) -> None:
    """METRICS_TOKEN, compared in constant time, or else an operator's token (`http.require_operator`)."""
    metrics_token = config.get_settings().metrics_token.get_secret_value()
    presented = http.presented_token(request.headers.get("authorization") or "")
    if metrics_token and presented is not None and hmac.compare_digest(presented.encode(), metrics_token.encode()):
        return
    try:
        http.require_operator(request, what="GET /metrics")
    except errors.Unauthorized:
        if metrics_token:
            raise errors.Unauthorized("send 'Authorization: Bearer <METRICS_TOKEN>' (or an API token)") from None
        raise
