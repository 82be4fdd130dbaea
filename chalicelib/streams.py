"""Server-Sent Events: the streaming routes that `wsgi.py` serves before the Chalice gateway.

Chalice answers whole bodies (Lambda, `chalice local`), so a stream cannot be a Chalice route: under
the WSGI server (`python wsgi.py`, `make run`, the container image) `match` hands these paths to a
WSGI application of their own, with the same token check and ownership rule as every route. Under
Chalice alone their routes answer 501 pointing at long-poll (chalicelib/api/jobs.py).

    GET /sdapi/v1/jobs/{job_id}/events   the job's state now, then one event per change; ends after
                                         a terminal event. `Last-Event-ID` resumes.
    GET /sdapi/v1/events                 the same for every job of the token (`?status=` filter)

Each event is `event:` (job.queued, job.started, job.progress, job.completed, job.error,
job.cancelled), `id:` the job's version, `data:` the job summary as JSON. A queue position that
moved (a job ahead left the queue) is a job.queued event without an id: positions are computed, not
stored, so they change no version. Streams wait on the process's change signal
(chalicelib/changes.py) and each takes a STREAM_MAX_OPEN slot; a `:` comment every
STREAM_KEEPALIVE_SECONDS keeps proxies from closing an idle stream and finds a client that left
(the write fails, the slot is freed).
"""
from __future__ import annotations

import http as http_status
import json
import re
import time
import typing
import urllib.parse

from chalicelib import changes
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.api import http
from chalicelib.store import base as store_base

JOB_EVENTS = re.compile(r"^/sdapi/v1/jobs/([^/]+)/events$")
OWNER_EVENTS = "/sdapi/v1/events"
QUEUED_EVENT = "job.queued"
TERMINAL_EVENT = {vocabulary.JobStatus.COMPLETED: vocabulary.JobEvent.COMPLETED,
                  vocabulary.JobStatus.ERROR: vocabulary.JobEvent.ERROR,
                  vocabulary.JobStatus.CANCELLED: vocabulary.JobEvent.CANCELLED}
RECONNECT_MILLISECONDS = 2000  # the `retry:` a client waits before reconnecting
OWNER_JOBS_LIMIT = 100  # jobs an owner stream starts with, and whose queue positions it follows
HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
           ("X-Accel-Buffering", "no")]  # nginx: do not buffer the stream

Wsgi = typing.Callable[[dict, typing.Callable], typing.Iterable[bytes]]


def match(environ: dict) -> Wsgi | None:
    """The streaming application for this request, or None: the Chalice gateway answers it."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    path = environ.get("PATH_INFO", "")
    if path == OWNER_EVENTS:
        return owner_events
    found = JOB_EVENTS.match(path)
    if found:
        job_id = urllib.parse.unquote(found.group(1))
        return lambda environ, start_response: job_events(environ, start_response, job_id=job_id)
    return None


def job_events(environ: dict, start_response, *, job_id: str) -> typing.Iterable[bytes]:
    query = _query(environ)
    try:
        owner = http.owner_of(_Request(environ))
        resume_after = _last_event_id(environ, query)
        ctx = context_module.get_context()
        subscription = changes.registry(ctx).subscribe(job_id=job_id, counted=True)
    except errors.ServiceError as error:
        return _error(start_response, error)
    try:
        job = ctx.store.get_job(job_id, owner=owner)
        if job is None:
            raise errors.NotFound(f"no job {job_id!r}")
    except errors.ServiceError as error:
        subscription.close()
        return _error(start_response, error)
    start_response("200 OK", list(HEADERS))
    stream = _Stream(ctx, owner=owner, previews=_flag(query, "previews"), disconnected=_disconnected(environ))
    return stream.one_job(subscription, job, resume_after=resume_after)


def owner_events(environ: dict, start_response) -> typing.Iterable[bytes]:
    query = _query(environ)
    try:
        owner = http.owner_of(_Request(environ))
        status = query.get("status")
        if status is not None and status not in set(vocabulary.JobStatus):
            raise errors.ValidationFailed.single(["query", "status"], "unknown status; use one of: "
                                                 + ", ".join(vocabulary.JobStatus), "enum")
        ctx = context_module.get_context()
        subscription = changes.registry(ctx).subscribe(owner=owner, watch_queue=True, counted=True)
    except errors.ServiceError as error:
        return _error(start_response, error)
    start_response("200 OK", list(HEADERS))
    stream = _Stream(ctx, owner=owner, previews=_flag(query, "previews"), disconnected=_disconnected(environ))
    return stream.all_jobs(subscription, status=status)


def format_event(name: str, data: dict, *, event_id: int | None) -> bytes:
    """One event in the text/event-stream format (the JSON is on one line)."""
    lines = [f"event: {name}"] + ([f"id: {event_id}"] if event_id is not None else [])
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def event_name(job: store_base.Job, *, previous_status: str | None) -> str:
    """A processing job's first event on a stream is job.started, the next ones job.progress."""
    if job.status in TERMINAL_EVENT:
        return TERMINAL_EVENT[job.status]
    if job.status == vocabulary.JobStatus.QUEUED:
        return QUEUED_EVENT
    if previous_status == vocabulary.JobStatus.PROCESSING:
        return vocabulary.JobEvent.PROGRESS
    return vocabulary.JobEvent.STARTED


