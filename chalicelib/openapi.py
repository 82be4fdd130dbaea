"""The OpenAPI 3.0 document, generated from the route table and the pydantic models.

Each route carries its own documentation: `@openapi.document(...)` next to `@blueprint.route(...)`
says what the route's parameters, body and answers are, naming the pydantic models the route uses.
`build_document(app)` walks the app's route table, so the document can only list what is really
routed, and it refuses a route whose path parameters and documentation disagree. Routes without
documentation are left out (tests/unit/test_openapi.py fails on them).

Schemas come from pydantic (JSON Schema 2020-12) and are rewritten into OpenAPI 3.0's dialect
(`nullable`, a single `example`, boolean `exclusiveMinimum`), which Swagger UI 4 and most client
generators read. Answers name their model in `chalicelib.response_models` by name: that module is imported
only when a document is built, since building its models was the largest share of a cold start's
own import time (bench/cold_start.py).
"""
from __future__ import annotations

import copy
import dataclasses
import typing

import chalice
import pydantic
from pydantic import json_schema as pydantic_json_schema

from chalicelib import examples

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
OPERATION_ATTRIBUTE = "openapi_operation"
REF_PREFIX = "#/components/schemas/"
JSON = "application/json"

TAGS = {
    "generation": "A1111's generation endpoints, answered at once with a queued job (202).",
    "jobs": "The jobs you submitted: state, progress, results, images, cancel.",
    "webhooks": "The webhook deliveries of a job.",
    "live": "Live progress: Server-Sent Events of a job or of all your jobs, and the live queue page.",
    "batches": "Many jobs as one unit: progress, cancel, one webhook, results in one go (docs/batches.md).",
    "models": "Checkpoints and LoRAs of every A1111 instance, in A1111's shapes, with Civitai's metadata.",
    "discovery": "A1111's read-only lists (samplers, schedulers, VAEs, upscalers, scripts, options, "
                 "embeddings), passed through from an instance.",
    "health": "The service at a glance: a summary for anyone, the detail with a token.",
    "metrics": "Prometheus metrics (METRICS_TOKEN or an API token).",
    "docs": "This document and Swagger UI (no token).",
    "legacy": "The original async proxy's shapes under /legacy, for its existing clients (docs/legacy.md).",
    "a1111": "A1111 itself under /a1111, for its own clients (webuiapi, Open WebUI): generation blocks and "
             "answers A1111's body, through the queue (docs/a1111-clients.md).",
}

SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`, a token from the server's API_TOKENS. A job belongs "
                       "to the token that created it; other tokens get 404 for it.",
    },
    "basicAuth": {
        "type": "http", "scheme": "basic",
        "description": "For A1111 clients that only speak `--api-auth` (HTTP Basic): the password is the "
                       "token, the user name is ignored.",
    },
}

ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON, or an image was asked for without an image Accept header.",
    401: "Missing or wrong token.",
    403: "A valid token that is not an admin's (API_ADMIN_TOKENS) asked for what only an admin may.",
    404: "No such job, or it belongs to another token.",
    405: "Only sd_model_checkpoint can be set: A1111's other options are global.",
    409: "The job is in the wrong state for this.",
    413: "The body is larger than MAX_BODY_BYTES.",
    415: "Unsupported Content-Type for the body.",
    422: "Invalid request: every problem at once, FastAPI's shape.",
    502: "No A1111 instance answered, and none has answered this before (nothing cached to serve).",
    503: "The job store cannot be reached.",
}

ERROR_EXAMPLES = {
    400: {"error": "BadRequest", "detail": "the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"},
    401: {"error": "Unauthorized", "detail": "invalid token"},
    403: {"error": "Forbidden", "detail": "the detailed health needs an admin token (a token named in "
                                          "API_ADMIN_TOKENS)"},
    404: {"error": "NotFound", "detail": f"no job '{examples.JOB_ID}'"},
    409: {"error": "Conflict", "detail": f"job {examples.JOB_ID} is already completed; only queued or "
                                        "processing jobs can be cancelled"},
    413: {"error": "PayloadTooLarge", "detail": "the body is 40000000 bytes; the limit is 33554432 (MAX_BODY_BYTES)"},
    415: {"error": "UnsupportedMediaType", "detail": "Unsupported media type: application/xml"},
    502: {"error": "BadGateway", "detail": "no A1111 instance answered GET /sdapi/v1/samplers: A1111 at "
                                          "http://127.0.0.1:7860 refused the connection (GET /sdapi/v1/samplers)"},
    503: {"error": "StoreUnavailable", "detail": "the job store cannot be reached"},
}

# OpenAPI 3.0's Schema Object: anything else from pydantic must be rewritten or is an error.
OAS30_SCHEMA_KEYWORDS = frozenset({
    "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties", "required",
    "enum", "type", "allOf", "oneOf", "anyOf", "not", "items", "properties", "additionalProperties",
    "description", "format", "default", "nullable", "discriminator", "readOnly", "writeOnly", "xml",
    "externalDocs", "example", "deprecated", "$ref",
})

Location = typing.Literal["path", "query", "header"]


class DocumentError(Exception):
    """The route table and its documentation disagree, or a schema cannot be said in OpenAPI 3.0."""


@dataclasses.dataclass(frozen=True)
class Param:
    """A path, query or header parameter; `schema` is an OpenAPI schema object."""

    name: str
    location: Location
    description: str
    schema: dict
    required: bool = False
    example: object = None


@dataclasses.dataclass(frozen=True)
class Body:
    """A JSON request body: one model, or several combined with allOf under `name`."""

    models: tuple[type[pydantic.BaseModel], ...]
    description: str
    examples: dict[str, dict] = dataclasses.field(default_factory=dict)
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Reply:
    """One documented answer: a model (its name in chalicelib.response_models), else a plain `schema`, else
    binary `media_types`."""

    description: str
    model: str | None = None
    schema: dict | None = None
    media_types: tuple[str, ...] = (JSON,)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # name → description
    links: dict[str, dict] = dataclasses.field(default_factory=dict)  # OpenAPI link objects
    example: object = None


@dataclasses.dataclass(frozen=True)
class Operation:
    """Everything the document says about one route."""

    operation_id: str
    summary: str
    tags: tuple[str, ...]
    responses: dict[int, Reply]
    description: str = ""
    parameters: tuple[Param, ...] = ()
    body: Body | None = None
    errors: tuple[int, ...] = ()  # statuses answered with `Error`/`HTTPValidationError`
    public: bool = False  # no token needed
    token_optional: bool = False  # no token needed, but a token gets more (and a wrong one is 401)
    webhook_callback: bool = False  # the body's webhook_url receives `WebhookEvent`s


def document(*, operation_id: str, summary: str, tags: tuple[str, ...] | list[str],
             responses: dict[int, Reply], **details: typing.Any) -> typing.Callable:
    """Attach an `Operation` to a view function (apply it below `@blueprint.route`)."""
    operation = Operation(operation_id=operation_id, summary=summary, tags=tuple(tags), responses=responses,
                          **details)

    def attach(view: typing.Callable) -> typing.Callable:
        setattr(view, OPERATION_ATTRIBUTE, operation)
        return view
    return attach


def path_param(name: str, description: str, *, schema: dict | None = None, example: object = None) -> Param:
    return Param(name=name, location="path", description=description, schema=schema or {"type": "string"},
                 required=True, example=example)


def enum_schema(enum: type) -> dict:
    """A string enum from a Python enum, so the document lists exactly what the code accepts."""
    return {"type": "string", "enum": [member.value for member in enum]}


def operation_of(view: typing.Callable) -> Operation | None:
    return getattr(view, OPERATION_ATTRIBUTE, None)


def routes(app: chalice.Chalice) -> list[tuple[str, str, typing.Any]]:
    """(path, method, route entry) for every route, in registration order; CORS preflights
    (chalicelib/api/cors.py) are not operations."""
    return [(path, method, entry) for path, methods in app.routes.items() for method, entry in methods.items()
            if method != "OPTIONS"]


def build_document(app: chalice.Chalice, *, server_url: str = "/") -> dict:
    """The whole OpenAPI document of `app`."""
    documented = [(path, method, entry, operation_of(entry.view_function)) for path, method, entry in routes(app)
                  if operation_of(entry.view_function) is not None]
    _check_operations(documented)
    components, body_refs = _component_schemas([op for *_, op in documented])
    paths: dict[str, dict] = {}
    for path, method, entry, operation in documented:
        paths.setdefault(path, {})[method.lower()] = _operation(path, entry, operation, body_refs=body_refs)
    used_tags = {tag for *_, op in documented for tag in op.tags}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": app.app_name,
            "version": API_VERSION,
            "description": (
                "AUTOMATIC1111's `/sdapi/v1` API, asynchronous: `POST /sdapi/v1/txt2img` or `/img2img` takes "
                "A1111's own request body and answers 202 with a queued job at once; poll "
                "`GET /sdapi/v1/jobs/{job_id}` (or receive signed webhooks) for progress and A1111's response.\n\n"
                "Every operation needs a token (`Authorization: Bearer <token>`; HTTP Basic with the token as "
                "password for A1111 clients) except `/health`, `/doc`, `/ui` and `/openapi.json`. Errors are "
                "`{\"error\", \"detail\"}`; 422 lists every problem in FastAPI's shape."),
        },
        "servers": [{"url": server_url, "description": "this server"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items() if name in used_tags],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": copy.deepcopy(SECURITY_SCHEMES)},
        "security": [{name: []} for name in SECURITY_SCHEMES],
    }


