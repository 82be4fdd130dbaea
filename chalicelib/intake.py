"""Job submissions dropped on the submissions queue by other systems (SQS batch submissions).

A message is one job: `{"type": "txt2img" | "img2img", "request": {A1111's body}, "webhook_url"?,
"webhook_secret"?, "webhook_events"?, "priority"?, "metadata"?, "instance_labels"?,
"idempotency_key"?}` (the JSON Schema is docs/submission.schema.json, generated from
`SubmissionMessage`). It goes through the
very use case the API's POST /sdapi/v1/{type} calls, `service.submit_job`, so it is validated
exactly as the API validates. A redelivered message creates no second job: its idempotency key is
the message's own `idempotency_key`, else `sqs-<SQS message id>`. A message that cannot become a job
is recorded as rejected with the reason (see `rejections`) and consumed, never retried: retrying
cannot make it valid. Only a store outage leaves a message on the queue to be retried.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import typing

import pydantic

from chalicelib import batches
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import rejections
from chalicelib import request_models
from chalicelib import service

log = logging.getLogger(__name__)

CREATED = "created"
DUPLICATE = "duplicate"
REJECTED = "rejected"
OWN_FIELDS = tuple(request_models.JobOptions.model_fields)
SECRET_IN_TEXT = re.compile(r'("webhook_secret"\s*:\s*)"(?:[^"\\]|\\.)*"?')
REDACTED = "***"


class SubmissionMessage(request_models.JobOptions):
    """One message of the submissions queue: a job as other systems submit it without HTTP."""

    model_config = pydantic.ConfigDict(
        extra="forbid", allow_inf_nan=False, title="SubmissionMessage",
        json_schema_extra={"examples": [
            {"type": "txt2img", "request": {"prompt": "a lighthouse at dusk", "steps": 20},
             "idempotency_key": "order-42", "metadata": {"order": 42}},
            {"type": "img2img", "request": {"prompt": "an oil painting", "init_images": ["iVBORw0KGgo..."],
                                            "denoising_strength": 0.6},
             "webhook_url": "https://example.com/hooks/a1111",
             "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        ]})

    type: request_models.JobKind = pydantic.Field(description="which A1111 endpoint the request is for")
    request: dict[str, typing.Any] = pydantic.Field(
        description="A1111's request body, exactly as POST /sdapi/v1/txt2img or /sdapi/v1/img2img takes it "
                    "(StableDiffusionProcessingTxt2Img / StableDiffusionProcessingImg2Img of A1111 v1.10.1; "
                    "see GET /openapi.json). The job's own fields may be given here too, as the API allows, "
                    "but not with a value different from the one at the top level.")
    idempotency_key: str | None = pydantic.Field(
        None, min_length=1, max_length=service.MAX_IDEMPOTENCY_KEY_LENGTH,
        description="as the API's Idempotency-Key header: a second message with the same key creates no "
                    "second job. Default: `sqs-<SQS message id>`, so a redelivered message creates none.")
    batch_id: str | None = pydantic.Field(
        None, min_length=1, max_length=service.MAX_IDEMPOTENCY_KEY_LENGTH,
        description="the batch the job joins (GET /sdapi/v1/batches/{batch_id} with the submissions owner's "
                    "token): created by the first message that names it (docs/batches.md)")


OWN_FIELD_DESCRIPTIONS = {
    "webhook_url": "where to POST the job's events (http or https; a public host unless WEBHOOK_ALLOW_PRIVATE)",
    "webhook_secret": "signs every event (Standard Webhooks); required with webhook_url; never stored in logs",
    "webhook_events": "non-terminal events to send too (terminal ones are always sent)",
    "priority": "-100..100, higher runs first",
    "metadata": "any JSON object up to 16 KiB, returned with the job",
    "instance_labels": "run only on an A1111 instance configured with every one of these labels",
}


def message_schema() -> dict:
    """The JSON Schema of a submissions-queue message (docs/submission.schema.json)."""
    schema = SubmissionMessage.model_json_schema()
    for name, description in OWN_FIELD_DESCRIPTIONS.items():
        schema["properties"][name]["description"] = description
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # CREATED, DUPLICATE or REJECTED
    job_id: str | None = None
    reason: str | None = None


def submit_message(ctx: context_module.Context, *, message_id: str, text: str) -> Outcome:
    """Turn one queue message into a job, or record why it cannot be one.

    Raises only when the store cannot be reached (`errors.StoreUnavailable`): the message should
    then stay on the queue and be retried.
    """
    data, problems = _parse(text)
    if problems:
        return _reject(ctx, message_id=message_id, data=data, text=text, problems=problems)
    message = typing.cast(SubmissionMessage, data)
    body, conflicts = api_body(message)
    if conflicts:
        return _reject(ctx, message_id=message_id, data=message, text=text, problems=conflicts)
    try:
        if message.batch_id is not None:
            batches.ensure_named_batch(ctx, message.batch_id, owner=ctx.settings.submissions_owner)
        summary, created = service.submit_job(
            ctx, message.type.value, owner=ctx.settings.submissions_owner, body=body,
            idempotency_key=message.idempotency_key or f"sqs-{message_id}", batch_id=message.batch_id)
    except errors.StoreUnavailable:
        raise
    except errors.ServiceError as error:  # the API would answer 4xx: the message is at fault
        return _reject(ctx, message_id=message_id, data=message, text=text, problems=_problems_of(error))
    log.info("submission %s", "accepted" if created else "already accepted (duplicate message)",
             extra={"message_id": message_id, "job_id": summary["job_id"]})
    return Outcome(status=CREATED if created else DUPLICATE, job_id=summary["job_id"])


def _parse(text: str) -> tuple[SubmissionMessage | dict | None, list[dict]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, [{"loc": ["message"], "msg": f"the message is not JSON: {exc}", "type": "json_invalid"}]
    if not isinstance(data, dict):
        return None, [{"loc": ["message"], "msg": "the message must be a JSON object", "type": "model_type"}]
    try:
        return SubmissionMessage.model_validate(data), []
    except pydantic.ValidationError as exc:
        # Never the input: it may be the webhook secret.
        return data, [{"loc": ["message", *item["loc"]], "msg": item["msg"], "type": item["type"]}
                      for item in exc.errors(include_url=False, include_context=False, include_input=False)]


def api_body(message: SubmissionMessage) -> tuple[dict, list[dict]]:
    """The body POST /sdapi/v1/{type} would take: the request plus the job's fields set in the
    message; and the conflicts, if a field is in both with different values."""
    own = message.model_dump(include=set(OWN_FIELDS), exclude_unset=True)
    conflicts = [{"loc": ["message", "request", name], "type": "value_error",
                  "msg": f"{name} is given both at the top level and in request, with different values"}
                 for name, value in own.items() if name in message.request and message.request[name] != value]
    return {**message.request, **own}, conflicts


def _problems_of(error: errors.ServiceError) -> list[dict]:
    """The API's 4xx detail, located in the message rather than in an HTTP body or header."""
    if not isinstance(error.detail, list):
        return [{"loc": ["message"], "msg": str(error.detail), "type": error.name}]
    problems = []
    for item in (item for item in error.detail if isinstance(item, dict)):
        where, *path = item.get("loc") or ["body"]
        if where == "header":
            loc = ["message", "idempotency_key"]
        elif path and path[0] in OWN_FIELDS:
            loc = ["message", *path]
        else:
            loc = ["message", "request", *path]
        problems.append({**item, "loc": loc})
    return problems


