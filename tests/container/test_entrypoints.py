"""The image's commands, run outside Docker as the image runs them: the Dockerfile's CMD and
HEALTHCHECK and compose's commands and health checks, with the image's ENV, in a copy of the image's
files (`image.stage_app`). Against the A1111 simulator; the API is reached on 127.0.0.1 only.

Settings a deployment passes with `-e` (tokens, A1111's URL, short intervals for a fast test) are
added; HOST is 127.0.0.1 here (the image's 0.0.0.0 is for a container's network).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess

import pytest
import requests
from prometheus_client import parser as prometheus_parser

from chalicelib import store as store_module
from tests import support
from tests.container import image
from tests import harness

TOKEN = "ops-token-3f9a1c"
METRICS_TOKEN = "scrape-token-77d2e0"
WEBHOOK_SECRET = "whsec-container-5b8e2d4a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# JOB_LEASE_SECONDS: a worker stopped while A1111 still runs its job keeps the instance's slot until
# the lease expires; a short lease lets the restarted container take the slot back quickly.
FAST = {"PROGRESS_INTERVAL": "0.2", "HEARTBEAT_INTERVAL": "0.5", "SWEEP_INTERVAL": "0.5", "JOB_LEASE_SECONDS": "3",
        "JOB_RETRY_BASE_SECONDS": "0.2", "WEBHOOK_ALLOW_PRIVATE": "true"}


class ImageProcess:
    """One command of the image, started in the staged app directory with its output in a file."""

    def __init__(self, name: str, command: list[str], *, app: pathlib.Path, env: dict, log_dir: pathlib.Path):
        self.command, self.app, self.env = command, app, env
        self.log_path = log_dir / f"{name}.log"
        # A process group of its own, as a container is: cleaning up can then reach its children.
        self.popen = subprocess.Popen(command, cwd=app, env=env, stdout=self.log_path.open("ab"),
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def check(self, command: list[str]) -> subprocess.CompletedProcess:
        """Run a health check command the way Docker does: in the container, with its environment."""
        return subprocess.run(command, cwd=self.app, env=self.env, capture_output=True, text=True, timeout=30,
                              check=False)

    def terminate(self, *, timeout: float = 30) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def entries(self) -> list[dict]:
        """Every output line, as JSON: a line that is not one fails the test."""
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def stop(self) -> None:
        """Like `docker stop`: SIGTERM, then kill everything the command started."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is empty: every process of it has exited
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)


@pytest.fixture
def simulator(tmp_path):
    cluster = harness.Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def run_image(tmp_path, request):
    """Starts image commands; on failure prints their output; always stops them."""
    app = image.stage_app(tmp_path / "app")
    started: list[ImageProcess] = []

    def run(name: str, command: list[str], env: dict) -> ImageProcess:
        process = ImageProcess(name, command, app=app, env=env, log_dir=tmp_path)
        started.append(process)
        return process

    run.app = app
    yield run
    for process in started:
        process.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for process in started:
            print(f"----- {process.log_path.name} -----\n{process.text()[-6000:]}")


def wait_healthy(process: ImageProcess, command: list[str], *, timeout: float = 30) -> None:
    def healthy():
        assert process.popen.poll() is None, f"{process.command} exited with {process.popen.returncode}"
        return process.check(command).returncode == 0
    support.wait_until(healthy, timeout=timeout, interval=0.2, what=f"{command} to pass")


