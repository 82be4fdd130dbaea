"""A webhook receiver for tests and benchmarks that verifies every request as a client would.

Each POST is checked with `standardwebhooks.Webhook` (a `whsec_` secret as the package expects, any
other secret as its UTF-8 bytes: the README's rule, written here independently of chalicelib) and
answered from a script of answers, then 200 once the script is used up:

    with WebhookReceiver(secret="s3cret") as receiver:
        receiver.script([500, 500, 200])          # or {"status": 200, "delay": 30} to hang,
                                                   # or {"drip": 0.5}: one byte of the answer every 0.5 s
        ... receiver.url ...                       # http://127.0.0.1:<port>/hook
        receiver.wait_for(lambda got: len(got) == 3, timeout=10)

A request that fails verification is answered 401 and recorded with `verified=False`.

Standalone: `python -m tests.webhook_receiver --secret s3cret --port 9000 --script '[500, 200]'`;
`GET /_receiver/requests` lists what arrived, `POST /_receiver/script` sets the answers.
"""
from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import signal
import threading
import time

import standardwebhooks

CONTROL_PREFIX = "/_receiver/"


@dataclasses.dataclass
class Received:
    """One request as it arrived and how it was answered."""

    path: str
    headers: dict[str, str]
    body: str
    received_at: float
    verified: bool
    verify_error: str | None
    event: dict | None
    status: int = 0
    answered_at: float | None = None
    dropped_at: float | None = None  # when the sender closed the connection before the answer was out

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "webhook_id": self.webhook_id}


def verifier(secret: str) -> standardwebhooks.Webhook:
    """How a receiver builds its verifier from the job's webhook_secret."""
    return standardwebhooks.Webhook(secret if secret.startswith("whsec_") else secret.encode("utf-8"))


class WebhookReceiver:
    """Serves on 127.0.0.1 from a background thread; `stop()` also releases hanging answers."""

    def __init__(self, *, secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self._verifier = verifier(secret)
        self._lock = threading.Condition()
        self._script: list[dict] = []
        self._received: list[Received] = []
        self._stopping = threading.Event()
        self._server = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def start(self) -> "WebhookReceiver":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def script(self, answers: list) -> None:
        """Answers for the next requests: a status (int) or {"status", "delay", "body", "headers"}, or
        {"drip": seconds}: a 200 whose status line, headers and body go out one byte per `seconds`
        (a long header keeps it going for minutes)."""
        with self._lock:
            self._script = [a if isinstance(a, dict) else {"status": int(a)} for a in answers]

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def dropped(self) -> list[Received]:
        """Requests whose sender hung up before their (dripped) answer was out."""
        return [r for r in self.received() if r.dropped_at is not None]

    def answered(self) -> list[Received]:
        """Requests that got their answer (not still hanging)."""
        return [r for r in self.received() if r.answered_at is not None]

    def wait_for(self, predicate, *, timeout: float) -> list[Received]:
        """Block until predicate(requests answered so far) is true; the list, or AssertionError."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                answered = [r for r in self._received if r.answered_at is not None]
                if predicate(answered):
                    return answered
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"receiver: condition not met after {timeout} s; got "
                                         f"{[(r.event or {}).get('type') for r in answered]}")
                self._lock.wait(min(remaining, 0.1))

    # -- called by the handler ------------------------------------------------------------------

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[dict, Received]:
        text = body.decode("utf-8", "replace")
        try:
            event = self._verifier.verify(text, headers)
            verified, error = True, None
        except standardwebhooks.WebhookVerificationError as exc:
            event, verified, error = None, False, str(exc)
        record = Received(path=path, headers=headers, body=text, received_at=time.time(), verified=verified,
                          verify_error=error, event=event)
        with self._lock:
            self._received.append(record)
            answer = self._script.pop(0) if self._script else {"status": 200}
        if not verified:
            answer = {"status": 401, "body": "signature does not verify"}
        return answer, record

    def _dropped(self, record: Received) -> None:
        with self._lock:
            record.dropped_at = time.time()
            self._lock.notify_all()

    def _answered(self, record: Received, status: int) -> None:
        with self._lock:
            record.status, record.answered_at = status, time.time()
            self._lock.notify_all()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        if method == "GET" and path == CONTROL_PREFIX + "requests":
            return 200, [r.as_dict() for r in self.received()]
        if method == "POST" and path == CONTROL_PREFIX + "script":
            self.script(json.loads(body or b"[]"))
            return 200, {"ok": True}
        return 404, {"detail": "unknown control route"}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith(CONTROL_PREFIX):
            status, payload = receiver._control(method, self.path, body)
            self._reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer, record = receiver._receive(self.path, headers, body)
        if answer.get("drip"):
            self._drip(float(answer["drip"]), record)
            return
        delay = float(answer.get("delay") or 0)
        if delay and receiver._stopping.wait(delay):
            return  # stopping: drop the connection unanswered
        status = int(answer["status"])
        reply = str(answer.get("body", f"answer {status}")).encode()
        try:
            self._reply(status, reply, answer.get("headers") or {})
        except OSError:
            return  # the sender gave up (timeout) before the answer
        receiver._answered(record, status)

    def _drip(self, interval: float, record: Received) -> None:
        receiver = self.server.receiver
        answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 4096 + b"\r\nContent-Length: 2\r\n\r\nok"
        for offset in range(len(answer)):
            try:
                self.wfile.write(answer[offset:offset + 1])
            except OSError:
                receiver._dropped(record)  # the sender gave up
                return
            if receiver._stopping.wait(interval):
                return
        self.close_connection = True
        receiver._answered(record, 200)

    def _reply(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.webhook_receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secret", required=True, help="the jobs' webhook_secret")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--script", default="[]", help='answers as JSON, e.g. [500, {"status": 200, "delay": 2}]')
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with WebhookReceiver(secret=args.secret, host=args.host, port=args.port) as receiver:
        receiver.script(json.loads(args.script))
        print(f"webhook receiver ready on {receiver.url}", flush=True)
        printed: set[int] = set()
        while not stop.wait(0.2):
            for record in receiver.answered():
                if id(record) not in printed:
                    printed.add(id(record))
                    print(json.dumps({"webhook_id": record.webhook_id, "verified": record.verified,
                                      "type": (record.event or {}).get("type"), "answered": record.status}),
                          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
