"""Per-owner limits (429 with Retry-After, nothing stored), the admin role and hashed tokens, through
the routes (the `client` of tests/unit/conftest.py: alice and bob, SQLite)."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from chalicelib import context as context_module
from chalicelib import retention

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
BOB = {"Authorization": "Bearer tok-bob", "Content-Type": "application/json"}
ROOT = {"Authorization": "Bearer tok-root", "Content-Type": "application/json"}


def configure(monkeypatch, **env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    context_module.reset_context()


def submit(client, headers=ALICE):
    return client.http.post("/sdapi/v1/txt2img", headers=headers, body=json.dumps({"prompt": "a cat"}))


def job_count() -> int:
    return sum(context_module.get_context().store.count_by_status().values())


def test_an_owner_at_its_queued_limit_gets_429_and_others_are_unaffected(client, monkeypatch):
    configure(monkeypatch, MAX_QUEUED_PER_OWNER="3")
    for _ in range(3):
        assert submit(client).status_code == 202
    refused = submit(client)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    assert refused.json_body["error"] == "TooManyRequests" and "MAX_QUEUED_PER_OWNER" in refused.json_body["detail"]
    assert job_count() == 3  # nothing stored
    assert submit(client, BOB).status_code == 202
    first = client.http.get("/sdapi/v1/jobs", headers=ALICE).json_body["jobs"][-1]
    assert client.http.post(f"/sdapi/v1/jobs/{first['job_id']}/cancel", headers=ALICE).status_code == 200
    assert submit(client).status_code == 202  # a finished job frees its place


def test_an_owner_over_its_rate_gets_429_with_the_wait_until_the_window_frees(client, monkeypatch):
    configure(monkeypatch, SUBMITS_PER_MINUTE_PER_OWNER="2")
    assert submit(client).status_code == 202 and submit(client).status_code == 202
    refused = submit(client)
    assert refused.status_code == 429 and "SUBMITS_PER_MINUTE_PER_OWNER" in refused.json_body["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert job_count() == 2
    assert submit(client, BOB).status_code == 202
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert submit(client).status_code == 202


def test_limits_off_by_default(client):
    for _ in range(12):
        assert submit(client).status_code == 202


@pytest.fixture
def roles(monkeypatch):
    configure(monkeypatch, API_TOKENS="alice:tok-alice,bob:tok-bob,root:tok-root", API_ADMIN_TOKENS="root")


def test_an_admin_lists_one_or_every_owner_and_cancels_any_job(client, roles):
    alices, bobs = submit(client).json_body, submit(client, BOB).json_body
    listed = client.http.get("/sdapi/v1/jobs?owner=*", headers=ROOT).json_body["jobs"]
    assert [(job["job_id"], job["owner"]) for job in listed] == [(bobs["job_id"], "bob"), (alices["job_id"], "alice")]
    only_bob = client.http.get("/sdapi/v1/jobs?owner=bob", headers=ROOT).json_body["jobs"]
    assert [job["job_id"] for job in only_bob] == [bobs["job_id"]]
    assert client.http.get("/sdapi/v1/jobs", headers=ROOT).json_body["jobs"] == []  # its own jobs
    assert client.http.get(f"/sdapi/v1/jobs/{alices['job_id']}", headers=ROOT).status_code == 200
    cancelled = client.http.post(f"/sdapi/v1/jobs/{alices['job_id']}/cancel", headers=ROOT)
    assert cancelled.status_code == 200 and cancelled.json_body["status"] == "cancelled"


def test_other_tokens_see_only_their_own_jobs(client, roles):
    bobs = submit(client, BOB).json_body
    for path in ("/sdapi/v1/jobs?owner=*", "/sdapi/v1/jobs?owner=bob"):
        refused = client.http.get(path, headers=ALICE)
        assert refused.status_code == 403 and "API_ADMIN_TOKENS" in refused.json_body["detail"]
    assert client.http.get("/sdapi/v1/jobs?owner=alice", headers=ALICE).status_code == 200
    assert client.http.get(f"/sdapi/v1/jobs/{bobs['job_id']}", headers=ALICE).status_code == 404
    assert client.http.post(f"/sdapi/v1/jobs/{bobs['job_id']}/cancel", headers=ALICE).status_code == 404


def test_with_roles_the_operator_views_need_an_admin_token(client, roles):
    assert client.http.get("/health", headers=ALICE).status_code == 403
    assert client.http.get("/sdapi/v1/instances", headers=ALICE).status_code == 403
    assert client.http.get("/metrics", headers=ALICE).status_code == 403
    assert "store" in client.http.get("/health", headers=ROOT).json_body
    assert client.http.get("/metrics", headers=ROOT).status_code == 200
    assert client.http.get("/health").json_body["components"]  # the summary stays open
    assert client.http.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_without_roles_any_token_reads_the_operator_views_as_before(client):
    assert "store" in client.http.get("/health", headers=ALICE).json_body
    assert client.http.get("/metrics", headers=ALICE).status_code == 200
    assert client.http.get("/sdapi/v1/jobs?owner=bob", headers=ALICE).status_code == 403


def test_a_hashed_token_authenticates_and_the_hash_itself_does_not(client, monkeypatch):
    digest = hashlib.sha256(b"carols-secret").hexdigest()
    bare = hashlib.sha256(b"anonymous-secret").hexdigest()
    configure(monkeypatch, API_TOKENS=f"alice:tok-alice,carol:sha256:{digest.upper()},sha256:{bare}")
    carol = {"Authorization": "Bearer carols-secret", "Content-Type": "application/json"}
    job = submit(client, carol)
    assert job.status_code == 202
    assert client.http.get(f"/sdapi/v1/jobs/{job.json_body['job_id']}", headers=carol).status_code == 200
    assert client.http.get(f"/sdapi/v1/jobs/{job.json_body['job_id']}", headers=ALICE).status_code == 404
    assert submit(client, {"Authorization": f"Bearer sha256:{digest}"}).status_code == 401
    assert submit(client, {"Authorization": f"Bearer {digest}"}).status_code == 401
    anonymous = {"Authorization": "Bearer anonymous-secret", "Content-Type": "application/json"}
    assert submit(client, anonymous).status_code == 202
    assert submit(client).status_code == 202  # plaintext entries still work


def test_a_purged_job_is_404(client):
    job = submit(client).json_body
    assert client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE).status_code == 200
    ctx = context_module.get_context()
    report = retention.purge(ctx.store, ctx.images, older_than=1, now=time.time() + 10)
    assert report.jobs == 1
    assert client.http.get(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE).status_code == 404


def test_the_submissions_queue_owner_is_never_limited(client, monkeypatch):
    from chalicelib import intake  # noqa: PLC0415 - only this test drives the queue intake

    configure(monkeypatch, MAX_QUEUED_PER_OWNER="1", SUBMITS_PER_MINUTE_PER_OWNER="1", SUBMISSIONS_OWNER="batch")
    ctx = context_module.get_context()
    message = json.dumps({"type": "txt2img", "request": {"prompt": "a cat"}})
    outcomes = [intake.submit_message(ctx, message_id=f"m{n}", text=message) for n in range(3)]
    assert [outcome.status for outcome in outcomes] == [intake.CREATED] * 3
    assert submit(client).status_code == 202 and submit(client).status_code == 429


def submit_batch(client, jobs: int, headers=ALICE, key: str | None = None):
    body = json.dumps({"jobs": [{"prompt": f"p{i}"} for i in range(jobs)]})
    return client.http.post("/sdapi/v1/batches", body=body,
                            headers={**headers, **({"Idempotency-Key": key} if key else {})})


def test_a_batch_counts_each_of_its_jobs_against_the_queued_limit(client, monkeypatch):
    configure(monkeypatch, MAX_QUEUED_PER_OWNER="5")
    assert submit(client).status_code == 202
    assert submit_batch(client, 3, key="first").status_code == 202
    refused = submit_batch(client, 2)
    assert refused.status_code == 429 and "MAX_QUEUED_PER_OWNER" in refused.json_body["detail"]
    assert job_count() == 4  # nothing of the refused batch stored
    replayed = submit_batch(client, 3, key="first")  # a retried upload is not a new one
    assert replayed.status_code == 202 and replayed.headers.get("Idempotent-Replayed") == "true"
    assert submit_batch(client, 1).status_code == 202
    too_big = submit_batch(client, 6, BOB)
    assert too_big.status_code == 413 and "MAX_QUEUED_PER_OWNER" in too_big.json_body["detail"]
    assert job_count() == 5