# --- Operations ----------------------------------------------------------------------------------

def _check_operations(documented: list) -> None:
    """operationIds are unique (clients name methods after them) and tags are known."""
    seen: dict[str, str] = {}
    for path, method, _, operation in documented:
        where = f"{method} {path}"
        if operation.operation_id in seen:
            raise DocumentError(f"operationId {operation.operation_id!r} of {where} is also "
                                f"{seen[operation.operation_id]}")
        seen[operation.operation_id] = where
        unknown = set(operation.tags) - TAGS.keys()
        if unknown:
            raise DocumentError(f"{where}: unknown tags {sorted(unknown)}; add them to openapi.TAGS")


def _operation(path: str, entry: typing.Any, operation: Operation, *, body_refs: dict) -> dict:
    where = f"{entry.method} {path}"
    documented_path_params = {p.name for p in operation.parameters if p.location == "path"}
    if documented_path_params != set(entry.view_args):
        raise DocumentError(f"{where}: path parameters {sorted(entry.view_args)} are documented as "
                            f"{sorted(documented_path_params)}")
    result: dict[str, typing.Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": list(operation.tags),
    }
    if operation.description:
        result["description"] = operation.description
    if operation.parameters:
        result["parameters"] = [_parameter(param) for param in operation.parameters]
    if operation.body is not None:
        result["requestBody"] = _request_body(operation.body, ref=body_refs[id(operation.body)])
    result["responses"] = _responses(operation)
    if operation.webhook_callback:
        result["callbacks"] = {"jobEvent": _webhook_callback()}
    if operation.public:
        result["security"] = []
    elif operation.token_optional:
        result["security"] = [{}, *({name: []} for name in SECURITY_SCHEMES)]
    return result


def _parameter(param: Param) -> dict:
    result = {"name": param.name, "in": param.location, "description": param.description,
              "required": param.required, "schema": param.schema}
    if param.example is not None:
        result["example"] = param.example
    return result


def _request_body(body: Body, *, ref: str) -> dict:
    media: dict[str, typing.Any] = {"schema": {"$ref": ref}}
    if body.examples:
        media["examples"] = {name: {"summary": name, "value": value} for name, value in body.examples.items()}
    return {"description": body.description, "required": True, "content": {JSON: media}}


def _responses(operation: Operation) -> dict:
    replies = dict(operation.responses)
    statuses = set(operation.errors)
    if not operation.public:
        statuses.add(401)
    if operation.body is not None:
        statuses.add(415)  # Chalice checks the Content-Type of every route that takes a body
    overlap = statuses & replies.keys()
    if overlap:
        raise DocumentError(f"{operation.operation_id}: {sorted(overlap)} are both a reply and an error")
    for status in statuses:
        model = "HTTPValidationError" if status == 422 else "Error"
        replies[status] = Reply(ERROR_DESCRIPTIONS[status], model=model, example=ERROR_EXAMPLES.get(status))
    return {str(status): _reply(replies[status]) for status in sorted(replies)}


