"""The Chalice app with `current_request` kept per thread.

Chalice keeps the request being handled in an attribute of the app object, which every route reads
(`blueprint.current_request`). Under Lambda one process handles one request at a time; under
waitress (wsgi.py) several threads do, and a handler could read another thread's request: its body
(a submit answered 400 "the body is empty" because a GET came in meanwhile, as the fault campaign
saw) or its token (a request acting as another owner). Here each thread sees its own.
"""
from __future__ import annotations

import threading

import chalice


class Chalice(chalice.Chalice):
    """chalice.Chalice whose `current_request` is the one of the calling thread."""

    _requests = threading.local()

    @property
    def current_request(self) -> chalice.app.Request | None:
        return getattr(self._requests, "request", None)

    @current_request.setter
    def current_request(self, request: chalice.app.Request | None) -> None:
        self._requests.request = request
