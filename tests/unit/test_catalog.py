"""The catalog's pure parts: merging instances' lists, matching {name}, choosing the hash to look up,
reading Civitai's answer (the real sample), and the shared backoff."""
from __future__ import annotations

import copy
import json
import os

import pytest

import app as app_module
from chalicelib import catalog
from chalicelib import civitai
from chalicelib import errors
from chalicelib import openapi
from tests import fake_civitai
from tests.unit import test_a1111_drift

SHA = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
HASHED = {"title": f"v1-5.safetensors [{SHA[:10]}]", "model_name": "v1-5", "hash": SHA[:10], "sha256": SHA,
          "filename": "/b/v1-5.safetensors", "config": None}
UNHASHED = {"title": "v1-5.safetensors", "model_name": "v1-5", "hash": None, "sha256": None,
            "filename": "/a/v1-5.safetensors", "config": None}
LORA = {"name": "add_detail", "alias": "detail_tweaker", "path": "/a/add_detail.safetensors",
        "metadata": {"sshs_model_hash": "805BC48E82E0" + "a" * 52}}


def answer(instance, body, *, stale=False):
    return catalog.Answer(instance, body, stored_at=1.0, stale=stale)


# --- merge ---------------------------------------------------------------------------------------

def test_the_same_checkpoint_on_two_instances_is_one_item_with_the_hashed_title():
    # given instance a has not hashed the file yet and instance b has
    merged = catalog.merge(catalog.SD_MODELS, [answer("a", [UNHASHED]), answer("b", [HASHED])])
    # then one item lists both, with b's title and hashes, and the first instance's other fields
    assert len(merged) == 1
    item = merged[0]
    assert item["instances"] == ["a", "b"] and item["stale"] is False
    assert item["title"] == HASHED["title"] and item["sha256"] == SHA and item["hash"] == SHA[:10]
    assert item["filename"] == "/a/v1-5.safetensors"


def test_files_with_one_name_but_different_hashes_stay_apart():
    other = dict(HASHED, sha256="f" * 64, hash="f" * 10, title="v1-5.safetensors [ffffffffff]")
    merged = catalog.merge(catalog.SD_MODELS, [answer("a", [HASHED]), answer("b", [other])])
    assert [item["instances"] for item in merged] == [["a"], ["b"]]


def test_an_item_is_stale_only_when_every_instance_that_has_it_is():
    merged = catalog.merge(catalog.LORAS, [answer("a", [LORA], stale=True), answer("b", [LORA]),
                                           answer("c", [dict(LORA, name="only_c")], stale=True)])
    assert [(item["name"], item["instances"], item["stale"]) for item in merged] == [
        ("add_detail", ["a", "b"], False), ("only_c", ["c"], True)]


def test_entries_that_are_not_a1111_shaped_are_skipped():
    merged = catalog.merge(catalog.SD_MODELS, [answer("a", [HASHED, "junk", {"title": 3}, None]),
                                               answer("b", {"not": "a list"})])
    assert [item["title"] for item in merged] == [HASHED["title"]]


def test_merge_keeps_a1111s_keys_and_copies_items():
    source = [copy.deepcopy(LORA)]
    merged = catalog.merge(catalog.LORAS, [answer("a", source)])
    assert set(merged[0]) == {"name", "alias", "path", "metadata", "instances", "stale"}
    merged[0]["name"] = "changed"
    assert source[0]["name"] == "add_detail"


# --- find ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [HASHED["title"], "v1-5.safetensors", "v1-5", SHA[:10], SHA, SHA.upper(),
                                  SHA[:10].upper()])
def test_a_checkpoint_is_found_by_title_name_model_name_or_hash(name):
    assert catalog.find(catalog.SD_MODELS, [dict(HASHED)], name)["model_name"] == "v1-5"


@pytest.mark.parametrize("name", ["add_detail", "detail_tweaker", "805bc48e82e0", "805BC48E82E0",
                                  LORA["metadata"]["sshs_model_hash"].lower()])
def test_a_lora_is_found_by_name_alias_sshs_hash_or_its_autov3_prefix(name):
    assert catalog.find(catalog.LORAS, [dict(LORA)], name)["name"] == "add_detail"


