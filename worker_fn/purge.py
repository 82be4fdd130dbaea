"""`python -m worker_fn purge [--older-than D] [--vacuum]`: retention by hand.

Removes finished jobs older than D (default JOB_RETENTION) with their images, runs and webhook
deliveries, and rejected submissions as old, then prints what it removed as one JSON object.
`--vacuum` first converts a SQLite file created before incremental auto_vacuum (a full VACUUM:
it rewrites the file and blocks writers meanwhile; run it while the service is stopped or quiet).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import retention


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker_fn purge",
                                     description="Purge finished jobs older than a duration, and print what went.")
    parser.add_argument("--older-than", metavar="D",
                        help="a duration such as 30d, 12h, 10s (default: JOB_RETENTION)")
    parser.add_argument("--vacuum", action="store_true",
                        help="SQLite only: first switch a file made before incremental auto_vacuum to it "
                             "(full VACUUM; needs free disk the size of the file)")
    args = parser.parse_args(argv)
    settings = config.get_settings()
    try:
        older_than = config.parse_durations(args.older_than or settings.job_retention)
    except ValueError as exc:
        parser.error(str(exc))
    if len(older_than) != 1 or older_than[0] <= 0:
        print("nothing to purge: the age is 0 (keep forever); give --older-than D", file=sys.stderr)
        return 2
    ctx = context_module.build_context(settings)
    if args.vacuum:
        if ctx.store.backend != "sqlite":
            parser.error("--vacuum is for SQLite; Postgres's autovacuum reuses the space by itself")
        ctx.store.database.convert_to_incremental()
    report = retention.purge(ctx.store, ctx.images, older_than=older_than[0], now=time.time())
    print(json.dumps({"older_than_seconds": older_than[0], **report.as_dict()}))
    return 0
