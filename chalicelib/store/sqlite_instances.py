"""`InstanceStats` on the SQLite file of the job store."""
from __future__ import annotations

from chalicelib.store import instances


class SqliteInstanceStats(instances.InstanceStats):
    NOW = ":now"
