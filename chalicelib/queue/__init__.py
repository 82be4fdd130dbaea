"""Queue port: `make_queue()` is the one place that picks a backend from QUEUE_BACKEND."""
from __future__ import annotations

from chalicelib import config
from chalicelib.queue import base
from chalicelib.queue import local
from chalicelib.store import base as store_base


def make_queue(settings: config.Settings, *, store: store_base.JobStore) -> base.Queue:
    if settings.queue_backend == "local":
        database = getattr(store, "database", None)
        if database is None:
            raise ValueError("QUEUE_BACKEND=local needs the SQLite store (DATABASE_URL=sqlite:///...)")
        return local.LocalQueue(database, max_receives=settings.queue_max_receives,
                                visibility_timeout=settings.queue_visibility_timeout)
    raise ValueError(f"unsupported QUEUE_BACKEND: {settings.queue_backend!r} (supported: local)")
