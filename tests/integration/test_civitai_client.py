"""The Civitai client and lookup pool against a fake Civitai serving the real sample (tests/fake_civitai.py)."""
from __future__ import annotations

import threading
import time

import pytest

from chalicelib import civitai
from tests import fake_civitai
from tests import support

SAMPLE_SHA256 = "3202778c3ebe5cf7ebe5fc51561deae8611f4362036eb7c02efa033c705e6240"
UNKNOWN_SHA256 = "0" * 64


@pytest.fixture
def fake():
    with fake_civitai.FakeCivitai() as server:
        yield server


def client_for(fake, **kwargs) -> civitai.CivitaiClient:
    kwargs.setdefault("sleep", lambda seconds: None)
    return civitai.CivitaiClient(fake.url, **kwargs)


@pytest.mark.parametrize("kind, value", [("SHA256", SAMPLE_SHA256), ("SHA256", SAMPLE_SHA256.upper()),
                                         ("AutoV2", "3202778c3e"), ("AutoV3", "bf82986f8597")])
def test_the_sample_is_found_by_any_of_its_hashes(fake, kind, value):
    version = client_for(fake).by_hash(civitai.hash_ref(kind, value))
    assert version["id"] == 1255556 and version["model"]["type"] == "LORA"
    assert "creator" not in version  # the fake answers like Civitai, not like the client that saved the sample


def test_an_unknown_hash_is_none(fake):
    assert client_for(fake).by_hash(civitai.HashRef("SHA256", UNKNOWN_SHA256)) is None
    assert [call["path"] for call in fake.calls()] == [f"/api/v1/model-versions/by-hash/{UNKNOWN_SHA256}"]


def test_the_api_key_is_sent_as_a_bearer_token_only_when_set(fake):
    ref = civitai.HashRef("AutoV2", "3202778c3e")
    client_for(fake, api_key="civitai-key-123").by_hash(ref)
    client_for(fake).by_hash(ref)
    assert [call["authorization"] for call in fake.calls()] == ["Bearer civitai-key-123", None]
    assert "civitai-key-123" not in repr(client_for(fake, api_key="civitai-key-123"))


def test_the_bulk_lookup_maps_every_hash_in_one_call(fake):
    found = client_for(fake).by_sha256s([civitai.HashRef("SHA256", SAMPLE_SHA256),
                                         civitai.HashRef("SHA256", UNKNOWN_SHA256)])
    assert found[SAMPLE_SHA256]["id"] == 1255556 and found[UNKNOWN_SHA256] is None
    (call,) = fake.calls()
    assert call["method"] == "POST" and call["hashes"] == [SAMPLE_SHA256.upper(), UNKNOWN_SHA256]


def test_the_bulk_lookup_takes_only_sha256_and_at_most_100(fake):
    client = client_for(fake)
    with pytest.raises(ValueError):
        client.by_sha256s([civitai.HashRef("AutoV2", "3202778c3e")])
    with pytest.raises(ValueError):
        client.by_sha256s([civitai.HashRef("SHA256", f"{n:064x}") for n in range(101)])
    assert fake.calls() == []


def test_429_is_retried_once_after_backing_off(fake):
    # given Civitai rate-limits once, without Retry-After
    fake.set_faults(fail_next=1, fail_status=429)
    sleeps = []
    client = client_for(fake, sleep=sleeps.append)
    # then the second attempt gets the answer, after a wait of about 1 s
    assert client.by_hash(civitai.HashRef("AutoV3", "bf82986f8597"))["id"] == 1255556
    assert len(fake.calls()) == 2 and [round(s) for s in sleeps] == [1]
    assert client.cooldown.remaining() == 0  # a success ends the backoff


def test_retry_after_is_honoured(fake):
    fake.set_faults(fail_next=1, fail_status=503, retry_after="4")
    sleeps = []
    assert client_for(fake, sleep=sleeps.append).by_hash(civitai.HashRef("AutoV2", "3202778c3e"))["id"] == 1255556
    assert [round(s) for s in sleeps] == [4]


def test_a_long_retry_after_is_not_waited_for_in_a_lookup(fake):
    fake.set_faults(fail_next=1, fail_status=429, retry_after="25")
    sleeps = []
    client = client_for(fake, sleep=sleeps.append)
    with pytest.raises(civitai.CivitaiUnavailable, match="answered 429"):
        client.by_hash(civitai.HashRef("AutoV2", "3202778c3e"))
    assert sleeps == [] and len(fake.calls()) == 1 and client.cooldown.remaining() > 20


def test_a_lasting_5xx_gives_up_and_later_lookups_do_not_call_while_backing_off(fake):
    fake.set_faults(fail_next=10, fail_status=500)
    client = client_for(fake)
    with pytest.raises(civitai.CivitaiUnavailable, match="answered 500"):
        client.by_hash(civitai.HashRef("AutoV2", "3202778c3e"))
    assert len(fake.calls()) == civitai.MAX_ATTEMPTS == 2
    # when another lookup starts during the backoff
    with pytest.raises(civitai.CivitaiUnavailable, match="backing off"):
        client.by_hash(civitai.HashRef("AutoV3", "bf82986f8597"))
    # then Civitai is not called
    assert len(fake.calls()) == 2
    # and once the backoff is over (and Civitai is back), it is called again
    fake.set_faults(fail_next=0)
    client.cooldown.reset()
    assert client.by_hash(civitai.HashRef("AutoV3", "bf82986f8597"))["id"] == 1255556
    assert len(fake.calls()) == 3
