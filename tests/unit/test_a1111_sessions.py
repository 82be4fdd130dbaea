"""The A1111 client's per-thread sessions go with their threads: every job's progress tracker is a
thread of its own, and a session (with its keep-alive socket) kept per thread that ever polled grew
a worker by one socket and ~14 KiB per job (the fault campaign's worker RSS)."""
from __future__ import annotations

import gc
import http.server
import json
import os
import threading

import pytest

from chalicelib import a1111


class _Progress(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as A1111 (uvicorn) answers

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        body = json.dumps({"progress": 0, "state": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        pass


@pytest.fixture
def a1111_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Progress)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_threads_that_polled_progress_leave_no_session_or_socket_behind(a1111_url):
    client = a1111.A1111Client(a1111_url)
    client.progress(timeout=5)  # this thread's session: kept while the thread lives
    before = open_fds()

    for _ in range(200):
        thread = threading.Thread(target=lambda: client.progress(timeout=5))
        thread.start()
        thread.join()
    gc.collect()

    assert open_fds() - before < 20  # was 200 more: one socket per ended thread
    client.progress(timeout=5)  # the living thread's session still works
    client.close()
