"""GET /metrics through chalice.test.Client: who may scrape, and what Prometheus reads."""
from __future__ import annotations

import base64
import json

import pytest
from chalice import test as chalice_test
from prometheus_client import parser as prometheus_parser

from chalicelib import context as context_module
from chalicelib import errors

METRICS_TOKEN = "scrape-only-token"


@pytest.fixture
def client(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("METRICS_TOKEN", METRICS_TOKEN)
    monkeypatch.setenv("A1111_BASE_URL", "http://127.0.0.1:9")
    context_module.reset_context()
    from app import app
    with chalice_test.Client(app) as test_client:
        yield test_client
    context_module.reset_context()


def scrape(client, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.http.get("/metrics", headers=headers)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition, as {(name, sorted labels): value}."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in prometheus_parser.text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.parametrize("token", [METRICS_TOKEN, "tok-alice"])
def test_the_metrics_token_or_an_api_token_may_scrape(client, token):
    response = scrape(client, token)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_http_basic_with_the_metrics_token_as_password_may_scrape(client):
    basic = base64.b64encode(f"prometheus:{METRICS_TOKEN}".encode()).decode()
    assert client.http.get("/metrics", headers={"Authorization": f"Basic {basic}"}).status_code == 200


@pytest.mark.parametrize("token", [None, "wrong", METRICS_TOKEN + "x"])
def test_no_token_or_a_wrong_one_is_401_without_the_token_in_the_answer(client, token):
    response = scrape(client, token)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    body = json.loads(response.body)
    assert body["error"] == "Unauthorized" and METRICS_TOKEN not in response.body.decode()


def test_the_metrics_token_opens_nothing_else(client):
    response = client.http.get("/sdapi/v1/jobs", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 401


def test_the_answer_is_prometheus_text_with_every_family(client):
    # given one queued job
    submitted = client.http.post("/sdapi/v1/txt2img", headers={"Authorization": "Bearer tok-alice"},
                                 body=json.dumps({"prompt": "a cat"}))
    assert submitted.status_code == 202
    # when Prometheus's own parser reads the scrape
    values = samples(scrape(client, METRICS_TOKEN).body.decode())
    # then the job is counted, and every documented series is there
    assert values[("a1111_async_jobs", (("status", "queued"),))] == 1
    assert values[("a1111_async_jobs", (("status", "completed"),))] == 0
    assert values[("a1111_async_job_queue_wait_seconds_count", ())] == 0
    assert values[("a1111_async_job_queue_wait_seconds_bucket", (("le", "+Inf"),))] == 0
    assert values[("a1111_async_job_run_seconds_count", (("status", "completed"),))] == 0
    assert values[("a1111_async_a1111_errors_total", (("kind", "unavailable"),))] == 0
    assert values[("a1111_async_webhook_deliveries", (("status", "failed"),))] == 0
    assert values[("a1111_async_webhook_attempts_total", (("outcome", "success"),))] == 0


def test_a_store_that_cannot_be_reached_is_503(client, monkeypatch):
    def unreachable():
        raise errors.StoreUnavailable("the job store cannot be reached")

    monkeypatch.setattr(context_module, "get_context", unreachable)
    response = scrape(client, METRICS_TOKEN)
    assert response.status_code == 503 and json.loads(response.body)["error"] == "StoreUnavailable"
