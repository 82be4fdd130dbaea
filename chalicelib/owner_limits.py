"""Per-owner limits at submit: one owner cannot fill the queue for everyone.

Both limits are read from the job store (so every API process, and every Lambda, counts the same
jobs) with index-bounded queries: the count stops at the limit, the rate reads the owner's latest
`limit` jobs. They are soft under concurrency: submits racing each other may each see room for one
more, so an owner can overshoot by the number of its submits in flight at once.
"""
from __future__ import annotations

import math

from chalicelib import context as context_module
from chalicelib import errors

WINDOW_SECONDS = 60.0
# The queue empties at the pace of the GPUs, which the API cannot know: a short, fixed wait.
QUEUE_FULL_RETRY_AFTER = 10


def check_submit(ctx: context_module.Context, owner: str, *, now: float, jobs: int = 1) -> None:
    """Raise TooManyRequests (429 with Retry-After) when `owner` is at either limit, or would pass
    MAX_QUEUED_PER_OWNER with `jobs` more (a batch of N counts N); 0 is no limit. A batch larger
    than that limit could never fit: 413. The submissions queue's owner (SUBMISSIONS_OWNER) is never
    limited: the queue is its buffer, and a refusal there would reject the message for good."""
    if owner == ctx.settings.submissions_owner:
        return
    most_active = ctx.settings.max_queued_per_owner
    if most_active and jobs > most_active:
        raise errors.PayloadTooLarge(
            f"the batch has {jobs} jobs, more than the {most_active} one owner may have queued or running "
            "(MAX_QUEUED_PER_OWNER): split it into smaller batches")
    if most_active and ctx.store.count_active(owner, limit=most_active) + jobs > most_active:
        raise errors.TooManyRequests(
            f"{owner} has too many jobs queued or running to add {jobs} more: {most_active} is the most one "
            "owner may have (MAX_QUEUED_PER_OWNER); submit again once some have finished",
            retry_after=QUEUE_FULL_RETRY_AFTER)
    per_minute = ctx.settings.submits_per_minute_per_owner
    if per_minute:
        recent = ctx.store.recent_submit_times(owner, limit=per_minute)
        if len(recent) >= per_minute and recent[-1] > now - WINDOW_SECONDS:
            wait = max(1, math.ceil(recent[-1] + WINDOW_SECONDS - now))
            raise errors.TooManyRequests(
                f"{owner} submitted {per_minute} jobs in the last minute, the most one owner may "
                f"(SUBMITS_PER_MINUTE_PER_OWNER); retry in {wait} s", retry_after=wait)
