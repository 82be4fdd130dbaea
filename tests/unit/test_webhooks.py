"""Webhooks without a network: signing (and the Standard Webhooks test vector), secrets, the SSRF
rule with a stubbed resolver, the retry schedule, body size limits, and the two routes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import standardwebhooks
from chalice import test as chalice_test

from chalicelib import config
from chalicelib import context as context_module
from chalicelib.webhooks import attempt
from chalicelib.webhooks import dispatch
from chalicelib.webhooks import events
from chalicelib.webhooks import redelivery
from chalicelib.webhooks import signing
from chalicelib.webhooks import url_safety
from chalicelib.store import base as store_base

# Published with Standard Webhooks (libraries/python/tests/test_webhooks.py, test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# --- signing -------------------------------------------------------------------------------------

def test_signature_matches_the_standard_webhooks_test_vector():
    headers = signing.signature_headers(VECTOR_SECRET, webhook_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP,
                                         body=VECTOR_PAYLOAD)
    assert headers == {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP),
                       "webhook-signature": VECTOR_SIGNATURE}


def test_a_plain_secret_signs_with_its_utf8_bytes():
    now = int(time.time())
    body = '{"type":"job.completed"}'
    headers = signing.signature_headers("plain-secret", webhook_id="msg_1", timestamp=now, body=body)
    expected = hmac.new(b"plain-secret", f"msg_1.{now}.{body}".encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    # ... which is what a receiver gets from the package when it passes the secret as bytes.
    assert standardwebhooks.Webhook(b"plain-secret").verify(body, headers) == {"type": "job.completed"}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(b"other-secret").verify(body, headers)


def test_a_whsec_secret_verifies_with_the_package_as_a_string():
    now = int(time.time())
    headers = signing.signature_headers(VECTOR_SECRET, webhook_id="msg_2", timestamp=now, body="{}")
    assert standardwebhooks.Webhook(VECTOR_SECRET).verify("{}", headers) == {}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(VECTOR_SECRET).verify('{"tampered":1}', headers)


def test_request_headers_carry_the_shared_secret_only_when_enabled():
    on = signing.request_headers("k3y", webhook_id="msg_3", timestamp=1, body="{}", send_secret_header=True)
    off = signing.request_headers("k3y", webhook_id="msg_3", timestamp=1, body="{}", send_secret_header=False)
    assert on["X-Webhook-Secret"] == "k3y" and "X-Webhook-Secret" not in off
    assert on["webhook-signature"] == off["webhook-signature"] and on["Content-Type"] == "application/json"


@pytest.mark.parametrize("secret, problem", [
    ("plain-secret", None),
    (VECTOR_SECRET, None),
    ("whsec_==", "non-empty base64"),
    ("whsec_not*base64!", "non-empty base64"),
    ("pässwörd", "printable ASCII"),
    ("has space", "printable ASCII"),
])
def test_secret_problems_are_named_without_the_secret(secret, problem):
    found = signing.secret_problem(secret)
    if problem is None:
        assert found is None
    else:
        assert problem in found and secret not in found


# --- URL safety ----------------------------------------------------------------------------------

class Resolver:
    """A stub DNS: names it knows, and every lookup it was asked for."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names, self.asked = names, []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.names:
            raise OSError("Name or service not known")
        return self.names[host]


DNS = Resolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
                "intranet.example.com": ["10.1.2.3"],
                "sneaky.example.com": ["93.184.215.14", "127.0.0.1"]})

REFUSED = {
    "loopback": ("http://127.0.0.1/h", "loopback"),
    "private": ("http://10.0.0.1/h", "private"),
    "metadata": ("http://169.254.169.254/latest/meta-data/", "link-local"),
    "IPv6 loopback": ("http://[::1]/h", "loopback"),
    "name resolving to a private address": ("https://intranet.example.com/h", "resolves to 10.1.2.3, a private"),
    "name with one private address": ("https://sneaky.example.com/h", "resolves to 127.0.0.1, a loopback"),
    "ftp": ("ftp://hooks.example.com/h", "http or https"),
    "credentials": ("http://user:pw@hooks.example.com/h", "credentials"),
    "unique-local": ("http://[fd00::1]/h", "unique-local"),
    "multicast": ("http://224.0.0.1/h", "multicast"),
    "IPv4-mapped loopback": ("http://[::ffff:127.0.0.1]/h", "loopback"),
    "unspecified": ("http://0.0.0.0/h", "unspecified"),
    "carrier-grade NAT": ("http://100.64.0.1/h", "not globally routable"),
    "IPv6 link-local": ("http://[fe80::1]/h", "link-local"),
}


