"""Images as rows of the job database: the single-box default, nothing else to run."""
from __future__ import annotations

from chalicelib.images import base
from chalicelib.store import sqlite_db


class DbImageStore:
    def __init__(self, database: sqlite_db.SqliteDatabase) -> None:
        self.database = database

    def put(self, job_id: str, attempt: int, images: list[bytes]) -> None:
        with self.database.write() as conn:
            conn.execute("DELETE FROM images WHERE job_id = ? AND attempt = ?", (job_id, attempt))
            conn.executemany(
                "INSERT INTO images (job_id, attempt, n, content_type, data) VALUES (?, ?, ?, ?, ?)",
                [(job_id, attempt, n, base.content_type_of(data), data) for n, data in enumerate(images)])

    def get(self, job_id: str, attempt: int, n: int) -> tuple[bytes, str] | None:
        row = self.database.query_one(
            "SELECT data, content_type FROM images WHERE job_id = ? AND attempt = ? AND n = ?",
            [job_id, attempt, n])
        return None if row is None else (row["data"], row["content_type"])

    def get_all(self, job_id: str, attempt: int) -> list[bytes]:
        rows = self.database.query("SELECT data FROM images WHERE job_id = ? AND attempt = ? ORDER BY n",
                                   [job_id, attempt])
        return [row["data"] for row in rows]

    def delete(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        with self.database.write() as conn:
            return conn.execute("DELETE FROM images WHERE job_id IN (SELECT value FROM json_each(?))",
                                (self.database.array(job_ids),)).rowcount

    def url(self, job_id: str, attempt: int, n: int, *, expires_in: float) -> str | None:
        return None  # rows have no URL of their own: GET /sdapi/v1/jobs/{job_id}/images/{n} serves them
