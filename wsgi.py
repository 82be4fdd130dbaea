"""WSGI entry for containers: `application` runs the Chalice app behind waitress or gunicorn.

It adapts WSGI to Chalice's own API Gateway emulator (chalice.local.LocalGateway), so routing,
binary responses and the event shape are exactly what `chalice local` and Lambda see.
`python wsgi.py` serves it with waitress on $HOST:$PORT.
"""
from __future__ import annotations

import base64
import http
import json
import urllib.parse

from chalice import config as chalice_config
from chalice import local

from app import app
from chalicelib import config

_gateway = local.LocalGateway(app, chalice_config.Config.create(chalice_stage="prod", chalice_app=app,
                                                                app_name=app.app_name))


def application(environ: dict, start_response) -> list[bytes]:
    settings = config.get_settings()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > settings.max_body_bytes:
        return _json(start_response, 413, {
            "error": "PayloadTooLarge",
            "detail": f"the body is {length} bytes; the limit is {settings.max_body_bytes} (MAX_BODY_BYTES)"})
    body = environ["wsgi.input"].read(length) if length else None
    path = urllib.parse.quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/:@!$&'()*+,=-._~")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    try:
        response = _gateway.handle_request(method=environ["REQUEST_METHOD"], path=path,
                                           headers=_headers(environ), body=body)
    except local.ForbiddenError:
        return _json(start_response, 404, {"error": "NotFound", "detail": f"no route {environ.get('PATH_INFO')}"})
    except local.LocalGatewayException as exc:
        return _json(start_response, exc.CODE, {"error": "Unauthorized", "detail": "not authorised"})
    payload = response.get("body") or b""
    if response.get("isBase64Encoded"):
        payload = base64.b64decode(payload)
    elif isinstance(payload, str):
        payload = payload.encode("utf-8")
    headers = [(k, v) for k, v in response["headers"].items()]
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers += [(name, value) for value in values]
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(payload))))
    start_response(_status_line(response["statusCode"]), headers)
    return [payload]


def _headers(environ: dict) -> dict[str, str]:
    headers = {key[5:].replace("_", "-").lower(): value
               for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _status_line(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def _json(start_response, code: int, body: dict) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(_status_line(code), [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(payload)))])
    return [payload]


if __name__ == "__main__":
    import waitress

    from chalicelib import context
    from chalicelib import logs

    settings = config.get_settings()
    logs.configure(settings.log_level)
    context.get_context()  # migrate before the first request
    waitress.serve(application, host=settings.host, port=settings.port, threads=16,
                   max_request_body_size=settings.max_body_bytes + 1024, ident="a1111-async")
