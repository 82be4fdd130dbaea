"""The fault campaign: real processes (tests/harness.py: A1111 simulators, the API under waitress,
`python -m worker_fn` workers) under a steady submit load, with faults injected, and figures printed.

Faults (`--fault`): kill -9 of a worker mid-job and of the API during a submit burst (each restarted
at once), slow clients holding connections, retention (the default, `kills`); a Postgres server of
the campaign's own stopped and started under load (`postgres-restart`); SQLite on a small tmpfs
filled by submits (`full-disk`, needs root); an A1111 simulator SIGSTOPped mid-job (`hang`). Then the
checks: every job the API answered 202 for exists and completed, none completed twice (runs per job),
how many attempts the faults cost, API and worker RSS and database size over time.

    python bench/campaign.py                       # the full form: 20,000 jobs, then 20 kills of each kind
    python bench/campaign.py --jobs 2000 --kills 5 --database postgres --retention 120s
    python bench/campaign.py --short --fault postgres-restart
    python bench/campaign.py --short               # what CI runs (tests/e2e/test_campaign.py)

A webhook receiver down for 8 hours is tested under a simulated clock instead
(tests/e2e/test_campaign_webhook_clock.py).
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import concurrent.futures
import contextlib
import dataclasses
import glob
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import psycopg
import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from chalicelib import vocabulary  # noqa: E402
from tests import harness  # noqa: E402

SUBMIT_THREADS = 8
SLOW_CLIENTS = 50
BURST = 50  # submits in flight around each kill of the API
SLOW_SECONDS = 3.0  # generations in flight when a worker is killed


@dataclasses.dataclass
class Plan:
    jobs: int  # the steady phase, without faults (RSS growth is measured over it)
    kills: int  # then kill -9 of the API during a burst of BURST submits, and of a worker mid-job, each this often
    workers: int
    simulators: int
    gen_seconds: float
    database: str  # sqlite | postgres
    timeout: float  # seconds for every job to finish
    retention: str = "30d"  # JOB_RETENTION during the load ("30d": nothing purged; "60s": the sweep purges as it goes)
    sample_seconds: float = 10.0  # RSS and database size sampled this often, from the start to the checks


SHORT = Plan(jobs=200, kills=1, workers=2, simulators=2, gen_seconds=0.02, database="sqlite", timeout=90,
             sample_seconds=2.0)
FULL = Plan(jobs=20_000, kills=20, workers=2, simulators=4, gen_seconds=0.02, database="sqlite", timeout=3600)


@dataclasses.dataclass
class Figures:
    plan: Plan
    accepted: int = 0
    refused_while_down: int = 0  # submits that got no answer (the API was being killed)
    completed: int = 0
    lost: list = dataclasses.field(default_factory=list)  # accepted, but missing or not completed
    completed_twice: list = dataclasses.field(default_factory=list)
    extra_attempts: int = 0
    generations: int = 0  # A1111 generations that ran to the end, over all simulators
    worker_kills: int = 0
    runs_lost: int = 0  # runs a killed worker left: each job was run again elsewhere
    api_kills: int = 0
    api_recovery_seconds: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    rss_kib: dict = dataclasses.field(default_factory=dict)  # process -> (start, end)
    db_bytes: dict = dataclasses.field(default_factory=dict)  # loaded / after retention
    jobs_after_retention: int | None = None
    slow_clients: dict = dataclasses.field(default_factory=dict)
    samples: list = dataclasses.field(default_factory=list)  # {"t", "accepted", "rss_mib": {name: MiB}, "db_mb"}
    answers: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # submit status codes
    outages: list = dataclasses.field(default_factory=list)  # one dict per fault of a kind of its own
    refusals: dict = dataclasses.field(default_factory=dict)  # status -> the first body answered with it

    def ok(self) -> bool:
        return not self.lost and not self.completed_twice and self.completed == self.accepted


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Campaign:
    def __init__(self, plan: Plan, workdir: pathlib.Path, database_url: str) -> None:
        self.plan = plan
        self.figures = Figures(plan)
        self.cluster = harness.Cluster(workdir, database_url=database_url)
        self.cluster.env.update(JOB_RETENTION=plan.retention, JOB_MAX_ATTEMPTS="5", RETENTION_INTERVAL="10")
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        self.database_url = database_url
        self.simulators: list[str] = []

    # -- processes ----------------------------------------------------------------------------

    def start(self) -> None:
        self.simulators = self.cluster.start_simulators(self.plan.simulators, gen_seconds=self.plan.gen_seconds)
        self.cluster.start_api()
        for index in range(self.plan.workers):
            self.cluster.start_worker(f"worker-{index}")

    def replace(self, name: str, **env) -> harness.Process:
        """Start a process again under the same name (after a kill or for new settings)."""
        old = self.cluster.process(name)
        self.cluster.processes.remove(old)
        if name == "api":
            port = urllib.parse.urlsplit(self.cluster.api_url).port
            process = self.cluster.start("api", [sys.executable, "wsgi.py"], PORT=str(port), **env)
            harness.wait_until(lambda: harness.support.answers(f"{self.cluster.api_url}/health"), timeout=30,
                               what="the API back")
            return process
        return self.cluster.start(name, [sys.executable, "-m", "worker_fn", "--worker-id", name], **env)

    # -- load and faults ------------------------------------------------------------------------

    def submit_all(self, count: int) -> None:
        """Submit `count` jobs from SUBMIT_THREADS threads; a submit without an answer (the API was
        killed under it) is counted and not retried: only 202s are promised."""
        def one(n: int) -> None:
            try:
                response = requests.post(f"{self.cluster.api_url}/sdapi/v1/txt2img", headers=harness.AUTH,
                                         json={"prompt": f"campaign {n}", "steps": 4}, timeout=30)
            except requests.RequestException:
                with self.lock:
                    self.figures.refused_while_down += 1
                    self.figures.answers["no answer"] += 1
                return
            with self.lock:
                self.figures.answers[response.status_code] += 1
                if response.status_code != 202:
                    self.figures.refusals.setdefault(response.status_code, response.text[:300])
            if response.status_code == 202:
                with self.lock:
                    self.accepted.append(response.json()["job_id"])
            else:
                with self.lock:
                    self.figures.refused_while_down += 1

        with concurrent.futures.ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            list(pool.map(one, range(count)))

    def kill_worker(self) -> None:
        """kill -9 of a worker while it runs a job: generations are made slow (SLOW_SECONDS) until the
        kill, so the job its heartbeat reports is still running when it dies (the runs say whether it
        was: outcome `lost`). The victim is a worker the store shows running a job (any of them: which
        one holds the instances' slots is the store's choice), else worker-0."""
        self.wait_finished()  # no fast job left that the heartbeat could still report
        self.set_gen_seconds(SLOW_SECONDS)
        burst = threading.Thread(target=self.submit_all, args=(BURST // 5,))
        burst.start()
        names = {process.name for process in self.cluster.processes if process.name.startswith("worker-")}

        def busy_worker() -> str | None:
            """A worker the store shows running a job now (its open run), not a heartbeat's last word."""
            listed = requests.get(f"{self.cluster.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10,
                                  params={"status": "processing", "limit": 50}).json()
            for job in listed.get("jobs", []):
                runs = self.job(job["job_id"]).get("runs") or []
                if runs and runs[-1]["finished_at"] is None and runs[-1]["worker_id"] in names:
                    return runs[-1]["worker_id"]
            return None

        try:
            victim = harness.wait_until(busy_worker, timeout=30, interval=0.2, what="a worker to run a job")
        except AssertionError:
            victim = "worker-0"
        process = self.cluster.process(victim)
        os.kill(process.popen.pid, signal.SIGKILL)
        process.kill()
        self.figures.worker_kills += 1
        self.set_gen_seconds(self.plan.gen_seconds)
        self.replace(victim)
        burst.join()

    def set_gen_seconds(self, seconds: float) -> None:
        for url in self.simulators:
            requests.post(f"{url}/_sim/faults", json={"gen_seconds": seconds}, timeout=10).raise_for_status()

    def kill_api_during_burst(self) -> None:
        """BURST submits in flight, the API killed under them, started again."""
        burst = threading.Thread(target=self.submit_all, args=(BURST,))
        burst.start()
        time.sleep(0.15)
        process = self.cluster.process("api")
        killed_at = time.monotonic()
        os.kill(process.popen.pid, signal.SIGKILL)
        process.kill()
        self.figures.api_kills += 1
        self.replace("api")
        self.figures.api_recovery_seconds.append(time.monotonic() - killed_at)
        burst.join()

    def faults(self) -> None:
        for _ in range(self.plan.kills):
            self.kill_api_during_burst()
            self.kill_worker()

    # -- checks ---------------------------------------------------------------------------------

    def health(self) -> dict:
        try:
            return requests.get(f"{self.cluster.api_url}/health", headers=harness.AUTH, timeout=10).json()
        except (requests.RequestException, ValueError):
            return {}

    def job_counts(self) -> dict:
        return self.health().get("queue", {}).get("jobs", {})

    def wait_finished(self) -> None:
        deadline = time.monotonic() + self.plan.timeout
        while time.monotonic() < deadline:
            counts = self.job_counts()
            if counts and counts.get("queued", 0) + counts.get("processing", 0) == 0:
                return
            time.sleep(0.5)

    def generations(self) -> int:
        return sum(requests.get(f"{url}/_sim/stats", timeout=10).json()["generations_completed"]
                   for url in self.simulators)

    def verify_while(self, finished: threading.Event) -> None:
        """Read every 202 job, in the order they were accepted, once it has ended (so that with
        retention on, each is read before the sweep purges it); after `finished`, one not ended is lost."""
        session = requests.Session()
        index = 0
        while True:
            with self.lock:
                job_id = self.accepted[index] if index < len(self.accepted) else None
            if job_id is None:
                if finished.is_set():
                    return
                time.sleep(0.2)
                continue
            try:
                response = session.get(f"{self.cluster.api_url}/sdapi/v1/jobs/{job_id}", headers=harness.AUTH,
                                       timeout=10)
            except requests.RequestException:  # the API is being killed and restarted
                time.sleep(0.2)
                continue
            if response.status_code == 503 and not finished.is_set():  # the store is down: read it again later
                time.sleep(0.2)
                continue
            if (response.status_code == 200 and response.json()["status"] not in vocabulary.TERMINAL_STATUSES
                    and not finished.is_set()):
                time.sleep(0.1)
                continue
            self.check(job_id, response)
            index += 1

    def check(self, job_id: str, response: requests.Response) -> None:
        if response.status_code != 200 or response.json()["status"] != vocabulary.JobStatus.COMPLETED:
            self.figures.lost.append((job_id, response.status_code,
                                      response.json().get("status") if response.ok else None))
            return
        detail = response.json()
        self.figures.completed += 1
        runs = detail.get("runs") or []
        self.figures.runs_lost += sum(run.get("outcome") == "lost" for run in runs)
        if sum(run.get("outcome") == "completed" for run in runs) != 1:
            self.figures.completed_twice.append(job_id)
        self.figures.extra_attempts += max(0, detail["attempts"] - 1)

    def slow_clients(self) -> None:
        """SLOW_CLIENTS connections each send half a request and hold it; meanwhile others are served."""
        host, port = "127.0.0.1", urllib.parse.urlsplit(self.cluster.api_url).port
        held = []
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
            held.append(sock)
        latencies = []
        try:
            for _ in range(20):
                started = time.perf_counter()
                connection = http.client.HTTPConnection(host, port, timeout=10)
                connection.request("GET", "/health")
                status = connection.getresponse().status
                connection.close()
                latencies.append((time.perf_counter() - started) * 1000)
                assert status == 200
        finally:
            for sock in held:
                sock.close()
        self.figures.slow_clients = {"held": SLOW_CLIENTS, "served": len(latencies),
                                     "p50_ms": round(statistics.median(latencies), 1),
                                     "max_ms": round(max(latencies), 1)}

    def database_bytes(self) -> int:
        if self.database_url.startswith("sqlite:///"):
            return pathlib.Path(self.database_url[len("sqlite:///"):]).stat().st_size  # the file, not its WAL
        with psycopg.connect(self.database_url) as conn:
            return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]

    def retention(self) -> None:
        """Workers again with JOB_RETENTION=1s: the sweep purges every job; the database shrinks."""
        self.figures.db_bytes["loaded"] = self.database_bytes()
        time.sleep(1.2)
        for index in range(self.plan.workers):
            self.cluster.process(f"worker-{index}").terminate()
            self.replace(f"worker-{index}", JOB_RETENTION="1s", RETENTION_INTERVAL="1")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(self.job_counts().values() or [1]) > 0:
            time.sleep(0.5)
        self.figures.jobs_after_retention = sum(self.job_counts().values())
        time.sleep(2)  # a sweep or two more: the WAL checkpoint after the last purge
        self.figures.db_bytes["after_retention"] = self.database_bytes()

    def sample_while(self, stop: threading.Event) -> None:
        """Every plan.sample_seconds until `stop`: the RSS of the API and each worker, the database size."""
        started = time.monotonic()
        while not stop.wait(self.plan.sample_seconds):
            rss = {}
            for process in list(self.cluster.processes):
                if (process.name == "api" or process.name.startswith("worker")) and process.alive():
                    rss[process.name] = round(rss_kib(process.popen.pid) / 1024, 1)
            try:
                size = round(self.database_bytes() / 1e6, 1)
            except (OSError, psycopg.Error):
                size = None
            with self.lock:
                accepted = len(self.accepted)
            self.figures.samples.append({"t": round(time.monotonic() - started), "accepted": accepted,
                                         "rss_mib": rss, "db_mb": size})

    def rss(self, when: str) -> None:
        for process in self.cluster.processes:
            if process.name == "api" or process.name.startswith("worker"):
                self.figures.rss_kib.setdefault(process.name, {})[when] = rss_kib(process.popen.pid)

    def submit_until(self, stop: threading.Event, *, round_size: int = BURST, pause: float = 0.0) -> None:
        """A submit load until `stop`, in rounds of `round_size` with `pause` seconds between them."""
        while not stop.is_set():
            self.submit_all(round_size)
            stop.wait(pause)

    def submit_one(self) -> int | str:
        """One submit, its status code ("no answer" if none); a 202 job joins the accepted ones."""
        try:
            response = requests.post(f"{self.cluster.api_url}/sdapi/v1/txt2img", headers=harness.AUTH,
                                     json={"prompt": "probe", "steps": 4}, timeout=10)
        except requests.RequestException:
            return "no answer"
        if response.status_code == 202:
            with self.lock:
                self.accepted.append(response.json()["job_id"])
        return response.status_code

    def restart_database(self, server: PostgresServer, *, down_seconds: float) -> None:
        """Postgres stopped as by a crash (`pg_ctl stop -m immediate`) under a submit load, kept down
        `down_seconds` while submits and /health are probed, then started again: how long until the
        API accepts again and until the workers finish jobs again."""
        stop = threading.Event()
        load = threading.Thread(target=self.submit_until, args=(stop,))
        load.start()
        try:
            time.sleep(1.0)
            completed_before = self.job_counts().get("completed", 0)
            server.stop()
            stopped_at = time.monotonic()
            probes, healths = collections.Counter(), collections.Counter()
            while time.monotonic() - stopped_at < down_seconds:
                probes[self.submit_one()] += 1
                try:
                    health = requests.get(f"{self.cluster.api_url}/health", headers=harness.AUTH, timeout=5)  # uncached
                    healths[f"{health.status_code} {health.json().get('status')}"] += 1
                except (requests.RequestException, ValueError):
                    healths["no answer"] += 1
                time.sleep(0.2)
            server.start()
            started_at = time.monotonic()
            harness.wait_until(lambda: self.submit_one() == 202, timeout=60, what="a 202 after the restart")
            api_back = time.monotonic() - started_at
            harness.wait_until(lambda: self.job_counts().get("completed", 0) > completed_before, timeout=120,
                               what="a job completed after the restart")
            jobs_back = time.monotonic() - started_at
            time.sleep(2.0)  # the load goes on a little after the restart
        finally:
            stop.set()
            load.join()
        self.figures.outages.append({
            "fault": "postgres stopped (immediate) and started", "down_s": down_seconds,
            "submits_while_down": dict(probes), "health_while_down": dict(healths),
            "accepting_after_start_s": round(api_back, 2), "jobs_completing_after_start_s": round(jobs_back, 2)})

    def fill_disk(self, mount: pathlib.Path, *, prompt_bytes: int = 9_000, larger_mib: int = 64) -> None:
        """Submits of large prompts until the small filesystem under the SQLite file is full (5 refusals
        in a row), the file checked, then the filesystem grown (`mount -o remount,size=`): how long
        until the API accepts again; every job accepted before or after must still complete."""
        path = pathlib.Path(self.database_url[len("sqlite:///"):])
        prompt = "x" * prompt_bytes
        answers, refusals, first_refusal = collections.Counter(), 0, None
        filled_at = time.monotonic()
        while refusals < 5 and sum(answers.values()) < 5000:
            try:
                response = requests.post(f"{self.cluster.api_url}/sdapi/v1/txt2img", headers=harness.AUTH,
                                         json={"prompt": prompt, "steps": 4}, timeout=30)
            except requests.RequestException:
                answers["no answer"] += 1
                continue
            answers[response.status_code] += 1
            if response.status_code == 202:
                refusals = 0
                with self.lock:
                    self.accepted.append(response.json()["job_id"])
                continue
            refusals += 1
            first_refusal = first_refusal or {"status": response.status_code, "body": response.json()}
        filled_seconds = time.monotonic() - filled_at
        health = requests.get(f"{self.cluster.api_url}/health", headers=harness.AUTH, timeout=10)
        integrity_full = integrity(path)
        subprocess.run(["mount", "-o", f"remount,size={larger_mib}m", str(mount)], check=True, capture_output=True)
        grown_at = time.monotonic()
        harness.wait_until(lambda: self.submit_one() == 202, timeout=60, what="a 202 once space is back")
        accepting = time.monotonic() - grown_at
        self.wait_finished()
        self.figures.outages.append({
            "fault": "SQLite's filesystem full", "submits_until_full": dict(answers),
            "seconds_to_fill": round(filled_seconds, 1), "first_refusal": first_refusal,
            "health_while_full": f"{health.status_code} {health.json().get('status')}",
            "store_while_full": health.json().get("store"),
            "integrity_while_full": integrity_full, "accepting_after_space_s": round(accepting, 2),
            "integrity_after": integrity(path)})

    def running_on(self, url: str) -> str | None:
        """A job that A1111 at `url` is running now, if any."""
        listed = requests.get(f"{self.cluster.api_url}/sdapi/v1/jobs", params={"status": "processing", "limit": 50},
                              headers=harness.AUTH, timeout=10).json()
        for job in listed.get("jobs", []):
            detail = requests.get(f"{self.cluster.api_url}/sdapi/v1/jobs/{job['job_id']}", headers=harness.AUTH,
                                  timeout=10).json()
            if detail.get("instance") == url and (detail.get("progress") or {}).get("step"):
                return job["job_id"]
        return None

    def hang_simulator(self, *, gen_seconds: float = 2.0, hung_seconds: float = 10.0) -> None:
        """simulator-0 SIGSTOPped (a hung A1111: no answer at all) while it runs a job, under a submit
        load, for `hung_seconds`: when /health turns degraded, when the job's run is abandoned
        (A1111_STALL_SECONDS), when it completes elsewhere."""
        self.set_gen_seconds(gen_seconds)
        stop = threading.Event()
        load = threading.Thread(target=self.submit_until, args=(stop,),
                                kwargs={"round_size": SUBMIT_THREADS, "pause": 1.0})
        load.start()
        stopped = self.cluster.process("simulator-0")
        try:
            job_id = harness.wait_until(lambda: self.running_on(self.simulators[0]), timeout=30,
                                        what="a job running on simulator-0")
            stopped.popen.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            harness.wait_until(lambda: self.health().get("status") == "degraded", timeout=60, what="degraded")
            degraded = time.monotonic() - stopped_at
            retried = harness.wait_until(
                lambda: (lambda j: j if len(j.get("runs") or []) >= 2 else None)(self.job(job_id)),
                timeout=60, what="the run abandoned")
            abandoned = time.monotonic() - stopped_at
            done = harness.wait_until(
                lambda: (lambda j: j if j["status"] in vocabulary.TERMINAL_STATUSES else None)(self.job(job_id)),
                timeout=60, what="the job to end")
            ended = time.monotonic() - stopped_at
            time.sleep(max(0.0, hung_seconds - (time.monotonic() - stopped_at)))
        finally:
            stopped.popen.send_signal(signal.SIGCONT)
            stop.set()
            load.join()
            self.set_gen_seconds(self.plan.gen_seconds)
        self.figures.outages.append({
            "fault": "simulator-0 SIGSTOPped mid-job", "hung_s": hung_seconds,
            "stall_seconds": self.cluster.env.get("A1111_STALL_SECONDS"), "health_degraded_after_s": round(degraded, 2),
            "run_abandoned_after_s": round(abandoned, 2), "first_run": retried["runs"][0].get("detail"),
            "job_ended_after_s": round(ended, 2),
            "job": {"status": done["status"], "attempts": done["attempts"],
                    "on_another_instance": done.get("instance") != self.simulators[0]}})

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.cluster.api_url}/sdapi/v1/jobs/{job_id}", headers=harness.AUTH, timeout=10).json()

    def run(self, faults: collections.abc.Callable[[], None] | None = None, *, extras: bool = True) -> Figures:
        """The steady phase, then `faults` (the kills by default), then the checks; with `extras`, the
        slow clients and the retention phase too."""
        self.start()
        stop_sampling, finished = threading.Event(), threading.Event()
        threading.Thread(target=self.sample_while, args=(stop_sampling,), daemon=True).start()
        verifier = threading.Thread(target=self.verify_while, args=(finished,), daemon=True)
        verifier.start()
        try:
            started = time.monotonic()
            self.rss("start")
            self.submit_all(self.plan.jobs)
            self.wait_finished()
            self.figures.seconds = time.monotonic() - started
            self.rss("end")
            (faults or self.faults)()
            self.wait_finished()
            stop_sampling.set()
            finished.set()
            verifier.join()
            self.figures.generations = self.generations()
            if extras:
                self.slow_clients()
                self.retention()
        finally:
            stop_sampling.set()
            finished.set()
            self.cluster.stop()
        self.figures.accepted = len(self.accepted)
        return self.figures


