"""Job ids: UUIDv7 (RFC 9562), time-ordered so a new job's id lands at the end of the id index.

A random UUIDv4 puts every insert on a random leaf of the index, so a deep queue makes each submit
dirty a different page (and, on Postgres, write a full page image after every checkpoint). Clients
see an opaque string in the UUID format, as before.
"""
from __future__ import annotations

import os
import time

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def new_job_id(*, now_ns: int | None = None) -> str:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits (version and variant set)."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand_a, rand_b = divmod(int.from_bytes(os.urandom(10), "big") & ((1 << 74) - 1), 1 << 62)
    digits = f"{(millis & ((1 << 48) - 1)) << 80 | _VERSION | rand_a << 64 | _VARIANT | rand_b:032x}"
    # uuid.UUID's text form, without building the object (a submit's id is only ever this string)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
