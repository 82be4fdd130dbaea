"""The image store port. Images are keyed by (job, attempt, index), so a stale attempt can never
overwrite the images of the attempt that completed the job."""
from __future__ import annotations

import typing

SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def content_type_of(data: bytes) -> str:
    """The media type from the file's magic bytes (A1111 returns png, jpeg or webp)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, media_type in SIGNATURES:
        if data.startswith(signature):
            return media_type
    return "application/octet-stream"


class ImageStore(typing.Protocol):
    def put(self, job_id: str, attempt: int, images: list[bytes]) -> None: ...
    def get(self, job_id: str, attempt: int, n: int) -> tuple[bytes, str] | None: ...
    def get_all(self, job_id: str, attempt: int) -> list[bytes]: ...

    def delete(self, job_ids: list[str]) -> int:
        """Remove every image of these jobs, all attempts (retention); how many were removed."""

    def url(self, job_id: str, attempt: int, n: int, *, expires_in: float) -> str | None:
        """A URL the client can download the image from directly (S3: presigned), or None when
        the store has none and the API serves the image itself."""