def test_a_refused_key_is_not_retried(fake):
    fake.set_faults(fail_next=5, fail_status=401)
    with pytest.raises(civitai.CivitaiUnavailable, match="401"):
        client_for(fake, api_key="wrong").by_hash(civitai.HashRef("AutoV2", "3202778c3e"))
    assert len(fake.calls()) == 1


def test_a_slow_answer_is_a_timeout(fake):
    fake.set_faults(delay=2)
    started = time.monotonic()
    with pytest.raises(civitai.CivitaiUnavailable, match="could not be reached"):
        client_for(fake, timeout=0.2, max_attempts=1).by_hash(civitai.HashRef("AutoV2", "3202778c3e"))
    assert time.monotonic() - started < 1.5


def test_an_unreachable_civitai_is_unavailable():
    client = civitai.CivitaiClient(f"http://127.0.0.1:{support.free_port()}/api/v1", max_attempts=1)
    with pytest.raises(civitai.CivitaiUnavailable):
        client.by_hash(civitai.HashRef("AutoV2", "3202778c3e"))


# --- the pool ------------------------------------------------------------------------------------

def autov2_refs(count: int) -> list[civitai.HashRef]:
    return [civitai.HashRef("AutoV2", f"{n:010x}") for n in range(count)]


def test_the_pool_never_runs_more_lookups_at_once_than_its_concurrency(fake):
    # given a slow Civitai and a pool of 2
    fake.set_faults(delay=0.15)
    pool = civitai.LookupPool(client_for(fake), concurrency=2)
    # when 8 lookups are submitted at once
    futures = pool.submit(autov2_refs(8), on_result=lambda ref, version: version)
    results = [future.result(timeout=10) for future in futures.values()]
    # then all finished, with 2 in flight at once and never more
    assert results == [None] * 8 and len(fake.calls()) == 8
    assert fake.stats()["max_in_flight"] == 2


def test_concurrent_lookups_of_one_hash_share_one_call(fake):
    fake.set_faults(delay=0.3)
    pool = civitai.LookupPool(client_for(fake), concurrency=3)
    ref = civitai.HashRef("AutoV3", "bf82986f8597")
    first = pool.submit([ref], on_result=lambda r, version: version["id"])
    second = pool.submit([ref, ref], on_result=lambda r, version: "never used")
    assert first[ref.key] is second[ref.key]
    assert second[ref.key].result(timeout=5) == 1255556
    assert len(fake.calls()) == 1
    # and once it is done, a new lookup calls again
    pool.submit([ref], on_result=lambda r, version: version["id"])[ref.key].result(timeout=5)
    assert len(fake.calls()) == 2


def test_many_sha256_lookups_go_in_bulk_calls_of_at_most_100(fake):
    pool = civitai.LookupPool(client_for(fake), concurrency=2)
    refs = [civitai.HashRef("SHA256", SAMPLE_SHA256)] + [civitai.HashRef("SHA256", f"{n:064x}") for n in range(1, 150)]
    futures = pool.submit(refs + [civitai.HashRef("AutoV3", "bf82986f8597")],
                          on_result=lambda ref, version: version and version["id"])
    assert futures[f"sha256:{SAMPLE_SHA256}"].result(timeout=5) == 1255556
    assert futures["autov3:bf82986f8597"].result(timeout=5) == 1255556
    assert all(futures[ref.key].result(timeout=5) is None for ref in refs[1:])
    calls = fake.calls()
    assert sorted((call["method"], len(call["hashes"])) for call in calls) == [("GET", 1), ("POST", 50), ("POST", 100)]


def test_a_few_sha256_lookups_go_one_by_one(fake):
    pool = civitai.LookupPool(client_for(fake), concurrency=2)
    futures = pool.submit([civitai.HashRef("SHA256", SAMPLE_SHA256), civitai.HashRef("SHA256", UNKNOWN_SHA256)],
                          on_result=lambda ref, version: version and version["id"])
    assert [f.result(timeout=5) for f in futures.values()] == [1255556, None]
    assert [call["method"] for call in fake.calls()] == ["GET", "GET"]


def test_a_failed_lookup_fails_its_future_and_on_result_is_not_called(fake):
    fake.set_faults(fail_next=10, fail_status=502)
    stored = []
    pool = civitai.LookupPool(client_for(fake, max_attempts=1), concurrency=1)
    (future,) = pool.submit([civitai.HashRef("AutoV2", "3202778c3e")],
                            on_result=lambda ref, version: stored.append(ref)).values()
    with pytest.raises(civitai.CivitaiUnavailable):
        future.result(timeout=5)
    assert stored == []


def test_idle_pool_threads_end_and_new_work_starts_new_ones(fake, monkeypatch):
    monkeypatch.setattr(civitai, "IDLE_SECONDS", 0.1)
    pool = civitai.LookupPool(client_for(fake), concurrency=2)
    before = threading.active_count()
    [f.result(timeout=5) for f in pool.submit(autov2_refs(4), on_result=lambda r, v: v).values()]
    support.wait_until(lambda: threading.active_count() <= before, timeout=3, what="idle threads to end")
    (future,) = pool.submit([civitai.HashRef("AutoV3", "bf82986f8597")], on_result=lambda r, v: v["id"]).values()
    assert future.result(timeout=5) == 1255556


def test_the_shared_pool_is_one_per_configuration():
    one = civitai.shared_pool("http://127.0.0.1:1/api/v1", api_key="k", timeout=1.0, concurrency=2)
    assert civitai.shared_pool("http://127.0.0.1:1/api/v1/", api_key="k", timeout=1.0, concurrency=2) is one
    assert civitai.shared_pool("http://127.0.0.1:1/api/v1", api_key="other", timeout=1.0, concurrency=2) is not one
