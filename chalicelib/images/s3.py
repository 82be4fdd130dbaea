"""Images as S3 objects (IMAGE_STORE=s3://bucket/prefix): what Lambda deployments use.

One object per image, `<prefix>/<job_id>/<attempt>/<n>`, with its media type as Content-Type, so a
presigned GET serves it as a file. Keys are per attempt, as with the database rows, so a stale
attempt can never overwrite the images of the attempt that completed. Only the factory imports this
module (boto3 stays out of a cold start that does not need it); botocore errors become
`errors.StoreUnavailable` here, once. Retention (chalicelib/retention.py) deletes a purged job's
objects; the bucket's lifecycle rule (infra/template.json) is a backstop for any it missed.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import typing
import urllib.parse

import botocore.config
import botocore.exceptions

from chalicelib import aws
from chalicelib import errors
from chalicelib.images import base

CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=60,
                                       retries={"mode": "standard", "max_attempts": 3},
                                       signature_version="s3v4")
PARALLEL_TRANSFERS = 8
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
DELETE_BATCH = 1000  # keys per DeleteObjects call, S3's limit


def parse_location(value: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without slashes at either end)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"IMAGE_STORE must look like s3://bucket/prefix, not {value!r}")
    return parts.netloc, parts.path.strip("/")


class S3ImageStore:
    def __init__(self, bucket: str, prefix: str = "", *, client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or aws.client("s3", config=CLIENT_CONFIG)

    @classmethod
    def from_location(cls, value: str) -> "S3ImageStore":
        bucket, prefix = parse_location(value)
        return cls(bucket, prefix)

    def key(self, job_id: str, attempt: int, n: int) -> str:
        return f"{self._attempt_prefix(job_id, attempt)}{n}"

    def put(self, job_id: str, attempt: int, images: list[bytes]) -> None:
        """Write every image, then remove any left from an earlier put of the same attempt."""
        def upload(item: tuple[int, bytes]) -> None:
            n, data = item
            self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, attempt, n), Body=data,
                                   ContentType=base.content_type_of(data))

        with wrapped(f"store the images of job {job_id}"):
            self._each(upload, list(enumerate(images)))
            stale = [key for n, key in self._listed(job_id, attempt) if n >= len(images)]
            if stale:
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": [{"Key": key} for key in stale], "Quiet": True})

    def get(self, job_id: str, attempt: int, n: int) -> tuple[bytes, str] | None:
        with wrapped(f"read image {n} of job {job_id}"):
            return self._download(self.key(job_id, attempt, n))

    def get_all(self, job_id: str, attempt: int) -> list[bytes]:
        with wrapped(f"read the images of job {job_id}"):
            keys = [key for _, key in self._listed(job_id, attempt)]
            found = self._each(self._download, keys)
        return [item[0] for item in found if item is not None]

    def delete(self, job_ids: list[str]) -> int:
        """List each job's objects (every attempt) and delete them, up to 1000 per call."""
        with wrapped(f"delete the images of {len(job_ids)} jobs"):
            keys = [key for job_id in job_ids for key in self._keys_under(self._job_prefix(job_id))]
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start:start + DELETE_BATCH]
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        return len(keys)

    def url(self, job_id: str, attempt: int, n: int, *, expires_in: float) -> str | None:
        """A presigned GET URL, signed locally with this process's credentials (no request is made).
        It lasts `expires_in` seconds, or less when those credentials expire first (a Lambda role's
        do within hours)."""
        with wrapped(f"sign a URL for image {n} of job {job_id}"):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(job_id, attempt, n)},
                ExpiresIn=int(expires_in))

    def _job_prefix(self, job_id: str) -> str:
        return f"{self.prefix}/{job_id}/" if self.prefix else f"{job_id}/"

    def _attempt_prefix(self, job_id: str, attempt: int) -> str:
        return f"{self._job_prefix(job_id)}{attempt}/"

    def _keys_under(self, prefix: str) -> list[str]:
        return [item["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix) for item in page.get("Contents", [])]

    def _listed(self, job_id: str, attempt: int) -> list[tuple[int, str]]:
        """(n, key) of the attempt's objects, in image order."""
        prefix = self._attempt_prefix(job_id, attempt)
        found = []
        for key in self._keys_under(prefix):
            name = key[len(prefix):]
            if name.isdigit():
                found.append((int(name), key))
        return sorted(found)

    def _download(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                return None
            raise
        with contextlib.closing(response["Body"]) as body:
            data = body.read()
        return data, response.get("ContentType") or base.content_type_of(data)

    def _each(self, action: typing.Callable, items: list) -> list:
        """`action` on every item, a few at a time (16 images one after another would take seconds)."""
        if len(items) <= 1:
            return [action(item) for item in items]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(items), PARALLEL_TRANSFERS)) as pool:
            return list(pool.map(action, items))


@contextlib.contextmanager
def wrapped(action: str) -> typing.Iterator[None]:
    """botocore's errors as `StoreUnavailable` naming the action and AWS's error code."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise errors.StoreUnavailable(
            f"S3 image store: could not {action}: {error.get('Code', '')}: {error.get('Message', '')}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise errors.StoreUnavailable(f"S3 image store: could not {action}: {exc}") from exc
