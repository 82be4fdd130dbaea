"""Queue port: `make_queue()` is the one place that picks a backend from QUEUE_BACKEND.

Each branch imports its backend itself: importing app.py loads no driver (psycopg, sqlite3,
boto3) that the deployment does not use."""
from __future__ import annotations

from chalicelib import config
from chalicelib.queue import base
from chalicelib.store import base as store_base


def make_queue(settings: config.Settings, *, store: store_base.JobStore) -> base.Queue:
    """`local` is a table in the job database, whichever database that is; `sqs` is Amazon SQS."""
    if settings.queue_backend == "local":
        options = {"max_receives": settings.queue_max_receives,
                   "visibility_timeout": settings.queue_visibility_timeout}
        if store.backend == "sqlite":
            from chalicelib.queue import local
            return local.LocalQueue(store.database, **options)
        if store.backend == "postgres":
            from chalicelib.queue import postgres
            return postgres.PostgresQueue(store.database, **options)
        raise ValueError(f"QUEUE_BACKEND=local needs a database-backed store, not {store.backend!r}")
    if settings.queue_backend == "sqs":
        from chalicelib.queue import sqs
        return sqs.SqsQueue.from_settings(settings)
    raise ValueError(f"unsupported QUEUE_BACKEND: {settings.queue_backend!r} (supported: local, sqs)")
