"""The live queue page (GET /ui) as a person uses it, in headless Chromium (Debian's package, network
closed to everything but the API, as tests/browser.py drives it): the page asks for the
token, then shows a job submitted through the API progressing and completing with its image, and its
cancel button cancels a running job. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import pytest
import requests

from tests import browser
from tests import harness

PHONE = {"width": 390, "height": 900}


@pytest.fixture
def cluster_ui(tmp_path):
    cluster = harness.Cluster(tmp_path)
    try:
        cluster.start_simulator(gen_seconds=3)
        cluster.start_api()
        cluster.start_worker("worker-ui")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def page(cluster_ui):
    with browser.offline_page(cluster_ui.api_url, viewport=PHONE, timeout_ms=20_000,
                              last_screenshot="live-ui-last.png") as page:
        yield page


def open_with_token(page, api_url: str) -> None:
    page.goto(f"{api_url}/ui")
    assert "token" not in page.url
    page.fill("#token", harness.TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#connection:text('live')")


def card(page, job_id: str):
    return page.locator(f"li.job[data-job-id='{job_id}']")


def test_the_page_shows_a_job_progressing_and_completing_with_its_image(cluster_ui, page):
    open_with_token(page, cluster_ui.api_url)
    job = cluster_ui.submit({"prompt": "a lighthouse, live", "steps": 20})
    job_card = card(page, job["job_id"])
    job_card.locator(".status:text('processing')").wait_for()
    page.wait_for_function(
        "id => { const c = document.querySelector(`li.job[data-job-id='${id}'] progress`);"
        " return c && c.value > 0 && c.value < 1; }", arg=job["job_id"])
    assert job_card.locator(".steps").inner_text().startswith("step ")
    page.screenshot(path=str(browser.artifact("live-ui-progress.png")), full_page=True)

    job_card.locator(".status:text('completed')").wait_for(timeout=30_000)
    image = job_card.locator("img.image")
    image.wait_for(state="visible")
    assert page.evaluate("el => el.naturalWidth", image.element_handle()) > 0
    assert job_card.locator(".cancel").is_hidden()
    assert job_card.locator(".prompt").inner_text() == "a lighthouse, live"
    assert page.locator("#instances li").count() == 1
    page.screenshot(path=str(browser.artifact("live-ui-completed.png")), full_page=True)
    assert page.outside == [] and page.csp_violations == [] and page.errors == []
    assert page.evaluate("sessionStorage.getItem('a1111-async-token')") == harness.TOKEN


def test_the_cancel_button_cancels_a_running_job(cluster_ui, page):
    # A generation long enough that the click always lands while it runs: with 3 s, a loaded CI
    # machine once saw the job complete before the cancel reached the worker.
    requests.post(f"{cluster_ui.sim_url}/_sim/faults", json={"gen_seconds": 60}, timeout=10).raise_for_status()
    open_with_token(page, cluster_ui.api_url)
    job = cluster_ui.submit({"prompt": "to be cancelled", "steps": 20})
    job_card = card(page, job["job_id"])
    job_card.locator(".status:text('processing')").wait_for()
    job_card.locator(".cancel").click()
    job_card.locator(".status:text('cancelled')").wait_for(timeout=30_000)
    page.screenshot(path=str(browser.artifact("live-ui-cancelled.png")), full_page=True)
    answer = requests.get(f"{cluster_ui.api_url}/sdapi/v1/jobs/{job['job_id']}", headers=harness.AUTH, timeout=10)
    assert answer.json()["status"] == "cancelled"
    assert page.outside == [] and page.csp_violations == [] and page.errors == []
