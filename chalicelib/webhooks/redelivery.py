"""How often a job's latest event may be sent again: once per WEBHOOK_REDELIVER_INTERVAL.

Decided from the deliveries in the store (the newest one with `redelivery_of` and its
`created_at`), so the limit holds across API processes; two requests in the same instant may
both pass, which sends one extra copy at most.
"""
from __future__ import annotations

import math

from chalicelib import context as context_module
from chalicelib import errors
from chalicelib.store import base as store_base

PAGE_SIZE = 20


def check_allowed(ctx: context_module.Context, job_id: str, *, now: float) -> None:
    """Raise TooManyRequests (429 with Retry-After) while the job's last redelivery is recent."""
    interval = ctx.settings.webhook_redeliver_interval
    wait = seconds_until_allowed(ctx.store, job_id, interval=interval, now=now)
    if wait > 0:
        raise errors.TooManyRequests(
            f"job {job_id} was redelivered less than {interval:g} s ago (WEBHOOK_REDELIVER_INTERVAL); "
            f"try again in {math.ceil(wait)} s", retry_after=math.ceil(wait))


def seconds_until_allowed(store: store_base.JobStore, job_id: str, *, interval: float, now: float) -> float:
    """0 when a redelivery may go now, else the seconds until the newest one is `interval` old.
    Reads deliveries newest first and stops at the first one older than the interval."""
    if interval <= 0:
        return 0.0
    before = None
    while True:
        page = store.list_deliveries(job_id, limit=PAGE_SIZE, before=before)
        for delivery in page.deliveries:
            if delivery.created_at <= now - interval:
                return 0.0
            if delivery.redelivery_of is not None:
                return delivery.created_at + interval - now
        if page.next_cursor is None:
            return 0.0
        before = page.next_cursor
