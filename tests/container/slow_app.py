"""`python -m tests.container.slow_app PORT GRACE`: wsgi.serve (the API's graceful waitress) in front
of an app that answers `GET /?seconds` after sleeping that long, with a 1 MiB body (more than one
socket write, so the answer must be flushed by the event loop)."""
from __future__ import annotations

import sys
import time

import wsgi
from chalicelib import logs

BODY = b"x" * (1 << 20)


def slow_app(environ: dict, start_response) -> list[bytes]:
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))])
    return [BODY]


if __name__ == "__main__":
    logs.configure("INFO")
    wsgi.serve(slow_app, host="127.0.0.1", port=int(sys.argv[1]), grace=float(sys.argv[2]))
