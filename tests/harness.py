"""The service as real processes on 127.0.0.1 — A1111 simulators, the API under waitress (wsgi.py),
`python -m worker_fn` workers — sharing one database, for the end-to-end tests and the benches alike.

Also where a Postgres server for tests and benches is found (TEST_POSTGRES_URL, else the machine's own).
"""
from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import signal
import subprocess
import sys
import time
import typing
import urllib.parse
import uuid

import psycopg
import requests

from tests import support

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKEN = "e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgres")  # what `database_url` stands for, one after the other
STOP_TIMEOUT = 20  # seconds a process has after SIGTERM before it is killed

# Polls of real processes over HTTP: every 50 ms, not to load the two cores the processes need.
wait_until = functools.partial(support.wait_until, interval=0.05)


def postgres_server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def scratch_postgres(prefix: str) -> typing.Iterator[str | None]:
    """The URL of a new, empty database on the Postgres server at TEST_POSTGRES_URL, dropped after;
    None when no server answers (a bench then leaves out its Postgres rows)."""
    server = postgres_server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Process:
    """A child process with its output in a log file, stopped by SIGTERM (or killed)."""

    def __init__(self, name: str, command: list[str], env: dict, log_dir: pathlib.Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ask_to_stop(self) -> None:
        """SIGTERM without waiting, so that several processes can wind down at once."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, *, timeout: float) -> int:
        """The exit code once the process has ended, killing it if it outlives `timeout`."""
        try:
            return self.popen.wait(timeout=max(timeout, 0))
        finally:
            self.kill()

    def terminate(self, *, timeout: float = STOP_TIMEOUT) -> int:
        self.ask_to_stop()
        return self.wait_stopped(timeout=timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """Starts and stops the processes of one test or bench; everything shares `env`."""

    def __init__(self, tmp_path: pathlib.Path, *, database_url: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.processes: list[Process] = []
        self.sim_url = ""
        self.api_url = ""
        self.env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            API_TOKENS=f"e2e:{TOKEN},other:other-token",
            DATABASE_URL=database_url or f"sqlite:///{tmp_path / 'jobs.db'}",
            PROGRESS_INTERVAL="0.2",
            HEARTBEAT_INTERVAL="0.5",
            SWEEP_INTERVAL="0.5",
            JOB_LEASE_SECONDS="3",
            JOB_RETRY_BASE_SECONDS="0.2",
            JOB_MAX_ATTEMPTS="3",
            A1111_TIMEOUT="30",
            WORKER_SHUTDOWN_GRACE="5",
        )

    def start(self, name: str, command: list[str], **env) -> Process:
        process = Process(name, command, dict(self.env, **env), self.tmp_path)
        self.processes.append(process)
        return process

    def start_simulator(self, *, gen_seconds: float = 0.5, port: int | None = None, flags: tuple[str, ...] = ()) -> str:
        """The simulator (process `simulator`) as A1111_BASE_URL; `flags` are its extra options."""
        port = port or support.free_port()
        self.start("simulator", [sys.executable, "-m", "tests.a1111_sim", "--host", "127.0.0.1",
                                 "--port", str(port), "--gen-seconds", str(gen_seconds), *flags])
        self.sim_url = f"http://127.0.0.1:{port}"
        self.env["A1111_BASE_URL"] = self.sim_url
        wait_until(lambda: support.answers(f"{self.sim_url}/internal/ping"), timeout=15, what="the simulator")
        return self.sim_url

    def start_simulators(self, count: int, *, gen_seconds: float = 0.5) -> list[str]:
        """`count` simulators (processes simulator-0 …), all in A1111_BASE_URL; returns their URLs."""
        urls = []
        for index, port in enumerate(support.free_ports(count)):
            self.start(f"simulator-{index}", [sys.executable, "-m", "tests.a1111_sim", "--host", "127.0.0.1",
                                              "--port", str(port), "--gen-seconds", str(gen_seconds)])
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_until(functools.partial(support.answers, f"{url}/internal/ping"), timeout=15,
                       what=f"the simulator at {url}")
        self.sim_url = urls[0]
        self.env["A1111_BASE_URL"] = ",".join(urls)
        return urls

    def process(self, name: str) -> Process:
        return next(process for process in self.processes if process.name == name)

    def start_api(self) -> str:
        port = support.free_port()
        self.start("api", [sys.executable, "wsgi.py"], PORT=str(port))
        self.api_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: support.answers(f"{self.api_url}/health"), timeout=15, what="the API")
        return self.api_url

    def start_worker(self, name: str = "worker", **env) -> Process:
        worker = self.start(name, [sys.executable, "-m", "worker_fn", "--worker-id", name], **env)
        wait_until(lambda: any(w["id"] == name for w in self.health().get("workers", [])),
                   timeout=15, what=f"{name}'s heartbeat")
        return worker

    # -- client helpers ---------------------------------------------------------------------

    def submit(self, body: dict | None = None, *, kind: str = "txt2img", headers: dict | None = None) -> dict:
        response = requests.post(f"{self.api_url}/sdapi/v1/{kind}", json=body or {"prompt": "a cat", "steps": 10},
                                 headers={**AUTH, **(headers or {})}, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        response = requests.get(f"{self.api_url}/sdapi/v1/jobs/{job_id}", headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, job_id: str, statuses: set[str], *, timeout: float = 30) -> dict:
        return wait_until(lambda: (lambda j: j if j["status"] in statuses else None)(self.job(job_id)),
                          timeout=timeout, what=f"job {job_id} to reach {statuses}")

    def health(self) -> dict:
        return requests.get(f"{self.api_url}/health", headers=AUTH, timeout=10).json()

    def sim(self, method: str, path: str, **kwargs) -> dict:
        response = requests.request(method, f"{self.sim_url}{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every process at once, then wait for them all: their shutdowns overlap instead
        of adding up, and whatever outlives `timeout` is killed."""
        for process in self.processes:
            process.ask_to_stop()
        deadline = time.monotonic() + timeout
        for process in reversed(self.processes):
            process.wait_stopped(timeout=deadline - time.monotonic())
