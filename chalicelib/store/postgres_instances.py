"""`InstanceStats` on the job store's Postgres database."""
from __future__ import annotations

from chalicelib.store import instances


class PostgresInstanceStats(instances.InstanceStats):
    NOW = "%(now)s"
