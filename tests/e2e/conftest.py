"""End-to-end fixtures: the processes of tests/harness.py, on a SQLite file; on Postgres as well for
the tests marked `both_databases` (those whose point is what several processes do to one database at
once, or what survives a crash)."""
from __future__ import annotations

import pytest

from tests import harness


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_databases") and "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", harness.BACKENDS, indirect=True)


@pytest.fixture
def database_url(request, tmp_path) -> str:
    """SQLite, unless the test is marked `both_databases`: then each backend in turn."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def cluster(tmp_path, request, database_url):
    cluster = harness.Cluster(tmp_path, database_url=database_url)
    try:
        yield cluster
    finally:
        cluster.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            for process in cluster.processes:
                print(f"----- {process.name} log -----\n{process.log()[-4000:]}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
