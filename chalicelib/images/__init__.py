"""Image store port: `make_image_store()` is the one place that picks a backend from IMAGE_STORE.

Each branch imports its backend itself: importing app.py loads no driver (psycopg, sqlite3,
boto3) that the deployment does not use."""
from __future__ import annotations

from chalicelib.images import base
from chalicelib.store import base as store_base


def make_image_store(image_store: str, *, store: store_base.JobStore) -> base.ImageStore:
    """`db` keeps images as rows of the job database, whichever database that is;
    `s3://bucket/prefix` keeps them as S3 objects."""
    if image_store == "db":
        if store.backend == "sqlite":
            from chalicelib.images import db
            return db.DbImageStore(store.database)
        if store.backend == "postgres":
            from chalicelib.images import postgres
            return postgres.PostgresImageStore(store.database)
        raise ValueError(f"IMAGE_STORE=db needs a database-backed store, not {store.backend!r}")
    if image_store.startswith("s3://"):
        from chalicelib.images import s3
        return s3.S3ImageStore.from_location(image_store)
    raise ValueError(f"unsupported IMAGE_STORE: {image_store!r} (supported: db, s3://bucket/prefix)")
