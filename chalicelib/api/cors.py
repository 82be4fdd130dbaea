"""CORS for browser clients (CORS_ORIGINS), in one place for every route and every runtime.

Chalice's own CORS is per route and static (one origin); here every path gets an OPTIONS route (so the
preflight reaches the app under `chalice local`, the WSGI server and API Gateway alike) and one
middleware adds the headers to every answer for an allowed Origin. CORS_ORIGINS unset: no CORS header
at all, and a preflight is still a 204 with `Allow`.
"""
from __future__ import annotations

import functools

import chalice

from chalicelib import config

ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, Prefer, Last-Event-ID"
EXPOSED_HEADERS = "Location, Retry-After, Idempotent-Replayed, X-A1111-Instance, X-Catalog-Stale"
MAX_AGE_SECONDS = "600"


def install(app: chalice.Chalice) -> None:
    """An OPTIONS route on every path registered so far, and the middleware; call it last in app.py."""
    for path, methods in list(app.routes.items()):
        if "OPTIONS" not in methods:
            app.route(path, methods=["OPTIONS"])(preflight)
    app.register_middleware(functools.partial(add_headers, routes=app.routes), "http")


def preflight(**_path_params) -> chalice.Response:
    """204 without a token; `add_headers` adds `Allow` and the CORS headers."""
    return chalice.Response(body="", status_code=204, headers={})


def allowed_origin(origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for a request from `origin`, or None."""
    origins = config.cors_origins(config.get_settings())
    if not origins or not origin:
        return None
    if origins == ("*",):
        return "*"
    return origin if origin.rstrip("/") in origins else None


def add_headers(event: chalice.app.Request, get_response, *, routes: dict) -> chalice.Response:
    """Middleware: CORS headers on every answer to an allowed Origin; the preflight's on OPTIONS."""
    response = get_response(event)
    headers = dict(response.headers or {})
    if event.method == "OPTIONS" and response.status_code == 204:
        headers["Allow"] = ", ".join(sorted(_methods(event, routes)))
    origin = allowed_origin(event.headers.get("origin"))
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if origin != "*":
            headers["Vary"] = "Origin"
        if event.method == "OPTIONS":
            headers["Access-Control-Allow-Methods"] = ", ".join(sorted(_methods(event, routes)))
            headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            headers["Access-Control-Max-Age"] = MAX_AGE_SECONDS
    response.headers = headers
    return response


def _methods(event: chalice.app.Request, routes: dict) -> set[str]:
    return set(routes.get(event.context.get("resourcePath") or "", {})) | {"OPTIONS"}
