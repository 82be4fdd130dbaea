"""Submit checks sampler_name and scheduler against what the instances report, since A1111 1.10
silently runs another sampler for a name it does not know (NOTES.md G)."""
from __future__ import annotations

import json

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import context as context_module
from tests.a1111_sim import server as a1111_sim

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}


def _client(monkeypatch, tmp_path, base_url: str):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("A1111_BASE_URL", base_url)
    monkeypatch.setenv("CATALOG_TIMEOUT", "1")
    context_module.reset_context()
    return chalice_test.Client(app_module.app)


@pytest.fixture
def sim_client(monkeypatch, tmp_path):
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim, _client(monkeypatch, tmp_path, sim.url) as client:
        yield client, sim
    context_module.reset_context()


def submit(client, body: dict):
    return client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=json.dumps(body))


@pytest.mark.parametrize("body", [
    {"sampler_name": "Euler a"},
    {"sampler_name": "DPM++ 2M Karras"},  # A1111's older names: a sampler followed by a scheduler label
    {"sampler_name": "DPM++ 2M", "scheduler": "karras"},
    {"scheduler": "Karras"},
    {"sampler_name": None, "scheduler": None},
    {"sampler_name": ""},
], ids=repr)
def test_names_a1111_resolves_are_accepted(sim_client, body):
    client, _sim = sim_client
    response = submit(client, {"prompt": "x", **body})
    assert response.status_code == 202, response.body


def test_unknown_sampler_and_scheduler_are_422_naming_the_valid_ones(sim_client):
    client, _sim = sim_client

    response = submit(client, {"prompt": "x", "sampler_name": "Euler z", "scheduler": "wobbly"})

    assert response.status_code == 422
    problems = {tuple(item["loc"]): item["msg"] for item in response.json_body["detail"]}
    assert set(problems) == {("body", "sampler_name"), ("body", "scheduler")}
    assert "'Euler z'" in problems[("body", "sampler_name")]
    assert "Euler a" in problems[("body", "sampler_name")] and "DPM++ 2M" in problems[("body", "sampler_name")]
    assert "'wobbly'" in problems[("body", "scheduler")] and "Karras" in problems[("body", "scheduler")]
    assert client.http.get("/sdapi/v1/jobs", headers=ALICE).json_body["jobs"] == []  # nothing stored


def test_the_lists_are_cached_so_submits_do_not_ask_a1111_each_time(sim_client):
    client, sim = sim_client
    for _ in range(5):
        assert submit(client, {"prompt": "x", "sampler_name": "Euler a"}).status_code == 202
    assert sim.stats()["connections"] <= 2  # the two lists, once (within CATALOG_TTL)


def test_when_no_instance_can_be_asked_the_job_is_accepted_and_logged(monkeypatch, tmp_path, caplog):
    with _client(monkeypatch, tmp_path, "http://127.0.0.1:9") as client, caplog.at_level("WARNING"):
        response = submit(client, {"prompt": "x", "sampler_name": "Euler z"})
    context_module.reset_context()

    assert response.status_code == 202
    assert any("sampler/scheduler not checked" in record.getMessage() for record in caplog.records)
