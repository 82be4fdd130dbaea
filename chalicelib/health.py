"""`/health`: the store, the queue, the webhook backlog, the workers' heartbeats and each A1111
instance, in one look: in detail for a token, as up/degraded/down per component for anyone."""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

from chalicelib import a1111
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import instance_health
from chalicelib import store
from chalicelib import views
from chalicelib import vocabulary
from chalicelib.queue import base as queue_base

log = logging.getLogger(__name__)

PING_TIMEOUT = 1.5
WORKER_ROW_KEEP_SECONDS = 24 * 3600
# A worker is up while its heartbeat is this fresh: a few HEARTBEAT_INTERVALs, and never less than
# the time between two runs of the Lambda deployment's sweeper (every minute), which heartbeats too.
WORKER_FRESH_MIN_SECONDS = 150.0
UP, DEGRADED, DOWN = "up", "degraded", "down"
# A write refused this recently makes the store "degraded" (it reads, but jobs may not be taken or run).
WRITE_FAILURES_SECONDS = 60.0

_summary_lock = threading.Lock()
_summary_cache: tuple[context_module.Context, float, dict, bool] | None = None


def summary(ctx: context_module.Context) -> tuple[dict, bool]:
    """(the anonymous report, healthy), refreshed at most every HEALTH_CACHE_SECONDS.

    Anyone may call it, so it tells only up/degraded/down per component (no job ids, error text,
    instance names or URLs), and a burst of calls probes each A1111 instance once, not once per call:
    the first caller refreshes while the others wait for its answer.
    """
    global _summary_cache
    with _summary_lock:
        cached = _summary_cache
        now = time.monotonic()
        if cached and cached[0] is ctx and now - cached[1] < ctx.settings.health_cache_seconds:
            return cached[2], cached[3]
        report, healthy = check(ctx)
        _summary_cache = (ctx, time.monotonic(), summarize(report, settings=ctx.settings), healthy)
        return _summary_cache[2], healthy


def summarize(report: dict, *, settings) -> dict:
    """The detailed report of `check` reduced to one word per component."""
    if not report["store"]["ok"]:
        return {"status": "unavailable", "components": {"store": DOWN}}
    fresh = max(3 * settings.heartbeat_interval, WORKER_FRESH_MIN_SECONDS)
    healthy_instances = sum(1 for instance in report["instances"] if instance["healthy"])
    components = {
        "store": DEGRADED if report["store"]["writes_failing"] else UP,  # it reads, but writes fail
        "queue": UP,  # its depth was read; dead letters are in the detail (the sweep re-rings their jobs)
        "workers": UP if any(w["heartbeat_age_seconds"] <= fresh for w in report["workers"]) else DOWN,
        "instances": (UP if healthy_instances == len(report["instances"]) and healthy_instances
                      else DEGRADED if healthy_instances else DOWN),
    }
    return {"status": overall(components), "components": components}


def overall(components: dict) -> str:
    """ok when every component is up; down when no job can run (no instance answers, or no worker
    is alive to run one): jobs are still accepted and wait; else degraded (a store whose writes
    fail among them: some or all jobs are refused)."""
    if components["instances"] == DOWN or components["workers"] == DOWN:
        return "down"
    return "ok" if set(components.values()) == {UP} else "degraded"


def check(ctx: context_module.Context) -> tuple[dict, bool]:
    """Returns (report, healthy). Unhealthy means the store cannot be used; `status` is the same
    ok/degraded/down word as the anonymous summary's."""
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
    report = {
        "status": "ok",
        "store": store_writes(ctx, now=now),
        "queue": {"jobs": {status.value: counts.get(status, 0) for status in vocabulary.JobStatus},
                  "doorbells": doorbells},
        "webhooks": {"due": due_webhooks},
        "workers": [{"id": w.id, "heartbeat_age_seconds": round(now - w.heartbeat_at, 1),
                     "current_jobs": w.info.get("current_jobs", [])} for w in workers],
        "instances": found,
    }
    report["status"] = summarize(report, settings=ctx.settings)["status"]
    return report, True


def store_writes(ctx: context_module.Context, *, now: float) -> dict:
    """The store's part of the report: it answered reads (the caller saw that), and whether a write of
    this process was refused within the last WRITE_FAILURES_SECONDS. A store that reads but cannot
    write (a full disk, a read-only server) answers every ping; a small write may even pass while a
    submit's does not (SQLite on a full disk did so): only the refusals tell."""
    report = {"backend": ctx.store.backend, "ok": True, "writes_failing": False}
    failure = ctx.store.last_write_failure()
    if failure is not None and now - failure.at < WRITE_FAILURES_SECONDS:
        report.update(writes_failing=True, last_write_error=failure.error,
                      last_write_failed_at=views.iso(failure.at))
    return report


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
