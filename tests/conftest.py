"""Shared fixtures: a fresh store per test, behind the same factory the product uses."""
from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib import store as store_module  # noqa: E402


@pytest.fixture(params=["sqlite"])
def database_url(request, tmp_path) -> str:
    """Every store backend the contract suite runs against."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def job_store(database_url):
    job_store = store_module.make_store(database_url)
    job_store.migrate()
    return job_store
