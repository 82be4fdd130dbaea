"""`/health`: the store, the queue, the workers' heartbeats and each A1111 instance, in one look."""
from __future__ import annotations

import concurrent.futures
import logging
import time

from chalicelib import a1111
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib.queue import base as queue_base

log = logging.getLogger(__name__)

PING_TIMEOUT = 1.5
WORKER_ROW_KEEP_SECONDS = 24 * 3600


def check(ctx: context_module.Context) -> tuple[dict, bool]:
    """Returns (report, healthy). Unhealthy means the store cannot be used."""
    now = time.time()
    try:
        ctx.store.ping()
        counts = ctx.store.count_by_status()
        workers = ctx.store.list_workers(now=now, keep_seconds=WORKER_ROW_KEEP_SECONDS)
        busy = ctx.store.busy_instances()
        doorbells = ctx.queue.depth(queue_base.JOBS)
    except errors.StoreUnavailable:
        # The reason goes to the log only: /health answers without a token.
        log.exception("the job store cannot be reached")
        return {"status": "unavailable", "store": {"backend": ctx.store.backend, "ok": False}}, False
    return {
        "status": "ok",
        "store": {"backend": ctx.store.backend, "ok": True},
        "queue": {"jobs": {status: counts.get(status, 0) for status in
                           ("queued", "processing", "completed", "error", "cancelled")},
                  "doorbells": doorbells},
        "workers": [{"id": w.id, "heartbeat_age_seconds": round(now - w.heartbeat_at, 1),
                     "current_jobs": w.info.get("current_jobs", [])} for w in workers],
        "instances": _instances(ctx, busy),
    }, True


def _instances(ctx: context_module.Context, busy: dict[str, int]) -> list[dict]:
    def probe(instance: a1111.Instance) -> dict:
        client = a1111.A1111Client(instance.url, auth=ctx.settings.a1111_auth)
        return {"name": instance.name, "capacity": instance.capacity,
                "reachable": client.ping(timeout=PING_TIMEOUT),
                "busy": busy.get(instance.name, 0) > 0, "running_jobs": busy.get(instance.name, 0)}

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(ctx.instances), 1)) as pool:
        return list(pool.map(probe, ctx.instances))
