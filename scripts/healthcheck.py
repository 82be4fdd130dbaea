"""The container's health check: exit 0 when healthy, 1 (with the reason) otherwise.

    python scripts/healthcheck.py            the API: GET http://127.0.0.1:$PORT/health answers 200
                                             (the API is up and its job store is usable)
    python scripts/healthcheck.py URL        any URL answers 2xx (the A1111 simulator's)
    python scripts/healthcheck.py --worker   a worker on this host wrote a heartbeat to the job
                                             store within 3 heartbeat intervals

No curl in a slim image, so it is Python; the API check imports nothing of the service.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import socket
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 4.0  # below the HEALTHCHECK's --timeout
FRESH_HEARTBEATS = 3  # heartbeat intervals a worker's last heartbeat may be old


def check_url(url: str) -> str | None:
    """None when `url` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - our own URL
            return None if 200 <= response.status < 300 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url} did not answer: {exc}"


def check_worker() -> str | None:
    """None when a worker process on this host has a fresh heartbeat in the store, else why not."""
    sys.path.insert(0, str(ROOT))
    from chalicelib import config
    from chalicelib import errors
    from chalicelib import health
    from chalicelib import store

    settings = config.get_settings()
    job_store = store.make_store(settings.database_url)
    now = time.time()
    max_age = FRESH_HEARTBEATS * settings.heartbeat_interval
    try:
        # the same call as /health's (it prunes rows a day old, not fresher ones)
        workers = job_store.list_workers(now=now, keep_seconds=health.WORKER_ROW_KEEP_SECONDS)
    except errors.StoreUnavailable as exc:
        return f"the job store cannot be read: {exc}"
    host = socket.gethostname()
    if any(w.info.get("host") == host and now - w.heartbeat_at <= max_age for w in workers):
        return None
    return f"no worker on {host} wrote a heartbeat in the last {max_age:g} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when healthy, 1 otherwise.")
    parser.add_argument("url", nargs="?", help="a URL that must answer 2xx (default: the API's /health on $PORT)")
    parser.add_argument("--worker", action="store_true", help="check this host's worker heartbeat instead")
    args = parser.parse_args(argv)
    if args.worker:
        problem = check_worker()
    else:
        problem = check_url(args.url or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health")
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
