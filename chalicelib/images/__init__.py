"""Image store port: `make_image_store()` is the one place that picks a backend from IMAGE_STORE."""
from __future__ import annotations

from chalicelib.images import base
from chalicelib.images import db
from chalicelib.images import postgres
from chalicelib.store import base as store_base


def make_image_store(image_store: str, *, store: store_base.JobStore) -> base.ImageStore:
    """`db` keeps images as rows of the job database, whichever database that is."""
    if image_store == "db":
        if store.backend == "sqlite":
            return db.DbImageStore(store.database)
        if store.backend == "postgres":
            return postgres.PostgresImageStore(store.database)
        raise ValueError(f"IMAGE_STORE=db needs a database-backed store, not {store.backend!r}")
    raise ValueError(f"unsupported IMAGE_STORE: {image_store!r} (supported: db)")
