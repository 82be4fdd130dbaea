"""`python -m worker_fn rejected [--limit N]`: the submissions the intake rejected, newest first,
one JSON object a line (message id, when, why, and an excerpt without secrets)."""
from __future__ import annotations

import argparse
import json

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import rejections
from chalicelib import views


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker_fn rejected",
                                     description="List the rejected queue submissions, newest first.")
    parser.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    args = parser.parse_args(argv)
    ctx = context_module.build_context(config.get_settings())
    for item in rejections.make_rejection_log(ctx.store).list(limit=args.limit):
        print(json.dumps({"message_id": item.message_id, "received_at": views.iso(item.received_at),
                          "reason": item.reason, "problems": item.problems, "excerpt": item.excerpt}))
    return 0
