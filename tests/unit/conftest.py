"""The API as the unit tests call it: `client`, a chalice.test.Client on a SQLite file of the test's
own, tokens alice and bob, no A1111 listening, a 4 KiB body limit. Modules that need another set-up
define their own `client`."""
from __future__ import annotations

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import context as context_module
from chalicelib.webhooks import url_safety


@pytest.fixture
def client(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice,bob:tok-bob")
    monkeypatch.setenv("A1111_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    # Webhook hosts are resolved at submit; tests never ask real DNS (example.com is public).
    monkeypatch.setattr(url_safety, "resolve_host", lambda host, port: ["93.184.215.14"])
    context_module.reset_context()
    with chalice_test.Client(app_module.app) as test_client:
        yield test_client
    context_module.reset_context()