def _reply(reply: Reply) -> dict:
    result: dict[str, typing.Any] = {"description": reply.description}
    if reply.headers:
        result["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                             for name, text in reply.headers.items()}
    if reply.model is not None:
        media: dict[str, typing.Any] = {"schema": {"$ref": REF_PREFIX + reply.model}}
        if reply.example is not None:
            media["example"] = reply.example
        result["content"] = {media_type: media for media_type in reply.media_types}
    elif reply.media_types:
        schema = reply.schema or {"type": "string", "format": "binary"}
        result["content"] = {media_type: {"schema": schema} for media_type in reply.media_types}
    if reply.links:
        result["links"] = reply.links
    return result


def _webhook_callback() -> dict:
    """The POST a job's webhook_url receives (Standard Webhooks), for clients writing a receiver."""
    signature_headers = [
        ("webhook-id", "the delivery's id; the same on every retry (deduplicate on it)"),
        ("webhook-timestamp", "Unix seconds when this attempt was signed"),
        ("webhook-signature", "`v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">` keyed by webhook_secret"),
        ("X-Webhook-Secret", "the job's webhook_secret, for receivers that only compare a shared key"),
    ]
    return {"{$request.body#/webhook_url}": {"post": {
        "summary": "A job event, POSTed to your webhook_url",
        "description": "Sent for job.completed, job.error and job.cancelled always, and for job.started and "
                       "job.progress when listed in webhook_events. Retried with backoff until your receiver "
                       "answers 2xx.",
        "parameters": [{"name": name, "in": "header", "required": name != "X-Webhook-Secret",
                        "description": text, "schema": {"type": "string"}} for name, text in signature_headers],
        "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": REF_PREFIX + "WebhookEvent"}}}},
        "responses": {"2XX": {"description": "Received. Any other answer, or none in time, is retried."}},
        "security": [],
    }}}


# --- Schemas -------------------------------------------------------------------------------------

def _component_schemas(operations: list[Operation]) -> tuple[dict[str, dict], dict[int, str]]:
    """Every schema the operations use, converted to OpenAPI 3.0, and each body's $ref."""
    from chalicelib import response_models  # noqa: PLC0415 - only documents need the response models

    def response_model(name: str) -> type[pydantic.BaseModel]:
        model = getattr(response_models, name, None)
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            raise DocumentError(f"no response model {name!r} in chalicelib.response_models")
        return model

    wanted: dict[type[pydantic.BaseModel], str] = {response_models.Error: "serialization",
                                                   response_models.HTTPValidationError: "serialization"}
    for operation in operations:
        if operation.body is not None:
            wanted.update({model: "validation" for model in operation.body.models})
        wanted.update({response_model(reply.model): "serialization"
                       for reply in operation.responses.values() if reply.model})
        if operation.webhook_callback:
            wanted[response_models.WebhookEvent] = "serialization"
    _, top = pydantic_json_schema.models_json_schema(list(wanted.items()), ref_template=REF_PREFIX + "{model}")
    components = {name: to_oas30(schema) for name, schema in top.get("$defs", {}).items()}
    body_refs: dict[int, str] = {}
    for operation in operations:
        if operation.body is not None:
            body_refs[id(operation.body)] = _body_component(operation.body, components)
    return dict(sorted(components.items())), body_refs


def _body_component(body: Body, components: dict[str, dict]) -> str:
    names = [model.__name__ for model in body.models]
    if len(names) == 1:
        return REF_PREFIX + names[0]
    if body.name is None:
        raise DocumentError(f"a body combining {names} needs a name")
    for name in names:  # a part of an allOf that forbade other fields would forbid the other parts' fields
        if components[name].get("additionalProperties") is False:
            del components[name]["additionalProperties"]
    combined: dict[str, typing.Any] = {"allOf": [{"$ref": REF_PREFIX + name} for name in names],
                                       "description": body.description}
    if body.examples:
        combined["example"] = next(iter(body.examples.values()))
    components[body.name] = combined
    return REF_PREFIX + body.name


def to_oas30(schema: typing.Any) -> typing.Any:
    """A pydantic JSON Schema (2020-12) rewritten as an OpenAPI 3.0 Schema Object."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            schema = _nullable(schema, keyword)
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if "examples" in schema:
        values = schema.pop("examples")
        schema["example"] = values[0] if isinstance(values, list) else values
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(schema.get(exclusive), (int, float)) and not isinstance(schema[exclusive], bool):
            schema[bound], schema[exclusive] = schema[exclusive], True
    if "$ref" in schema and len(schema) > 1:
        schema = {"allOf": [{"$ref": schema.pop("$ref")}], **schema}
    unknown = {key for key in schema if key not in OAS30_SCHEMA_KEYWORDS and not key.startswith("x-")}
    if unknown or schema.get("type") == "null" or isinstance(schema.get("type"), list):
        raise DocumentError(f"not expressible in OpenAPI 3.0: {sorted(unknown) or schema.get('type')} in {schema}")
    for key in ("properties",):
        if key in schema:
            schema[key] = {name: to_oas30(value) for name, value in schema[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = to_oas30(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [to_oas30(item) for item in schema[key]]
    return schema


def _nullable(schema: dict, keyword: str) -> dict:
    """`anyOf: [X, {type: null}]` → X with `nullable: true` (or `allOf: [X]` when X is a $ref)."""
    variants = schema[keyword]
    others = [variant for variant in variants if variant != {"type": "null"}]
    if len(others) == len(variants):
        return schema
    rest = {key: value for key, value in schema.items() if key != keyword}
    if len(others) > 1:
        return {keyword: others, **rest, "nullable": True}
    (only,) = others
    if "$ref" in only:
        return {"allOf": [only], **rest, "nullable": True}
    if "enum" in only and None not in only["enum"]:
        only = {**only, "enum": [*only["enum"], None]}  # OpenAPI 3.0.3: an enum must list null to allow it
    return {**only, **rest, "nullable": True}

