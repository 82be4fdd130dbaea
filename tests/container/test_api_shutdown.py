"""The API's graceful stop (wsgi.serve) on SIGTERM, with a real waitress and real sockets: requests
in flight are answered in full, new connections are refused, idle ones do not hold the stop, and
nothing runs past the grace period."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests import support
from tests.container import image
from tests.container import slow_app


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(*, grace: float) -> tuple[subprocess.Popen, int, object]:
        port = support.free_port()
        log_path = tmp_path / f"server-{port}.log"
        process = subprocess.Popen([sys.executable, "-m", "tests.container.slow_app", str(port), str(grace)],
                                   cwd=image.ROOT, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
        started.append(process)
        support.wait_until(lambda: accepts(port), timeout=15, interval=0.05, what="the server")
        return process, port, log_path

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def get(port: int, seconds: float) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/?{seconds}")
    response = connection.getresponse()
    return {"status": response.status, "length": len(response.read())}


def log_entries(log_path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line]  # every line is JSON


def test_a_request_in_flight_is_answered_in_full_while_new_connections_are_refused(start_server):
    # given a request that takes 1.5 s, under way
    process, port, log_path = start_server(grace=10)
    thread, box = support.in_background(lambda: get(port, 1.5))
    time.sleep(0.4)
    # when the server gets SIGTERM
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # then new connections are refused at once
    support.wait_until(lambda: not accepts(port), timeout=1, what="new connections to be refused")
    # and the request in flight gets its whole answer, after which the server exits cleanly
    thread.join(10)
    assert box.get("value") == {"status": 200, "length": len(slow_app.BODY)}, box
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - signalled < 3  # it did not wait for the 10 s grace
    messages = [entry["message"] for entry in log_entries(log_path)]
    assert "stopped: every request in flight was answered" in messages


def test_an_idle_keep_alive_connection_does_not_hold_the_stop(start_server):
    # given a client that keeps its connection open after an answer
    process, port, _ = start_server(grace=10)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/?0")
    assert connection.getresponse().read() == slow_app.BODY
    # when the server gets SIGTERM, it closes that connection and exits at once
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - signalled < 1.5
    with pytest.raises((http.client.HTTPException, OSError)):
        connection.request("GET", "/?0")
        connection.getresponse()


def test_a_request_longer_than_the_grace_period_is_cut_when_it_ends(start_server):
    # given a request that would take 30 s and a grace period of 0.5 s
    process, port, log_path = start_server(grace=0.5)
    thread, box = support.in_background(lambda: get(port, 30))
    time.sleep(0.4)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # then the server is gone soon after the grace period, and the client got no answer
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 4
    thread.join(5)
    assert "value" not in box and isinstance(box.get("error"), (http.client.HTTPException, OSError))
    cut = [entry for entry in log_entries(log_path) if entry["level"] == "WARNING" and entry["logger"] == "wsgi"]
    assert cut and cut[0]["connections_cut"] == 1 and cut[0]["grace_seconds"] == 0.5