@pytest.mark.parametrize("url, reason", REFUSED.values(), ids=REFUSED.keys())
def test_unsafe_webhook_urls_are_refused_naming_the_reason(url, reason):
    with pytest.raises(url_safety.UnsafeWebhookUrl) as refused:
        url_safety.check_url(url, allow_private=False, resolver=DNS)
    assert reason in refused.value.reason
    assert "/h" not in refused.value.reason and "pw" not in refused.value.reason


def test_a_public_name_is_accepted_with_every_address_it_resolves_to():
    target = url_safety.check_url("https://hooks.example.com:8443/sd?x=1", allow_private=False, resolver=DNS)
    assert target.addresses == ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert (target.scheme, target.host, target.port, target.path) == ("https", "hooks.example.com", 8443, "/sd?x=1")
    assert target.host_header == "hooks.example.com:8443"


def test_a_name_that_does_not_resolve_is_its_own_error():
    with pytest.raises(url_safety.UnresolvableWebhookHost) as refused:
        url_safety.check_url("https://nowhere.example.com/h", allow_private=False, resolver=DNS)
    assert "does not resolve" in refused.value.reason


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/h", "http://10.0.0.1/h", "http://[::1]/h",
                                 "https://intranet.example.com/h"])
def test_allow_private_lifts_the_address_rule(url):
    assert url_safety.check_url(url, allow_private=True, resolver=DNS).addresses


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/h", "http://user:pw@127.0.0.1/h"])
def test_allow_private_keeps_the_syntax_rules(url):
    with pytest.raises(url_safety.UnsafeWebhookUrl):
        url_safety.check_url(url, allow_private=True, resolver=DNS)


def test_allow_private_at_submit_needs_no_dns():
    resolver = Resolver({})
    target = url_safety.check_url("https://anything.internal/h", allow_private=True, resolver=resolver,
                                resolve_names=False)
    assert target.addresses == () and resolver.asked == []


def test_an_attempt_at_a_url_that_now_resolves_privately_sends_nothing():
    result = attempt.send("https://intranet.example.com/h", secret="k", webhook_id="msg_4", body="{}",
                          timeout=1, allow_private=False, send_secret_header=True, resolver=DNS)
    assert result.status_code is None and result.error.startswith("not sent:") and "private" in result.error


# IPv6 transition addresses that carry IPv4 inside, and 192.0.0.0/24, by literal and by name.
TRANSITION = {
    "NAT64 around a private IPv4": ("http://[64:ff9b::a00:1]/h", "NAT64 (64:ff9b::/96)"),
    "NAT64 around a public IPv4": ("http://[64:ff9b::808:808]/h", "NAT64 (64:ff9b::/96)"),
    "local-use NAT64": ("http://[64:ff9b:1::a00:1]/h", "local-use NAT64 (64:ff9b:1::/48)"),
    "6to4 around 10.0.0.1": ("http://[2002:a00:1::1]/h", "6to4 (2002::/16)"),
    "6to4 around a public IPv4": ("http://[2002:808:808::1]/h", "6to4 (2002::/16)"),
    "IPv4-compatible private": ("http://[::10.0.0.1]/h", "IPv4-compatible"),
    "IPv4-compatible public": ("http://[::8.8.8.8]/h", "IPv4-compatible"),
    "192.0.0.1": ("http://192.0.0.1/h", "192.0.0.0/24"),
    "192.0.0.9 (global in ipaddress)": ("http://192.0.0.9/h", "192.0.0.0/24"),
    "192.0.0.170": ("http://192.0.0.170/h", "192.0.0.0/24"),
    "a name resolving to NAT64": ("https://nat64.example.com/h", "resolves to 64:ff9b::7f00:1"),
    "a name resolving to 6to4": ("https://sixtofour.example.com/h", "resolves to 2002:7f00:1::1"),
}
TRANSITION_DNS = Resolver({"nat64.example.com": ["93.184.215.14", "64:ff9b::7f00:1"],
                           "sixtofour.example.com": ["2002:7f00:1::1"]})


