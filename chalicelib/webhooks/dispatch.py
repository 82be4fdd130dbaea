"""The dispatcher use case: claim one due delivery, make one attempt, record it, schedule a retry.

The same `deliver_next` runs in the dispatcher threads of `python -m worker_fn` and in the
SQS-triggered Lambda. A claim leases the delivery for WEBHOOK_CLAIM_SECONDS; the attempt is
bounded to end CLAIM_MARGIN_SECONDS before that lease runs out (and never later than
WEBHOOK_TIMEOUT after it starts), so no other dispatcher can take a delivery while its attempt is
still open. Settings refuse a claim shorter than WEBHOOK_TIMEOUT plus that margin.
"""
from __future__ import annotations

import logging
import random
import time
import urllib.parse

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import vocabulary
from chalicelib.store import base as store_base
from chalicelib.webhooks import attempt
from chalicelib.webhooks import doorbell
from chalicelib.webhooks import events

log = logging.getLogger(__name__)

JITTER = 0.2  # each retry delay is drawn from ±20 % of its schedule entry
SUCCESS = range(200, 300)
GONE = 410
CLAIM_MARGIN_SECONDS = config.WEBHOOK_CLAIM_MARGIN_SECONDS  # to record the result before the lease ends
SQS_MAX_DELAY_SECONDS = 900


def deliver_next(ctx: context_module.Context, *, dispatcher_id: str) -> bool:
    """Claim one due delivery and make one attempt at it. False when nothing is due.

    Receiver problems are recorded, never raised; a store error propagates (the claim's lease
    then runs out and another dispatcher retries the delivery).
    """
    settings = ctx.settings
    claimed_at = time.time()
    delivery = ctx.store.claim_delivery(dispatcher_id=dispatcher_id, lease_seconds=settings.webhook_claim_seconds,
                                        now=claimed_at, per_host=settings.webhook_host_concurrency)
    if delivery is None:
        return False
    schedule = settings.webhook_retry_delays()
    # A batch.completed delivery's job_id is its batch, whose webhook_url and secret it is sent with
    # (its body was written with it).
    job = (ctx.store.get_batch(delivery.job_id) if delivery.event_type == store_base.BATCH_COMPLETED
           else ctx.store.get_job(delivery.job_id))
    url = (job.options.get("webhook_url") if job is not None else None)
    if url is None or delivery.attempts > max_attempts(schedule):
        why = ("the job or its webhook_url no longer exists" if url is None else
               f"gave up after {max_attempts(schedule)} attempts (the last one was lost)")
        _finish(ctx, delivery, store_base.AttemptResult(None, None, f"not sent: {why}"),
                status=vocabulary.DeliveryStatus.FAILED, next_attempt_at=None, body=None)
        return True
    fresh = delivery.body is None
    body = events.render_body(ctx, delivery, job) if fresh else delivery.body
    budget = min(settings.webhook_timeout,
                 claimed_at + settings.webhook_claim_seconds - CLAIM_MARGIN_SECONDS - time.time())
    if budget <= 0:
        result = store_base.AttemptResult(None, None, "not sent: the claim ran out while the body was prepared")
    else:
        result = attempt.send(url, secret=job.webhook_secret, webhook_id=delivery.id, body=body, timeout=budget,
                              allow_private=settings.webhook_allow_private,
                              send_secret_header=settings.webhook_send_secret_header,
                              legacy_key=events.is_legacy(job))
    status, next_attempt_at = outcome(result, attempt_number=delivery.attempts, schedule=schedule)
    _finish(ctx, delivery, result, status=status, next_attempt_at=next_attempt_at, body=body if fresh else None)
    _log_attempt(delivery, result, status=status, url=url, next_attempt_at=next_attempt_at)
    return True


def outcome(result: store_base.AttemptResult, *, attempt_number: int,
            schedule: list[float]) -> tuple[vocabulary.DeliveryStatus, float | None]:
    """The delivery's status after attempt `attempt_number`, and when to try again if pending."""
    if result.status_code in SUCCESS:
        return vocabulary.DeliveryStatus.DELIVERED, None
    if result.status_code == GONE:
        return vocabulary.DeliveryStatus.FAILED, None
    delay = retry_delay(attempt_number, schedule=schedule)
    if delay is None:
        return vocabulary.DeliveryStatus.FAILED, None
    return vocabulary.DeliveryStatus.PENDING, time.time() + delay


def retry_delay(attempt_number: int, *, schedule: list[float]) -> float | None:
    """Seconds to wait after failed attempt `attempt_number` (1-based), jittered; None once the
    schedule is spent (the delivery has failed)."""
    if attempt_number > len(schedule):
        return None
    return schedule[attempt_number - 1] * random.uniform(1 - JITTER, 1 + JITTER)


def max_attempts(schedule: list[float]) -> int:
    return len(schedule) + 1


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
        doorbell.ring(ctx, delivery.job_id,
                      delay=min(max(next_attempt_at - time.time(), 0), SQS_MAX_DELAY_SECONDS))


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
