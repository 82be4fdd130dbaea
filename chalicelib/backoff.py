"""The one backoff rule: exponential from `first`, doubling per failure, capped, optionally jittered.

Job retries, SQS record retries, instance probes, Civitai cool-downs, database reconnects and the
worker's start loop all wait this way; only their numbers differ.
"""
from __future__ import annotations

import random


def delay(failures: int, *, first: float, cap: float, jitter: float = 0.0) -> float:
    """Seconds to wait after `failures` consecutive failures (1 = the first): first, 2·first,
    4·first … at most `cap`, then scaled by a random factor in [1 − jitter, 1 + jitter]."""
    base = min(first * 2 ** max(failures - 1, 0), cap)
    return base * random.uniform(1 - jitter, 1 + jitter) if jitter else base