@pytest.mark.parametrize("url, reason", TRANSITION.values(), ids=TRANSITION.keys())
def test_transition_addresses_and_192_0_0_0_24_are_refused(url, reason):
    with pytest.raises(url_safety.UnsafeWebhookUrl) as refused:
        url_safety.check_url(url, allow_private=False, resolver=TRANSITION_DNS)
    assert reason in refused.value.reason and "publicly reachable" in refused.value.reason


@pytest.mark.parametrize("url", [url for url, _ in TRANSITION.values()], ids=TRANSITION.keys())
def test_transition_addresses_are_allowed_with_allow_private(url):
    assert url_safety.check_url(url, allow_private=True, resolver=TRANSITION_DNS).addresses


def test_public_neighbours_of_the_new_ranges_stay_accepted():
    for url in ("http://192.0.1.1/h", "http://[2001:4860:4860::8888]/h", "http://[64:ff9c::1]/h"):
        assert url_safety.check_url(url, allow_private=False).addresses


def test_an_internationalized_host_goes_out_in_its_idna_form():
    resolver = Resolver({"xn--bcher-kva.example.com": ["93.184.215.14"]})
    target = url_safety.check_url("https://bücher.example.com:8443/hoök?q=ä b", allow_private=False,
                                  resolver=resolver)
    assert target.host == "xn--bcher-kva.example.com" and resolver.asked == [("xn--bcher-kva.example.com", 8443)]
    assert target.host_header == "xn--bcher-kva.example.com:8443"
    assert target.path == "/ho%C3%B6k?q=%C3%A4%20b" and target.path.isascii()


def test_a_host_that_is_not_a_valid_idn_is_refused_clearly():
    with pytest.raises(url_safety.UnsafeWebhookUrl) as refused:
        url_safety.check_url(f"https://{'ä' * 64}.example.com/h", allow_private=True, resolver=DNS)
    assert "internationalized domain name" in refused.value.reason


def test_an_attempt_at_an_invalid_idn_host_fails_cleanly():
    result = attempt.send(f"https://{'ä' * 64}.example.com/h", secret="k", webhook_id="msg_5", body="{}",
                          timeout=1, allow_private=True, send_secret_header=True, resolver=DNS)
    assert result.status_code is None and result.error.startswith("not sent:")
    assert "internationalized domain name" in result.error


def test_a_dns_lookup_slower_than_the_deadline_is_cut_short():
    def slow(host, port):
        time.sleep(2)
        return ["93.184.215.14"]

    started = time.monotonic()
    with pytest.raises(url_safety.UnresolvableWebhookHost) as refused:
        url_safety.check_url("https://slow.example.com/h", allow_private=False, resolver=slow, timeout=0.3)
    assert time.monotonic() - started < 1.0 and "within 0.3 s" in refused.value.reason


def test_the_claim_must_outlast_the_attempt():
    with pytest.raises(ValueError) as refused:
        config.Settings(webhook_timeout=10, webhook_claim_seconds=11)
    assert "WEBHOOK_CLAIM_SECONDS (11) must be at least WEBHOOK_TIMEOUT + 2 s (12)" in str(refused.value)
    assert config.Settings(webhook_timeout=10, webhook_claim_seconds=12).webhook_claim_seconds == 12


# --- retries -------------------------------------------------------------------------------------

def test_the_default_schedule_is_nine_retries_over_about_fifteen_hours():
    schedule = config.Settings().webhook_retry_delays()
    assert schedule == [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800]
    assert dispatch.max_attempts(schedule) == 10


