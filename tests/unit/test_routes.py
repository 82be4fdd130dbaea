"""Routes through chalice.test.Client: the contract of DESIGN.md §3, and bad input changing nothing."""
from __future__ import annotations

import base64
import json
import time

import pytest

from chalicelib import context as context_module
from tests import support

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
BOB = {"Authorization": "Bearer tok-bob", "Content-Type": "application/json"}
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def post(client, path, body, headers=ALICE):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.http.post(path, headers=headers, body=raw)


def job_count() -> int:
    return sum(context_module.get_context().store.count_by_status().values())


def submit(client, body=None, headers=ALICE):
    response = post(client, "/sdapi/v1/txt2img", body or {"prompt": "a cat", "steps": 20}, headers)
    assert response.status_code == 202, response.json_body
    return response.json_body


def test_submit_answers_202_with_a_queued_job(client):
    response = post(client, "/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 20, "metadata": {"x": 1}})
    assert response.status_code == 202
    body = response.json_body
    assert body["status"] == "queued" and body["type"] == "txt2img"
    assert body["metadata"] == {"x": 1} and body["attempts"] == 0 and body["created_at"].endswith("Z")
    assert response.headers["Location"] == f"/sdapi/v1/jobs/{body['job_id']}"
    assert job_count() == 1
    # The position is computed on read (counting the queue would make a submit grow with it).
    assert body["queue_position"] is None
    assert client.http.get(response.headers["Location"], headers=ALICE).json_body["queue_position"] == 1


def test_img2img_is_accepted_with_init_images(client):
    response = post(client, "/sdapi/v1/img2img", {"init_images": [base64.b64encode(PNG_1X1).decode()]})
    assert response.status_code == 202 and response.json_body["type"] == "img2img"


def test_detail_shows_the_request_and_never_the_webhook_secret(client):
    job = submit(client, {"prompt": "p", "webhook_url": "https://example.com/hook",
                          "webhook_secret": "very-secret-value", "unknown_fork_field": 7})
    response = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE)
    assert response.status_code == 200
    detail = response.json_body
    assert detail["request"] == {"prompt": "p", "save_images": False, "do_not_save_samples": True,
                                 "do_not_save_grid": True, "override_settings_restore_afterwards": True}
    assert detail["dropped_fields"] == ["unknown_fork_field"]
    assert detail["webhook_url"] == "https://example.com/hook"
    assert "very-secret-value" not in response.body.decode()
    assert detail["result"] is None and detail["runs"] == []


def test_instance_labels_route_a_job_and_must_match_a_configured_instance(client, monkeypatch):
    monkeypatch.setenv("A1111_BASE_URL", "http://127.0.0.1:9;labels=sdxl+fast,http://127.0.0.1:10")
    context_module.reset_context()
    job = submit(client, {"prompt": "p", "instance_labels": ["sdxl", "fast", "sdxl"]})
    detail = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE).json_body
    assert detail["instance_labels"] == ["fast", "sdxl"] and "instance_labels" not in detail["request"]
    plain = client.http.get(f"/sdapi/v1/jobs/{submit(client)['job_id']}", headers=ALICE).json_body
    assert plain["instance_labels"] is None

    for labels, problem in ((["sdxl", "gpu-b"], "no A1111 instance has every one of the labels ['gpu-b', 'sdxl']"),
                            (["has space"], "String should match pattern"), ("sdxl", "valid list")):
        response = post(client, "/sdapi/v1/txt2img", {"prompt": "p", "instance_labels": labels})
        assert response.status_code == 422, response.json_body
        [error] = response.json_body["detail"]
        assert error["loc"][:2] == ["body", "instance_labels"] and problem in error["msg"], error
    assert job_count() == 2


def test_idempotency_key_returns_the_first_job_for_the_same_token(client):
    headers = dict(ALICE, **{"Idempotency-Key": "order-42"})
    first = post(client, "/sdapi/v1/txt2img", {"prompt": "one"}, headers)
    again = post(client, "/sdapi/v1/txt2img", {"prompt": "one"}, headers)
    bobs = post(client, "/sdapi/v1/txt2img", {"prompt": "one"}, dict(BOB, **{"Idempotency-Key": "order-42"}))
    assert first.json_body["job_id"] == again.json_body["job_id"] != bobs.json_body["job_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert job_count() == 2


def test_list_is_newest_first_paginated_and_filtered(client):
    ids = [submit(client)["job_id"] for _ in range(5)]
    client.http.post(f"/sdapi/v1/jobs/{ids[0]}/cancel", headers=ALICE)
    submit(client, headers=BOB)
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.http.get(f"/sdapi/v1/jobs{query}", headers=ALICE).json_body
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = client.http.get("/sdapi/v1/jobs?status=cancelled", headers=ALICE).json_body
    assert [job["job_id"] for job in cancelled["jobs"]] == [ids[0]]


def test_cancel_queued_job_then_cancel_again_is_409(client):
    job = submit(client)
    first = client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE)
    assert first.status_code == 200 and first.json_body["status"] == "cancelled"
    again = client.http.delete(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE)
    assert again.status_code == 409 and again.json_body["error"] == "Conflict"
    assert "already cancelled" in again.json_body["detail"]


