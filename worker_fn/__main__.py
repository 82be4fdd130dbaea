"""Command line: `python -m worker_fn [run|migrate|submit|rejected|purge]`."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from chalicelib import backoff
from chalicelib import config
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import logs
from worker_fn import purge
from worker_fn import rejected
from worker_fn import submit
from worker_fn import worker as worker_module

log = logging.getLogger("worker_fn")

TOOLS = {"submit": submit.main, "rejected": rejected.main, "purge": purge.main}
START_RETRY_FIRST = 0.5
START_RETRY_MAX = 30.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:  # tools with arguments of their own (see each module)
        return TOOLS[argv[0]](argv[1:])
    parser = argparse.ArgumentParser(prog="python -m worker_fn",
                                     description="Run jobs from the queue against A1111.",
                                     epilog="Other commands: `submit FILE.jsonl (--queue-url URL | --api URL "
                                            "--token T)` sends job submissions; `rejected [--limit N]` lists "
                                            "the submissions the intake rejected; `purge [--older-than D]` "
                                            "removes finished jobs past retention. Each has its own --help.")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "migrate"],
                        help="run: the worker loop (default); migrate: apply schema migrations and exit")
    parser.add_argument("--worker-id", help="stable id for this worker (default: host-pid-random)")
    args = parser.parse_args(argv)

    settings = config.get_settings()
    logs.configure(settings.log_level)
    if args.command == "migrate":
        return migrate(settings)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: on_signal(stop))
    worker = start_worker(settings, worker_id=args.worker_id, stop=stop)
    if worker is None:
        return 0
    while not stop.wait(0.5):
        pass
    log.info("stopping", extra={"worker_id": worker.worker_id,
                                "grace_seconds": settings.worker_shutdown_grace})
    worker.stop(grace=settings.worker_shutdown_grace)
    return 0


def migrate(settings: config.Settings) -> int:
    """One attempt: a deploy step should fail loudly, not hang, when the database is down."""
    try:
        context_module.build_context(settings)
    except errors.StoreUnavailable as exc:
        log.error("migrations not applied: %s", exc)
        return 1
    log.info("migrations applied")
    return 0


def on_signal(stop: threading.Event) -> None:
    """Set `stop` from another thread: the handler runs in the main thread, which may be holding the
    event's own lock inside `stop.wait()`, and `Event.set()` there would wait on it for ever."""
    threading.Thread(target=stop.set, name="stop", daemon=True).start()


def start_worker(settings: config.Settings, *, worker_id: str | None,
                 stop: threading.Event) -> worker_module.Worker | None:
    """Start the worker once the store answers, retrying with capped exponential backoff.

    A worker that starts before its database (container start order, failover, maintenance)
    waits for it instead of exiting into a crash loop. None when stopped while waiting.
    """
    failures = 0
    while not stop.is_set():
        try:
            worker = worker_module.Worker(context_module.build_context(settings), worker_id=worker_id)
        except errors.StoreUnavailable as exc:
            failures += 1
            delay = backoff.delay(failures, first=START_RETRY_FIRST, cap=START_RETRY_MAX)
            log.warning("job store unavailable; the worker waits for it: %s", exc,
                        extra={"retry_in_seconds": delay})
            stop.wait(delay)
            continue
        worker.start()
        return worker
    return None


if __name__ == "__main__":
    sys.exit(main())
