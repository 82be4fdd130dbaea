"""Retention as the sweep and `python -m worker_fn purge` run it (the `client` of tests/unit/conftest.py)."""
from __future__ import annotations

import json
import time

import pytest

from chalicelib import context as context_module
from chalicelib import jobrunner
from chalicelib import retention
from worker_fn import __main__ as cli

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def purge_due_now(monkeypatch):
    monkeypatch.setitem(retention._next_purge, "at", 0.0)


def cancelled_job(client) -> str:
    job = client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=json.dumps({"prompt": "a cat"})).json_body
    assert client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE).status_code == 200
    return job["job_id"]


def test_the_sweep_purges_when_due_and_then_waits_the_interval(client, monkeypatch):
    monkeypatch.setenv("JOB_RETENTION", "10s")
    context_module.reset_context()
    first, second = cancelled_job(client), cancelled_job(client)
    ctx = context_module.get_context()
    assert jobrunner.sweep(ctx)["purged"]["jobs"] == 0  # due, but nothing is 10 s old yet
    monkeypatch.setitem(retention._next_purge, "at", 0.0)
    later = time.time() + 11
    monkeypatch.setattr(time, "time", lambda: later)
    report = jobrunner.sweep(ctx)
    assert report["purged"]["jobs"] == 2 and report["purged"]["complete"]
    assert ctx.store.get_job(first) is None and ctx.store.get_job(second) is None
    cancelled_job(client)
    monkeypatch.setattr(time, "time", lambda: later + 20)
    assert "purged" not in jobrunner.sweep(ctx)  # RETENTION_INTERVAL (300 s) has not passed


def test_retention_0_keeps_everything(client, monkeypatch):
    monkeypatch.setenv("JOB_RETENTION", "0")
    context_module.reset_context()
    job_id = cancelled_job(client)
    later = time.time() + 400 * 86400
    monkeypatch.setattr(time, "time", lambda: later)
    assert "purged" not in jobrunner.sweep(context_module.get_context())
    assert context_module.get_context().store.get_job(job_id) is not None


def test_purge_by_hand_prints_what_it_removed(client, capsys):
    job_id = cancelled_job(client)
    time.sleep(1.1)
    assert cli.main(["purge", "--older-than", "1s"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["jobs"] == 1 and printed["older_than_seconds"] == 1.0 and printed["rejections"] == 0
    assert context_module.get_context().store.get_job(job_id) is None


def test_purge_by_hand_refuses_a_bad_age(client, capsys):
    with pytest.raises(SystemExit):
        cli.main(["purge", "--older-than", "soon"])
    assert cli.main(["purge", "--older-than", "0"]) == 2


def test_vacuum_converts_an_old_sqlite_file(client, tmp_path, monkeypatch, capsys):
    import sqlite3  # noqa: PLC0415 - only this test builds a file the old way

    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE made_before (x)").connection.close()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    context_module.reset_context()
    assert context_module.get_context().store.database.query_one("PRAGMA auto_vacuum")["auto_vacuum"] == 0
    assert cli.main(["purge", "--vacuum", "--older-than", "1d"]) == 0
    context_module.reset_context()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