def _reject(ctx: context_module.Context, *, message_id: str, data: object, text: str,
            problems: list[dict]) -> Outcome:
    reason = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
                       for item in problems)[:1000]
    recorded = rejections.make_rejection_log(ctx.store).record(
        message_id, reason=reason, problems=problems, excerpt=excerpt_of(data, text), now=time.time())
    log.warning("submission rejected: %s", reason,
                extra={"message_id": message_id, "first_time": recorded})
    return Outcome(status=REJECTED, reason=reason)


def excerpt_of(data: object, text: str) -> str:
    """The start of the message for operators, with any webhook secret blanked out (and long
    request fields such as init_images cut short)."""
    if isinstance(data, SubmissionMessage):
        data = data.model_dump(mode="json", exclude_unset=True)
    if isinstance(data, dict):
        shown = {k: (REDACTED if k == "webhook_secret" else v) for k, v in data.items()}
        if isinstance(shown.get("request"), dict):
            shown["request"] = {k: (REDACTED if k == "webhook_secret" else _shortened(v))
                                for k, v in shown["request"].items()}
        return json.dumps(shown)[:rejections.EXCERPT_CHARS]
    return SECRET_IN_TEXT.sub(rf'\1"{REDACTED}"', text)[:rejections.EXCERPT_CHARS]


def _shortened(value: object) -> object:
    if isinstance(value, str) and len(value) > 80:
        return value[:40] + f"…({len(value)} characters)"
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return [_shortened(item) for item in value]
    return value
