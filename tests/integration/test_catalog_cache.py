"""The cache port's contract, on every store backend (SQLite file and Postgres)."""
from __future__ import annotations

import pytest

from chalicelib import store as store_module


@pytest.fixture
def cache(job_store):
    return store_module.make_cache(job_store)


def test_nothing_stored_is_none(cache):
    assert cache.get("civitai", "sha256:00") is None
    assert cache.get_many("civitai", ["a", "b"]) == {}
    assert cache.get_many("civitai", []) == {}


def test_a_value_comes_back_as_stored_with_its_time(cache):
    # given a JSON document with nesting, unicode and a NUL (LoRA metadata carries anything)
    value = [{"name": "ghibli ✓", "metadata": {"note": "a\u0000b", "n": 1.5, "ok": True, "none": None}}]
    cache.put("a1111", "http://gpu:7860 /sdapi/v1/loras", value, now=1000.25)
    entry = cache.get("a1111", "http://gpu:7860 /sdapi/v1/loras")
    assert entry.value == value and entry.stored_at == 1000.25
    assert entry.age(now=1010.25) == 10 and entry.age(now=0) == 0


def test_a_newer_put_replaces_and_an_older_one_does_not(cache):
    cache.put("civitai", "k", {"v": 1}, now=100)
    cache.put("civitai", "k", {"v": 2}, now=200)
    assert cache.get("civitai", "k") == ({"v": 2}, 200)
    # when a slow writer finishes late with what it learnt earlier
    cache.put("civitai", "k", {"v": "late"}, now=150)
    # then the newer entry stays
    assert cache.get("civitai", "k") == ({"v": 2}, 200)


def test_namespaces_are_separate(cache):
    cache.put("civitai", "k", "civitai's", now=1)
    cache.put("a1111", "k", "a1111's", now=2)
    assert cache.get("civitai", "k").value == "civitai's" and cache.get("a1111", "k").value == "a1111's"


def test_get_many_returns_what_exists_by_key(cache):
    for n in range(5):
        cache.put("civitai", f"k{n}", {"n": n}, now=n)
    found = cache.get_many("civitai", ["k1", "k3", "missing", "k3"])
    assert {key: entry.value["n"] for key, entry in found.items()} == {"k1": 1, "k3": 3}
    assert found["k3"].stored_at == 3


def test_get_many_handles_more_keys_than_one_statement_takes(cache):
    for n in range(3):
        cache.put("civitai", f"k{n}", n, now=1)
    keys = [f"absent{n}" for n in range(1200)] + ["k0", "k2"]
    assert set(cache.get_many("civitai", keys)) == {"k0", "k2"}


def test_two_stores_on_one_database_share_the_cache(database_url, cache):
    # given a second process's store on the same database
    other = store_module.make_store(database_url)
    try:
        cache.put("civitai", "shared", {"from": "first"}, now=5)
        assert store_module.make_cache(other).get("civitai", "shared").value == {"from": "first"}
    finally:
        other.database.close()
