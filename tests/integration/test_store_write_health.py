"""/health's store part on every backend: a store that answers reads but refuses writes (a full disk,
a read-only server) is reported as refusing them, with the last refusal's error, for a minute after it."""
from __future__ import annotations

import types
import uuid

import pytest

from chalicelib import errors
from chalicelib import health
from chalicelib.store import base
from tests import support

NOW = 1_700_000_000.0


def submit(job_store) -> None:
    job = base.NewJob(id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0,
                      request={"prompt": "a cat"}, options={}, webhook_secret=None, idempotency_key=None)
    job_store.create_job(job, now=NOW)


def test_a_store_that_refuses_writes_is_reported_so_for_a_minute_after_its_last_refusal(job_store):
    ctx = types.SimpleNamespace(store=job_store)
    job_store.heartbeat("worker-1", info={}, now=NOW)
    submit(job_store)
    assert health.store_writes(ctx, now=NOW) == {"backend": job_store.backend, "ok": True, "writes_failing": False}

    with support.writes_refused(job_store.database):
        with pytest.raises(errors.StoreUnavailable) as refused:
            submit(job_store)
        job_store.ping()  # it answers: a ping alone would call it up
        assert [w.id for w in job_store.list_workers(now=NOW, keep_seconds=60)] == ["worker-1"]  # its prune refused
    failure = job_store.last_write_failure()
    assert failure is not None and "read" in failure.error.lower()  # SQLite: readonly database; Postgres: read-only
    assert failure.error.split(":")[0] == str(refused.value).split(":")[0]  # "SQLite error" / "Postgres error"

    submit(job_store)  # writes pass again; the refusal is still reported for the minute after it
    report = health.store_writes(ctx, now=failure.at + 1)
    assert report["writes_failing"] is True and report["last_write_error"] == failure.error
    assert report["last_write_failed_at"].endswith("Z")
    later = health.store_writes(ctx, now=failure.at + health.WRITE_FAILURES_SECONDS)
    assert later["writes_failing"] is False and "last_write_error" not in later


def test_a_refused_constraint_is_no_store_failure(job_store):
    insert = ("INSERT INTO jobs (id, owner, kind, status, request, options, available_at, created_at, updated_at) "
              "VALUES ('dup', 'a', 'txt2img', 'queued', '{}', '{}', 0, 0, 0)")
    with pytest.raises(job_store.database.IntegrityError), job_store.database.transaction() as session:
        session.execute(insert)
        session.execute(insert)
    assert job_store.last_write_failure() is None
