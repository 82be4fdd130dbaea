"""One HTTP attempt: a signed POST to the checked addresses, ended at a total deadline.

A socket timeout only bounds each read, so a receiver that sends one byte at a time could hold an
attempt open for ever; a watchdog thread shuts the connection down at the deadline instead, which
wakes any read or write blocked on it. The attempt so ends within `timeout` (plus a fraction of a
second), however slowly the receiver connects, answers or sends its headers and body.
"""
from __future__ import annotations

import http.client
import socket
import threading
import time
import typing

from chalicelib.store import base as store_base
from chalicelib.webhooks import signing
from chalicelib.webhooks import url_safety

if typing.TYPE_CHECKING:
    import urllib3

RESPONSE_EXCERPT_BYTES = 1024
LEGACY_KEY_HEADER = "x-webhook-key"  # the original proxy's receivers compare it with their key
WATCHDOG_REPEAT_SECONDS = 0.1  # cut again while the attempt has not noticed (a socket being swapped for TLS)


class Watchdog:
    """Shuts a connection's socket down once `seconds` have passed, until stopped."""

    def __init__(self, connection: urllib3.connection.HTTPConnection, *, seconds: float) -> None:
        self.fired = False
        self._connection = connection
        self._lock = threading.Lock()  # so a cut never reaches a socket the attempt has closed
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(seconds,), name="webhook-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()

    def _run(self, seconds: float) -> None:
        wait = max(seconds, 0)
        while not self._stopped.wait(wait):
            self._cut()
            wait = WATCHDOG_REPEAT_SECONDS

    def _cut(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self.fired = True
            sock = self._connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected yet, or already closed: the connect timeout bounds the rest


def send(url: str, *, secret: str | None, webhook_id: str, body: str, timeout: float, allow_private: bool,
         send_secret_header: bool, legacy_key: bool = False, resolver=None) -> store_base.AttemptResult:
    """One signed POST, with the URL checked again first (DNS may have changed since submit).
    `timeout` bounds everything: the DNS lookup, connecting, sending and the answer. `legacy_key`:
    the secret also goes in `x-webhook-key`, as the original proxy sent its webhookKey."""
    deadline = time.monotonic() + timeout
    try:
        target = url_safety.check_url(url, allow_private=allow_private, resolver=resolver, timeout=timeout)
    except url_safety.WebhookUrlError as exc:
        return store_base.AttemptResult(status_code=None, response=None, error=f"not sent: {exc.reason}")
    headers = signing.request_headers(secret, webhook_id=webhook_id, timestamp=int(time.time()), body=body,
                                      send_secret_header=send_secret_header)
    if legacy_key and secret:
        headers[LEGACY_KEY_HEADER] = secret
    return post(target, body=body.encode("utf-8"), headers=headers, deadline=deadline, timeout=timeout)


def post(target: url_safety.Target, *, body: bytes, headers: dict[str, str], deadline: float,
         timeout: float) -> store_base.AttemptResult:
    """POST to the checked addresses in turn (never re-resolving the name, so DNS cannot swap in
    another address after the check) until one accepts the connection; no redirects, no proxies.
    Ends by `deadline` (monotonic); `timeout` is only named in the error. Returns the status and
    the answer's first KiB, or the error."""
    import urllib3  # noqa: PLC0415 - imported at the first delivery (see the package docstring)

    error = "no address to connect to"
    for address in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _timed_out(timeout)
        connection = _connection(target, address, timeout=remaining)
        watchdog = Watchdog(connection, seconds=remaining)
        try:
            connection.connect()
        except urllib3.exceptions.NewConnectionError as exc:
            error = _describe(exc)  # refused or unreachable: try the next address
            continue
        except _failures() as exc:
            return _failed(exc, watchdog=watchdog, timeout=timeout)
        else:
            return _exchange(connection, target, body=body, headers=headers, watchdog=watchdog, timeout=timeout)
        finally:
            watchdog.stop()
            connection.close()
    return store_base.AttemptResult(status_code=None, response=None, error=error)


def _exchange(connection: urllib3.connection.HTTPConnection, target: url_safety.Target, *, body: bytes,
              headers: dict[str, str], watchdog: Watchdog, timeout: float) -> store_base.AttemptResult:
    try:
        connection.request("POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                           preload_content=False)
        response = connection.getresponse()
    except _failures() as exc:
        return _failed(exc, watchdog=watchdog, timeout=timeout)
    try:
        excerpt = response.read(RESPONSE_EXCERPT_BYTES) or b""
    except _failures():
        excerpt = b""  # the status decides; a body cut short (or by the deadline) does not
    finally:
        response.release_conn()
    return store_base.AttemptResult(status_code=response.status,
                                    response=excerpt[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace"),
                                    error=None)


def _failures() -> tuple[type[Exception], ...]:
    """What a receiver can make an attempt raise (a certificate mismatch is a ValueError)."""
    import urllib3  # noqa: PLC0415

    return urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError


def _failed(exc: BaseException, *, watchdog: Watchdog, timeout: float) -> store_base.AttemptResult:
    import urllib3  # noqa: PLC0415

    if watchdog.fired or isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
        return _timed_out(timeout)
    return store_base.AttemptResult(status_code=None, response=None, error=_describe(exc))


def _connection(target: url_safety.Target, address: str, *,
                timeout: float) -> urllib3.connection.HTTPConnection:
    import urllib3  # noqa: PLC0415

    if target.scheme == "https":
        import certifi  # noqa: PLC0415

        return urllib3.connection.HTTPSConnection(
            address, target.port, timeout=timeout, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
            assert_hostname=target.host, server_hostname=target.host)
    return urllib3.connection.HTTPConnection(address, target.port, timeout=timeout)


def _timed_out(timeout: float) -> store_base.AttemptResult:
    return store_base.AttemptResult(
        status_code=None, response=None,
        error=f"timed out: no answer within {timeout:g} s (WEBHOOK_TIMEOUT bounds connecting, sending, "
              "and the answer's status, headers and first KiB)")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT_BYTES]
