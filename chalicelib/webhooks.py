"""Webhooks: URL safety, event bodies, Standard Webhooks signing, one HTTP attempt, and the
dispatcher use case that delivers the outbox rows the job store writes with each state change.

The same `deliver_next` runs in the dispatcher threads of `python -m worker_fn` and in the
SQS-triggered Lambda; a queue message is only a doorbell, the delivery row is the truth. The HTTP
and signing libraries are imported at the first delivery, not with the module, which the API
imports too (its cold start needs neither).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import ipaddress
import json
import logging
import random
import socket
import time
import typing
import urllib.parse

from chalicelib import context as context_module
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.queue import base as queue_base
from chalicelib.store import base as store_base

if typing.TYPE_CHECKING:
    import standardwebhooks
    import urllib3

log = logging.getLogger(__name__)

USER_AGENT = "a1111-async-webhooks/1"
SECRET_PREFIX = "whsec_"
SECRET_HEADER = "X-Webhook-Secret"
RESPONSE_EXCERPT_BYTES = 1024
JITTER = 0.2  # each retry delay is drawn from ±20 % of its schedule entry
SUCCESS = range(200, 300)
GONE = 410
DEFAULT_PORTS = {"http": 80, "https": 443}


# --- URL safety (SSRF) ---------------------------------------------------------------------------

class WebhookUrlError(Exception):
    """A webhook URL we will not call; `reason` names why (never the path, query or a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsafeWebhookUrl(WebhookUrlError):
    """Not http(s), has credentials, or its host is (or resolves to) a non-public address."""


class UnresolvableWebhookHost(WebhookUrlError):
    """DNS gave no address: a 422 at submit, a retryable attempt at delivery."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one attempt connects: the checked addresses, and the name for Host, SNI and the cert."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (tests replace this to stay off the network)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        if address.version == 4:
            return "link-local (169.254.0.0/16, where the cloud metadata service lives)"
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.version == 6 and address in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved or not globally routable"
    return None


def check_url(url: str, *, allow_private: bool, resolve=None, resolve_names: bool = True) -> Target:
    """The target of a webhook URL, refused unless http(s), without credentials, and (unless
    `allow_private`) with every address its host resolves to public.

    `resolve_names=False` skips DNS when private addresses are allowed anyway (nothing to check).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeWebhookUrl("webhook_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeWebhookUrl("webhook_url must be an http or https URL")
    if "@" in parts.netloc:
        raise UnsafeWebhookUrl("webhook_url must not contain credentials (user:password@); use webhook_secret")
    host = parts.hostname
    if not host:
        raise UnsafeWebhookUrl("webhook_url has no host")
    port = port or DEFAULT_PORTS[scheme]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    elif not resolve_names and allow_private:
        addresses = []
    else:
        try:
            addresses = (resolve or resolve_host)(host, port)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise UnresolvableWebhookHost(f"webhook_url host {host!r} does not resolve to an address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(ipaddress.ip_address(address))
            if problem is not None:
                where = f"{host} is" if literal is not None else f"{host!r} resolves to {address},"
                raise UnsafeWebhookUrl(f"webhook_url host {where} a {problem} address; webhook "
                                       "receivers must be publicly reachable")
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


# --- Signing (Standard Webhooks) -----------------------------------------------------------------

def signer(secret: str) -> standardwebhooks.Webhook:
    """`whsec_<base64>` is decoded as the standardwebhooks package does; any other secret is its
    UTF-8 bytes (the package would base64-decode a plain string, so it gets bytes)."""
    import standardwebhooks  # noqa: PLC0415 - see the module docstring

    if secret.startswith(SECRET_PREFIX):
        return standardwebhooks.Webhook(secret)
    return standardwebhooks.Webhook(secret.encode("utf-8"))


def secret_problem(secret: str) -> str | None:
    """Why a webhook_secret cannot be used, or None. Never echoes the secret."""
    if not all(0x21 <= ord(ch) <= 0x7E for ch in secret):
        return (f"webhook_secret must be printable ASCII without spaces (it is also sent in the "
                f"{SECRET_HEADER} header)")
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            return "a webhook_secret starting with whsec_ must continue with a non-empty base64 key"
    return None


def signature_headers(secret: str, *, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256 of "id.timestamp.body")."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signer(secret).sign(msg_id=webhook_id, timestamp=moment, data=body),
    }


def request_headers(secret: str | None, *, webhook_id: str, timestamp: int, body: str,
                    send_secret_header: bool) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers.update(signature_headers(secret, webhook_id=webhook_id, timestamp=timestamp, body=body))
        if send_secret_header:
            headers[SECRET_HEADER] = secret
    return headers


# --- Event bodies --------------------------------------------------------------------------------

def _drop_result_images(data: dict) -> bool:
    result = data.get("result") or {}
    if not result.get("images"):
        return False
    result["images"] = []
    return True


def _drop_preview(data: dict) -> bool:
    progress = data.get("progress") or {}
    if not progress.get("current_image"):
        return False
    progress["current_image"] = None
    return True


def _drop_request_field(name: str, empty):
    def drop(data: dict) -> bool:
        request = data.get("request") or {}
        if not request.get(name):
            return False
        request[name] = empty
        return True
    return drop


# What leaves an oversized body, in order, named by its path (listed in the body's "omitted").
SIZE_REDUCTIONS = (
    ("data.result.images", _drop_result_images),
    ("data.progress.current_image", _drop_preview),
    ("data.request.init_images", _drop_request_field("init_images", [])),
    ("data.request.mask", _drop_request_field("mask", None)),
)


def build_body(event_type: str, *, event_at: float, detail: dict, max_inline_bytes: int) -> str:
    """{"type", "timestamp", "data": job detail, "omitted": [...]} as compact JSON.

    While the body is over `max_inline_bytes`, result images (then the preview, then the request's
    init images and mask) are left out and named in "omitted"; `data.image_urls` stays.
    """
    body = {"type": event_type, "timestamp": views.iso(event_at), "data": detail, "omitted": []}
    encoded = _encode(body)
    for path, drop in SIZE_REDUCTIONS:
        if len(encoded) <= max_inline_bytes:
            break
        if drop(detail):
            body["omitted"].append(path)
            encoded = _encode(body)
    return encoded


def _encode(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


def render_body(ctx: context_module.Context, delivery: store_base.WebhookDelivery,
                job: store_base.Job) -> str:
    """The body of a delivery: the job detail as the event's snapshot recorded it."""
    event_job, runs = store_base.job_from_snapshot(delivery.snapshot, request=job.request)
    images = None
    if event_job.result_attempt is not None and event_job.image_count:
        images = ctx.images.get_all(event_job.id, event_job.result_attempt)
    detail = views.job_detail(event_job, queue_position=None, runs=runs, images=images,
                              base_path=ctx.settings.public_base_url.rstrip("/"))
    return build_body(delivery.event_type, event_at=delivery.event_at, detail=detail,
                      max_inline_bytes=ctx.settings.webhook_max_inline_bytes)


# --- Retries -------------------------------------------------------------------------------------

def retry_delay(attempt: int, *, schedule: list[float]) -> float | None:
    """Seconds to wait after failed attempt `attempt` (1-based), jittered; None once the schedule
    is spent (the delivery has failed)."""
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER)


def max_attempts(schedule: list[float]) -> int:
    return len(schedule) + 1


# --- One HTTP attempt ----------------------------------------------------------------------------

def post(target: Target, *, body: bytes, headers: dict[str, str], timeout: float) -> store_base.AttemptResult:
    """POST to the checked addresses (never re-resolving the name, so DNS cannot swap in another
    address after the check); no redirects, no proxies, `timeout` for connecting plus the answer.
    Returns the status and the answer's first KiB, or the error."""
    import urllib3  # noqa: PLC0415 - see the module docstring

    deadline = time.monotonic() + timeout
    error = "no address to connect to"
    for address in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pool = _pool(target, address)
        try:
            response = pool.urlopen(
                "POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                redirect=False, retries=False, assert_same_host=False, preload_content=False,
                timeout=urllib3.Timeout(total=remaining))
        except urllib3.exceptions.NewConnectionError as exc:
            error = _describe(exc)  # refused or unreachable: try the next address
            pool.close()
            continue
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            pool.close()
            return store_base.AttemptResult(status_code=None, response=None, error=_describe(exc))
        try:
            excerpt = response.read(RESPONSE_EXCERPT_BYTES) or b""
        except (urllib3.exceptions.HTTPError, OSError):
            excerpt = b""  # the status decides; a body cut short does not
        finally:
            response.close()
            pool.close()
        return store_base.AttemptResult(status_code=response.status,
                                        response=excerpt[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace"),
                                        error=None)
    return store_base.AttemptResult(status_code=None, response=None, error=error)


def _pool(target: Target, address: str) -> urllib3.HTTPConnectionPool:
    import certifi  # noqa: PLC0415 - see the module docstring
    import urllib3  # noqa: PLC0415

    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address, target.port, maxsize=1, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(), assert_hostname=target.host, server_hostname=target.host)
    return urllib3.HTTPConnectionPool(address, target.port, maxsize=1, retries=False)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT_BYTES]


def attempt(url: str, *, secret: str | None, webhook_id: str, body: str, timeout: float,
            allow_private: bool, send_secret_header: bool, resolve=None) -> store_base.AttemptResult:
    """One signed POST, with the URL checked again first (DNS may have changed since submit)."""
    try:
        target = check_url(url, allow_private=allow_private, resolve=resolve)
    except WebhookUrlError as exc:
        return store_base.AttemptResult(status_code=None, response=None, error=f"not sent: {exc.reason}")
    headers = request_headers(secret, webhook_id=webhook_id, timestamp=int(time.time()), body=body,
                              send_secret_header=send_secret_header)
    return post(target, body=body.encode("utf-8"), headers=headers, timeout=timeout)


# --- The dispatcher use case ---------------------------------------------------------------------

def deliver_next(ctx: context_module.Context, *, dispatcher_id: str) -> bool:
    """Claim one due delivery and make one attempt at it. False when nothing is due.

    Receiver problems are recorded, never raised; a store error propagates (the claim's lease
    then runs out and another dispatcher retries the delivery).
    """
    settings = ctx.settings
    delivery = ctx.store.claim_delivery(dispatcher_id=dispatcher_id,
                                        lease_seconds=settings.webhook_claim_seconds, now=time.time())
    if delivery is None:
        return False
    schedule = settings.webhook_retry_delays()
    job = ctx.store.get_job(delivery.job_id)
    url = (job.options.get("webhook_url") if job is not None else None)
    if url is None or delivery.attempts > max_attempts(schedule):
        why = ("the job or its webhook_url no longer exists" if url is None else
               f"gave up after {max_attempts(schedule)} attempts (the last one was lost)")
        _finish(ctx, delivery, store_base.AttemptResult(None, None, f"not sent: {why}"),
                status=vocabulary.DeliveryStatus.FAILED, next_attempt_at=None, body=None)
        return True
    fresh = delivery.body is None
    body = render_body(ctx, delivery, job) if fresh else delivery.body
    result = attempt(url, secret=job.webhook_secret, webhook_id=delivery.id, body=body,
                     timeout=settings.webhook_timeout, allow_private=settings.webhook_allow_private,
                     send_secret_header=settings.webhook_send_secret_header)
    status, next_attempt_at = _outcome(result, attempt_number=delivery.attempts, schedule=schedule)
    _finish(ctx, delivery, result, status=status, next_attempt_at=next_attempt_at,
            body=body if fresh else None)
    _log_attempt(delivery, result, status=status, url=url, next_attempt_at=next_attempt_at)
    return True


def deliver_due(ctx: context_module.Context, *, dispatcher_id: str, limit: int) -> int:
    """Attempt up to `limit` due deliveries, one after another (the SQS handler's loop)."""
    done = 0
    while done < limit and deliver_next(ctx, dispatcher_id=dispatcher_id):
        done += 1
    return done


def _outcome(result: store_base.AttemptResult, *, attempt_number: int,
             schedule: list[float]) -> tuple[str, float | None]:
    if result.status_code in SUCCESS:
        return vocabulary.DeliveryStatus.DELIVERED, None
    if result.status_code == GONE:
        return vocabulary.DeliveryStatus.FAILED, None
    delay = retry_delay(attempt_number, schedule=schedule)
    if delay is None:
        return vocabulary.DeliveryStatus.FAILED, None
    return vocabulary.DeliveryStatus.PENDING, time.time() + delay


def _finish(ctx: context_module.Context, delivery: store_base.WebhookDelivery,
            result: store_base.AttemptResult, *, status: str, next_attempt_at: float | None,
            body: str | None) -> None:
    kept = ctx.store.finish_delivery(delivery.id, claim_token=delivery.claim_token, attempt=delivery.attempts,
                                     result=result, status=status, next_attempt_at=next_attempt_at,
                                     body=body, now=time.time())
    if not kept:
        log.warning("webhook attempt finished after its claim ran out; another dispatcher retries it",
                    extra={"job_id": delivery.job_id, "webhook_id": delivery.id})
    elif status == vocabulary.DeliveryStatus.PENDING and next_attempt_at is not None:
        # A delayed doorbell for the retry (SQS caps delays at 15 min; the sweep re-rings later ones).
        ring(ctx, delivery.job_id, delay=min(max(next_attempt_at - time.time(), 0), 900))


def _log_attempt(delivery: store_base.WebhookDelivery, result: store_base.AttemptResult, *,
                 status: str, url: str, next_attempt_at: float | None) -> None:
    extra = {"job_id": delivery.job_id, "webhook_id": delivery.id, "event": delivery.event_type,
             "attempt": delivery.attempts, "status_code": result.status_code,
             "host": urllib.parse.urlsplit(url).hostname, "delivery_status": status}
    if status == vocabulary.DeliveryStatus.DELIVERED:
        log.info("webhook delivered", extra=extra)
    elif status == vocabulary.DeliveryStatus.PENDING:
        log.warning("webhook attempt failed; will retry",
                    extra={**extra, "error": result.error,
                           "retry_in": round((next_attempt_at or 0) - time.time(), 1)})
    else:
        log.warning("webhook delivery failed for good", extra={**extra, "error": result.error})


# --- Doorbells -----------------------------------------------------------------------------------

def ring(ctx: context_module.Context, job_id: str | None, *, delay: float = 0) -> None:
    """Wake a dispatcher. Best effort: a lost doorbell only delays delivery until the next poll
    or sweep, so it never fails the job state change that came before it."""
    try:
        ctx.queue.send(queue_base.WEBHOOKS, {"job_id": job_id}, delay=delay)
    except Exception:  # noqa: BLE001 - the change is committed; the doorbell is an optimisation
        log.warning("webhook doorbell not sent", exc_info=True, extra={"job_id": job_id})


def ring_if_wanted(ctx: context_module.Context, job: store_base.Job, event_type: str) -> None:
    """Ring after a state change whose delivery row the store wrote if the job wants the event."""
    if store_base.wants_event(job.options, event_type):
        ring(ctx, job.id)


def rering_due(ctx: context_module.Context, *, now: float) -> bool:
    """Ring once when deliveries are due and no doorbell is waiting (doorbells can be lost)."""
    if not ctx.store.count_due_deliveries(now=now):
        return False
    if ctx.queue.depth(queue_base.WEBHOOKS).get("visible", 0):
        return False
    ring(ctx, None)
    return True


# --- API views -----------------------------------------------------------------------------------

def delivery_view(delivery: store_base.WebhookDelivery, attempts: list[store_base.WebhookAttempt], *,
                  now: float) -> dict:
    """A delivery for its job's owner: no body, no secret, no signature."""
    pending = delivery.status == vocabulary.DeliveryStatus.PENDING
    return {
        "webhook_id": delivery.id,
        "type": delivery.event_type,
        "status": delivery.status,
        "in_flight": pending and delivery.claim_token is not None and (delivery.next_attempt_at or 0) > now,
        "event_timestamp": views.iso(delivery.event_at),
        "created_at": views.iso(delivery.created_at),
        "next_attempt_at": views.iso(delivery.next_attempt_at) if pending else None,
        "finished_at": views.iso(delivery.finished_at),
        "redelivery_of": delivery.redelivery_of,
        "attempt_count": delivery.attempts,
        "attempts": [{
            "attempt": item.attempt,
            "started_at": views.iso(item.started_at),
            "finished_at": views.iso(item.finished_at),
            "status_code": item.status_code,
            "response": item.response,
            "error": item.error,
        } for item in attempts],
    }
