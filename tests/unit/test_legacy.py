"""The original proxy's clients (issue 13): aliases, ids, CORS, deprecated names, model choice, /legacy."""
from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import config
from chalicelib import context as context_module
from chalicelib import request_models
from chalicelib.store import base as store_base
from chalicelib.webhooks import attempt
from chalicelib.webhooks import events
from tests.a1111_sim import server as sim_server

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
BOB = {"Authorization": "Bearer tok-bob", "Content-Type": "application/json"}
KEY = "app-own-api-token-0123456789"
PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture
def sim():
    with sim_server.SimulatedA1111() as server:
        yield server


@pytest.fixture
def make_client(monkeypatch, tmp_path, sim):
    def make(**env):
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
        monkeypatch.setenv("API_TOKENS", "alice:tok-alice,bob:tok-bob")
        monkeypatch.setenv("A1111_BASE_URL", sim.url)
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
        for name, value in env.items():
            monkeypatch.setenv(name, str(value))
        config.get_settings.cache_clear()
        context_module.reset_context()
        return chalice_test.Client(app_module.app)

    yield make
    config.get_settings.cache_clear()
    context_module.reset_context()


def post(client, path: str, body: dict, headers=ALICE):
    return client.http.post(path, headers=headers, body=json.dumps(body))


def test_camelcase_webhook_fields_are_job_options_never_forwarded_stored_or_shown(make_client):
    client = make_client()
    body = {"prompt": "x", "webhookUrl": "http://127.0.0.1:9/hook", "webhookKey": KEY}
    answer = post(client, "/sdapi/v1/txt2img", body)
    assert answer.status_code == 202
    job_id = answer.json_body["job_id"]
    assert answer.json_body["uuid"] == answer.json_body["id"] == job_id
    assert answer.json_body["job_status"] == "queued"
    detail = client.http.get(f"/sdapi/v1/jobs/{job_id}", headers=ALICE)
    assert KEY not in detail.body.decode() and "webhookKey" not in detail.body.decode()
    assert detail.json_body["webhook_url"] == "http://127.0.0.1:9/hook"
    job = context_module.get_context().store.get_job(job_id)
    assert "webhookUrl" not in job.request and "webhookKey" not in job.request
    assert job.webhook_secret == KEY and job.options["webhook_format"] == "legacy"


def test_both_spellings_at_once_are_a_422(make_client):
    response = post(make_client(), "/sdapi/v1/txt2img", {"prompt": "x", "webhookUrl": "http://127.0.0.1:9/a",
                                                         "webhook_url": "http://127.0.0.1:9/b", "webhookKey": KEY})
    assert response.status_code == 422 and response.json_body["detail"][0]["loc"] == ["body", "webhookUrl"]
    assert KEY not in response.body.decode()


def test_webhook_format_standard_wins_over_the_aliases():
    submission = request_models.parse_submission(
        "txt2img", {"webhookUrl": "https://e.example/h", "webhookKey": KEY, "webhook_format": "standard"},
        limits=request_models.Limits.from_settings(config.Settings()))
    assert submission.options.webhook_format == "standard" and submission.options.webhook_secret == KEY


def test_cors_is_off_by_default_and_the_preflight_is_still_a_204(make_client):
    response = make_client().http.request("OPTIONS", "/sdapi/v1/txt2img", headers={"Origin": "https://a.example"})
    assert response.status_code == 204 and "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Allow"] == "OPTIONS, POST"


