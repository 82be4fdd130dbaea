"""Read-only per-instance facts for routing and GET /sdapi/v1/instances: a port of its own, so they
never widen `JobStore` (and need no new table: jobs and job_runs already say where each ran).

The SQL is the same on SQLite and Postgres.
"""
from __future__ import annotations

import typing

from chalicelib.store import database as database_module

CHECKPOINT = "sd_model_checkpoint"  # the A1111 option naming the model a job runs with
NEXT_QUEUED = """
SELECT id, request, options FROM jobs WHERE status = 'queued' AND available_at <= :now
ORDER BY priority DESC, seq LIMIT 1
"""
RUNNING = "SELECT instance, id FROM jobs WHERE status = 'processing' AND instance IS NOT NULL ORDER BY seq"
DONE = "SELECT instance, COUNT(*) AS n FROM job_runs WHERE outcome = 'completed' GROUP BY instance"
# The latest failed attempt per instance (a retry or a final error), newest first.
FAILURES = """
SELECT instance, detail FROM job_runs
WHERE outcome IN ('retry', 'error') AND detail IS NOT NULL ORDER BY finished_at DESC LIMIT 200
"""


class NextJob(typing.NamedTuple):
    """The job a claim without labels takes now: what routing needs to know of it."""

    id: str
    model: str | None  # the checkpoint it names
    labels: tuple[str, ...]  # its instance_labels


class InstanceStats:
    """Facts about instances from the jobs and job_runs tables."""

    def __init__(self, database: database_module.Database) -> None:
        self.database = database

    def next_job(self, *, now: float) -> NextJob | None:
        """The most urgent queued job, or None."""
        rows = self.database.query(self.database.native(NEXT_QUEUED), {"now": now})
        if not rows:
            return None
        request, options = (self.database.load_json(rows[0][column]) for column in ("request", "options"))
        return NextJob(rows[0]["id"], requested_model(request), tuple(options.get("instance_labels") or ()))

    def running(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for row in self.database.query(RUNNING):
            found.setdefault(row["instance"], []).append(row["id"])
        return found

    def jobs_done(self) -> dict[str, int]:
        return {row["instance"]: int(row["n"]) for row in self.database.query(DONE)}

    def last_errors(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for row in self.database.query(FAILURES):
            found.setdefault(row["instance"], row["detail"])
        return found


def choice_matters(label_sets: typing.Iterable[tuple[str, ...]], models: typing.Iterable[str | None]) -> bool:
    """Whether the head job can change which of these instances should take it: they differ in
    labels, or in the checkpoint they have loaded (one unknown counts as different)."""
    models = list(models)
    known = [model for model in models if model]
    return len({frozenset(labels) for labels in label_sets}) > 1 or (
        bool(known) and not all(same_model(model, known[0]) for model in models))


def with_checkpoint(request: dict, checkpoint: str) -> dict:
    """`request` asking for `checkpoint` (as `override_settings.sd_model_checkpoint`)."""
    return {**request, "override_settings": {**(request.get("override_settings") or {}), CHECKPOINT: checkpoint}}


def requested_model(request: object) -> str | None:
    """The checkpoint a job asks for (`override_settings.sd_model_checkpoint`), or None."""
    override = request.get("override_settings") if isinstance(request, dict) else None
    model = override.get(CHECKPOINT) if isinstance(override, dict) else None
    return model if isinstance(model, str) and model.strip() else None


def same_model(one: str | None, other: str | None) -> bool:
    """A1111 names a checkpoint by title (`name.safetensors [hash]`), file or model name: compare
    the model name alone."""
    return one is not None and other is not None and _model_key(one) == _model_key(other)


def _model_key(name: str) -> str:
    base = name.split(" [", 1)[0].strip().replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".safetensors", ".ckpt", ".pt"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.lower()
