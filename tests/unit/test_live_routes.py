"""Live progress under Chalice alone (the runtime of `chalice local` and Lambda): the SSE paths say
to long-poll, the long-poll and `version` work, and /ui is served under its policy."""
from __future__ import annotations

import json
import time

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}


def submit(client) -> dict:
    response = client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=json.dumps({"prompt": "a cat"}))
    assert response.status_code == 202
    return json.loads(response.body)


def test_event_streams_answer_501_pointing_at_long_poll_and_need_a_token(client):
    job = submit(client)
    for path in (f"/sdapi/v1/jobs/{job['job_id']}/events", "/sdapi/v1/events"):
        answer = client.http.get(path, headers=ALICE)
        assert answer.status_code == 501
        body = json.loads(answer.body)
        assert body["error"] == "StreamingUnavailable" and "?wait=" in body["detail"]
        assert client.http.get(path).status_code == 401


def test_the_summary_has_a_version_and_long_poll_times_out_unchanged(client):
    job = submit(client)
    assert job["version"] == 1
    started = time.monotonic()
    answer = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}?wait=0.3&version=1", headers=ALICE)
    assert answer.status_code == 200 and json.loads(answer.body)["version"] == 1
    assert 0.3 <= time.monotonic() - started < 2
    for query in ("wait=x", "wait=-2", "wait=inf", "version=1.5", "version=-1"):
        answer = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}?{query}", headers=ALICE)
        assert answer.status_code == 422, query


def test_the_ui_is_served_without_a_token_under_a_strict_policy(client):
    page = client.http.get("/ui")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert b"<script src=\"ui/ui.js\"" in page.body and b"<script>" not in page.body
    assert client.http.get("/ui/ui.js").status_code == 200
    assert client.http.get("/ui/ui.css").headers["Content-Type"].startswith("text/css")
    assert client.http.get("/ui/secrets.txt").status_code == 404