def test_cancel_running_job_answers_202_and_flags_it(client):
    job = submit(client)
    ctx = context_module.get_context()
    ctx.store.claim_next(worker_id="w1", instance="gpu", lease_seconds=30, now=time.time())
    response = client.http.delete(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE)
    assert response.status_code == 202
    assert response.json_body["status"] == "processing" and response.json_body["cancel_requested"] is True


def test_completed_job_serves_a1111_result_and_image_bytes(client):
    job = submit(client)
    ctx = context_module.get_context()
    claimed = ctx.store.claim_next(worker_id="w1", instance="gpu", lease_seconds=30, now=time.time()).job
    ctx.images.put(claimed.id, claimed.attempts, [PNG_1X1, PNG_1X1])
    ctx.store.complete(claimed.id, worker_id="w1", result={"parameters": {"prompt": "a cat"},
                                                           "info": '{"seed": 1}'},
                       image_count=2, now=time.time())
    detail = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE).json_body
    assert detail["status"] == "completed" and detail["progress"]["progress"] == 1.0
    assert detail["result"]["info"] == '{"seed": 1}'
    assert [base64.b64decode(i) for i in detail["result"]["images"]] == [PNG_1X1, PNG_1X1]
    assert [r["outcome"] for r in detail["runs"]] == ["completed"]
    image = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/images/1",
                            headers=dict(ALICE, Accept="image/png"))
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    assert image.body == PNG_1X1
    missing = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/images/2", headers=ALICE)
    assert missing.status_code == 404


def test_health_needs_no_token_and_says_only_one_word_per_component(client):
    submit(client)
    response = client.http.get("/health")
    assert response.status_code == 200
    assert response.json_body == {"status": "down", "components": {
        "store": "up", "queue": "up", "workers": "down", "instances": "down"}}  # no worker; nothing on port 9


def test_health_with_a_token_reports_store_and_instances(client):
    submit(client)
    response = client.http.get("/health", headers=ALICE)
    assert response.status_code == 200
    body = response.json_body
    assert body["store"] == {"backend": "sqlite", "ok": True, "writes_failing": False}
    assert body["queue"]["jobs"]["queued"] == 1
    assert body["instances"][0]["reachable"] is False  # nothing listens on port 9
    assert body["webhooks"] == {"due": 0}


def test_health_says_the_store_refuses_writes_while_it_does(client):
    submit(client)
    with support.writes_refused(context_module.get_context().store.database):
        refused = post(client, "/sdapi/v1/txt2img", {"prompt": "x"})
        assert refused.status_code == 503 and refused.json_body["error"] == "StoreUnavailable"
        anonymous = client.http.get("/health")
        assert anonymous.status_code == 200 and anonymous.json_body["components"]["store"] == "degraded"
        store = client.http.get("/health", headers=ALICE).json_body["store"]
        assert store["writes_failing"] is True and store["last_write_error"] == refused.json_body["detail"]
        assert client.http.get("/sdapi/v1/jobs?limit=5", headers=ALICE).status_code == 200  # reads go on


def test_health_shows_the_webhook_backlog(client):
    job = submit(client, {"prompt": "p", "webhook_url": "https://example.com/hook", "webhook_secret": "k3y-k3y"})
    ctx = context_module.get_context()
    claimed = ctx.store.claim_next(worker_id="w1", instance="gpu", lease_seconds=30, now=time.time()).job
    assert claimed.id == job["job_id"]
    ctx.store.complete(claimed.id, worker_id="w1", result={}, image_count=0, now=time.time())
    assert client.http.get("/health", headers=ALICE).json_body["webhooks"] == {"due": 1}  # job.completed, not yet sent