@pytest.mark.parametrize("text, seconds", [("5s, 30s,2m", [5, 30, 120]), ("0.25,1h", [0.25, 3600]),
                                           ("250ms", [0.25]), ("", [])])
def test_retry_schedule_parses_units(text, seconds):
    assert config.parse_durations(text) == seconds


@pytest.mark.parametrize("text", ["5x", "-1s", "soon", "nan"])
def test_a_bad_retry_schedule_stops_the_settings(text):
    with pytest.raises(ValueError):
        config.Settings(webhook_retry_schedule=text)


def test_retry_delays_are_jittered_around_the_schedule_then_give_up():
    schedule = [5.0, 30.0]
    firsts = [dispatch.retry_delay(1, schedule=schedule) for _ in range(200)]
    assert all(4.0 <= d <= 6.0 for d in firsts) and max(firsts) - min(firsts) > 0.5
    assert all(24.0 <= dispatch.retry_delay(2, schedule=schedule) <= 36.0 for _ in range(50))
    assert dispatch.retry_delay(3, schedule=schedule) is None


@pytest.mark.parametrize("status, error, attempt, expected", [
    (200, None, 1, "delivered"), (204, None, 3, "delivered"),
    (410, None, 1, "failed"),
    (500, None, 1, "pending"), (301, None, 1, "pending"), (None, "ReadTimeoutError", 1, "pending"),
    (500, None, 3, "failed"),
])
def test_the_outcome_of_an_attempt(status, error, attempt, expected):
    result = store_base.AttemptResult(status_code=status, response=None, error=error)
    outcome, next_at = dispatch.outcome(result, attempt_number=attempt, schedule=[1.0, 1.0])
    assert outcome == expected
    assert (next_at is not None) == (expected == "pending")


# --- bodies --------------------------------------------------------------------------------------

def detail(images=("A" * 3000,), preview=None, init_images=None) -> dict:
    return {"job_id": "j1", "status": "completed", "progress": {"progress": 1.0, "current_image": preview},
            "request": {"prompt": "p", **({"init_images": init_images} if init_images else {})},
            "result": {"images": list(images), "parameters": {}, "info": "{}"},
            "image_urls": ["https://api.example.com/sdapi/v1/jobs/j1/images/0"]}


def test_a_body_under_the_limit_carries_its_images_inline():
    body = json.loads(events.build_body("job.completed", event_at=0, detail=detail(), max_inline_bytes=10_000))
    assert body["type"] == "job.completed" and body["timestamp"] == "1970-01-01T00:00:00.000Z"
    assert body["data"]["result"]["images"] == ["A" * 3000] and body["omitted"] == []


def test_a_body_over_the_limit_carries_image_urls_and_says_so():
    text = events.build_body("job.completed", event_at=0, detail=detail(), max_inline_bytes=2000)
    body = json.loads(text)
    assert body["data"]["result"]["images"] == [] and body["omitted"] == ["data.result.images"]
    assert body["data"]["image_urls"] == ["https://api.example.com/sdapi/v1/jobs/j1/images/0"]
    assert len(text) <= 2000


def test_previews_and_init_images_go_next_when_still_too_big():
    big = detail(preview="P" * 3000, init_images=["I" * 3000])
    body = json.loads(events.build_body("job.progress", event_at=0, detail=big, max_inline_bytes=2000))
    assert body["omitted"] == ["data.result.images", "data.progress.current_image", "data.request.init_images"]
    assert body["data"]["request"]["prompt"] == "p"


# --- routes --------------------------------------------------------------------------------------

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
BOB = {"Authorization": "Bearer tok-bob", "Content-Type": "application/json"}
HOOK = {"webhook_url": "https://hooks.example.com/sd", "webhook_secret": "s3cret-value"}


