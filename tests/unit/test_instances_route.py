"""GET /sdapi/v1/instances (and /health's instances): each instance probed now, plus what the
store says ran on it."""
from __future__ import annotations

import json

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import config
from chalicelib import context as context_module
from tests.a1111_sim import server as a1111_sim

ALICE = {"Authorization": "Bearer tok-alice"}


@pytest.fixture
def sim():
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as simulator:
        yield simulator


@pytest.fixture
def client(monkeypatch, tmp_path, sim):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("A1111_BASE_URL", f"{sim.url};capacity=2;labels=sd15+fast,http://127.0.0.1:9")
    config.get_settings.cache_clear()
    context_module.reset_context()
    with chalice_test.Client(app_module.app) as test_client:
        yield test_client
    context_module.reset_context()
    config.get_settings.cache_clear()


def test_instances_show_health_model_load_and_the_error_of_a_dead_one(client, sim):
    # given a job running on the live instance
    submitted = json.loads(client.http.post("/sdapi/v1/txt2img", body=json.dumps({"prompt": "a cat"}),
                                            headers={**ALICE, "Content-Type": "application/json"}).body)
    ctx = context_module.get_context()
    job = ctx.store.claim_next(worker_id="w", instance=sim.url, lease_seconds=30, now=9e9).job
    assert job.id == submitted["job_id"]

    # when the instances are listed
    response = client.http.get("/sdapi/v1/instances", headers=ALICE)

    # then the live one is healthy, runs one job of its two (so is not busy) and tells its model
    assert response.status_code == 200
    live, dead = json.loads(response.body)["instances"]
    assert live == {"name": sim.url, "capacity": 2, "labels": ["sd15", "fast"], "reachable": True, "healthy": True,
                    "busy": False, "running_jobs": 1, "current_jobs": [job.id],
                    "loaded_model": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "jobs_done": 0,
                    "last_error": None}
    assert dead["healthy"] is False and dead["busy"] is False and dead["loaded_model"] is None
    assert "refused the connection" in dead["last_error"]
    health = json.loads(client.http.get("/health", headers=ALICE).body)
    assert [i["healthy"] for i in health["instances"]] == [True, False]


def test_instances_need_a_token(client):
    assert client.http.get("/sdapi/v1/instances").status_code == 401
