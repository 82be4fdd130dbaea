"""`chalice local` as smooth as `make run`: the real dev server (autoreload on), a worker and the
simulator, on the default database (no DATABASE_URL; the data home is the test's own)."""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import signal
import sys

import pytest
import requests

from chalicelib import dev_token
from tests.harness import AUTH, ROOT, wait_until
from tests.support import answers, free_port

CHALICE = str(pathlib.Path(sys.executable).parent / "chalice")
RESTART_LINE = "Restarting local dev server."
SERVING_LINE = "Serving on http://"


@pytest.fixture
def database_url():
    """The cluster on the default database: its DATABASE_URL is removed below."""
    return None


@pytest.fixture
def data_home(cluster, tmp_path, monkeypatch):
    """A data home of the test's own, for its processes and for this one (dev_token.path())."""
    home = tmp_path / "data-home"
    del cluster.env["DATABASE_URL"]
    cluster.env["XDG_DATA_HOME"] = str(home)
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


@pytest.fixture
def start_dev_server(cluster):
    """Starts `chalice local` (autoreload on) as cluster.api_url, and stops each one at the end.

    Stopped with SIGINT, as by Ctrl-C: its parent then stops the serving child (SIGTERM, what the
    cluster sends, would leave the child serving).
    """
    started = []

    def start(*, name="chalice-local", stage=None):
        port = free_port()
        command = [CHALICE, "local", "--port", str(port)] + (["--stage", stage] if stage else [])
        process = cluster.start(name, command)
        started.append(process)
        cluster.api_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{cluster.api_url}/health"), timeout=30, what="chalice local")
        return process

    yield start
    for process in started:
        stop_dev_server(process)


def stop_dev_server(process) -> None:
    if not process.alive():
        return
    child = serving_pid(process)
    process.popen.send_signal(signal.SIGINT)
    assert process.popen.wait(timeout=15) == 0
    wait_until(lambda: not pathlib.Path(f"/proc/{child}").exists(), timeout=10, what="the serving child's exit")


def serving_pid(process) -> int:
    """The pid of the child that serves: the autoreloader's parent restarts it on a change."""
    children = pathlib.Path(f"/proc/{process.popen.pid}/task/{process.popen.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_jobs_written_never_restart_the_dev_server_and_a_code_change_does(cluster, data_home, start_dev_server):
    # given chalice local (autoreload on), a worker and the simulator, on the default database
    cluster.start_simulator(gen_seconds=0.1)
    server = start_dev_server()
    cluster.start_worker()
    first_child = serving_pid(server)

    # when 4 clients submit 5 jobs each at once
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(lambda n: [cluster.submit({"prompt": f"client {n} job {i}", "steps": 5})
                                           for i in range(5)], range(4)))

    # then every submit was answered, and every job completed
    job_ids = [job["job_id"] for batch in batches for job in batch]
    assert len(set(job_ids)) == 20
    for job_id in job_ids:
        assert cluster.wait_status(job_id, {"completed", "error"}, timeout=60)["status"] == "completed"
    # in the default database, which the dev server and the worker share, outside the project folder
    assert [path.name for path in data_home.rglob("*.db")] == ["jobs.db"]
    assert ROOT not in next(data_home.rglob("jobs.db")).parents
    # and the dev server never restarted meanwhile: one start in its log, the same serving process
    assert server.log().count(SERVING_LINE) == 1 and RESTART_LINE not in server.log()
    assert serving_pid(server) == first_child

    # when a code file is touched
    os.utime(ROOT / "app.py")

    # then the dev server reloads: a new serving process answers
    wait_until(lambda: RESTART_LINE in server.log(), timeout=15, what="the restart")
    wait_until(lambda: server.log().count(SERVING_LINE) >= 2, timeout=30, what="the new server")
    assert serving_pid(server) != first_child
    assert requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=AUTH, timeout=10).status_code == 200


def test_without_api_tokens_make_local_and_chalice_local_share_the_dev_token(cluster, data_home,
                                                                              start_dev_server):
    del cluster.env["API_TOKENS"]
    cluster.start_simulator(gen_seconds=0.1)

    # given `make local` without API_TOKENS: it creates the development token and prints it
    port = free_port()
    supervisor = cluster.start("make-local", [sys.executable, "scripts/serve_local.py"], PORT=str(port))
    cluster.api_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{cluster.api_url}/health"), timeout=30, what="make local's dev server")
    token = dev_token.path().read_text().strip()
    assert f"development token (API_TOKENS was not set): {token}" in supervisor.log()
    bearer = {"Authorization": f"Bearer {token}"}

    # when a job is submitted with it, then its worker runs it
    job = requests.post(f"{cluster.api_url}/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 5},
                        headers=bearer, timeout=10)
    assert job.status_code == 202, job.text
    wait_until(lambda: requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job.json()['job_id']}", headers=bearer,
                                    timeout=10).json()["status"] == "completed", timeout=30, what="the job")

    # and Ctrl-C stops the dev server (both its processes) and the worker, cleanly
    supervisor.popen.send_signal(signal.SIGINT)
    assert supervisor.popen.wait(timeout=30) == 0
    assert not answers(f"{cluster.api_url}/health")
    assert "worker stopped" in supervisor.log()

    # given a bare `chalice local --stage prod` without API_TOKENS: no token, every request refused
    prod = start_dev_server(name="chalice-local-prod", stage="prod")
    refused = requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=bearer, timeout=10)
    assert refused.status_code == 401 and "API_TOKENS" in refused.json()["detail"]
    stop_dev_server(prod)

    # when a bare `chalice local` (the dev stage) starts without API_TOKENS
    server = start_dev_server()

    # then it uses the same token as make local, and prints it
    assert f"development token (API_TOKENS was not set): {token}" in server.log()
    listed = requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=bearer, timeout=10)
    assert listed.status_code == 200 and [j["job_id"] for j in listed.json()["jobs"]] == [job.json()["job_id"]]
    assert requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=AUTH, timeout=10).status_code == 401
