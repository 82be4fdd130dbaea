"""Headless Chromium as a person's browser, for the page tests (Swagger UI at /doc, the live queue page
at /ui): Debian's chromium (scripts/ensure_chromium.sh installs it), driven by Playwright without ever
downloading a browser, allowed to reach the API's origin only. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import contextlib
import os
import pathlib
import typing

import pytest
from playwright import sync_api

from tests import harness

CHROMIUM = pathlib.Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = harness.ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 # nothing but the machine itself resolves, whatever the page asks for
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def artifact(name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


@contextlib.contextmanager
def offline_page(api_url: str, *, viewport: dict, timeout_ms: int,
                 last_screenshot: str) -> typing.Iterator[sync_api.Page]:
    """A page that can reach `api_url`'s origin only. Every other request is aborted and listed in
    `page.outside`; `page.csp_violations` lists what the Content-Security-Policy blocked and
    `page.errors` the page's script errors. The last screen is kept as `last_screenshot`."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (make test does)", pytrace=False)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=viewport)
        outside: list[str] = []

        def only_the_api(route: sync_api.Route) -> None:
            if route.request.url.startswith(api_url + "/"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", only_the_api)
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.outside = outside
        page.csp_violations = []
        page.errors = []
        page.on("console", lambda message: page.csp_violations.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        try:
            yield page
        finally:
            page.screenshot(path=str(artifact(last_screenshot)), full_page=True)
            browser.close()
