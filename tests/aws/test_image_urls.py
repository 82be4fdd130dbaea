"""GET /sdapi/v1/jobs/{id}: base64 images by default (A1111's shape), `?images=urls` for links
(presigned S3 URLs with the S3 store), and URLs instead of a failure when inline images would pass
the response limit (AWS Lambda answers at most 6 MB). Answers are checked against /openapi.json."""
from __future__ import annotations

import base64
import time

import pytest
import requests
from chalice import test as chalice_test

import app as app_module
from chalicelib import context as context_module
from tests.aws import test_handlers
from tests.unit import test_openapi

ALICE = test_handlers.ALICE
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
KEY = "GET /sdapi/v1/jobs/{job_id}"


def completed_job(client, images: list[bytes]) -> str:
    """A job completed straight through the store, with these images."""
    job_id = test_handlers.submit(client)
    ctx = context_module.get_context()
    claimed = ctx.store.claim_next(worker_id="w1", instance="gpu", lease_seconds=30, now=time.time()).job
    ctx.images.put(claimed.id, claimed.attempts, images)
    ctx.store.complete(claimed.id, worker_id="w1", result={"parameters": {}, "info": "{}"},
                       image_count=len(images), now=time.time())
    return job_id


def get(client, job_id, query=""):
    return client.http.get(f"/sdapi/v1/jobs/{job_id}{query}", headers=ALICE)


@pytest.fixture
def s3_app(monkeypatch, tmp_path, queue_urls, bucket, sim):
    test_handlers.configure(monkeypatch, tmp_path, queue_urls=queue_urls, bucket=bucket, sim=sim,
                            IMAGE_URL_EXPIRY_SECONDS="900")
    with chalice_test.Client(app_module.app) as client:
        yield client
    context_module.reset_context()


@pytest.fixture
def db_app(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("MAX_RESPONSE_BYTES", "3000")
    context_module.reset_context()
    with chalice_test.Client(app_module.app) as client:
        yield client
    context_module.reset_context()


@pytest.fixture
def document(db_app):
    return db_app.http.get("/openapi.json").json_body


def test_base64_stays_the_default_and_urls_are_presigned_s3_links(s3_app):
    job_id = completed_job(s3_app, [PNG, PNG[:-1] + b"\x01"])

    inline = get(s3_app, job_id).json_body
    assert inline["image_delivery"] == "base64" and inline["image_delivery_note"] is None
    assert [base64.b64decode(item) for item in inline["result"]["images"]] == [PNG, PNG[:-1] + b"\x01"]

    linked = get(s3_app, job_id, "?images=urls").json_body
    assert linked["image_delivery"] == "urls" and linked["result"]["images"] == []
    assert linked["image_delivery_note"] is None  # asked for, so nothing to explain
    assert all("X-Amz-Signature=" in url and "X-Amz-Expires=900" in url for url in linked["image_urls"])
    assert [requests.get(url, timeout=5).content for url in linked["image_urls"]] == [PNG, PNG[:-1] + b"\x01"]


def test_past_the_response_limit_the_api_answers_with_urls_and_says_why(db_app, document):
    small = completed_job(db_app, [PNG])
    big = completed_job(db_app, [PNG + bytes(3000)])

    assert get(db_app, small).json_body["image_delivery"] == "base64"
    response = get(db_app, big)
    detail = response.json_body
    assert response.status_code == 200 and detail["image_delivery"] == "urls"
    assert detail["result"]["images"] == [] and detail["image_urls"] == [f"/sdapi/v1/jobs/{big}/images/0"]
    assert "MAX_RESPONSE_BYTES" in detail["image_delivery_note"] and "6 MB" in detail["image_delivery_note"]
    assert len(response.body) <= 3000
    test_openapi.assert_conforms(document, KEY, response)
    image = db_app.http.get(detail["image_urls"][0], headers={**ALICE, "Accept": "image/png"})
    assert image.body == PNG + bytes(3000)  # the link works: rows are served by the API itself


def test_an_unknown_images_value_is_a_documented_422(db_app, document):
    job_id = completed_job(db_app, [PNG])
    response = get(db_app, job_id, "?images=jpeg")
    assert response.status_code == 422
    assert response.json_body["detail"] == [{"loc": ["query", "images"], "msg": "must be base64 or urls",
                                             "type": "enum"}]
    test_openapi.assert_conforms(document, KEY, response)
    test_openapi.assert_conforms(document, KEY, get(db_app, job_id, "?images=urls"))
