"""Swagger UI as a person uses it: headless Chromium opens /doc from the running server, authorizes
with a token and submits a txt2img job through "Try it out"; the job then completes on the worker.

The browser is Debian's chromium (scripts/ensure_chromium.sh installs it), driven by Playwright
without ever downloading a browser. Every request that leaves the API's origin is aborted and
recorded, and the test fails on any: the page must work offline. Screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import json

import pytest
import requests
from playwright import sync_api

from tests import browser
from tests import harness

TXT2IMG = "#operations-generation-text2imgapi_sdapi_v1_txt2img_post"
GET_JOB = "#operations-jobs-get_job"
BODY = {"prompt": "a lighthouse, from Swagger UI", "steps": 5, "width": 64, "height": 64,
        "metadata": {"via": "swagger-ui"}}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    cluster = harness.Cluster(tmp_path_factory.mktemp("swagger-ui"))
    try:
        cluster.start_simulator(gen_seconds=0.3)
        cluster.start_api()
        cluster.start_worker("worker-ui")
        yield cluster.api_url
    finally:
        cluster.stop()


@pytest.fixture
def browser_page(api_url):
    """A Chromium page that can reach the API's origin only; `page.outside` lists what it tried."""
    with browser.offline_page(api_url, viewport={"width": 1280, "height": 1000}, timeout_ms=15_000,
                              last_screenshot="swagger-ui-last.png") as page:
        yield page


def authorize(page: sync_api.Page, token: str) -> None:
    page.click("button.authorize")
    bearer = page.locator(".modal-ux .auth-container").filter(has_text="bearerAuth")
    bearer.locator("input").fill(token)
    bearer.locator("button.authorize").click()
    page.click(".modal-ux button.btn-done")


def try_it_out(page: sync_api.Page, operation: str) -> sync_api.Locator:
    block = page.locator(operation)
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    return block


def execute(block: sync_api.Locator) -> tuple[int, dict, str]:
    """Click Execute; the live response's status, JSON body and the curl command Swagger UI shows."""
    block.locator("button.execute").click()
    live = block.locator(".live-responses-table .response")
    live.locator(".response-col_status").first.wait_for()
    status = int(live.locator(".response-col_status").first.inner_text().strip())
    body = json.loads(live.locator(".response-col_description pre").first.inner_text())
    return status, body, block.locator(".curl-command").inner_text()


def test_swagger_ui_authorizes_and_submits_a_job_that_completes(api_url, browser_page):
    page = browser_page
    document = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    operation_count = sum(len(item) for item in document["paths"].values())
    # given Swagger UI served by the API itself
    page.goto(f"{api_url}/doc")
    page.wait_for_selector(TXT2IMG)
    # then it shows every operation of the document, and its security policy blocked nothing
    assert page.locator(".opblock").count() == operation_count
    assert page.csp_violations == []
    # when a user authorizes with a token
    authorize(page, harness.TOKEN)
    assert page.locator(f"{TXT2IMG} .authorization__btn.locked").count() == 1
    # and submits txt2img through "Try it out"
    block = try_it_out(page, TXT2IMG)
    body_text = block.locator("textarea.body-param__text")
    assert json.loads(body_text.input_value())["prompt"]  # the document's example is filled in
    body_text.fill(json.dumps(BODY))
    status, job, curl = execute(block)
    # then the API queued the job for this token
    assert status == 202, job
    assert job["status"] in {"queued", "processing", "completed"} and job["metadata"] == {"via": "swagger-ui"}
    assert f"Authorization: Bearer {harness.TOKEN}" in curl
    block.locator(".live-responses-table").scroll_into_view_if_needed()
    page.screenshot(path=str(browser.artifact("swagger-ui-txt2img-202.png")))
    # and the worker completes it
    done = harness.wait_until(lambda: _finished(api_url, job["job_id"]), timeout=30, what="the job to finish")
    assert done["status"] == "completed", done
    # and "Try it out" on GET /sdapi/v1/jobs/{job_id} shows A1111's result
    block = try_it_out(page, GET_JOB)
    block.locator("tr[data-param-name='job_id'] input").fill(job["job_id"])
    status, detail, _ = execute(block)
    assert status == 200 and detail["status"] == "completed"
    assert len(detail["result"]["images"]) == 1 and json.loads(detail["result"]["info"])["prompt"] == BODY["prompt"]
    block.locator(".live-responses-table").scroll_into_view_if_needed()
    page.screenshot(path=str(browser.artifact("swagger-ui-job-completed.png")))
    # and nothing was fetched from anywhere but the API, nor blocked by the page's policy
    assert page.outside == [] and page.csp_violations == []


def test_swagger_ui_without_a_token_gets_the_documented_401(api_url, browser_page):
    page = browser_page
    page.goto(f"{api_url}/doc")
    block = try_it_out(page, "#operations-jobs-list_jobs")
    status, body, _ = execute(block)
    assert status == 401 and body["error"] == "Unauthorized"
    assert page.outside == []


def _finished(api_url: str, job_id: str) -> dict | None:
    job = requests.get(f"{api_url}/sdapi/v1/jobs/{job_id}", headers=harness.AUTH, timeout=10).json()
    return job if job["status"] in {"completed", "error", "cancelled"} else None
