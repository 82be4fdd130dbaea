"""The fault campaign's faults of a kind of their own (bench/campaign.py, issue 17 item 7), in a short
form: a Postgres server of the test's own restarted under load, SQLite on a small filesystem that
fills up, an A1111 hung (SIGSTOP) mid-job under load. Every job the API accepted completes once."""
from __future__ import annotations

import dataclasses
import glob
import os
import subprocess

import pytest

from bench import campaign

PLAN = dataclasses.replace(campaign.SHORT, jobs=40)


def assert_nothing_lost(figures: campaign.Figures) -> None:
    print(campaign.report(figures))
    assert figures.accepted > PLAN.jobs and figures.completed == figures.accepted
    assert figures.lost == [] and figures.completed_twice == []


@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="no Postgres server programs")
def test_postgres_restarted_under_load_answers_503_meanwhile_and_loses_nothing(tmp_path):
    figures = campaign.postgres_restart(PLAN, tmp_path, down_seconds=3.0)

    assert_nothing_lost(figures)
    [outage] = figures.outages
    assert set(outage["submits_while_down"]) == {503} and set(outage["health_while_down"]) == {"503 unavailable"}
    assert outage["accepting_after_start_s"] < 10 and outage["jobs_completing_after_start_s"] < 30


def can_mount_tmpfs(path) -> bool:
    path.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0
    except FileNotFoundError:
        return False
    if mounted:
        subprocess.run(["umount", str(path)], check=True)
    return mounted


def test_sqlite_on_a_full_disk_answers_503_keeps_its_file_sound_and_recovers(tmp_path):
    if os.geteuid() != 0 or not can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("mounting a tmpfs needs root (docs/reliability.md has the figures)")
    figures = campaign.full_disk(PLAN, tmp_path, size_mib=6)

    assert_nothing_lost(figures)
    [outage] = figures.outages
    assert outage["submits_until_full"][503] == 5 and set(outage["submits_until_full"]) == {202, 503}
    refusal = outage["first_refusal"]
    # a statement or, on a thread's first use, opening its connection fails: either says why
    assert (refusal["status"], refusal["body"]["error"]) == (503, "StoreUnavailable")
    assert refusal["body"]["detail"] in ("SQLite error: database or disk is full",
                                         "cannot open the SQLite database: database or disk is full")
    assert outage["integrity_while_full"] == "ok" and outage["integrity_after"] == "ok"
    assert outage["accepting_after_space_s"] < 10
    # /health tells: the store answers reads, but refuses writes
    assert outage["health_while_full"] == "200 degraded"
    assert outage["store_while_full"]["writes_failing"] is True
    assert outage["store_while_full"]["last_write_error"] == refusal["body"]["detail"]


def test_a_hung_a1111_under_load_is_abandoned_and_its_job_completes_elsewhere(tmp_path):
    figures = campaign.hung_a1111(PLAN, tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}")

    assert_nothing_lost(figures)
    [outage] = figures.outages
    assert outage["first_run"].startswith("a1111_unavailable: ") and "stalled" in outage["first_run"]
    assert outage["job"] == {"status": "completed", "attempts": 2, "on_another_instance": True}
    assert outage["health_degraded_after_s"] < outage["run_abandoned_after_s"] < 20
