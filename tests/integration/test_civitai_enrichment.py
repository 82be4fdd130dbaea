"""Civitai enrichment with its cache, on every store backend: found and not found, TTLs, refresh,
and outages (slow, rate-limited, down) that never hold an answer up past the budget."""
from __future__ import annotations

import copy
import time
import types

import pytest

from chalicelib import catalog
from chalicelib import config
from chalicelib import store as store_module
from tests import fake_civitai
from tests import support

SAMPLE_SHA256 = "3202778c3ebe5cf7ebe5fc51561deae8611f4362036eb7c02efa033c705e6240"
CHECKPOINT_SHA256 = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
WHIMSY = {"name": "pp-enchanted-whimsy", "alias": "pp-enchanted-whimsy", "path": "/l/pp.safetensors",
          "metadata": {"sshs_model_hash": "bf82986f8597" + "1" * 52}}
UNKNOWN_LORA = {"name": "mystery", "alias": "mystery", "path": "/l/mystery.safetensors",
                "metadata": {"sshs_model_hash": "e" * 64}}
NO_HASH_LORA = {"name": "old", "alias": "old", "path": "/l/old.pt", "metadata": {}}
CHECKPOINT = {"title": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "model_name": "v1-5-pruned-emaonly",
              "hash": "6ce0161689", "sha256": CHECKPOINT_SHA256, "filename": "/m/v1-5.safetensors", "config": None}


def checkpoint_version() -> dict:
    """A Civitai version for the checkpoint above, made from the real sample (test data)."""
    version = fake_civitai.load_sample()
    version.update(id=1, modelId=2, name="pruned-emaonly", baseModel="SD 1.5", trainedWords=[], air=None)
    version["model"] = {"name": "Stable Diffusion v1.5", "type": "Checkpoint", "nsfw": False, "poi": False}
    version["files"][0]["hashes"] = {"SHA256": CHECKPOINT_SHA256.upper(), "AutoV2": CHECKPOINT_SHA256[:10].upper()}
    return version


@pytest.fixture
def fake():
    with fake_civitai.FakeCivitai(versions=[checkpoint_version()]) as server:
        yield server


@pytest.fixture
def cache(job_store):
    return store_module.make_cache(job_store)


@pytest.fixture
def sqlite_cache(tmp_path):
    """For the timing tests, whose subject is Civitai, not the backend: SQLite only, to keep them fast."""
    job_store = store_module.make_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job_store.migrate()
    yield store_module.make_cache(job_store)
    job_store.database.close()


def context(fake_url: str, **settings) -> types.SimpleNamespace:
    """What enrichment reads of the context: the settings."""
    values = {"civitai_enabled": True, "civitai_base_url": fake_url, "civitai_budget": 0.5, "civitai_timeout": 5,
              **settings}
    return types.SimpleNamespace(settings=config.Settings(**values))


def enrich(ctx, items, cache, *, refresh=False):
    items = copy.deepcopy(items)
    started = time.monotonic()
    state = catalog.enrich(ctx, items, refresh=refresh, cache=cache)
    return items, state, time.monotonic() - started


def test_items_get_civitai_metadata_found_not_found_or_no_hash(fake, cache):
    items, state, _ = enrich(context(fake.url), [WHIMSY, UNKNOWN_LORA, NO_HASH_LORA, CHECKPOINT], cache)
    assert state == "complete"
    whimsy, unknown, no_hash, checkpoint = (item["civitai"] for item in items)
    assert whimsy["status"] == "found" and whimsy["hash_type"] == "AutoV3" and whimsy["hash"] == "bf82986f8597"
    assert whimsy["model_id"] == 1117241 and whimsy["version_id"] == 1255556
    assert whimsy["trained_words"] == ["in the style of ppWhimsy"] and whimsy["base_model"] == "Flux.1 D"
    assert whimsy["page_url"] == f"{fake.url.removesuffix('/api/v1')}/models/1117241?modelVersionId=1255556"
    assert whimsy["preview_images"][0]["url"].startswith("https://image.civitai.com/")
    assert whimsy["fetched_at"].endswith("Z")
    assert unknown["status"] == "not_found" and unknown["model_id"] is None and unknown["hash_type"] == "AutoV3"
    assert no_hash["status"] == "no_hash" and no_hash["hash"] is None
    assert checkpoint["status"] == "found" and checkpoint["hash_type"] == "SHA256"
    assert checkpoint["type"] == "Checkpoint" and checkpoint["base_model"] == "SD 1.5"
    # and A1111's own keys are untouched
    assert {k: v for k, v in items[0].items() if k != "civitai"} == WHIMSY


