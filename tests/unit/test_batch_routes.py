"""Batch routes through chalice.test.Client: submit (JSON and NDJSON), views, cancel, manifest."""
from __future__ import annotations

import json
import time

from chalicelib import context as context_module
from chalicelib import transitions

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
BOB = {"Authorization": "Bearer tok-bob", "Content-Type": "application/json"}
NDJSON = {"Authorization": "Bearer tok-alice", "Content-Type": "application/x-ndjson"}


def post(client, path, body, headers=ALICE):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.http.post(path, headers=headers, body=raw)


def job_count() -> int:
    return sum(context_module.get_context().store.count_by_status().values())


def submit(client, jobs=3, **fields):
    response = post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": f"p{i}", "steps": 5} for i in range(jobs)],
                                                   **fields})
    assert response.status_code == 202, response.json_body
    return response.json_body


def test_a_json_batch_is_queued_whole_and_every_job_shows_its_batch(client):
    batch = submit(client, jobs=3, metadata={"run": 1}, priority=4)
    assert batch["jobs"] == 3 and batch["status"] == "queued" and batch["metadata"] == {"run": 1}
    assert batch["counts"] == {"queued": 3, "processing": 0, "completed": 0, "error": 0, "cancelled": 0}
    jobs = client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}/jobs", headers=ALICE).json_body["jobs"]
    assert [job["batch_id"] for job in jobs] == [batch["batch_id"]] * 3
    assert [job["metadata"] for job in jobs] == [None] * 3 and {job["priority"] for job in jobs} == {4}
    detail = client.http.get(f"/sdapi/v1/jobs/{jobs[0]['job_id']}", headers=ALICE).json_body
    assert detail["batch_id"] == batch["batch_id"]


def test_an_ndjson_batch_takes_its_fields_from_a_first_batch_line(client):
    lines = [{"batch": {"metadata": {"from": "ndjson"}}}, {"prompt": "a"}, {"type": "txt2img", "prompt": "b"}]
    response = post(client, "/sdapi/v1/batches", "\n".join(json.dumps(line) for line in lines) + "\n", NDJSON)
    assert response.status_code == 202, response.json_body
    assert response.json_body["jobs"] == 2 and response.json_body["metadata"] == {"from": "ndjson"}


def test_one_bad_line_names_that_line_and_stores_nothing(client):
    lines = [json.dumps({"prompt": "ok"}), json.dumps({"prompt": "bad", "steps": "many"}), "{not json",
             json.dumps({"prompt": "ok"})]
    response = post(client, "/sdapi/v1/batches", "\n".join(lines), NDJSON)
    assert response.status_code == 422
    assert [problem["loc"][:2] for problem in response.json_body["detail"]] == [["line", 3]]
    response = post(client, "/sdapi/v1/batches", "\n".join(lines[:2] + lines[3:]), NDJSON)
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json_body["detail"]] == [["line", 2, "steps"]]
    response = post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": "ok"}, {"type": "video"}]})
    assert response.status_code == 422
    assert response.json_body["detail"][0]["loc"] == ["body", "jobs", 1, "type"]
    assert job_count() == 0


def test_limits_answer_413_and_empty_or_malformed_batches_are_refused(client, monkeypatch):
    monkeypatch.setenv("BATCH_MAX_JOBS", "2")
    context_module.reset_context()
    response = post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": "a"}] * 3})
    assert response.status_code == 413 and "BATCH_MAX_JOBS" in response.json_body["detail"]
    assert post(client, "/sdapi/v1/batches", {"jobs": []}).status_code == 422
    assert post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": "a"}], "colour": 1}).status_code == 422
    assert post(client, "/sdapi/v1/batches", "[1, 2").status_code == 400
    assert post(client, "/sdapi/v1/batches", {"jobs": "x"}).status_code == 422
    assert post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": "a"}], "webhook_url": "https://e.com/h"}
                ).status_code == 422  # no secret
    assert job_count() == 0


def test_an_idempotency_key_creates_the_batch_once(client):
    headers = {**ALICE, "Idempotency-Key": "upload-7"}
    first = post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": "a"}]}, headers)
    again = post(client, "/sdapi/v1/batches", {"jobs": [{"prompt": "a"}, {"prompt": "b"}]}, headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json_body["batch_id"] == first.json_body["batch_id"] and job_count() == 1


def test_another_token_sees_no_batch(client):
    batch = submit(client)
    for path in ("", "/jobs", "/results"):
        assert client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}{path}", headers=BOB).status_code == 404
    assert post(client, f"/sdapi/v1/batches/{batch['batch_id']}/cancel", "", BOB).status_code == 404
    assert client.http.get("/sdapi/v1/batches", headers=BOB).json_body["batches"] == []


def test_batches_list_newest_first_in_pages(client):
    ids = [submit(client, jobs=1)["batch_id"] for _ in range(3)]
    first = client.http.get("/sdapi/v1/batches?limit=2", headers=ALICE).json_body
    second = client.http.get(f"/sdapi/v1/batches?limit=2&cursor={first['next_cursor']}", headers=ALICE).json_body
    assert [b["batch_id"] for b in first["batches"] + second["batches"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert client.http.get("/sdapi/v1/batches?limit=0", headers=ALICE).status_code == 422


def test_cancel_cancels_the_queued_jobs_then_answers_409(client):
    batch = submit(client, jobs=3)
    response = post(client, f"/sdapi/v1/batches/{batch['batch_id']}/cancel", "")
    assert response.status_code == 200, response.json_body
    assert response.json_body["counts"]["cancelled"] == 3 and response.json_body["status"] == "completed"
    assert post(client, f"/sdapi/v1/batches/{batch['batch_id']}/cancel", "").status_code == 409


def test_progress_and_counts_follow_the_jobs_and_the_manifest_lists_each(client):
    batch = submit(client, jobs=2)
    ctx = context_module.get_context()
    claimed = transitions.claim_next(ctx, worker_id="w1", instance="gpu0").job
    transitions.complete(ctx, claimed.id, worker_id="w1", result={"info": "{}"}, image_count=0,
                         progress={"progress": 1.0})
    view = client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}", headers=ALICE).json_body
    assert view["counts"]["completed"] == 1 and view["progress"] == 0.5 and view["status"] == "processing"
    assert view["started_at"] is not None
    time.sleep(0.01)
    response = client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}/results", headers=ALICE)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.body.decode().splitlines()]
    assert [(line["index"], line["status"]) for line in lines] == [(0, "completed"), (1, "queued")]
    zipped = client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}/results?format=zip", headers=ALICE)
    assert zipped.status_code == 422 and "manifest" in zipped.json_body["detail"][0]["msg"]
    only = client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}/jobs?status=queued", headers=ALICE).json_body
    assert len(only["jobs"]) == 1
    assert client.http.get(f"/sdapi/v1/batches/{batch['batch_id']}/jobs?status=nope",
                           headers=ALICE).status_code == 422
