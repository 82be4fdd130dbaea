"""The backends of this process, built once from the settings (and migrated on first use)."""
from __future__ import annotations

import dataclasses
import threading

from chalicelib import a1111
from chalicelib import config
from chalicelib import images
from chalicelib import queue
from chalicelib import store
from chalicelib.images import base as images_base
from chalicelib.queue import base as queue_base
from chalicelib.store import base as store_base


@dataclasses.dataclass
class Context:
    settings: config.Settings
    store: store_base.JobStore
    queue: queue_base.Queue
    images: images_base.ImageStore
    instances: list[a1111.Instance]


def build_context(settings: config.Settings) -> Context:
    job_store = store.make_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    job_store.migrate()
    return Context(
        settings=settings,
        store=job_store,
        queue=queue.make_queue(settings, store=job_store),
        images=images.make_image_store(settings.image_store, store=job_store),
        instances=a1111.load_instances(settings.a1111_base_url,
                                         instances_file=settings.a1111_instances),
    )


_lock = threading.Lock()
_context: Context | None = None


def get_context() -> Context:
    """The process-wide context, built on first use so that importing app.py stays cheap."""
    global _context
    with _lock:
        if _context is None:
            _context = build_context(config.get_settings())
        return _context


def reset_context() -> None:
    """Forget the context (its queue's background thread stopped) and the settings (tests change the
    environment between apps)."""
    global _context
    with _lock:
        if _context is not None:
            _context.queue.close()
        _context = None
    config.get_settings.cache_clear()
