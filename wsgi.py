"""WSGI entry for containers: `application` runs the Chalice app behind waitress or gunicorn.

It adapts WSGI to Chalice's own API Gateway emulator (chalice.local.LocalGateway), so routing,
binary responses and the event shape are exactly what `chalice local` and Lambda see, and writes
one JSON access-log line per request. The event streams (Server-Sent Events), which Chalice cannot
answer, are served first by `chalicelib.streams`. `python wsgi.py` serves it with waitress on $HOST:$PORT and
stops gracefully on SIGTERM or SIGINT (see `serve`).
"""
from __future__ import annotations

import base64
import http
import itertools
import json
import logging
import re
import signal
import sys
import time
import types
import urllib.parse

import pydantic

from chalice import config as chalice_config
from chalice import local
from waitress import channel as waitress_channel
from waitress import server as waitress_server
from waitress import wasyncore

from app import app
from chalicelib import batches
from chalicelib import changes
from chalicelib import config
from chalicelib import context
from chalicelib import errors
from chalicelib import logs
from chalicelib import streams
from chalicelib.api import http as api_http

log = logging.getLogger("wsgi")
access_log = logging.getLogger("access")

# Probes and scrapes log at DEBUG, so that every-few-seconds traffic does not bury the rest.
QUIET_PATHS = frozenset({"/health", "/metrics"})
JOB_PATH = re.compile(r"^/sdapi/v1/jobs/([^/]+)")
BATCH_RESULTS_PATH = re.compile(r"^/sdapi/v1/batches/([^/]+)/results$")
CUT_WAIT_SECONDS = 1.0  # past the grace: how long the exit waits for request threads before cutting them
OUTBUF_WAIT_SECONDS = 0.005  # how long the event loop waits for a request thread's write (PatientChannel)


class IndexedRouteMatcher(local.RouteMatcher):
    """Chalice's route matcher with the routes split once: a literal route found by a dict lookup,
    the routes with captures grouped by their number of segments.

    Chalice's own tries every route in turn and splits each one, at every request: with ~60
    routes a path that sorts late (/sdapi/...) cost 25 µs, a quarter of a whole `GET /doc`. The
    result is the same: the first route in sorted order whose literal segments all match; its
    captures only (Chalice's also kept those of routes it tried before, which no view reads).
    """

    def __init__(self, route_urls: list[str]) -> None:
        super().__init__(route_urls)
        self._by_length: dict[int, list[tuple[str, list[tuple[str, bool]]]]] = {}
        for route_url in self.route_urls:  # sorted by Chalice
            parts = [(part[1:-1], True) if part.startswith("{") and part.endswith("}") else (part, False)
                     for part in route_url.split("/")]
            self._by_length.setdefault(len(parts), []).append((route_url, parts))
        # A literal route is its own path's answer unless a route sorted before it matches that path.
        self._literal = frozenset(route_url for route_url in self.route_urls
                                  if "{" not in route_url and self._first_match(route_url)[0] == route_url)

    def match_route(self, url: str) -> local.MatchResult:
        parsed_url = urllib.parse.urlparse(url)
        query_params = urllib.parse.parse_qs(parsed_url.query, keep_blank_values=True)
        path = parsed_url.path
        if path != "/" and path.endswith("/"):  # API Gateway drops the trailing slash, as Chalice does
            path = path[:-1]
        route_url, captured = (path, {}) if path in self._literal else self._first_match(path)
        if route_url is None:
            raise ValueError(f"No matching route found for: {url}")
        return local.MatchResult(route_url, captured, query_params)

    def _first_match(self, path: str) -> tuple[str | None, dict[str, str]]:
        parts = path.split("/")
        for route_url, route_parts in self._by_length.get(len(parts), ()):
            captured = {}
            for part, (name, is_capture) in zip(parts, route_parts, strict=True):
                if is_capture:
                    captured[name] = part
                elif part != name:
                    break
            else:
                return route_url, captured
        return None, {}


class Gateway(local.LocalGateway):
    """Chalice's API Gateway emulator with the indexed route matcher."""

    def __init__(self, app_object, config) -> None:
        super().__init__(app_object, config)
        self.event_converter = local.LambdaEventConverter(IndexedRouteMatcher(list(app_object.routes)),
                                                          app_object.api.binary_types)


