"""`/health`: the store, the queue, the webhook backlog, the workers' heartbeats and each A1111
instance, in one look."""
from __future__ import annotations

import concurrent.futures
import logging
import time

from chalicelib import a1111
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import instance_health
from chalicelib import store
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
        doorbells = ctx.queue.depth(queue_base.JOBS)
        due_webhooks = ctx.store.count_due_deliveries(now=now)
        found = instances(ctx)
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
        "webhooks": {"due": due_webhooks},
        "workers": [{"id": w.id, "heartbeat_age_seconds": round(now - w.heartbeat_at, 1),
                     "current_jobs": w.info.get("current_jobs", [])} for w in workers],
        "instances": found,
    }, True


def instances(ctx: context_module.Context) -> list[dict]:
    """Each instance: probed now (in parallel, at most PING_TIMEOUT each) and what ran on it."""
    facts = store.make_instance_stats(ctx.store)
    running, done, failures = facts.running(), facts.jobs_done(), facts.last_errors()

    def probe(instance: a1111.Instance) -> dict:
        client = a1111.make_client(instance, ctx.settings, connect_timeout=PING_TIMEOUT, timeout=PING_TIMEOUT)
        state = instance_health.InstanceHealth(client)
        healthy = state.probe(timeout=PING_TIMEOUT)
        snapshot = state.snapshot()
        client.close()
        current = running.get(instance.name, [])
        return {"name": instance.name, "capacity": instance.capacity, "labels": list(instance.labels),
                "reachable": healthy, "healthy": healthy, "busy": len(current) >= instance.capacity,
                "running_jobs": len(current), "current_jobs": current, "loaded_model": snapshot.loaded_model,
                "jobs_done": done.get(instance.name, 0),
                "last_error": snapshot.last_error or failures.get(instance.name)}

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(ctx.instances), 1)) as pool:
        return list(pool.map(probe, ctx.instances))