@pytest.mark.parametrize("case, method, path, body, headers, status, error", [
    ("malformed JSON", "POST", "/sdapi/v1/txt2img", '{"prompt": ', ALICE, 400, "BadRequest"),
    ("empty body", "POST", "/sdapi/v1/txt2img", "", ALICE, 400, "BadRequest"),
    ("not an object", "POST", "/sdapi/v1/txt2img", "[1, 2]", ALICE, 422, "ValidationError"),
    ("wrong type", "POST", "/sdapi/v1/txt2img", {"steps": "many"}, ALICE, 422, "ValidationError"),
    ("out of range", "POST", "/sdapi/v1/txt2img", {"steps": 100000}, ALICE, 422, "ValidationError"),
    ("too wide", "POST", "/sdapi/v1/txt2img", {"width": 100000}, ALICE, 422, "ValidationError"),
    ("img2img without images", "POST", "/sdapi/v1/img2img", {"prompt": "x"}, ALICE, 422, "ValidationError"),
    ("oversized body", "POST", "/sdapi/v1/txt2img", {"prompt": "x" * 5000}, ALICE, 413, "PayloadTooLarge"),
    ("no token", "POST", "/sdapi/v1/txt2img", {}, {"Content-Type": "application/json"}, 401, "Unauthorized"),
    ("wrong token", "POST", "/sdapi/v1/txt2img", {}, {"Authorization": "Bearer nope"}, 401, "Unauthorized"),
    ("basic instead of bearer", "GET", "/sdapi/v1/jobs", None, {"Authorization": "Basic eDp5"}, 401,
     "Unauthorized"),
    ("unknown job", "GET", "/sdapi/v1/jobs/does-not-exist", None, ALICE, 404, "NotFound"),
    ("cancel unknown job", "POST", "/sdapi/v1/jobs/nope/cancel", None, ALICE, 404, "NotFound"),
    ("bad limit", "GET", "/sdapi/v1/jobs?limit=0", None, ALICE, 422, "ValidationError"),
    ("bad cursor", "GET", "/sdapi/v1/jobs?cursor=%21%21", None, ALICE, 422, "ValidationError"),
    ("bad status", "GET", "/sdapi/v1/jobs?status=done", None, ALICE, 422, "ValidationError"),
    ("bad idempotency key", "POST", "/sdapi/v1/txt2img", {}, dict(ALICE, **{"Idempotency-Key": "x" * 300}),
     422, "ValidationError"),
])
def test_bad_input_gets_its_status_and_stores_nothing(client, case, method, path, body, headers, status,
                                                      error):
    raw = body if body is None or isinstance(body, str) else json.dumps(body)
    response = client.http.request(method, path, headers=headers, body=raw or b"")
    assert response.status_code == status, (case, response.body)
    payload = response.json_body
    assert payload["error"] == error and payload["detail"], case
    if status == 422:
        assert all({"loc", "msg", "type"} <= set(item) for item in payload["detail"])
    assert job_count() == 0


def test_limit_message_names_the_field_and_the_limit(client):
    response = post(client, "/sdapi/v1/txt2img", {"steps": 100000})
    [problem] = response.json_body["detail"]
    assert problem["loc"] == ["body", "steps"] and "150" in problem["msg"] and "MAX_STEPS" in problem["msg"]


def test_another_tokens_job_is_404_for_read_cancel_and_images(client):
    job = submit(client)
    for method, path in [("GET", f"/sdapi/v1/jobs/{job['job_id']}"),
                         ("POST", f"/sdapi/v1/jobs/{job['job_id']}/cancel"),
                         ("DELETE", f"/sdapi/v1/jobs/{job['job_id']}"),
                         ("GET", f"/sdapi/v1/jobs/{job['job_id']}/images/0")]:
        response = client.http.request(method, path, headers=BOB, body=b"")
        assert response.status_code == 404, (method, path)
    assert client.http.get(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE).json_body["status"] == "queued"


def test_without_api_tokens_every_protected_route_says_how_to_set_them(client, monkeypatch):
    monkeypatch.setenv("API_TOKENS", "")
    context_module.reset_context()
    response = client.http.get("/sdapi/v1/jobs", headers=ALICE)
    assert response.status_code == 401 and "API_TOKENS" in response.json_body["detail"]


def test_curl_style_form_content_type_is_parsed_as_json(client):
    headers = {"Authorization": "Bearer tok-alice", "Content-Type": "application/x-www-form-urlencoded"}
    response = post(client, "/sdapi/v1/txt2img", {"prompt": "from curl"}, headers)
    assert response.status_code == 202 and job_count() == 1


def test_chalice_errors_use_the_contract_shape(client):
    response = client.http.put("/sdapi/v1/jobs", headers=ALICE, body=b"")
    assert response.status_code == 405
    assert response.json_body == {"error": "MethodNotAllowedError", "detail": "Unsupported method: PUT"}
    response = post(client, "/sdapi/v1/txt2img", {}, {"Authorization": "Bearer tok-alice",
                                                      "Content-Type": "image/png"})
    assert response.status_code == 415 and response.json_body["error"] == "UnsupportedMediaType"


def test_unreachable_store_is_503_on_health_and_routes(client, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{blocker}/jobs.db")
    context_module.reset_context()
    health = client.http.get("/health")
    assert health.status_code == 503 and health.json_body == {"status": "unavailable", "components": {"store": "down"}}
    health = client.http.get("/health", headers=ALICE)
    assert health.status_code == 503 and health.json_body["status"] == "unavailable"
    response = post(client, "/sdapi/v1/txt2img", {"prompt": "x"})
    assert response.status_code == 503 and response.json_body["error"] == "StoreUnavailable"