_gateway = Gateway(app, chalice_config.Config.create(chalice_stage="prod", chalice_app=app, app_name=app.app_name))


def gateway_application(environ: dict, start_response) -> list[bytes]:
    """The Chalice app as a WSGI application (without the access log)."""
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


def streaming_application(environ: dict, start_response):
    """Answers streamed as they are produced (the gateway answers whole bodies): the event streams
    and a batch's zip; everything else goes to the gateway."""
    stream = streams.match(environ)
    if stream is not None:
        return stream(environ, start_response)
    match = BATCH_RESULTS_PATH.match(environ.get("PATH_INFO", ""))
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if match and environ.get("REQUEST_METHOD") == "GET" and query.get("format") == ["zip"]:
        return _batch_zip(environ, start_response, match.group(1))
    return gateway_application(environ, start_response)


def _batch_zip(environ: dict, start_response, batch_id: str):
    """GET /sdapi/v1/batches/{id}/results?format=zip: the token and the batch are checked (and the
    first part made) before the status line, so errors are the API's JSON."""
    try:
        owner = api_http.owner_of(types.SimpleNamespace(headers=_headers(environ)))
        chunks = batches.zip_chunks(context.get_context(), batch_id, owner=owner)
        first = next(chunks)
    except errors.ServiceError as error:
        return _json(start_response, error.status, error.to_body())
    start_response(_status_line(200), [("Content-Type", "application/zip"),
                                       ("Content-Disposition", f'attachment; filename="batch-{batch_id}.zip"')])
    return itertools.chain([first], chunks)


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


def with_access_log(wsgi_app):
    """`wsgi_app` writing one access-log line per request: method, path (never the query string or
    a header, so never a token), status, duration, bytes, and `job_id` when the request names one."""
    def logged(environ: dict, start_response) -> list[bytes]:
        started = time.perf_counter()
        answer: dict = {}

        def recording_start_response(status: str, headers: list, exc_info=None):
            answer.update(status=int(status.split(" ", 1)[0]), headers=headers)
            return start_response(status, headers, exc_info)

        body = wsgi_app(environ, recording_start_response)
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        extra = {"method": method, "path": path, "status": answer.get("status"),
                 "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                 "bytes": sum(map(len, body)) if isinstance(body, list) else None,
                 "remote_addr": environ.get("REMOTE_ADDR")}
        job_id = _job_id(path, answer.get("headers") or [])
        if job_id:
            extra["job_id"] = job_id
        access_log.log(logging.DEBUG if path in QUIET_PATHS else logging.INFO, "%s %s %s", method, path,
                       answer.get("status"), extra=extra)
        return body
    return logged


def _job_id(path: str, headers: list) -> str | None:
    """The job a request is about: in its path, or in the Location of a submit's answer."""
    location = next((value for name, value in headers if name.lower() == "location"), "")
    match = JOB_PATH.match(path) or JOB_PATH.match(location)
    return urllib.parse.unquote(match.group(1)) if match else None


application = with_access_log(streaming_application)


class PatientChannel(waitress_channel.HTTPChannel):
    """waitress's connection, whose event loop waits for a request thread's write instead of spinning.

    While a request thread writes an answer it holds the connection's output lock, and waitress's loop
    sees the connection writable: its poll returns at once, the lock is taken, and it polls again. On
    more than one core that loop keeps the interpreter lock the writing thread needs to finish, so
    each busy moment feeds itself (at 64 clients: 3-8x the CPU per submit, docs/performance.md). Here
    the loop waits on the lock (the interpreter lock released) for at most OUTBUF_WAIT_SECONDS.
    """

    def _flush_some_if_lockable(self, do_close: bool = True) -> None:
        if self.outbuf_lock.acquire(timeout=OUTBUF_WAIT_SECONDS):
            try:
                self._flush_some(do_close=do_close)
                if self.total_outbufs_len < self.adj.outbuf_high_watermark:
                    self.outbuf_lock.notify()
            finally:
                self.outbuf_lock.release()


