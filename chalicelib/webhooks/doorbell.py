"""Waking dispatchers: a queue message is only a doorbell, the delivery row is the truth."""
from __future__ import annotations

import logging

from chalicelib import context as context_module
from chalicelib.queue import base as queue_base

log = logging.getLogger(__name__)


def ring(ctx: context_module.Context, job_id: str | None, *, delay: float = 0) -> None:
    """Wake a dispatcher. Best effort: a lost doorbell only delays delivery until the next poll
    or sweep, so it never fails the job state change that came before it."""
    try:
        ctx.queue.send(queue_base.WEBHOOKS, {"job_id": job_id}, delay=delay)
    except Exception:  # noqa: BLE001 - the change is committed; the doorbell is an optimisation
        log.warning("webhook doorbell not sent", exc_info=True, extra={"job_id": job_id})


def rering_due(ctx: context_module.Context, *, now: float) -> bool:
    """Ring once when deliveries are due and no doorbell is waiting (doorbells can be lost)."""
    if not ctx.store.count_due_deliveries(now=now):
        return False
    if ctx.queue.depth(queue_base.WEBHOOKS).get("visible", 0):
        return False
    ring(ctx, None)
    return True
