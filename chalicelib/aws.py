"""One boto3 session per process for the AWS adapters (queue/sqs.py, images/s3.py).

Clients of one session share its loaded service data, so the second client a cold start builds
costs about half the first. Only those adapters import this module, so boto3 is never imported by
a deployment that uses no AWS service.
"""
from __future__ import annotations

import functools
import threading

import boto3

_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def session() -> boto3.session.Session:
    return boto3.session.Session()


def client(service: str, **options):
    """A client of the shared session (boto3 sessions are not safe for concurrent client creation)."""
    with _lock:
        return session().client(service, **options)