class PostgresServer:
    """A Postgres server of the campaign's own (initdb, pg_ctl) on a free port, so that it can be
    stopped and started; under root its commands run as the `postgres` user (initdb refuses root)."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not binaries:
            raise RuntimeError("no /usr/lib/postgresql/*/bin: Postgres's server programs are not installed")
        self.bin = pathlib.Path(binaries[-1])
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="campaign-pg-"))  # reachable by `postgres`
        self.data = self.root / "data"
        self.port = harness.support.free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, program: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, str(self.bin / program), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self, *, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_restart(plan: Plan, workdir: pathlib.Path, *, down_seconds: float = 5.0) -> Figures:
    """The steady phase on a Postgres of the campaign's own, then that server restarted under load."""
    server = PostgresServer()
    try:
        server.start()
        campaign = Campaign(dataclasses.replace(plan, database="postgres"), workdir, server.url)
        return campaign.run(lambda: campaign.restart_database(server, down_seconds=down_seconds), extras=False)
    finally:
        server.remove()


def integrity(path: pathlib.Path) -> str:
    """SQLite's own check of the whole file ("ok" when sound)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


def full_disk(plan: Plan, workdir: pathlib.Path, *, size_mib: int = 8) -> Figures:
    """The SQLite file on a tmpfs of `size_mib` MiB of the campaign's own (mounting needs root):
    filled by submits, checked, then given more space."""
    mount = workdir / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)], check=True,
                   capture_output=True)
    try:
        campaign = Campaign(dataclasses.replace(plan, database="sqlite"), workdir, f"sqlite:///{mount / 'jobs.db'}")
        return campaign.run(lambda: campaign.fill_disk(mount), extras=False)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def hung_a1111(plan: Plan, workdir: pathlib.Path, database_url: str, *, stall_seconds: float = 3.0) -> Figures:
    """The steady phase, then one simulator hung (SIGSTOP) mid-job under load."""
    campaign = Campaign(plan, workdir, database_url)
    # The lease must outlast a stall's detection plus its interrupt attempt (2 s), as the defaults
    # (30 s lease, 60 s stall) do; with the harness's 3 s lease the sweep would requeue the job first.
    campaign.cluster.env.update(A1111_STALL_SECONDS=str(stall_seconds), A1111_TIMEOUT="120", JOB_LEASE_SECONDS="10")
    return campaign.run(campaign.hang_simulator, extras=False)


FAULTS = ("kills", "postgres-restart", "full-disk", "hang")


def run(plan: Plan, workdir: pathlib.Path, *, fault: str = "kills") -> Figures:
    """The campaign with one kind of fault (FAULTS): the kills (with slow clients and retention), a
    Postgres of its own restarted, SQLite on a small filesystem filled, or an A1111 hung."""
    if fault == "postgres-restart":
        return postgres_restart(plan, workdir)
    if fault == "full-disk":
        return full_disk(plan, workdir)
    postgres = plan.database == "postgres"
    with harness.scratch_postgres("campaign") if postgres else contextlib.nullcontext() as url:
        if postgres and url is None:
            raise SystemExit(f"no Postgres server answers at {harness.postgres_server_url()}")
        url = url or f"sqlite:///{workdir / 'jobs.db'}"
        if fault == "hang":
            return hung_a1111(plan, workdir, url)
        return Campaign(plan, workdir, url).run()


def report(figures: Figures) -> str:
    plan = figures.plan
    rss = ", ".join(f"{name} {values.get('start', 0) // 1024}→{values.get('end', 0) // 1024} MiB"
                    for name, values in sorted(figures.rss_kib.items()))
    recovery = figures.api_recovery_seconds
    lines = [
        f"campaign: {plan.jobs} submits, {plan.workers} workers, {plan.simulators} simulators "
        f"({plan.gen_seconds} s a generation), {plan.database}",
        f"  accepted (202)           {figures.accepted}   "
        f"no answer (API killed under it): {figures.refused_while_down}",
        f"  completed                {figures.completed}   lost: {len(figures.lost)}   completed twice: "
        f"{len(figures.completed_twice)}",
        f"  worker kill -9           {figures.worker_kills} (runs lost and run again: {figures.runs_lost})   "
        f"attempts beyond the first: {figures.extra_attempts}   A1111 generations: {figures.generations}",
        f"  API kill -9              {figures.api_kills}   back in "
        + (f"{statistics.median(recovery):.2f} s median, {max(recovery):.2f} s max" if recovery else "-"),
        f"  steady phase             {plan.jobs} jobs in {figures.seconds:.1f} s "
        f"({plan.jobs / max(figures.seconds, 0.001):.1f} jobs/s)",
        f"  RSS over it (start→end)  {rss}",
        f"  slow clients             {json.dumps(figures.slow_clients)}",
        f"  database                 {figures.db_bytes.get('loaded', 0) / 1e6:.1f} MB loaded → "
        f"{figures.db_bytes.get('after_retention', 0) / 1e6:.1f} MB after retention "
        f"({figures.jobs_after_retention} jobs left)",
        f"  verdict                  {'OK' if figures.ok() else 'FAILED'}",
    ]
    lines.append(f"  submit answers           {dict(sorted(figures.answers.items(), key=str))}")
    for status, body in sorted(figures.refusals.items()):
        lines.append(f"  first {status} answer        {body}")
    for outage in figures.outages:
        lines.append(f"  fault                    {json.dumps(outage)}")
    if figures.samples:
        lines.append("  over time (s, accepted, RSS MiB, database MB):")
        step = max(1, len(figures.samples) // 20)
        for sample in figures.samples[::step] + ([figures.samples[-1]] if (len(figures.samples) - 1) % step else []):
            rss_now = " ".join(f"{name} {mib:g}" for name, mib in sorted(sample["rss_mib"].items()))
            lines.append(f"    {sample['t']:>6}  {sample['accepted']:>6}  {rss_now}  db {sample['db_mb']}")
    if figures.lost:
        lines.append(f"  lost (first 5)           {figures.lost[:5]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the CI form: 250 jobs, one kill of each kind")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--simulators", type=int)
    parser.add_argument("--database", choices=harness.BACKENDS)
    parser.add_argument("--gen-seconds", type=float)
    parser.add_argument("--retention", help="JOB_RETENTION during the load (default 30d: nothing purged)")
    parser.add_argument("--sample-seconds", type=float)
    parser.add_argument("--fault", choices=FAULTS, default="kills",
                        help="kills (default): kill -9 of the API and of a worker, slow clients, retention; "
                             "postgres-restart (a server of its own); full-disk (root: a tmpfs); hang (SIGSTOP)")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(SHORT if args.short else FULL, **{
        name: value for name, value in vars(args).items() if name not in ("short", "fault") and value is not None})
    with tempfile.TemporaryDirectory(prefix="campaign-") as workdir:
        figures = run(plan, pathlib.Path(workdir), fault=args.fault)
    print(report(figures))
    return 0 if figures.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
