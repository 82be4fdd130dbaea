"""The sampler check keeps the valid names in the process while the catalogue cache would serve them
as fresh, so a submit naming a sampler (webuiapi always does) reads no cache rows; past CATALOG_TTL,
or with a new context, it reads the lists again."""
from __future__ import annotations

import json

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import catalog
from chalicelib import context as context_module
from tests.a1111_sim import server as a1111_sim

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}


@pytest.fixture
def reads(monkeypatch):
    """Every list the sampler check asks for (from the cache or from A1111)."""
    asked: list[str] = []
    fetch = catalog.fetch_answers

    def counting(ctx, path, instances, **kwargs):
        asked.append(path)
        return fetch(ctx, path, instances, **kwargs)

    monkeypatch.setattr(catalog, "fetch_answers", counting)
    return asked


def _client(monkeypatch, tmp_path, sim, *, ttl: str):
    return _client_at(monkeypatch, tmp_path, sim.url, ttl=ttl)


def _client_at(monkeypatch, tmp_path, url: str, *, ttl: str = "60"):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("A1111_BASE_URL", url)
    monkeypatch.setenv("CATALOG_TTL", ttl)
    context_module.reset_context()
    return chalice_test.Client(app_module.app)


def _submit(client, sampler: str) -> int:
    body = json.dumps({"prompt": "x", "sampler_name": sampler})
    return client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=body).status_code


def test_within_the_ttl_submits_read_the_lists_once(monkeypatch, tmp_path, reads):
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim, _client(monkeypatch, tmp_path, sim, ttl="60") as client:
        statuses = [_submit(client, "Euler a") for _ in range(5)] + [_submit(client, "Euler z")]
    context_module.reset_context()

    assert statuses == [202] * 5 + [422]  # the rule still holds from the copy
    assert sorted(reads) == [catalog.SAMPLERS_PATH, catalog.SCHEDULERS_PATH]


def test_with_no_ttl_every_submit_reads_the_lists(monkeypatch, tmp_path, reads):
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim, _client(monkeypatch, tmp_path, sim, ttl="0") as client:
        statuses = [_submit(client, "Euler a") for _ in range(3)]
    context_module.reset_context()

    assert statuses == [202] * 3
    assert len(reads) == 6


def test_a_new_context_reads_the_lists_again(monkeypatch, tmp_path, reads):
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim:
        with _client(monkeypatch, tmp_path / "a", sim, ttl="60") as client:
            assert _submit(client, "Euler a") == 202
        with _client(monkeypatch, tmp_path / "b", sim, ttl="60") as client:
            assert _submit(client, "Euler a") == 202
    context_module.reset_context()

    assert len(reads) == 4


def test_past_the_ttl_the_copy_is_built_again(monkeypatch, tmp_path, reads):
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim, _client(monkeypatch, tmp_path, sim, ttl="60") as client:
        assert _submit(client, "Euler a") == 202
        later = catalog.time.time() + 61
        monkeypatch.setattr(catalog.time, "time", lambda: later)
        assert _submit(client, "Euler a") == 202
    context_module.reset_context()

    assert len(reads) == 4


def test_while_no_instance_answers_submits_do_not_ask_a1111_again(monkeypatch, tmp_path, reads):
    monkeypatch.setenv("CATALOG_TIMEOUT", "0.5")
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim:
        down_url = sim.url
    with _client_at(monkeypatch, tmp_path, down_url) as client:
        statuses = [_submit(client, "Euler a") for _ in range(3)]
    context_module.reset_context()

    assert statuses == [202] * 3  # accepted unchecked, as before
    assert sorted(reads) == [catalog.SAMPLERS_PATH, catalog.SCHEDULERS_PATH]  # asked once, not per submit

