"""The /a1111 mount and `Prefer: wait` under Chalice alone: this test plays the worker (claims and ends
jobs on the store in a thread), so the blocking requests are woken by the real change signal."""
from __future__ import annotations

import base64
import json
import threading
import time
import types

import pydantic
import pytest

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import transitions
from chalicelib.api import http
from chalicelib.api import jobs as jobs_routes

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
BOB = {"Authorization": "Bearer tok-bob", "Content-Type": "application/json"}
PNG = base64.b64decode(jobs_routes.EXAMPLE_IMAGE)


@pytest.fixture(autouse=True)
def bounded_waits(monkeypatch):
    """A test that goes wrong fails in seconds, not after the default 600."""
    monkeypatch.setenv("SYNC_WAIT_MAX_SECONDS", "20")


def run_next(*, after: float, outcome: str = "complete") -> threading.Thread:
    """In `after` seconds, claim the next job (once it is stored) and end it (`complete`, `fail`)."""
    def work() -> None:
        time.sleep(after)
        ctx = context_module.get_context()
        deadline = time.monotonic() + 10
        while not (change := transitions.claim_next(ctx, worker_id="w", instance="http://a1111")).applied:
            assert time.monotonic() < deadline, "no job was submitted"
            time.sleep(0.02)
        job = change.job
        if outcome == "fail":
            transitions.fail(ctx, job.id, worker_id="w", code="a1111_failed", message="A1111 failed: TypeError")
            return
        ctx.images.put(job.id, job.attempts, [PNG])
        transitions.complete(ctx, job.id, worker_id="w", image_count=1, progress={"progress": 1.0},
                             result={"parameters": {"prompt": job.request["prompt"]}, "info": '{"seed": 1}'})
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def post(client, path: str, body: object, *, headers: dict = ALICE):
    return client.http.post(path, headers=headers, body=json.dumps(body))


def jobs_of(client, headers: dict = ALICE) -> list[dict]:
    return json.loads(client.http.get("/sdapi/v1/jobs", headers=headers).body)["jobs"]


def test_txt2img_blocks_until_the_job_ends_and_answers_a1111s_body(client):
    worker = run_next(after=0.3)
    started = time.monotonic()
    answer = post(client, "/a1111/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 5})
    worker.join()
    assert answer.status_code == 200 and time.monotonic() - started >= 0.3
    body = json.loads(answer.body)
    assert body == {"images": [base64.b64encode(PNG).decode()], "parameters": {"prompt": "a cat"},
                    "info": '{"seed": 1}'}
    assert [job["job_id"] for job in jobs_of(client)] == [answer.headers["X-Job-Id"]]


def test_a_failed_job_answers_a1111s_500_shape(client):
    worker = run_next(after=0.1, outcome="fail")
    answer = post(client, "/a1111/sdapi/v1/txt2img", {"prompt": "a cat"})
    worker.join()
    assert answer.status_code == 500
    assert json.loads(answer.body) == {"error": "a1111_failed", "detail": "A1111 failed: TypeError", "body": "",
                                       "errors": "A1111 failed: TypeError"}
    assert jobs_of(client)[0]["status"] == "error"


def test_a_job_that_outlasts_sync_wait_max_seconds_answers_504_and_keeps_going(client, monkeypatch):
    monkeypatch.setenv("SYNC_WAIT_MAX_SECONDS", "0.2")
    config.get_settings.cache_clear()
    answer = post(client, "/a1111/sdapi/v1/txt2img", {"prompt": "a cat"})
    assert answer.status_code == 504 and json.loads(answer.body)["error"] == "GatewayTimeout"
    assert jobs_of(client)[0]["status"] == "queued"


def test_errors_come_in_a1111s_shapes(client):
    invalid = post(client, "/a1111/sdapi/v1/txt2img", {"prompt": "a cat", "steps": "many"})
    assert invalid.status_code == 422 and set(json.loads(invalid.body)) == {"detail"}
    empty = client.http.post("/a1111/sdapi/v1/txt2img", headers=ALICE, body=b"")
    assert empty.status_code == 422 and json.loads(empty.body)["detail"][0]["type"] == "value_error.missing"
    broken = client.http.post("/a1111/sdapi/v1/img2img", headers=ALICE, body=b"{")
    assert json.loads(broken.body)["detail"][0]["type"] == "value_error.jsondecode"
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()}):
        refused = client.http.get("/a1111/sdapi/v1/progress", headers=headers)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        assert set(json.loads(refused.body)) == {"error", "detail", "body", "errors"}
    # a shared route's error (no A1111 answers the catalog here) is reshaped too
    unreachable = client.http.get("/a1111/sdapi/v1/samplers", headers=ALICE)
    assert unreachable.status_code == 502 and set(json.loads(unreachable.body)) == {"error", "detail", "body", "errors"}
    assert jobs_of(client) == []  # nothing was stored
    assert json.loads(client.http.get("/a1111/internal/ping").body) == {}


def test_basic_auth_with_the_token_as_password_is_the_callers_identity(client):
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:tok-bob").decode()}
    answer = client.http.get("/a1111/sdapi/v1/progress", headers=basic)
    assert answer.status_code == 200 and json.loads(answer.body)["state"]["job_count"] == 0


