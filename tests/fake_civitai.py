"""A fake Civitai API on 127.0.0.1, serving the real by-hash sample of ../shared/civitai/ (a test double).

It answers as NOTES.md (section C) describes Civitai:

- `GET  /api/v1/model-versions/by-hash/{hash}`: the version that has a file with this hash, any of
  its hash types (AutoV1, AutoV2, AutoV3, SHA256, CRC32, BLAKE3), case-insensitive; else 404
  `{"error": "Model not found"}`.
- `POST /api/v1/model-versions/by-hash`: a JSON array of at most 100 SHA256 strings → an array of the
  versions found (unknown hashes are simply absent); any other body → 400.

The sample's `creator` key is dropped: a client added it, Civitai's by-hash answer has none.
`versions=` adds more version objects (tests build them from the sample).

Faults and observation (no auth; Python methods of the same names):
`POST /_fake/faults` body, merged into the settings:
    fail_next: int        the next N Civitai calls answer `fail_status` (default 429) at once
    fail_status: int
    retry_after: str|null `Retry-After` header of those answers
    delay: float          every Civitai call waits this long before answering (0 = off)
`POST /_fake/reset`       no faults, no calls recorded
`GET  /_fake/calls`       every Civitai call: `[{"method", "path", "hashes", "authorization"}]`
`GET  /_fake/stats`       `{"in_flight", "max_in_flight"}`: Civitai calls being answered now / at most at once

Standalone: `python -m tests.fake_civitai --port 8123` prints `fake Civitai ready on http://…/api/v1`;
point CIVITAI_BASE_URL at that URL.
"""
from __future__ import annotations

import argparse
import copy
import http.server
import json
import pathlib
import signal
import threading

SAMPLE_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "civitai" / "sample-model-version-by-hash.json"
API_PREFIX = "/api/v1"
BULK_LIMIT = 100


def load_sample() -> dict:
    """The real Civitai answer, without the key a client added to it."""
    sample = json.loads(SAMPLE_PATH.read_text())
    sample.pop("creator", None)
    return sample


class FakeCivitai:
    def __init__(self, *, versions: list[dict] | None = None, host: str = "127.0.0.1", port: int = 0,
                 include_sample: bool = True) -> None:
        self.versions = ([load_sample()] if include_sample else []) + list(versions or [])
        self._lock = threading.Lock()
        self._faults = {"fail_next": 0, "fail_status": 429, "retry_after": None, "delay": 0.0}
        self._calls: list[dict] = []
        self._in_flight = self._max_in_flight = 0
        self._stopping = threading.Event()
        self._server = http.server.ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    def start(self) -> "FakeCivitai":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-civitai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeCivitai":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- control ---

    def set_faults(self, **settings) -> dict:
        unknown = set(settings) - set(self._faults)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(self._faults)}")
        with self._lock:
            self._faults.update(settings)
            return dict(self._faults)

    def reset(self) -> None:
        with self._lock:
            self._faults.update(fail_next=0, fail_status=429, retry_after=None, delay=0.0)
            self._calls.clear()
            self._max_in_flight = self._in_flight

    def calls(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._calls)

    def stats(self) -> dict:
        with self._lock:
            return {"in_flight": self._in_flight, "max_in_flight": self._max_in_flight}

    # --- Civitai ---

    def find(self, hash_value: str) -> dict | None:
        wanted = hash_value.upper()
        for version in self.versions:
            for file in version.get("files", []):
                if wanted in {str(h).upper() for h in file.get("hashes", {}).values()}:
                    return copy.deepcopy(version)
        return None

    def answer(self, method: str, path: str, body: bytes, authorization: str | None) -> tuple[int, object, dict]:
        """(status, JSON body, headers) of one request."""
        if path.startswith("/_fake/"):
            return self._control(method, path, body)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return self._answer_civitai(method, path, body, authorization)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer_civitai(self, method: str, path: str, body: bytes,
                        authorization: str | None) -> tuple[int, object, dict]:
        with self._lock:
            faults = dict(self._faults)
            failing = faults["fail_next"] > 0
            if failing:
                self._faults["fail_next"] -= 1
        hashes = self._hashes_of(method, path, body)
        with self._lock:
            self._calls.append({"method": method, "path": path, "hashes": hashes, "authorization": authorization})
        if faults["delay"]:
            self._stopping.wait(faults["delay"])
        if failing:
            headers = {"Retry-After": faults["retry_after"]} if faults["retry_after"] else {}
            return faults["fail_status"], {"error": "Too Many Requests"}, headers
        if method == "GET" and path.startswith(f"{API_PREFIX}/model-versions/by-hash/"):
            version = self.find(path.rsplit("/", 1)[1])
            return (200, version, {}) if version else (404, {"error": "Model not found"}, {})
        if method == "POST" and path == f"{API_PREFIX}/model-versions/by-hash":
            if hashes is None:
                return 400, {"error": "Request must include an array of SHA256 Hashes. Max 100."}, {}
            found = []
            for value in hashes:
                version = self.find(value)
                if version and not any(v["id"] == version["id"] for v in found):
                    found.append(version)
            return 200, found, {}
        return 404, {"error": "Not found"}, {}

    def _hashes_of(self, method: str, path: str, body: bytes) -> list[str] | None:
        if method == "GET":
            return [path.rsplit("/", 1)[1]]
        try:
            value = json.loads(body or b"null")
        except ValueError:
            return None
        if (isinstance(value, list) and 0 < len(value) <= BULK_LIMIT
                and all(isinstance(v, str) and len(v) == 64 for v in value)):
            return value
        return None

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, object, dict]:
        if method == "POST" and path == "/_fake/faults":
            try:
                return 200, self.set_faults(**json.loads(body or b"{}")), {}
            except (ValueError, TypeError) as exc:
                return 400, {"error": str(exc)}, {}
        if method == "POST" and path == "/_fake/reset":
            self.reset()
            return 200, {}, {}
        if method == "GET" and path == "/_fake/calls":
            return 200, self.calls(), {}
        if method == "GET" and path == "/_fake/stats":
            return 200, self.stats(), {}
        return 404, {"error": "Not found"}, {}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        status, payload, headers = self.server.fake.answer(self.command, path, body,
                                                           self.headers.get("Authorization"))
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up waiting
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_civitai", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with FakeCivitai(host=args.host, port=args.port) as fake:
        print(f"fake Civitai ready on {fake.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