class _Stream:
    """What one stream has sent, per job: the version, the status and the data of its last event."""

    def __init__(self, ctx: context_module.Context, *, owner: str, previews: bool,
                 disconnected: typing.Callable[[], bool]) -> None:
        self.ctx = ctx
        self.owner = owner
        self.previews = previews
        self.disconnected = disconnected
        self.keepalive = ctx.settings.stream_keepalive_seconds
        self.last_write = time.monotonic()
        self.versions: dict[str, int] = {}
        self.statuses: dict[str, str] = {}
        self.data: dict[str, dict] = {}

    def one_job(self, subscription: changes.Subscription, job: store_base.Job, *,
                resume_after: int) -> typing.Iterator[bytes]:
        try:
            yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
            self.versions[job.id] = resume_after
            yield from self._send(job, position_only=job.version <= resume_after)
            while job.status not in vocabulary.TERMINAL_STATUSES:
                subscription.watch_queue = job.status == vocabulary.JobStatus.QUEUED
                wake = yield from self._wait(subscription)
                if wake is None:
                    return
                job = self.ctx.store.get_job(job.id, owner=self.owner)
                if job is None:
                    return
                yield from self._send(job, position_only=not (wake.versions or wake.resync))
        finally:
            subscription.close()

    def all_jobs(self, subscription: changes.Subscription, *, status: str | None) -> typing.Iterator[bytes]:
        try:
            yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
            for job in reversed(self.ctx.store.owner_jobs(self.owner, queued_only=False, limit=OWNER_JOBS_LIMIT)):
                yield from self._send(job, status=status)
            subscription.watch_queue = vocabulary.JobStatus.QUEUED in self.statuses.values()
            while True:
                wake = yield from self._wait(subscription)
                if wake is None:
                    return
                if wake.resync:
                    jobs = reversed(self.ctx.store.owner_jobs(self.owner, queued_only=False, limit=OWNER_JOBS_LIMIT))
                    for job in jobs:
                        yield from self._send(job, status=status)
                for job_id, version in wake.versions.items():
                    if version > self.versions.get(job_id, 0):
                        job = self.ctx.store.get_job(job_id, owner=self.owner)
                        if job is not None:
                            yield from self._send(job, status=status)
                if wake.queue_moved:
                    queued = self.ctx.store.owner_jobs(self.owner, queued_only=True, limit=OWNER_JOBS_LIMIT)
                    positions = self.ctx.store.queue_positions(queued)
                    for job in queued:
                        yield from self._send(job, status=status, position=positions.get(job.id),
                                              position_only=True)
                # Queue moves cost a query: followed only while this owner has queued jobs.
                subscription.watch_queue = vocabulary.JobStatus.QUEUED in self.statuses.values()
        finally:
            subscription.close()

    def _wait(self, subscription: changes.Subscription) -> typing.Generator[bytes, None, changes.Wake | None]:
        """The next wake, writing a keep-alive comment when nothing was written for an interval;
        None: stop."""
        while True:
            wake = subscription.wait(timeout=self.last_write + self.keepalive - time.monotonic())
            if wake.closed or self.disconnected():
                return None
            if wake:
                return wake
            self.last_write = time.monotonic()
            yield b": keep-alive\n\n"  # a client that left makes this write fail: the stream ends

    def _send(self, job: store_base.Job, *, status: str | None = None, position: int | None = None,
              position_only: bool = False) -> typing.Iterator[bytes]:
        """The job's event if it changed since this stream's last one (a position-only change: no id)."""
        if status is not None and job.status != status:
            return
        if position is None and job.status == vocabulary.JobStatus.QUEUED:
            position = self.ctx.store.queue_positions([job]).get(job.id)
        data = views.job_summary(job, queue_position=position)
        if self.previews and data["progress"] is not None:
            data["progress"]["current_image"] = job.preview
        new_version = job.version > self.versions.get(job.id, 0)
        if position_only and not new_version:
            if job.status != vocabulary.JobStatus.QUEUED or job.id not in self.data:
                return
            if data["queue_position"] == self.data[job.id]["queue_position"]:
                return
        elif not new_version or _same_but_version(data, self.data.get(job.id)):
            self.versions[job.id] = max(job.version, self.versions.get(job.id, 0))
            return
        name = event_name(job, previous_status=self.statuses.get(job.id))
        self.versions[job.id] = max(job.version, self.versions.get(job.id, 0))
        self.statuses[job.id] = job.status
        self.data[job.id] = data
        if job.status in vocabulary.TERMINAL_STATUSES:  # it changes no more: keep only its version
            del self.statuses[job.id], self.data[job.id]
        self.last_write = time.monotonic()
        yield format_event(name, data, event_id=job.version if new_version else None)


