"""Images as rows of the Postgres job database (`bytea`), for deployments without S3."""
from __future__ import annotations

from chalicelib.images import base
from chalicelib.store import postgres_db

DELETE_ATTEMPT = "DELETE FROM images WHERE job_id = %(job_id)s AND attempt = %(attempt)s"
INSERT_IMAGE = """
INSERT INTO images (job_id, attempt, n, content_type, data)
VALUES (%(job_id)s, %(attempt)s, %(n)s, %(content_type)s, %(data)s)
"""
SELECT_IMAGE = """
SELECT data, content_type FROM images WHERE job_id = %(job_id)s AND attempt = %(attempt)s AND n = %(n)s
"""
DELETE_JOBS = "DELETE FROM images WHERE job_id = ANY(%(job_ids)s)"
SELECT_ATTEMPT = "SELECT data FROM images WHERE job_id = %(job_id)s AND attempt = %(attempt)s ORDER BY n"


class PostgresImageStore:
    def __init__(self, database: postgres_db.PostgresDatabase) -> None:
        self.database = database

    def put(self, job_id: str, attempt: int, images: list[bytes]) -> None:
        """Replace the images of one attempt in one transaction (a retried put leaves no strays)."""
        with self.database.transaction() as session:
            session.execute(DELETE_ATTEMPT, {"job_id": job_id, "attempt": attempt})
            session.executemany(INSERT_IMAGE, [
                {"job_id": job_id, "attempt": attempt, "n": n, "content_type": base.content_type_of(data),
                 "data": data} for n, data in enumerate(images)])

    def get(self, job_id: str, attempt: int, n: int) -> tuple[bytes, str] | None:
        row = self.database.query_one(SELECT_IMAGE, {"job_id": job_id, "attempt": attempt, "n": n})
        return None if row is None else (bytes(row["data"]), row["content_type"])

    def get_all(self, job_id: str, attempt: int) -> list[bytes]:
        rows = self.database.query(SELECT_ATTEMPT, {"job_id": job_id, "attempt": attempt})
        return [bytes(row["data"]) for row in rows]

    def delete(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        return self.database.execute(DELETE_JOBS, {"job_ids": list(job_ids)})

    def url(self, job_id: str, attempt: int, n: int, *, expires_in: float) -> str | None:
        return None  # rows have no URL of their own: GET /sdapi/v1/jobs/{job_id}/images/{n} serves them
