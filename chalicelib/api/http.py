"""What every route shares: token auth, JSON bodies within limits, and errors as JSON."""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging

import chalice

from chalicelib import config
from chalicelib import errors
from chalicelib import strict_json

log = logging.getLogger(__name__)


def json_response(body: object, *, status: int = 200, headers: dict | None = None) -> chalice.Response:
    return chalice.Response(body=json.dumps(body), status_code=status,
                            headers={"Content-Type": "application/json", **(headers or {})})


def error_response(error: errors.ServiceError) -> chalice.Response:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else getattr(error, "headers", None)
    return json_response(error.to_body(), status=error.status, headers=headers)


def make_handler(*, answer=lambda response: response, error_response=error_response):
    """A route decorator: the route's answer through `answer`, `ServiceError`s as `error_response`
    makes them, and anything unexpected as a logged 500 (a profile such as /a1111 passes its shapes)."""
    def handler(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return answer(func(*args, **kwargs))
            except errors.ServiceError as error:
                return error_response(error)
            except Exception:  # noqa: BLE001 - the last line of defence: log it, answer JSON
                log.exception("unhandled error in %s", func.__name__)
                return error_response(errors.ServiceError("an unexpected error occurred; it was logged"))
        return wrapper
    return handler


handler = make_handler()  # ServiceErrors into their JSON responses, anything unexpected a logged 500


def owner_of(request: chalice.app.Request) -> str:
    """The owner name of the token: its sha256 compared in constant time with every entry's (a
    hashed entry holds only that digest), so no entry ends the loop early."""
    tokens = config.get_settings().token_digests()
    if not tokens:
        raise errors.Unauthorized("no API tokens are configured: set API_TOKENS (e.g. "
                                  "API_TOKENS=alice:s3cret) and send 'Authorization: Bearer s3cret'")
    presented = presented_token(request.headers.get("authorization") or "")
    if presented is None:
        raise errors.Unauthorized("send 'Authorization: Bearer <token>' (or HTTP Basic with the token as password)")
    presented_digest = hashlib.sha256(presented.encode()).digest()
    owner = None
    for digest, name in tokens:
        if hmac.compare_digest(presented_digest, digest):
            owner = name
    if owner is None:
        raise errors.Unauthorized("invalid token")
    return owner


def is_admin(owner: str) -> bool:
    """Whether the token's name is in API_ADMIN_TOKENS."""
    return owner in config.get_settings().admin_names()


def admin_of(request: chalice.app.Request, *, what: str) -> str:
    """The owner name of an admin token; 403 for any other valid token."""
    owner = owner_of(request)
    if not is_admin(owner):
        raise errors.Forbidden(f"{what} needs an admin token (a token named in API_ADMIN_TOKENS)")
    return owner


def roles_enabled() -> bool:
    """Roles exist once API_ADMIN_TOKENS names a token; before that every token may do what an
    admin may (the behaviour before roles)."""
    return bool(config.get_settings().admin_names())


def require_operator(request: chalice.app.Request, *, what: str) -> str:
    """For the operator's views (detailed health, instances, metrics): an admin token when roles
    are enabled, else any valid token."""
    return admin_of(request, what=what) if roles_enabled() else owner_of(request)


def presented_token(authorization: str) -> str | None:
    """The token in a Bearer header, or the password of a Basic one (A1111 clients speak `--api-auth`)."""
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def prefer_wait(request: chalice.app.Request) -> float | None:
    """The seconds of a `Prefer: wait=N` header (RFC 7240), or None: absent, or not a number of
    seconds (a preference a server does not understand is ignored)."""
    for preference in (request.headers.get("prefer") or "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds if 0 <= seconds < float("inf") else None
    return None


def json_body(request: chalice.app.Request, *, max_bytes: int) -> object:
    raw = request.raw_body or b""
    if len(raw) > max_bytes:
        raise errors.PayloadTooLarge(f"the body is {len(raw)} bytes; the limit is {max_bytes} (MAX_BODY_BYTES)")
    if not raw.strip():
        raise errors.BadRequest("the body is empty; send a JSON object")
    try:
        return strict_json.loads(raw)
    except strict_json.Invalid as exc:
        raise errors.BadRequest(f"the body is not valid JSON: {exc}") from None


def query_param(request: chalice.app.Request, name: str) -> str | None:
    return (request.query_params or {}).get(name)


# curl -d sends form-urlencoded by default; the body is parsed as JSON whatever the label says.
JSON_BODY_CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]


def contract_errors(event, get_response) -> chalice.Response:
    """Middleware: Chalice's own errors (405 method, 415 media type) in the contract's JSON shape."""
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        response.body = {"error": body["Code"], "detail": body["Message"]}
        # Chalice leaves these without a Content-Type (API Gateway adds one; WSGI does not).
        response.headers = {**response.headers, "Content-Type": "application/json"}
    return response