def test_progress_and_interrupt_see_only_the_callers_running_job(client):
    ctx = context_module.get_context()
    assert post(client, "/sdapi/v1/txt2img", {"prompt": "alice's", "steps": 20}).status_code == 202
    job = transitions.claim_next(ctx, worker_id="w", instance="http://a1111").job
    transitions.record_progress(ctx, job.id, worker_id="w", preview="cHJldmlldw==", progress={
        "progress": 0.5, "eta_relative": 2.0, "step": 10, "steps": 20, "job_no": 0, "job_count": 1})
    mine = json.loads(client.http.get("/a1111/sdapi/v1/progress", headers=ALICE).body)
    assert mine["progress"] == 0.5 and mine["eta_relative"] == 2.0 and mine["current_image"] == "cHJldmlldw=="
    assert mine["state"] | {"job_timestamp": None} == {
        "skipped": False, "interrupted": False, "stopping_generation": False, "job": "scripts_txt2img",
        "job_count": 1, "job_timestamp": None, "job_no": 0, "sampling_step": 10, "sampling_steps": 20}
    skipped = client.http.get("/a1111/sdapi/v1/progress?skip_current_image=true", headers=ALICE)
    assert json.loads(skipped.body)["current_image"] is None
    theirs = json.loads(client.http.get("/a1111/sdapi/v1/progress", headers=BOB).body)
    assert theirs["progress"] == 0.0 and theirs["state"]["job"] == "" and theirs["current_image"] is None
    # bob's interrupt and skip leave alice's job alone; alice's interrupt flags it for the worker
    assert json.loads(post(client, "/a1111/sdapi/v1/interrupt", None, headers=BOB).body) == {}
    assert json.loads(post(client, "/a1111/sdapi/v1/skip", None, headers=BOB).body) is None
    assert ctx.store.get_job(job.id).cancel_requested is False
    assert json.loads(post(client, "/a1111/sdapi/v1/interrupt", None).body) == {}
    assert ctx.store.get_job(job.id).cancel_requested is True
    assert json.loads(client.http.get("/a1111/sdapi/v1/progress", headers=ALICE).body)["state"]["interrupted"]


def test_prefer_wait_answers_200_with_the_detail_when_the_job_ends_in_time(client):
    worker = run_next(after=0.2)
    answer = client.http.post("/sdapi/v1/txt2img", headers={**ALICE, "Prefer": "wait=10"},
                              body=json.dumps({"prompt": "a cat"}))
    worker.join()
    assert answer.status_code == 200 and answer.headers["Preference-Applied"] == "wait=10"
    detail = json.loads(answer.body)
    assert detail["status"] == "completed" and detail["result"]["images"] == [base64.b64encode(PNG).decode()]
    assert answer.headers["Location"] == f"/sdapi/v1/jobs/{detail['job_id']}"


def test_prefer_wait_too_short_answers_the_usual_202(client):
    started = time.monotonic()
    answer = client.http.post("/sdapi/v1/txt2img", headers={**ALICE, "Prefer": "respond-async, wait=0.3"},
                              body=json.dumps({"prompt": "a cat"}))
    assert answer.status_code == 202 and "Preference-Applied" not in answer.headers
    assert 0.3 <= time.monotonic() - started < 2
    assert json.loads(answer.body)["status"] == "queued"


def test_beyond_sync_max_waiting_a_blocking_request_answers_503_and_stores_nothing(client, monkeypatch):
    monkeypatch.setenv("SYNC_MAX_WAITING", "0")
    config.get_settings.cache_clear()
    for path, headers in (("/a1111/sdapi/v1/txt2img", ALICE), ("/sdapi/v1/txt2img", {**ALICE, "Prefer": "wait=5"})):
        answer = client.http.post(path, headers=headers, body=json.dumps({"prompt": "a cat"}))
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert jobs_of(client) == []
    assert client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=json.dumps({"prompt": "a cat"})).status_code == 202


@pytest.mark.parametrize(("header", "seconds"), [
    ("wait=5", 5.0), ("wait=0", 0.0), ("respond-async, wait=2.5", 2.5), ("WAIT = 3", 3.0), ('wait="4"', 4.0),
    ("wait=5; foo=bar", 5.0), ("", None), ("respond-async", None), ("wait=x", None), ("wait=-1", None),
    ("wait=inf", None), ("wait=nan", None), ("wait", None),
])
def test_prefer_wait_is_read_as_rfc_7240_says_and_nonsense_is_ignored(header, seconds):
    request = types.SimpleNamespace(headers={"prefer": header} if header else {})
    assert http.prefer_wait(request) == seconds


def test_the_waiting_limits_are_checked_and_capped_on_lambda(monkeypatch):
    assert config.Settings(api_threads=128).sync_waiting_limit() == 48
    with pytest.raises(pydantic.ValidationError, match="SYNC_MAX_WAITING"):
        config.Settings(api_threads=16, sync_max_waiting=16)
    assert config.Settings(sync_wait_max_seconds=600).sync_wait_limit() == 600
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "api_handler")
    assert config.Settings(sync_wait_max_seconds=600).sync_wait_limit() == config.LAMBDA_SYNC_WAIT_SECONDS < 29
