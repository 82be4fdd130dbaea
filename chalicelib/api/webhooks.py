"""Webhook routes of a job: its deliveries with their attempts, and sending the latest event again."""
from __future__ import annotations

import chalice

from chalicelib import context as context_module
from chalicelib import openapi
from chalicelib import service
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

JOB_ID = openapi.path_param("job_id", "the job's id, as submit answered it")


@blueprint.route("/sdapi/v1/jobs/{job_id}/webhooks", methods=["GET"])
@openapi.document(
    operation_id="list_webhook_deliveries", summary="List a job's webhook deliveries, newest first",
    tags=["webhooks"],
    description="Each delivery with its attempts: the receiver's status code and the start of its answer, "
                "or why there was none.",
    parameters=(JOB_ID,
                openapi.Param("limit", "query", "page size",
                              {"type": "integer", "minimum": 1, "maximum": service.MAX_DELIVERY_LIST_LIMIT,
                               "default": service.DEFAULT_DELIVERY_LIST_LIMIT}),
                openapi.Param("cursor", "query", "`next_cursor` of the previous page",
                              {"type": "string", "minLength": 1})),
    responses={200: openapi.Reply("A page of deliveries.", model="WebhookDeliveryList")},
    errors=(404, 422, 503))
@http.handler
def list_webhook_deliveries(job_id: str) -> chalice.Response:
    request = blueprint.current_request
    owner = http.owner_of(request)
    return http.json_response(service.list_webhook_deliveries(
        context_module.get_context(), job_id, owner=owner, limit=http.query_param(request, "limit"),
        cursor=http.query_param(request, "cursor")))


@blueprint.route("/sdapi/v1/jobs/{job_id}/webhooks/redeliver", methods=["POST"])
@openapi.document(
    operation_id="redeliver_webhook", summary="Send the job's latest webhook event again", tags=["webhooks"],
    description="The same body with a new webhook-id and a fresh retry schedule. 409 when the job has no "
                "webhook_url or has sent no event yet; 429 within WEBHOOK_REDELIVER_INTERVAL of the job's "
                "last redelivery.",
    parameters=(JOB_ID,),
    responses={202: openapi.Reply("Queued for delivery.", model="WebhookDelivery"),
               429: openapi.Reply("The job was redelivered too recently.", model="Error",
                                  headers={"Retry-After": "seconds until a redelivery is accepted"},
                                  example={"error": "TooManyRequests",
                                           "detail": "job 3f0c… was redelivered less than 10 s ago "
                                                     "(WEBHOOK_REDELIVER_INTERVAL); try again in 7 s"})},
    errors=(404, 409, 503))
@http.handler
def redeliver_webhook(job_id: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    delivery = service.redeliver_webhook(context_module.get_context(), job_id, owner=owner)
    return http.json_response(delivery, status=202)
