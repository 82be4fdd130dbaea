"""Image store port: `make_image_store()` is the one place that picks a backend from IMAGE_STORE."""
from __future__ import annotations

from chalicelib.images import base
from chalicelib.images import db
from chalicelib.store import base as store_base


def make_image_store(image_store: str, *, store: store_base.JobStore) -> base.ImageStore:
    if image_store == "db":
        database = getattr(store, "database", None)
        if database is None:
            raise ValueError("IMAGE_STORE=db needs a database-backed store")
        return db.DbImageStore(database)
    raise ValueError(f"unsupported IMAGE_STORE: {image_store!r} (supported: db)")