def _same_but_version(data: dict, sent: dict | None) -> bool:
    """A tick that renewed the lease and changed nothing a client sees (the version aside)."""
    return sent is not None and {**data, "version": None} == {**sent, "version": None}


class _Request:
    """What `http.owner_of` reads of a request: its headers (lower-case names)."""

    def __init__(self, environ: dict) -> None:
        self.headers = {key[5:].replace("_", "-").lower(): value
                        for key, value in environ.items() if key.startswith("HTTP_")}


def _query(environ: dict) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))


def _flag(query: dict, name: str) -> bool:
    return query.get(name, "").lower() in ("1", "true", "yes")


def _last_event_id(environ: dict, query: dict) -> int:
    """Where a resumed stream starts: after this version (0: from the start)."""
    value = environ.get("HTTP_LAST_EVENT_ID") or query.get("last_event_id") or "0"
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise errors.ValidationFailed.single(["header", "Last-Event-ID"], "must be an event id (an integer >= 0)",
                                         "int_parsing")


def _disconnected(environ: dict) -> typing.Callable[[], bool]:
    """waitress says when the client closed its connection (if it can tell before a write fails)."""
    check = environ.get("waitress.client_disconnected")
    return check if callable(check) else (lambda: False)


def _error(start_response, error: errors.ServiceError) -> list[bytes]:
    payload = json.dumps(error.to_body()).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    if error.status == 401:
        headers.append(("WWW-Authenticate", "Bearer"))
    headers += list((getattr(error, "headers", None) or {}).items())
    start_response(f"{error.status} {http_status.HTTPStatus(error.status).phrase}", headers)
    return [payload]