@pytest.mark.parametrize("kind, name", [(catalog.SD_MODELS, "v1-"), (catalog.SD_MODELS, SHA[:9]),
                                        (catalog.SD_MODELS, "V1-5"), (catalog.LORAS, "805bc48e"),
                                        (catalog.LORAS, ""), (catalog.SD_MODELS, "")])
def test_partial_or_wrong_case_names_are_not_matches(kind, name):
    assert catalog.find(kind, [dict(HASHED) if kind == catalog.SD_MODELS else dict(LORA)], name) is None


def test_a_name_beats_a_hash_that_looks_like_it():
    # given one LoRA named like another's AutoV3
    named = dict(LORA, name="805bc48e82e0", alias="805bc48e82e0", metadata={})
    assert catalog.find(catalog.LORAS, [dict(LORA), named], "805bc48e82e0") is named


# --- the hash to look up -------------------------------------------------------------------------

@pytest.mark.parametrize("item, expected", [
    (HASHED, ("SHA256", SHA)),
    (dict(HASHED, sha256=None), ("AutoV2", SHA[:10])),
    (UNHASHED, None),
    (LORA, ("AutoV3", "805bc48e82e0")),
    ({"name": "x", "metadata": {}}, None),
    ({"name": "x", "metadata": {"sshs_model_hash": "not-hex-at-all-but-long-enough"}}, None),
    ({"name": "x", "hash": "ABCDEF012345"}, ("AutoV3", "abcdef012345")),
    ({"title": "t", "sha256": "zz" * 32, "hash": "0123456789"}, ("AutoV2", "0123456789")),
])
def test_the_best_hash_is_chosen(item, expected):
    ref = catalog.lookup_hash(item)
    assert (None if ref is None else (ref.kind, ref.value)) == expected


def test_hash_refs_are_lower_case_and_cut_to_civitais_length():
    assert civitai.hash_ref("AutoV3", "BF82986F8597" + "0" * 52) == civitai.HashRef("AutoV3", "bf82986f8597")
    assert civitai.hash_ref("SHA256", "ab" * 10) is None
    assert civitai.hash_ref("AutoV2", None) is None
    assert civitai.HashRef("AutoV2", "0123456789").key == "autov2:0123456789"


# --- refresh -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(None, False), ("", False), ("false", False), ("0", False),
                                             ("true", True), ("TRUE", True), ("1", True), ("yes", True)])
def test_refresh_values(value, expected):
    assert catalog.parse_refresh(value) is expected


def test_a_refresh_that_is_not_a_boolean_is_a_422():
    with pytest.raises(errors.ValidationFailed) as raised:
        catalog.parse_refresh("maybe")
    assert raised.value.status == 422 and raised.value.detail[0]["loc"] == ["query", "refresh"]


# --- Civitai's answer ----------------------------------------------------------------------------

def test_the_real_sample_is_summarised_for_clients():
    # given Civitai's real by-hash answer (shared/civitai/)
    summary = civitai.summarize(fake_civitai.load_sample(), site_url="https://civitai.com")
    # then the fields a client choosing a LoRA wants are there
    assert summary == {
        "model_id": 1117241, "model_name": "Enchanted Whimsy style (Flux)", "version_id": 1255556,
        "version_name": "v1.0", "type": "LORA", "base_model": "Flux.1 D", "trained_words": ["in the style of ppWhimsy"],
        "nsfw": False, "nsfw_level": None, "air": "urn:air:flux1:lora:civitai:1117241@1255556",
        "page_url": "https://civitai.com/models/1117241?modelVersionId=1255556",
        "download_url": "https://civitai.com/api/download/models/1255556",
        "preview_images": [{
            "url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/707aef9b-36fb-46c2-ac41-adcab539d3a6/"
                   "width=832/50270101.jpeg", "nsfw_level": 1, "width": 832, "height": 1216, "type": "image"}],
    }