def test_answers_are_cached_found_and_not_found(fake, cache):
    ctx = context(fake.url)
    enrich(ctx, [WHIMSY, UNKNOWN_LORA], cache)
    assert len(fake.calls()) == 2
    # when the same items are enriched again
    items, state, _ = enrich(ctx, [WHIMSY, UNKNOWN_LORA], cache)
    # then Civitai is not asked again
    assert len(fake.calls()) == 2 and state == "complete"
    assert [item["civitai"]["status"] for item in items] == ["found", "not_found"]


def test_the_cache_is_shared_by_everyone_on_the_database(fake, cache, database_url):
    enrich(context(fake.url), [WHIMSY], cache)
    other = store_module.make_store(database_url)
    try:
        items, _, _ = enrich(context(fake.url), [WHIMSY], store_module.make_cache(other))
    finally:
        other.database.close()
    assert items[0]["civitai"]["status"] == "found" and len(fake.calls()) == 1


def age_entries(cache, seconds: float) -> None:
    """Make every cached Civitai answer `seconds` older (put() keeps a newer entry: delete it first)."""
    for key in ("autov3:bf82986f8597", "autov3:eeeeeeeeeeee"):
        entry = cache.get("civitai", key)
        if entry is None:
            continue
        if hasattr(cache.database, "write"):  # SQLite
            with cache.database.write() as conn:
                conn.execute("DELETE FROM cache_entries WHERE namespace = 'civitai' AND key = ?", (key,))
        else:
            cache.database.execute("DELETE FROM cache_entries WHERE namespace = 'civitai' AND key = %(key)s",
                                   {"key": key})
        cache.put("civitai", key, entry.value, now=entry.stored_at - seconds)


def test_found_and_not_found_answers_expire_after_their_own_ttls(fake, cache):
    ctx = context(fake.url, civitai_cache_ttl=1000, civitai_not_found_ttl=100)
    enrich(ctx, [WHIMSY, UNKNOWN_LORA], cache)
    # when both answers are 500 s old: past the not-found TTL, within the found one
    age_entries(cache, 500)
    enrich(ctx, [WHIMSY, UNKNOWN_LORA], cache)
    # then only the not-found hash is asked again
    assert [call["hashes"] for call in fake.calls()[2:]] == [["eeeeeeeeeeee"]]
    # and when the found answer is past its TTL too, it is asked again
    age_entries(cache, 1500)
    enrich(ctx, [WHIMSY, UNKNOWN_LORA], cache)
    assert sorted(h for call in fake.calls()[3:] for h in call["hashes"]) == ["bf82986f8597", "eeeeeeeeeeee"]


def test_refresh_asks_again_although_the_cache_is_fresh(fake, cache):
    ctx = context(fake.url)
    first, _, _ = enrich(ctx, [WHIMSY], cache)
    time.sleep(0.01)
    again, state, _ = enrich(ctx, [WHIMSY], cache, refresh=True)
    assert len(fake.calls()) == 2 and state == "complete"
    assert again[0]["civitai"]["fetched_at"] > first[0]["civitai"]["fetched_at"]


