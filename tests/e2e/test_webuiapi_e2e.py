"""The real `webuiapi` package (what many A1111 scripts use) pointed at the service, unchanged:
`WebUIApi(baseurl=…/sdapi/v1)` authenticated with its own `set_auth` (HTTP Basic, the token as the
password), against the API under waitress, two simulated A1111 instances with different lists and a
fake Civitai."""
from __future__ import annotations

import sys

import pytest
import webuiapi

from tests import fake_civitai
from tests import harness
from tests import support


@pytest.fixture
def fake():
    with fake_civitai.FakeCivitai() as server:
        yield server


@pytest.fixture
def service(cluster, fake):
    """The API in front of two instances (the second with its own lists), Civitai enrichment on."""
    first = cluster.start_simulator(gen_seconds=0.1)
    port = support.free_port()
    cluster.start("simulator2", [sys.executable, "-m", "tests.a1111_sim", "--port", str(port), "--catalog", "second"])
    second = f"http://127.0.0.1:{port}"
    harness.wait_until(lambda: support.answers(f"{second}/internal/ping"), timeout=15, what="the second simulator")
    cluster.env.update(A1111_BASE_URL=f"{first},{second}", CIVITAI_ENABLED="true", CIVITAI_BASE_URL=fake.url,
                       CIVITAI_API_KEY="civitai-key-e2e", CATALOG_TTL="0")
    cluster.start_api()
    return cluster, first, second


def client_for(cluster) -> webuiapi.WebUIApi:
    api = webuiapi.WebUIApi(baseurl=f"{cluster.api_url}/sdapi/v1")
    api.set_auth("webuiapi-user", harness.TOKEN)  # any user name; the password is the token
    return api


def test_webuiapi_lists_models_loras_samplers_and_scripts(service, fake):
    cluster, first, second = service
    api = client_for(cluster)
    # models of both instances, by title (what util_set_model and override_settings take)
    assert api.util_get_model_names() == ["SDXL/sd_xl_base_1.0.safetensors", "dreamshaper_8.safetensors [879db523c3]",
                                          "v1-5-pruned-emaonly.safetensors [6ce0161689]"]
    models = {m["model_name"]: m for m in api.get_sd_models()}
    assert models["v1-5-pruned-emaonly"]["instances"] == [first, second]
    assert models["v1-5-pruned-emaonly"]["sha256"].startswith("6ce0161689")
    assert models["SDXL_sd_xl_base_1.0"]["civitai"]["status"] == "no_hash"
    # LoRAs, the one Civitai knows enriched with its page, trigger words and previews
    loras = {lora["name"]: lora for lora in api.get_loras()}
    assert set(loras) == {"add_detail", "film_grain", "pp-enchanted-whimsy", "ghibli_style"}
    whimsy = loras["pp-enchanted-whimsy"]["civitai"]
    assert whimsy["status"] == "found" and whimsy["trained_words"] == ["in the style of ppWhimsy"]
    assert whimsy["model_name"] == "Enchanted Whimsy style (Flux)" and whimsy["base_model"] == "Flux.1 D"
    assert whimsy["page_url"].endswith("/models/1117241?modelVersionId=1255556") and whimsy["preview_images"]
    assert {call["authorization"] for call in fake.calls()} == {"Bearer civitai-key-e2e"}
    # discovery, passed through from the first instance
    assert "Euler a" in api.util_get_sampler_names() and "karras" in api.util_get_scheduler_names()
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.util_get_current_model() == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    assert [u["name"] for u in api.get_upscalers()][:2] == ["None", "Lanczos"]
    assert api.get_sd_vae()[0]["model_name"] == "vae-ft-mse-840000-ema-pruned.safetensors"
    assert "easynegative" in api.get_embeddings()["loaded"]
    # the webuiapi constructor's extension check found no ControlNet/ADetailer to add to payloads
    assert not (api.has_controlnet or api.has_adetailer or api.has_animatediff)


def test_webuiapi_without_the_token_gets_401s(service):
    cluster, _, _ = service
    api = webuiapi.WebUIApi(baseurl=f"{cluster.api_url}/sdapi/v1")
    assert api.get_sd_models()["error"] == "Unauthorized"
    api.set_auth("webuiapi-user", "not-the-token")
    assert api.get_loras()["error"] == "Unauthorized"


def test_lists_stay_available_marked_stale_when_an_instance_goes_down(service):
    cluster, first, second = service
    api = client_for(cluster)
    assert len(api.get_sd_models()) == 3
    # when the first instance stops
    next(p for p in cluster.processes if p.name == "simulator").terminate()
    # then its models are still listed, from its last answer, marked stale
    models = {m["model_name"]: m for m in api.get_sd_models()}
    assert set(models) == {"v1-5-pruned-emaonly", "SDXL_sd_xl_base_1.0", "dreamshaper_8"}
    assert models["SDXL_sd_xl_base_1.0"]["stale"] is True and models["dreamshaper_8"]["stale"] is False
    # and discovery falls over to the second instance
    assert [s["name"] for s in api.get_samplers()] == ["DPM++ 2M", "DPM++ SDE", "Euler a"]
