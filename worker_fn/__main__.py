"""Command line: `python -m worker_fn [run|migrate]`."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import logs
from worker_fn import worker as worker_module

log = logging.getLogger("worker_fn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker_fn",
                                     description="Run jobs from the queue against A1111.")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "migrate"],
                        help="run: the worker loop (default); migrate: apply schema migrations and exit")
    parser.add_argument("--worker-id", help="stable id for this worker (default: host-pid-random)")
    args = parser.parse_args(argv)

    settings = config.get_settings()
    logs.configure(settings.log_level)
    ctx = context_module.build_context(settings)
    if args.command == "migrate":
        log.info("migrations applied")
        return 0

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = worker_module.Worker(ctx, worker_id=args.worker_id)
    worker.start()
    stop.wait()
    log.info("stopping", extra={"worker_id": worker.worker_id,
                                "grace_seconds": settings.worker_shutdown_grace})
    worker.stop(grace=settings.worker_shutdown_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