def test_a_slow_civitai_never_holds_the_answer_past_the_budget(fake, sqlite_cache):
    # given Civitai takes 1.5 s to answer and the budget is 0.5 s
    fake.set_faults(delay=1.5)
    ctx = context(fake.url)
    items, state, took = enrich(ctx, [WHIMSY, NO_HASH_LORA], sqlite_cache)
    # then the answer comes within the budget, saying enrichment is partial
    assert took < 1.0 and state == "partial"
    assert [item["civitai"]["status"] for item in items] == ["unavailable", "no_hash"]
    assert items[0]["civitai"]["hash"] == "bf82986f8597"
    # and the lookup finishes in the background, so the next answer has it without a new call
    support.wait_until(lambda: sqlite_cache.get("civitai", "autov3:bf82986f8597"), timeout=5, what="the late answer")
    fake.set_faults(delay=0)
    items, state, _ = enrich(ctx, [WHIMSY], sqlite_cache)
    assert state == "complete" and items[0]["civitai"]["status"] == "found" and len(fake.calls()) == 1


def test_a_rate_limited_civitai_answers_unavailable_and_is_left_alone_while_backing_off(fake, sqlite_cache):
    # given Civitai answers 429 to everything
    fake.set_faults(fail_next=100, fail_status=429)
    ctx = context(fake.url)
    items, state, took = enrich(ctx, [WHIMSY], sqlite_cache)
    assert took < 1.0 and state == "partial" and items[0]["civitai"]["status"] == "unavailable"
    assert sqlite_cache.get("civitai", "autov3:bf82986f8597") is None  # failures are not cached
    support.wait_until(lambda: len(fake.calls()) == 2, timeout=3, what="the lookup's one retry")
    # when more lookups come during the backoff
    items, state, took = enrich(ctx, [WHIMSY, UNKNOWN_LORA], sqlite_cache)
    # then they answer at once, without calling Civitai
    assert took < 0.3 and state == "partial" and len(fake.calls()) == 2


def test_a_down_civitai_never_waits_out_the_budget(sqlite_cache):
    # given nothing listens where Civitai should be, and a generous budget
    ctx = context(f"http://127.0.0.1:{support.free_port()}/api/v1", civitai_budget=5)
    # then the first answer waits only for one retry (1 s backoff), the next ones not at all
    items, state, took = enrich(ctx, [WHIMSY, UNKNOWN_LORA], sqlite_cache)
    assert took < 1.6 and state == "partial"
    assert {item["civitai"]["status"] for item in items} == {"unavailable"}
    items, state, took = enrich(ctx, [WHIMSY, UNKNOWN_LORA], sqlite_cache)
    assert took < 0.3 and state == "partial"


def test_an_expired_answer_is_served_while_civitai_is_down(fake, cache):
    ctx = context(fake.url, civitai_cache_ttl=60)
    enrich(ctx, [WHIMSY], cache)
    age_entries(cache, 120)
    fake.set_faults(fail_next=100, fail_status=503)
    items, state, _ = enrich(ctx, [WHIMSY], cache)
    # then the last answer is served (its fetched_at says how old), and the header will say partial
    assert state == "partial" and items[0]["civitai"]["status"] == "found"
    assert items[0]["civitai"]["model_id"] == 1117241


def test_enrichment_off_adds_nothing(fake, cache):
    items, state, _ = enrich(context(fake.url, civitai_enabled=False), [WHIMSY], cache)
    assert state == "disabled" and "civitai" not in items[0] and fake.calls() == []


def test_many_checkpoints_are_looked_up_in_bulk(fake, cache):
    checkpoints = [CHECKPOINT] + [dict(CHECKPOINT, title=f"m{n}", sha256=f"{n:064x}", hash=f"{n:010x}")
                                  for n in range(1, 5)]
    items, state, _ = enrich(context(fake.url), checkpoints, cache)
    assert state == "complete"
    assert [item["civitai"]["status"] for item in items] == ["found"] + ["not_found"] * 4
    assert [(call["method"], len(call["hashes"])) for call in fake.calls()] == [("POST", 5)]