@pytest.mark.parametrize("path", ["/sdapi/v1/jobs/x", "/legacy/sdapi/v1/jobs", "/sdapi/v1/options", "/health"])
def test_cors_preflight_and_headers_for_any_origin(make_client, path):
    client = make_client(CORS_ORIGINS="*")
    response = client.http.request("OPTIONS", path, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 204 and response.body in (b"", None)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = response.headers["Access-Control-Allow-Headers"]
    assert all(name in allowed for name in ("Authorization", "Content-Type", "Idempotency-Key", "Prefer",
                                            "Last-Event-ID"))
    assert "GET" in response.headers["Access-Control-Allow-Methods"]


def test_cors_list_echoes_only_listed_origins_and_exposes_location(make_client):
    client = make_client(CORS_ORIGINS="https://app.example, http://localhost:3000")
    answer = client.http.post("/sdapi/v1/txt2img", headers={**ALICE, "Origin": "http://localhost:3000"},
                              body='{"prompt": "x"}')
    assert answer.status_code == 202 and answer.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Location" in answer.headers["Access-Control-Expose-Headers"] and answer.headers["Vary"] == "Origin"
    other = client.http.get("/sdapi/v1/jobs", headers={**ALICE, "Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


def test_deprecated_names_are_used_when_the_new_ones_are_unset(monkeypatch, caplog):
    monkeypatch.delenv("API_TOKENS", raising=False)
    monkeypatch.delenv("A1111_BASE_URL", raising=False)
    monkeypatch.setenv("AUTH_TOKEN", "legacy-token")
    monkeypatch.setenv("AUTOMATIC1111_API_BASE", "http://gpu.internal:7860")
    monkeypatch.setattr(config, "_preferred_logged", set())
    with caplog.at_level(logging.WARNING, logger="chalicelib.config"):
        settings = config.Settings()
        config.Settings()
    assert settings.a1111_base_url == "http://gpu.internal:7860"
    assert list(settings.token_map()) == ["legacy-token"]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and all("preferred" in message for message in messages)
    assert not any("legacy-token" in message for message in messages)
    monkeypatch.setenv("API_TOKENS", "a:new")
    monkeypatch.setenv("A1111_BASE_URL", "http://new:7860")
    settings = config.Settings()
    assert settings.a1111_base_url == "http://new:7860" and list(settings.token_map()) == ["new"]


def test_model_choice_is_per_owner_and_reaches_override_settings(make_client):
    client = make_client()
    assert post(client, "/sdapi/v1/options", {"sd_model_checkpoint": "nope"}).status_code == 422
    unknown = post(client, "/sdapi/v1/options", {"sd_model_checkpoint": "nope"}).json_body["detail"][0]["msg"]
    assert "v1-5-pruned-emaonly.safetensors [6ce0161689]" in unknown
    assert post(client, "/sdapi/v1/options", {"sd_model_checkpoint": "SDXL_sd_xl_base_1.0"}).json_body == {}
    assert post(client, "/sdapi/v1/options", {"sd_model_checkpoint": "x", "sd_vae": "y"}).status_code == 405
    store = context_module.get_context().store
    alice = post(client, "/sdapi/v1/txt2img", {"prompt": "x"}).json_body["job_id"]
    named = post(client, "/sdapi/v1/txt2img", {"prompt": "x", "override_settings": {
        "sd_model_checkpoint": "v1-5-pruned-emaonly"}}).json_body["job_id"]
    bob = post(client, "/sdapi/v1/txt2img", {"prompt": "x"}, headers=BOB).json_body["job_id"]
    assert store.get_job(alice).request["override_settings"] == {
        "sd_model_checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}
    assert store.get_job(named).request["override_settings"] == {"sd_model_checkpoint": "v1-5-pruned-emaonly"}
    assert "override_settings" not in store.get_job(bob).request
    shown = client.http.get("/sdapi/v1/options", headers=ALICE).json_body
    assert shown["sd_model_checkpoint"] == "SDXL/sd_xl_base_1.0.safetensors"


def _finish(ctx, job_id: str, *, fail: bool = False):
    claimed = ctx.store.claim_next(worker_id="w1", instance="gpu", lease_seconds=30, now=time.time()).job
    assert claimed.id == job_id
    if fail:
        ctx.store.fail(job_id, worker_id="w1", code="a1111_failed", message="A1111 broke", now=time.time())
        return
    ctx.images.put(job_id, claimed.attempts, [base64.b64decode(PNG_1X1)])
    ctx.store.complete(job_id, worker_id="w1", result={"parameters": {}, "info": json.dumps({"seed": 1234})},
                       image_count=1, now=time.time())


def test_the_legacy_profile_answers_in_the_original_shapes(make_client):
    client = make_client()
    ctx = context_module.get_context()
    done = post(client, "/legacy/sdapi/v1/txt2img", {"prompt": "x"})
    assert done.status_code == 202 and done.headers["Location"].startswith("/legacy/sdapi/v1/jobs/")
    done_id = done.json_body["uuid"]
    _finish(ctx, done_id)
    failed_id = post(client, "/sdapi/v1/txt2img", {"prompt": "y"}).json_body["id"]  # root job, seen under /legacy
    _finish(ctx, failed_id, fail=True)
    queued_id = post(client, "/legacy/sdapi/v1/txt2img", {"prompt": "z"}).json_body["job_id"]

    queue = client.http.get("/legacy/sdapi/v1/jobs", headers=ALICE).json_body
    assert [item["uuid"] for item in queue] == [queued_id, failed_id, done_id]
    assert [item["progress"] for item in queue] == [0.0, 0.0, 1.0]
    assert {item["workflow"] for item in queue} == {"txt2img"} and queue[0]["retry_count"] == 0
    detail = client.http.get(f"/legacy/sdapi/v1/jobs/{done_id}", headers=ALICE).json_body
    assert detail == {"uuid": done_id, "job_status": "completed", "progress": 1.0, "images": [PNG_1X1],
                      "info": json.dumps({"seed": 1234})}
    errors_list = client.http.get("/legacy/sdapi/v1/errors", headers=ALICE).json_body
    assert [(item["uuid"], item["error"]) for item in errors_list] == [(failed_id, "A1111 broke")]
    assert client.http.get("/legacy/sdapi/v1/workflows", headers=ALICE).json_body[0]["workflow"] == "txt2img"

    cancel = client.http.delete(f"/legacy/sdapi/v1/jobs/{queued_id}", headers=ALICE)
    assert cancel.status_code == 204 and not cancel.body
    assert client.http.delete(f"/legacy/sdapi/v1/jobs/{done_id}", headers=ALICE).status_code == 404
    assert client.http.delete("/legacy/sdapi/v1/jobs/unknown", headers=ALICE).status_code == 404
    assert client.http.delete(f"/legacy/sdapi/v1/jobs/{failed_id}", headers=BOB).status_code == 404
    assert client.http.get(f"/sdapi/v1/jobs/{queued_id}", headers=ALICE).json_body["status"] == "cancelled"


def test_assets_and_captioning_are_a_clear_501(make_client):
    client = make_client()
    for method, path in (("GET", "/legacy/sdapi/v1/assets"), ("POST", "/legacy/sdapi/v1/assets/download"),
                         ("POST", "/legacy/sdapi/v1/florence")):
        response = client.http.request(method, path, headers=ALICE, body="{}")
        assert response.status_code == 501 and "model files" in response.json_body["detail"]


def test_legacy_health_and_auth(make_client):
    client = make_client()
    assert client.http.get("/legacy/health").json_body == {"status": "ok"}
    assert client.http.get("/legacy/sdapi/v1/jobs").status_code == 401


def test_a_legacy_body_has_the_original_fields_and_the_real_seed():
    job = store_base.Job(**{**{name: None for name in store_base.Job.__dataclass_fields__},
                            "id": "j1", "status": "completed", "options": {"webhook_format": "legacy"},
                            "result": {"info": json.dumps({"seed": 77, "all_seeds": [77]})}})
    body = json.loads(events.build_legacy_body(job, images=[b"png"]))
    assert body == {"uuid": "j1", "job_id": "j1", "job_status": "completed", "status": "completed", "progress": 1,
                    "images": ["cG5n"], "seed": 77, "info": job.result["info"], "tags": None}
    assert events.is_legacy(job)
    failed = store_base.Job(**{**job.__dict__, "status": "error", "result": None, "error_code": "a1111_failed",
                               "error_message": "boom"})
    assert json.loads(events.build_legacy_body(failed, images=None))["error"] == "boom"


def test_the_legacy_key_header_is_sent_beside_the_signature(monkeypatch):
    sent = {}

    def fake_post(target, *, body, headers, deadline, timeout):
        sent.update(headers)
        return store_base.AttemptResult(200, "", None)

    monkeypatch.setattr(attempt, "post", fake_post)
    attempt.send("http://127.0.0.1:9/h", secret=KEY, webhook_id="msg_1", body="{}", timeout=5, allow_private=True,
                 send_secret_header=True, legacy_key=True)
    assert sent["x-webhook-key"] == KEY and sent["webhook-signature"].startswith("v1,")