def test_an_archived_or_odd_version_is_summarised_without_failing():
    # given an archived version (no files, no downloadUrl) with odd types where numbers belong
    version = {"id": "7", "modelId": 5, "model": {"name": "m", "type": "Checkpoint", "nsfw": "no", "mode": "Archived"},
               "files": [], "images": [{"url": ""}, {"nsfwLevel": 1}, "x"], "trainedWords": None}
    summary = civitai.summarize(version, site_url="https://civitai.com")
    assert summary["version_id"] is None and summary["page_url"] == "https://civitai.com/models/5"
    assert summary["download_url"] is None and summary["preview_images"] == [] and summary["trained_words"] == []
    assert summary["nsfw"] is None and summary["type"] == "Checkpoint"


@pytest.mark.parametrize("base_url, site", [
    ("https://civitai.com/api/v1", "https://civitai.com"),
    ("https://civitai.com/api/v1/", "https://civitai.com"),
    ("http://127.0.0.1:8123/api/v1", "http://127.0.0.1:8123"),
    ("https://proxy.example/civitai", "https://civitai.com"),
])
def test_page_urls_point_at_the_site_of_the_api(base_url, site):
    assert civitai.site_url(base_url) == site


def test_file_hashes_are_read_lower_case():
    assert civitai.file_hashes(fake_civitai.load_sample(), "SHA256") == [
        "3202778c3ebe5cf7ebe5fc51561deae8611f4362036eb7c02efa033c705e6240"]
    assert civitai.file_hashes({"files": [{"hashes": None}, "x"]}, "SHA256") == []


# --- backoff -------------------------------------------------------------------------------------

def test_the_cooldown_doubles_up_to_its_cap_honours_retry_after_and_resets():
    clock = [100.0]
    cooldown = civitai.Cooldown(clock=lambda: clock[0])
    assert cooldown.remaining() == 0
    delays = []
    for _ in range(7):
        delays.append(cooldown.trip())
        clock[0] += delays[-1]  # the next failure comes once the backoff is over
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert cooldown.remaining() == 0
    # failures of calls already under way during a backoff count once
    cooldown.reset()
    assert [cooldown.trip(), cooldown.trip(), cooldown.trip()] == [1, 1, 1]
    clock[0] += 1
    assert cooldown.trip() == 2 and cooldown.remaining() == 2
    assert cooldown.trip(retry_after=3.5) == 3.5 and cooldown.remaining() == 3.5
    assert cooldown.trip(retry_after=3600) == 30
    cooldown.reset()
    assert cooldown.remaining() == 0 and cooldown.trip() == 1


# --- A1111's schemas under A1111's names ---------------------------------------------------------

A1111_NAMED = ["SDModelItem", "SamplerItem", "SchedulerItem", "SDVaeItem", "UpscalerItem", "ScriptsList",
               "EmbeddingsResponse", "EmbeddingItem"]


@pytest.fixture(scope="module")
def both_documents():
    """(A1111's component schemas, ours)."""
    if not test_a1111_drift.OPENAPI_PATH.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{test_a1111_drift.OPENAPI_PATH} is missing; CI must check drift from A1111")
        pytest.skip(f"{test_a1111_drift.OPENAPI_PATH} is not here")
    theirs = json.loads(test_a1111_drift.OPENAPI_PATH.read_text())["components"]["schemas"]
    return theirs, openapi.build_document(app_module.app)["components"]["schemas"]


def _kind(prop: dict) -> tuple:
    inner = prop.get("allOf", [prop])[0]
    return inner.get("type", inner.get("$ref", "").rsplit("/", 1)[-1]), (inner.get("items") or {}).get("type")


@pytest.mark.parametrize("name", A1111_NAMED)
def test_our_a1111_shaped_schemas_keep_a1111s_fields(both_documents, name):
    theirs, ours = both_documents[0][name], both_documents[1][name]
    for field, prop in theirs["properties"].items():
        assert field in ours["properties"], f"{name}.{field} is missing"
        mine = ours["properties"][field]
        assert _kind(mine) == _kind(prop), f"{name}.{field}: {mine} is not {prop}"
        assert mine.get("title") == prop.get("title"), f"{name}.{field} title"
    assert set(theirs.get("required", [])) <= set(ours.get("required", []))
    assert ours.get("additionalProperties") is not False  # what an instance adds passes through