def submit(api_url: str, **extra) -> str:
    body = {"prompt": "a lighthouse", "steps": 10, **extra}
    response = requests.post(f"{api_url}/sdapi/v1/txt2img", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_status(api_url: str, job_id: str, statuses: set[str], *, timeout: float = 30) -> dict:
    def reached():
        job = requests.get(f"{api_url}/sdapi/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()
        return job if job["status"] in statuses else None
    return support.wait_until(reached, timeout=timeout, interval=0.05, what=f"job {job_id} in {statuses}")


def stored_job(database_url: str, job_id: str):
    job_store = store_module.make_store(database_url)
    try:
        return job_store.get_job(job_id)
    finally:
        job_store.database.close()


def start_default_command(run_image, simulator, **env) -> tuple[ImageProcess, str]:
    port = support.free_port()
    container = run_image("container", image.cmd(), image.image_env(
        HOST="127.0.0.1", PORT=str(port), API_TOKENS=f"ops:{TOKEN}", A1111_BASE_URL=simulator.sim_url,
        **FAST, **env))
    wait_healthy(container, image.healthcheck()[1])
    api_url = f"http://127.0.0.1:{port}"
    support.wait_until(lambda: requests.get(f"{api_url}/health", headers=AUTH, timeout=5).json()["workers"], timeout=30,
                       interval=0.1, what="the worker's heartbeat")
    return container, api_url


def test_the_default_command_runs_api_and_worker_and_sigterm_lets_the_running_job_finish(run_image, simulator):
    # given the image's default command (API + worker), healthy, running a job with a webhook
    simulator.start_simulator(gen_seconds=2)
    container, api_url = start_default_command(run_image, simulator)
    job_id = submit(api_url, webhook_url=f"http://127.0.0.1:{support.free_port()}/hook",
                    webhook_secret=WEBHOOK_SECRET)
    wait_status(api_url, job_id, {"processing"})

    # when the container is stopped (docker stop: SIGTERM to the command)
    assert container.terminate() == 0

    # then the job finished before the worker stopped, and both processes stopped cleanly
    assert stored_job(f"sqlite:///{run_image.app / 'data' / 'jobs.db'}", job_id).status == "completed"
    entries = container.entries()  # every line of the container's output is JSON
    assert all({"time", "level", "message"} <= entry.keys() for entry in entries)
    messages = {entry["message"] for entry in entries}
    assert {"worker stopped", "stopped: every request in flight was answered", "stopped"} <= messages
    claimed = next(entry for entry in entries if entry["message"] == "job claimed")
    assert claimed["job_id"] == job_id and claimed["worker_id"]
    submitted = next(entry for entry in entries if entry.get("logger") == "access" and entry["method"] == "POST")
    assert submitted["job_id"] == job_id and submitted["status"] == 202
    # and no secret was ever written out
    assert TOKEN not in container.text() and WEBHOOK_SECRET not in container.text()


def test_a_job_still_running_after_the_grace_period_goes_back_to_the_queue_and_runs_after_a_restart(
        run_image, simulator):
    # given a job that needs 8 s and a worker grace period of 0.3 s
    simulator.start_simulator(gen_seconds=8)
    container, api_url = start_default_command(run_image, simulator, WORKER_SHUTDOWN_GRACE="0.3")
    job_id = submit(api_url)
    wait_status(api_url, job_id, {"processing"})

    # when the container is stopped
    assert container.terminate() == 0

    # then the job is queued again, its attempt not counted, and A1111 was told to stop it
    job = stored_job(f"sqlite:///{run_image.app / 'data' / 'jobs.db'}", job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    assert simulator.sim("GET", "/_sim/stats")["interrupts"] >= 1
    released = [e for e in container.entries() if e["message"] == "job released to the queue at shutdown"]
    assert released and released[0]["job_id"] == job_id

    # and when the orchestrator starts the container again, the job completes
    simulator.sim("POST", "/_sim/faults", json={"gen_seconds": 0.3})
    _, api_url = start_default_command(run_image, simulator)
    assert wait_status(api_url, job_id, {"completed", "error"})["status"] == "completed"


def test_when_one_process_dies_the_other_is_stopped_and_the_container_exits_non_zero(run_image, simulator):
    # given the default command, healthy
    simulator.start_simulator(gen_seconds=0.3)
    container, api_url = start_default_command(run_image, simulator)
    worker_pid = next(entry["pid"] for entry in container.entries() if entry["message"] == "worker started")

    # when the worker dies
    subprocess.run(["kill", "-KILL", str(worker_pid)], check=True)

    # then the supervisor stops the API and exits with the worker's signal (128 + 9), for a restart
    assert container.popen.wait(timeout=20) == 128 + signal.SIGKILL
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api_url}/health", timeout=2)
    died = next(entry for entry in container.entries() if entry.get("child") == "worker" and "exit_code" in entry)
    assert died["level"] == "ERROR" and died["exit_code"] == -signal.SIGKILL


def test_without_api_tokens_the_container_warns_and_creates_no_token(run_image, simulator, tmp_path):
    simulator.start_simulator(gen_seconds=0.3)
    port = support.free_port()
    data_home = tmp_path / "data-home"  # where a development token would go (chalicelib/local_data.py)
    env = image.image_env(HOST="127.0.0.1", PORT=str(port), A1111_BASE_URL=simulator.sim_url,
                          XDG_DATA_HOME=str(data_home), **FAST)
    assert "API_TOKENS" not in env  # docker run without -e API_TOKENS
    container = run_image("container", image.cmd(), env)
    wait_healthy(container, image.healthcheck()[1])
    response = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/jobs", timeout=5)
    assert response.status_code == 401 and "API_TOKENS" in response.json()["detail"]
    assert container.terminate() == 0
    assert any(e["level"] == "WARNING" and "API_TOKENS is not set" in e["message"] for e in container.entries())
    assert not list(data_home.rglob("dev-token")) and not list(run_image.app.rglob("dev-token"))


def test_compose_api_and_worker_commands_alone_on_postgres_with_health_checks_and_metrics(
        run_image, simulator, postgres_url):
    # given compose's api and worker services (their commands, environment and health checks)
    simulator.start_simulator(gen_seconds=0.3)
    services = image.compose()["services"]
    port = support.free_port()
    processes = {}
    for name in ("api", "worker"):
        env = image.image_env(**image.compose_env(name, API_TOKENS=f"ops:{TOKEN}", METRICS_TOKEN=METRICS_TOKEN),
                              **FAST)
        env.update(DATABASE_URL=postgres_url, A1111_BASE_URL=simulator.sim_url, HOST="127.0.0.1", PORT=str(port))
        processes[name] = run_image(name, services[name]["command"], env)
    for name, process in processes.items():
        wait_healthy(process, services[name]["healthcheck"]["test"][1:])

    # when a job runs to the end
    api_url = f"http://127.0.0.1:{port}"
    job_id = submit(api_url)
    assert wait_status(api_url, job_id, {"completed", "error"})["status"] == "completed"

    # then Prometheus can scrape it with the metrics token
    scrape = requests.get(f"{api_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert scrape.status_code == 200
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in prometheus_parser.text_string_to_metric_families(scrape.text) for s in family.samples}
    assert values[("a1111_async_jobs", (("status", "completed"),))] == 1
    assert values[("a1111_async_job_queue_wait_seconds_count", ())] == 1
    assert values[("a1111_async_job_run_seconds_count", (("status", "completed"),))] == 1
    assert values[("a1111_async_job_run_seconds_sum", (("status", "completed"),))] >= 0.3

    # and both stop cleanly, their output JSON lines without the tokens
    for name, process in processes.items():
        assert process.terminate() == 0, name
        process.entries()
        assert TOKEN not in process.text() and METRICS_TOKEN not in process.text()
    assert not re.search(r"Traceback", processes["api"].text() + processes["worker"].text())