@pytest.fixture
def client(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice,bob:tok-bob")
    monkeypatch.setenv("A1111_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "false")
    monkeypatch.setattr(url_safety, "resolve_host", Resolver(DNS.names))
    context_module.reset_context()
    from app import app
    with chalice_test.Client(app) as test_client:
        yield test_client
    context_module.reset_context()


def submit(client, body, headers=ALICE):
    return client.http.post("/sdapi/v1/txt2img", headers=headers, body=json.dumps({"prompt": "p", **body}))


def job_count() -> int:
    return sum(context_module.get_context().store.count_by_status().values())


@pytest.mark.parametrize("url, reason", [
    ("http://10.0.0.1/h", "private"), ("http://169.254.169.254/", "link-local"), ("http://[::1]/", "loopback"),
    ("https://intranet.example.com/h", "resolves to 10.1.2.3"),
])
def test_submit_refuses_an_unsafe_webhook_url_with_422(client, url, reason):
    response = submit(client, {**HOOK, "webhook_url": url})
    assert response.status_code == 422
    [problem] = response.json_body["detail"]
    assert problem["loc"] == ["body", "webhook_url"] and problem["type"] == "url_unsafe"
    assert reason in problem["msg"] and "s3cret-value" not in response.body.decode()
    assert job_count() == 0


def test_submit_refuses_an_unresolvable_host(client):
    response = submit(client, {**HOOK, "webhook_url": "https://nowhere.example.com/h"})
    assert response.status_code == 422 and response.json_body["detail"][0]["type"] == "url_unresolvable"


@pytest.mark.parametrize("secret, msg", [(None, "required"), ("whsec_", "base64")])
def test_submit_needs_a_usable_webhook_secret(client, secret, msg):
    body = {"webhook_url": HOOK["webhook_url"], **({"webhook_secret": secret} if secret else {})}
    response = submit(client, body)
    assert response.status_code == 422
    assert response.json_body["detail"][0]["loc"] == ["body", "webhook_secret"]
    assert msg in response.json_body["detail"][0]["msg"]


def test_allow_private_accepts_a_loopback_receiver(client, monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    context_module.reset_context()
    assert submit(client, {**HOOK, "webhook_url": "http://127.0.0.1:9000/hook"}).status_code == 202


def test_cancelling_a_queued_job_records_a_job_cancelled_delivery(client):
    job = submit(client, HOOK).json_body
    assert client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE).status_code == 200
    response = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks", headers=ALICE)
    assert response.status_code == 200
    listing = response.json_body
    assert listing["webhook_url"] == HOOK["webhook_url"] and listing["next_cursor"] is None
    [delivery] = listing["deliveries"]
    assert delivery["type"] == "job.cancelled" and delivery["status"] == "pending"
    assert delivery["webhook_id"].startswith("msg_") and delivery["attempts"] == []
    assert "s3cret-value" not in response.body.decode()


def test_webhook_routes_hide_other_owners_jobs(client):
    job = submit(client, HOOK).json_body
    assert client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks", headers=BOB).status_code == 404
    assert client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/webhooks/redeliver", headers=BOB).status_code == 404
    assert client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks").status_code == 401


def test_redeliver_sends_the_latest_event_again_under_a_new_id(client):
    job = submit(client, HOOK).json_body
    client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE)
    response = client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/webhooks/redeliver", headers=ALICE)
    assert response.status_code == 202
    again = response.json_body
    deliveries = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks", headers=ALICE).json_body["deliveries"]
    assert [d["webhook_id"] for d in deliveries][0] == again["webhook_id"]
    assert again["redelivery_of"] == deliveries[1]["webhook_id"] != again["webhook_id"]
    assert again["type"] == "job.cancelled" and again["status"] == "pending"


def test_redeliver_without_an_event_or_a_webhook_is_409(client):
    queued = submit(client, HOOK).json_body
    plain = submit(client, {}).json_body
    for job in (queued, plain):
        response = client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/webhooks/redeliver", headers=ALICE)
        assert response.status_code == 409


def test_delivery_list_is_paginated(client, monkeypatch):
    monkeypatch.setenv("WEBHOOK_REDELIVER_INTERVAL", "0")
    context_module.reset_context()
    job = submit(client, HOOK).json_body
    client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE)
    for _ in range(2):
        assert client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/webhooks/redeliver", headers=ALICE).status_code == 202
    first = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks?limit=2", headers=ALICE).json_body
    second = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks?limit=2&cursor={first['next_cursor']}",
                             headers=ALICE).json_body
    assert len(first["deliveries"]) == 2 and len(second["deliveries"]) == 1 and second["next_cursor"] is None
    assert client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks?limit=0", headers=ALICE).status_code == 422