def serve(wsgi_app, *, host: str, port: int, grace: float, **adjustments) -> None:
    """Serve `wsgi_app` with waitress until SIGTERM or SIGINT, then stop gracefully.

    Stopping closes the listening sockets at once (new connections are refused) and idle keep-alive
    connections; requests in flight run to the end and their answers are sent, for at most `grace`
    seconds, after which what is left is cut. waitress's request threads only queue an answer: its
    event loop sends it, so the loop keeps running until the last connection has closed.
    """
    socket_map: dict = {}
    server = waitress_server.create_server(wsgi_app, map=socket_map, host=host, port=port, **adjustments)
    listeners = [item for item in socket_map.values() if isinstance(item, waitress_server.BaseWSGIServer)]
    for listener in listeners:
        listener.channel_class = PatientChannel
    adj = listeners[0].adj
    received: list[str] = []  # the signals that asked to stop

    def on_signal(signum: int, _frame) -> None:  # no logging here: the main thread may hold its lock
        received.append(signal.Signals(signum).name)
        listeners[0].pull_trigger()  # wakes the loop's poll at once

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    server.print_listen("Serving on http://{}:{}")
    while not received:
        wasyncore.loop(timeout=adj.asyncore_loop_timeout, map=socket_map, use_poll=adj.asyncore_use_poll, count=1)
    log.info("stopping: new connections are refused; requests in flight may finish",
             extra={"signal": received[0], "grace_seconds": grace})
    changes.close()  # event streams end (clients reconnect with Last-Event-ID), long-polls answer now
    cut = _drain(socket_map, listeners, grace=grace)
    listeners[0].task_dispatcher.shutdown(cancel_pending=True, timeout=CUT_WAIT_SECONDS if cut else 5)
    wasyncore.close_all(socket_map)
    if cut:
        log.warning("stopped with requests still running after the grace period; they were cut",
                    extra={"connections_cut": cut, "grace_seconds": grace})
    else:
        log.info("stopped: every request in flight was answered")


def _drain(socket_map: dict, listeners: list, *, grace: float) -> int:
    """Close the listeners, then run the loop until every connection is closed or `grace` runs out.

    A connection is busy while it has a request received, running or partly read, or an answer not
    yet sent; an idle one is closed. Returns the number of connections still busy at the end.
    """
    for listener in listeners:
        wasyncore.dispatcher.close(listener)  # the socket only: the loop's trigger stays registered
    adj = listeners[0].adj
    deadline = time.monotonic() + grace
    while True:
        busy = 0
        channels = [channel for listener in listeners for channel in list(listener.active_channels.values())]
        for channel in channels:
            if channel.requests or channel.request is not None or channel.total_outbufs_len:
                busy += 1
            else:
                channel.will_close = True  # closed by the loop's next pass
        remaining = deadline - time.monotonic()
        if not channels or remaining <= 0:
            return busy
        wasyncore.loop(timeout=min(adj.asyncore_loop_timeout, remaining), map=socket_map,
                       use_poll=adj.asyncore_use_poll, count=1)


def main() -> None:
    try:
        settings = config.get_settings()
    except pydantic.ValidationError as exc:  # its text never holds a value (hide_input_in_errors)
        sys.exit(f"configuration error: {exc}")
    logs.configure(settings.log_level)
    try:
        context.get_context()  # migrate before the first request
    except errors.StoreUnavailable as exc:
        # Serve anyway: /health says 503 and each request retries, so a database that starts late
        # or restarts does not put the API into a crash loop.
        log.warning("the job store is unavailable; the API answers 503 until it is back: %s", exc)
    # Connections beyond the limit wait in the listen backlog; an idle or slow one is closed after the
    # channel timeout. Poll, not select: select fails past 1024 open sockets.
    serve(application, host=settings.host, port=settings.port, grace=settings.api_shutdown_grace,
          threads=settings.api_threads, connection_limit=settings.api_connection_limit,
          channel_timeout=settings.api_channel_timeout, asyncore_use_poll=True,
          max_request_body_size=settings.max_body_bytes + 1024, ident="a1111-async")


if __name__ == "__main__":
    main()
