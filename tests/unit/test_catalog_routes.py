"""Model and discovery routes through chalice.test.Client, against two simulated A1111 instances
(different lists) and a fake Civitai, all on 127.0.0.1: merging, {name}, enrichment, staleness,
passthrough, HTTP Basic for A1111 clients, and answers that match the OpenAPI document."""
from __future__ import annotations

import base64
import time
import urllib.parse

import pytest
import requests
from chalice import test as chalice_test

import app as app_module
from chalicelib import context as context_module
from chalicelib import openapi
from tests import fake_civitai
from tests import support
from tests.a1111_sim import server as sim_server
from tests.unit.test_openapi import assert_conforms

ALICE = {"Authorization": "Bearer tok-alice"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def sims():
    first = sim_server.SimulatedA1111().start()
    second = sim_server.SimulatedA1111(catalog="second").start()
    yield first, second
    for sim in (first, second):
        sim.stop()


@pytest.fixture
def fake():
    with fake_civitai.FakeCivitai() as server:
        yield server


@pytest.fixture
def make_client(monkeypatch, tmp_path):
    """A test client whose environment is the defaults plus `env` (A1111_BASE_URL etc.)."""
    clients = []

    def make(**env):
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
        monkeypatch.setenv("API_TOKENS", "alice:tok-alice,bob:tok-bob")
        for name, value in env.items():
            monkeypatch.setenv(name, str(value))
        context_module.reset_context()
        client = chalice_test.Client(app_module.app)
        clients.append(client)
        return client

    yield make
    context_module.reset_context()


@pytest.fixture(scope="module")
def document():
    return openapi.build_document(app_module.app)


def urls(*sims) -> str:
    return ",".join(sim.url for sim in sims)


def get(client, path, headers=ALICE):
    return client.http.get(path, headers=headers)


# --- Lists from every instance -------------------------------------------------------------------

def test_checkpoints_of_two_instances_are_merged_and_say_where_they_are(make_client, sims, document):
    first, second = sims
    client = make_client(A1111_BASE_URL=urls(first, second))
    response = get(client, "/sdapi/v1/sd-models")
    assert response.status_code == 200
    assert response.headers["X-Catalog-Stale"] == "false" and response.headers["X-Civitai-Enrichment"] == "disabled"
    by_name = {item["model_name"]: item for item in response.json_body}
    assert list(by_name) == ["v1-5-pruned-emaonly", "SDXL_sd_xl_base_1.0", "dreamshaper_8"]
    # the file both have: one entry, with the hashed title of the instance that loaded it
    assert by_name["v1-5-pruned-emaonly"]["instances"] == [first.url, second.url]
    assert by_name["v1-5-pruned-emaonly"]["title"] == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    assert by_name["SDXL_sd_xl_base_1.0"]["instances"] == [first.url] and by_name["SDXL_sd_xl_base_1.0"]["hash"] is None
    assert by_name["dreamshaper_8"]["instances"] == [second.url]
    assert all(item["stale"] is False and "civitai" not in item for item in response.json_body)
    assert_conforms(document, "GET /sdapi/v1/sd-models", response)


def test_loras_keep_a1111s_shape_and_are_merged(make_client, sims, document):
    first, second = sims
    response = get(make_client(A1111_BASE_URL=urls(first, second)), "/sdapi/v1/loras")
    assert response.status_code == 200
    names = [(item["name"], item["instances"]) for item in response.json_body]
    assert names == [("add_detail", [first.url, second.url]), ("film_grain", [first.url]),
                     ("pp-enchanted-whimsy", [first.url]), ("ghibli_style", [second.url])]
    assert all({"name", "alias", "path", "metadata"} <= set(item) for item in response.json_body)
    assert_conforms(document, "GET /sdapi/v1/loras", response)


@pytest.mark.parametrize("name", ["v1-5-pruned-emaonly", "v1-5-pruned-emaonly.safetensors [6ce0161689]",
                                  "v1-5-pruned-emaonly.safetensors", "6ce0161689", "6CE0161689",
                                  "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"])
def test_one_checkpoint_by_title_model_name_or_hash(make_client, sims, document, name):
    first, second = sims
    client = make_client(A1111_BASE_URL=urls(first, second))
    response = get(client, "/sdapi/v1/sd-models/" + urllib.parse.quote(name))
    assert response.status_code == 200, response.json_body
    assert response.json_body["model_name"] == "v1-5-pruned-emaonly"
    assert response.json_body["instances"] == [first.url, second.url]
    assert_conforms(document, "GET /sdapi/v1/sd-models/{name}", response)


@pytest.mark.parametrize("name", ["pp-enchanted-whimsy", "bf82986f8597", "BF82986F8597"])
def test_one_lora_by_name_or_autov3(make_client, sims, document, name):
    response = get(make_client(A1111_BASE_URL=urls(*sims)), f"/sdapi/v1/loras/{name}")
    assert response.status_code == 200 and response.json_body["name"] == "pp-enchanted-whimsy"
    assert_conforms(document, "GET /sdapi/v1/loras/{name}", response)


@pytest.mark.parametrize("path", ["/sdapi/v1/sd-models/nope", "/sdapi/v1/loras/nope", "/sdapi/v1/sd-models/6ce01616"])
def test_an_unknown_name_is_a_404_that_says_what_matches(make_client, sims, document, path):
    response = get(make_client(A1111_BASE_URL=urls(*sims)), path)
    assert response.status_code == 404 and response.json_body["error"] == "NotFound"
    assert "on any A1111 instance" in response.json_body["detail"]
    assert_conforms(document, "GET " + path.rsplit("/", 1)[0] + "/{name}", response)


# --- Civitai -------------------------------------------------------------------------------------

def test_loras_are_enriched_from_civitai_when_enabled(make_client, sims, fake, document):
    client = make_client(A1111_BASE_URL=urls(*sims), CIVITAI_ENABLED="true", CIVITAI_BASE_URL=fake.url,
                         CIVITAI_API_KEY="civitai-secret-key")
    response = get(client, "/sdapi/v1/loras")
    assert response.status_code == 200 and response.headers["X-Civitai-Enrichment"] == "complete"
    civitai = {item["name"]: item["civitai"] for item in response.json_body}
    assert civitai["pp-enchanted-whimsy"]["status"] == "found"
    assert civitai["pp-enchanted-whimsy"]["trained_words"] == ["in the style of ppWhimsy"]
    assert civitai["pp-enchanted-whimsy"]["download_url"] == "https://civitai.com/api/download/models/1255556"
    assert civitai["add_detail"]["status"] == "not_found" and civitai["film_grain"]["status"] == "no_hash"
    assert "civitai-secret-key" not in response.body.decode()
    assert {call["authorization"] for call in fake.calls()} == {"Bearer civitai-secret-key"}
    assert_conforms(document, "GET /sdapi/v1/loras", response)
    # and a second look is answered from the cache
    calls = len(fake.calls())
    assert get(client, "/sdapi/v1/loras/bf82986f8597").json_body["civitai"]["version_id"] == 1255556
    assert len(fake.calls()) == calls


def test_a_slow_civitai_costs_at_most_the_budget_and_the_answer_says_so(make_client, sims, fake, document):
    # given Civitai takes 3 s and the default budget (1.5 s)
    fake.set_faults(delay=3)
    client = make_client(A1111_BASE_URL=urls(*sims), CIVITAI_ENABLED="true", CIVITAI_BASE_URL=fake.url)
    started = time.monotonic()
    response = get(client, "/sdapi/v1/loras")
    # then the answer comes in about 2 s, without enrichment, saying so
    assert response.status_code == 200 and time.monotonic() - started < 2.2
    assert response.headers["X-Civitai-Enrichment"] == "partial"
    statuses = {item["name"]: item["civitai"]["status"] for item in response.json_body}
    assert statuses["pp-enchanted-whimsy"] == "unavailable" and statuses["film_grain"] == "no_hash"
    assert_conforms(document, "GET /sdapi/v1/loras", response)


def test_refresh_asks_civitai_again(make_client, sims, fake):
    client = make_client(A1111_BASE_URL=urls(*sims), CIVITAI_ENABLED="true", CIVITAI_BASE_URL=fake.url)
    get(client, "/sdapi/v1/loras/pp-enchanted-whimsy")
    get(client, "/sdapi/v1/loras/pp-enchanted-whimsy")
    assert len(fake.calls()) == 1
    assert get(client, "/sdapi/v1/loras/pp-enchanted-whimsy?refresh=true").status_code == 200
    assert len(fake.calls()) == 2


# --- A1111 unreachable: stale answers ------------------------------------------------------------

def test_an_unreachable_instance_is_answered_from_its_last_list_marked_stale(make_client, sims, document):
    first, second = sims
    client = make_client(A1111_BASE_URL=urls(first, second), CATALOG_TTL="0")
    assert get(client, "/sdapi/v1/sd-models").status_code == 200
    # when the first instance goes away
    first.stop()
    response = get(client, "/sdapi/v1/sd-models")
    # then its models are still listed, marked stale; what the second one also has is not stale
    assert response.status_code == 200 and response.headers["X-Catalog-Stale"] == "true"
    stale = {item["model_name"]: item["stale"] for item in response.json_body}
    assert stale == {"v1-5-pruned-emaonly": False, "SDXL_sd_xl_base_1.0": True, "dreamshaper_8": False}
    assert_conforms(document, "GET /sdapi/v1/sd-models", response)
    one = get(client, "/sdapi/v1/sd-models/SDXL_sd_xl_base_1.0")
    assert one.status_code == 200 and one.json_body["stale"] is True and one.headers["X-Catalog-Stale"] == "true"


def test_within_the_ttl_lists_come_from_the_cache_and_refresh_asks_a1111(make_client, sims):
    first, _ = sims
    client = make_client(A1111_BASE_URL=first.url, CATALOG_TTL="300")
    assert get(client, "/sdapi/v1/loras").headers["X-Catalog-Stale"] == "false"
    first.stop()
    # within the TTL, A1111 is not asked: the answer is fresh although A1111 is gone
    cached = get(client, "/sdapi/v1/loras")
    assert cached.status_code == 200 and cached.headers["X-Catalog-Stale"] == "false"
    # refresh asks A1111, which does not answer: the same list, now marked stale
    refreshed = get(client, "/sdapi/v1/loras?refresh=true")
    assert refreshed.status_code == 200 and refreshed.headers["X-Catalog-Stale"] == "true"
    assert [i["name"] for i in refreshed.json_body] == [i["name"] for i in cached.json_body]
    assert all(item["stale"] for item in refreshed.json_body)


def test_no_instance_and_nothing_cached_is_a_502(make_client, document):
    client = make_client(A1111_BASE_URL=f"http://127.0.0.1:{support.free_port()}")
    for path, key in (("/sdapi/v1/sd-models", "GET /sdapi/v1/sd-models"),
                      ("/sdapi/v1/loras/x", "GET /sdapi/v1/loras/{name}"),
                      ("/sdapi/v1/samplers", "GET /sdapi/v1/samplers")):
        response = get(client, path)
        assert response.status_code == 502 and response.json_body["error"] == "BadGateway", path
        assert "refused the connection" in response.json_body["detail"]
        assert_conforms(document, key, response)


def test_credentials_in_an_instance_url_never_reach_the_answer(make_client):
    port = support.free_port()
    response = get(make_client(A1111_BASE_URL=f"http://admin:hunter2@127.0.0.1:{port}"), "/sdapi/v1/options")
    assert response.status_code == 502 and "hunter2" not in response.body.decode()


# --- Discovery passthrough -----------------------------------------------------------------------

@pytest.mark.parametrize("path, expected", [
    ("/sdapi/v1/samplers", list(sim_server.SAMPLERS)),
    ("/sdapi/v1/schedulers", list(sim_server.SCHEDULERS)),
    ("/sdapi/v1/sd-vae", list(sim_server.SD_VAE)),
    ("/sdapi/v1/upscalers", list(sim_server.UPSCALERS)),
    ("/sdapi/v1/scripts", {"txt2img": [], "img2img": []}),
    ("/sdapi/v1/options", sim_server.DEFAULT_OPTIONS),
    ("/sdapi/v1/embeddings", sim_server.EMBEDDINGS),
])
def test_discovery_lists_are_a1111s_answer_from_the_first_instance(make_client, sims, document, path, expected):
    first, second = sims
    response = get(make_client(A1111_BASE_URL=urls(first, second)), path)
    assert response.status_code == 200 and response.json_body == expected
    assert response.headers["X-A1111-Instance"] == first.url and response.headers["X-Catalog-Stale"] == "false"
    assert_conforms(document, f"GET {path}", response)


def test_discovery_falls_back_to_the_next_instance_then_to_the_last_answer(make_client, sims):
    first, second = sims
    first_url, second_url = first.url, second.url
    client = make_client(A1111_BASE_URL=urls(first, second), CATALOG_TTL="0")
    assert get(client, "/sdapi/v1/samplers").headers["X-A1111-Instance"] == first_url
    first.stop()
    response = get(client, "/sdapi/v1/samplers")
    assert response.headers["X-A1111-Instance"] == second_url and response.headers["X-Catalog-Stale"] == "false"
    assert [s["name"] for s in response.json_body] == [s["name"] for s in sim_server.SAMPLERS[:3]]
    second.stop()
    response = get(client, "/sdapi/v1/samplers")
    assert response.status_code == 200 and response.headers["X-Catalog-Stale"] == "true"
    assert response.headers["X-A1111-Instance"] == first_url and len(response.json_body) == len(sim_server.SAMPLERS)


def test_writes_to_a1111_are_not_offered(make_client, sims):
    """POST options stores the caller's own default (chalicelib/model_choice.py), never A1111's global one;
    any other option is 405."""
    client = make_client(A1111_BASE_URL=urls(*sims))
    headers = dict(ALICE, **{"Content-Type": "application/json"})
    response = client.http.post("/sdapi/v1/options", headers=headers, body='{"sd_model_checkpoint": "dreamshaper_8"}')
    assert response.status_code == 200 and response.json_body == {}
    response = client.http.post("/sdapi/v1/options", headers=headers, body='{"samples_save": true}')
    assert response.status_code == 405 and response.json_body["error"] == "MethodNotAllowed"
    for sim in sims:
        assert requests.get(f"{sim.url}/sdapi/v1/options", timeout=5).json()["sd_model_checkpoint"] == (
            sim_server.DEFAULT_OPTIONS["sd_model_checkpoint"])
    for path in ("/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-loras"):
        assert client.http.post(path, headers=ALICE, body="").status_code in (403, 404)
    assert get(client, "/sdapi/v1/options?refresh=true").json_body["sd_model_checkpoint"] == (
        "dreamshaper_8.safetensors [879db523c3]")  # Alice sees her own choice
    bob = client.http.get("/sdapi/v1/options", headers={"Authorization": "Bearer tok-bob"}).json_body
    assert bob["sd_model_checkpoint"] == sim_server.DEFAULT_OPTIONS["sd_model_checkpoint"]


def test_a_refresh_that_is_not_a_boolean_is_a_422(make_client, sims, document):
    response = get(make_client(A1111_BASE_URL=urls(*sims)), "/sdapi/v1/samplers?refresh=sometimes")
    assert response.status_code == 422 and response.json_body["detail"][0]["loc"] == ["query", "refresh"]
    assert_conforms(document, "GET /sdapi/v1/samplers", response)


def test_the_instance_is_called_with_a1111_auth(make_client):
    with sim_server.SimulatedA1111(auth="operator:op-pass") as sim:
        ok = get(make_client(A1111_BASE_URL=sim.url, A1111_AUTH="operator:op-pass"), "/sdapi/v1/samplers")
        assert ok.status_code == 200
        refused = get(make_client(A1111_BASE_URL=sim.url, A1111_AUTH="operator:wrong"), "/sdapi/v1/upscalers")
        assert refused.status_code == 502 and "op-pass" not in refused.body.decode()


# --- Auth: bearer, and HTTP Basic as A1111's --api-auth clients send it --------------------------

@pytest.mark.parametrize("headers", [ALICE, basic("anyone", "tok-alice"), basic("alice", "tok-alice"),
                                     basic("", "tok-alice"), basic("bob", "tok-alice")],
                         ids=["bearer", "basic, any user", "basic, the token's name", "basic, empty user",
                              "basic, another token's name"])
def test_a_token_is_accepted_as_bearer_or_as_a_basic_password(make_client, sims, headers):
    assert get(make_client(A1111_BASE_URL=urls(*sims)), "/sdapi/v1/scripts", headers).status_code == 200


@pytest.mark.parametrize("headers", [{}, basic("alice", "wrong"), basic("tok-alice", ""), basic("tok-alice", "x"),
                                     {"Authorization": "Basic not base64!"}, {"Authorization": "Bearer "},
                                     {"Authorization": "tok-alice"}])
def test_anything_else_is_a_401(make_client, sims, document, headers):
    response = get(make_client(A1111_BASE_URL=urls(*sims)), "/sdapi/v1/sd-models", headers)
    assert response.status_code == 401 and response.json_body["error"] == "Unauthorized"
    assert_conforms(document, "GET /sdapi/v1/sd-models", response)


def test_a_basic_password_may_contain_colons(make_client, sims):
    client = make_client(A1111_BASE_URL=urls(*sims), API_TOKENS="carol:pa:ss:word")
    assert get(client, "/sdapi/v1/scripts", basic("carol", "pa:ss:word")).status_code == 200