def redeliver(client, job, headers=ALICE):
    return client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/webhooks/redeliver", headers=headers)


def test_redeliver_is_limited_per_job_with_retry_after(client):
    job, other = submit(client, HOOK).json_body, submit(client, HOOK).json_body
    for each in (job, other):
        client.http.post(f"/sdapi/v1/jobs/{each['job_id']}/cancel", headers=ALICE)
    assert redeliver(client, job).status_code == 202
    refused = redeliver(client, job)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refused.json_body["error"] == "TooManyRequests"
    assert "WEBHOOK_REDELIVER_INTERVAL" in refused.json_body["detail"]
    assert redeliver(client, other).status_code == 202  # per job, not per owner
    assert redeliver(client, job, headers=BOB).status_code == 404  # ownership first: no hint of the job
    context_module.reset_context()  # as another API process would see it: decided from the store
    assert redeliver(client, job).status_code == 429
    listed = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}/webhooks", headers=ALICE).json_body["deliveries"]
    assert [d["redelivery_of"] is not None for d in listed] == [True, False]


def test_redeliver_is_accepted_again_once_the_interval_has_passed(client, monkeypatch):
    monkeypatch.setenv("WEBHOOK_REDELIVER_INTERVAL", "0.3")
    context_module.reset_context()
    job = submit(client, HOOK).json_body
    client.http.post(f"/sdapi/v1/jobs/{job['job_id']}/cancel", headers=ALICE)
    assert redeliver(client, job).status_code == 202
    refused = redeliver(client, job)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    time.sleep(0.35)
    assert redeliver(client, job).status_code == 202


def test_the_redeliver_limit_looks_past_newer_events():
    """A new event after a redelivery does not hide it; a redelivery older than the interval is ignored."""
    def delivery(seq, created_at, redelivery_of=None):
        return store_base.WebhookDelivery(
            seq=seq, id=f"msg_{seq}", job_id="j1", event_type="job.progress", status="pending",
            event_at=created_at, attempts=0, next_attempt_at=created_at, claim_token=None,
            redelivery_of=redelivery_of, created_at=created_at, updated_at=created_at, finished_at=None)

    class Store:
        def __init__(self, deliveries):
            self.deliveries = deliveries  # newest first

        def list_deliveries(self, job_id, *, limit, before):
            start = 0 if before is None else before
            page = self.deliveries[start:start + limit]
            more = start + limit < len(self.deliveries)
            return store_base.DeliveryPage(deliveries=page, next_cursor=start + limit if more else None)

    now = 1000.0
    newer_events = [delivery(n, now - 1) for n in range(45)]
    recent = Store(newer_events + [delivery(99, now - 4, redelivery_of="msg_0")])
    assert redelivery.seconds_until_allowed(recent, "j1", interval=10, now=now) == pytest.approx(6)
    old = Store([delivery(1, now - 1), delivery(2, now - 11, redelivery_of="msg_0")])
    assert redelivery.seconds_until_allowed(old, "j1", interval=10, now=now) == 0
    assert redelivery.seconds_until_allowed(recent, "j1", interval=0, now=now) == 0


@pytest.mark.parametrize("host, status", [("bücher.example.com", 202), ("ä" * 64 + ".example.com", 422)])
def test_submit_with_an_internationalized_host(client, monkeypatch, host, status):
    resolver = Resolver({"xn--bcher-kva.example.com": ["93.184.215.14"]})
    monkeypatch.setattr(url_safety, "resolve_host", resolver)
    response = submit(client, {**HOOK, "webhook_url": f"https://{host}/h"})
    assert response.status_code == status, response.json_body
    assert resolver.asked == ([("xn--bcher-kva.example.com", 443)] if status == 202 else [])
    if status == 422:
        [problem] = response.json_body["detail"]
        assert problem["type"] == "url_unsafe" and "internationalized domain name" in problem["msg"]
