"""Core benchmarks: submit latency and throughput at 1, 16 and 64 concurrent clients against the same
server's trivial route, idle-worker dispatch latency, and the GPU-busy ratio of sequential jobs.
Starts the A1111 simulator, the API under waitress and a worker as real processes on 127.0.0.1 (the
e2e harness), measures, prints tables. Run: `make bench` (about 2 minutes on 2 cores; `--quick`: about 75 s).

The load generator is threads in this process, one keep-alive http.client connection each (requests
costs more CPU per call than the server's trivial route); it shares the machine's cores with the
server, so its own CPU use is printed next to each result.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import http.client
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
import urllib.parse

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from chalicelib import job_ids
from chalicelib import store as store_module
from tests import harness

AUTH = harness.AUTH
CLIENT_COUNTS = (1, 16, 64)
ROUNDS = 5  # submit, /doc and /health take turns this many times per client count
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Route:
    label: str
    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: dict = dataclasses.field(default_factory=dict)


# A sampler named, as webuiapi does in every submit: the sampler check is part of the common path.
SUBMIT = Route("POST /sdapi/v1/txt2img (submit)", "POST", "/sdapi/v1/txt2img", 202,
               json.dumps({"prompt": "a lighthouse at dusk", "steps": 20, "width": 512, "height": 512,
                           "sampler_name": "Euler a"}).encode(),
               {**AUTH, "Content-Type": "application/json"})
# The ceiling: no token, no store; a cached HTML page, through the same waitress → WSGI →
# Chalice gateway → handler stack as every route.
TRIVIAL = Route("GET /doc (trivial: the ceiling)", "GET", "/doc", 200)
# Not trivial: pings the store, counts jobs by status, lists workers, reads the queue depth and
# probes every A1111 instance over HTTP (here the simulator).
HEALTH = Route("GET /health (store + A1111 probe)", "GET", "/health", 200)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def cluster_in(directory: str, *, gen_seconds: float, worker: bool) -> harness.Cluster:
    cluster = harness.Cluster(pathlib.Path(directory))
    cluster.env.update(PROGRESS_INTERVAL="1.0", HEARTBEAT_INTERVAL="5", SWEEP_INTERVAL="5",
                       JOB_LEASE_SECONDS="30", LOG_LEVEL="WARNING")
    cluster.start_simulator(gen_seconds=gen_seconds)
    cluster.start_api()
    if worker:
        cluster.start_worker("bench-worker")
    return cluster


def timed_calls(api_url: str, route: Route, count: int) -> list[float]:
    """`count` calls of `route` back to back on one keep-alive connection; their latencies in s."""
    parts = urllib.parse.urlsplit(api_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request(route.method, route.path, body=route.body, headers=route.headers)
            response = connection.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - started)
            assert response.status == route.status, (route.path, response.status, payload[:300])
    finally:
        connection.close()
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure_load(cluster: harness.Cluster, route: Route, *, clients: int, requests_per_client: int) -> dict:
    """`clients` concurrent clients calling `route`: throughput, latency, and the CPU it cost the
    API process (per request) and this load generator (in cores)."""
    api_pid = cluster.process("api").popen.pid
    api_cpu, own_cpu = cpu_seconds(api_pid), time.process_time()
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        batches = pool.map(lambda _: timed_calls(cluster.api_url, route, requests_per_client), range(clients))
        latencies = [x for batch in batches for x in batch]
    wall = time.perf_counter() - started
    api_cpu, own_cpu = cpu_seconds(api_pid) - api_cpu, time.process_time() - own_cpu
    return {"requests": len(latencies), "throughput": len(latencies) / wall, "latencies": latencies,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
            "api_cpu_ms": api_cpu / len(latencies) * 1000, "client_cores": own_cpu / wall}


def bench_submit(*, clients: int, requests_per_client: int) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        cluster = cluster_in(directory, gen_seconds=0.5, worker=False)
        try:
            timed_calls(cluster.api_url, SUBMIT, 20)  # warm-up: lazy imports, the store's first connection
            return measure_load(cluster, SUBMIT, clients=clients, requests_per_client=requests_per_client)
        finally:
            cluster.stop()


def bench_submit_vs_ceiling(*, clients: int, total_requests: int, rounds: int) -> list[dict]:
    """Submit, /doc and /health in turn, `rounds` times, at one client count on one new API server;
    per route the median round (by throughput) and its latencies over all rounds. Taking turns, a
    burst of noise on this shared machine falls on every route alike instead of on one route's
    only run. No worker runs, so the jobs stay queued; a new server (and store) per client count
    gives each the same backlog."""
    per_client = max(total_requests // clients, 5)
    routes = (SUBMIT, TRIVIAL, HEALTH)
    results: dict[str, list[dict]] = {route.label: [] for route in routes}
    with tempfile.TemporaryDirectory() as directory:
        cluster = cluster_in(directory, gen_seconds=0.5, worker=False)
        try:
            for route in routes:
                timed_calls(cluster.api_url, route, 20)  # warm-up: lazy imports, first connections
            for _ in range(rounds):
                for route in routes:
                    results[route.label].append(
                        measure_load(cluster, route, clients=clients, requests_per_client=per_client))
        finally:
            cluster.stop()
    medians = {label: median_round(runs) for label, runs in results.items()}
    submit = medians[SUBMIT.label]
    return [dict(medians[route.label], clients=clients, route=route.label,
                 submit_ratio=None if route is SUBMIT else submit["throughput"] / medians[route.label]["throughput"],
                 round_ratios=None if route is SUBMIT else round_ratios(results[SUBMIT.label], results[route.label]))
            for route in routes]


def round_ratios(submit_runs: list[dict], route_runs: list[dict]) -> list[float]:
    """Submit's throughput ÷ the route's, round by round (each with the same round's turn of the
    route), sorted: their spread is this machine's noise on the ratio from one moment to the next."""
    return sorted(s["throughput"] / r["throughput"] for s, r in zip(submit_runs, route_runs, strict=True))


def median_round(runs: list[dict]) -> dict:
    """The run of median throughput, with the request count, percentiles and CPU of all runs."""
    ordered = sorted(runs, key=lambda run: run["throughput"])
    latencies = [x for run in runs for x in run["latencies"]]
    return dict(ordered[len(ordered) // 2], requests=len(latencies),
                p50_ms=percentile(latencies, 0.5) * 1000, p99_ms=percentile(latencies, 0.99) * 1000,
                api_cpu_ms=sum(run["api_cpu_ms"] * run["requests"] for run in runs) / len(latencies),
                rounds=len(runs))


QUEUED = 100_000
# Submits to each server before the deep-queue part measures: with 20, the empty queue's p50 still
# paid a new server's first writes (its WAL file growing, say) and came out above the deep queue's.
DEEP_QUEUE_WARM_UP = 300
FILL_JOB = """
INSERT INTO jobs (id, owner, kind, status, priority, request, options, available_at, created_at, updated_at)
VALUES (:id, 'e2e', 'txt2img', 'queued', 0, :request, :options, :now, :now, :now)
"""
FILL_DOORBELL = """
INSERT INTO queue_messages (queue, body, visible_at, created_at) VALUES ('jobs', :body, :now, :now)
"""


def fill_queue(database_url: str, count: int) -> float:
    """`count` queued jobs and their doorbells written straight into the store (as many submits
    would leave them with no worker running); then the cost in ms of the queue position of the
    newest one, the COUNT a submit would pay to put a position in its 202."""
    job_store = store_module.make_store(database_url)
    db = job_store.database
    now = time.time()
    try:
        for start in range(0, count, 10_000):
            ids = [job_ids.new_job_id() for _ in range(start, min(start + 10_000, count))]
            with db.transaction() as session:
                session.executemany(db.native(FILL_JOB), [
                    {"id": job_id, "request": db.dump_json({"prompt": "filler"}), "options": db.dump_json({}),
                     "now": now} for job_id in ids])
                session.executemany(db.native(FILL_DOORBELL), [
                    {"body": db.dump_json({"job_id": job_id}), "now": now} for job_id in ids])
        # Postgres: vacuumed now, so autovacuum does not wake up for the new rows mid-measurement, and
        # checkpointed, so the checkpoint the fill's WAL calls for is not still writing during it (a
        # queue that grew over hours would have had its checkpoints along the way).
        if db.dialect == "postgres":
            db.execute("VACUUM ANALYZE")
            db.execute("CHECKPOINT")
        else:
            db.execute("ANALYZE")
        newest = job_store.list_jobs("e2e", status="queued", limit=1, before=None).jobs
        timings = []
        for _ in range(20):
            began = time.perf_counter()
            job_store.queue_positions(newest)
            timings.append(time.perf_counter() - began)
        return percentile(timings, 0.5) * 1000
    finally:
        db.close()


def bench_deep_queue(*, database_urls: tuple[str | None, str | None], label: str, samples: int) -> dict:
    """Submit p50 at one client on two servers side by side, one on an empty store and one on a store
    with QUEUED jobs queued (`database_urls`: the two stores; None: a SQLite file), taking turns
    ROUNDS times, so that a burst of noise on this shared machine falls on both alike."""
    with tempfile.TemporaryDirectory() as empty_dir, tempfile.TemporaryDirectory() as deep_dir:
        clusters = [harness.Cluster(pathlib.Path(directory), database_url=url)
                    for directory, url in zip((empty_dir, deep_dir), database_urls, strict=True)]
        try:
            for cluster in clusters:
                cluster.env.update(LOG_LEVEL="WARNING", SWEEP_INTERVAL="3600")
                cluster.start_simulator(gen_seconds=0.5)
                cluster.start_api()
            empty_cluster, deep_cluster = clusters
            position_ms = fill_queue(deep_cluster.env["DATABASE_URL"], QUEUED)
            for cluster in clusters:
                timed_calls(cluster.api_url, SUBMIT, DEEP_QUEUE_WARM_UP)
            empty, deep, per_round = [], [], max(samples // ROUNDS, 1)
            for _ in range(ROUNDS):
                empty += timed_calls(empty_cluster.api_url, SUBMIT, per_round)
                deep += timed_calls(deep_cluster.api_url, SUBMIT, per_round)
        finally:
            for cluster in clusters:
                cluster.stop()
    empty_p50, deep_p50 = percentile(empty, 0.5) * 1000, percentile(deep, 0.5) * 1000
    return {"label": label, "empty_p50": empty_p50, "deep_p50": deep_p50, "ratio": deep_p50 / empty_p50,
            "empty_p99": percentile(empty, 0.99) * 1000, "deep_p99": percentile(deep, 0.99) * 1000,
            "position_ms": position_ms}


def print_deep_queue_table(rows: list[dict]) -> None:
    print(f"| store | submit p50 (p99), empty queue | submit p50 (p99), {QUEUED:,} queued | ratio (goal ≤ 1.2) | "
          f"queue position of the newest job at {QUEUED:,} queued (not in the 202) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['empty_p50']:.2f} ms ({r['empty_p99']:.2f}) | {r['deep_p50']:.2f} ms "
              f"({r['deep_p99']:.2f}) | {r['ratio']:.2f} | {r['position_ms']:.1f} ms |")


def deep_queue_rows(*, samples: int, postgres: bool) -> list[dict]:
    rows = [bench_deep_queue(database_urls=(None, None), label="SQLite", samples=samples)]
    if postgres:
        with harness.scratch_postgres("bench_core") as empty, harness.scratch_postgres("bench_core") as deep:
            if empty and deep:
                rows.append(bench_deep_queue(database_urls=(empty, deep), label="Postgres", samples=samples))
    return rows


def measure_dispatch(cluster: harness.Cluster, *, samples: int) -> dict:
    """Submit → claim delay of jobs submitted one by one to an idle worker, in ms."""
    delays = []
    for _ in range(samples):
        time.sleep(0.3)  # the worker is idle, waiting on the doorbell
        job = cluster.submit({"prompt": "dispatch", "steps": 2})
        done = cluster.wait_status(job["job_id"], {"completed"}, timeout=30)
        delays.append(parse_time(done["started_at"]) - parse_time(done["created_at"]))
    return {"samples": samples, "p50_ms": percentile(delays, 0.5) * 1000,
            "p99_ms": percentile(delays, 0.99) * 1000, "max_ms": max(delays) * 1000}


def bench_dispatch(*, samples: int) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        cluster = cluster_in(directory, gen_seconds=0.05, worker=True)
        try:
            return measure_dispatch(cluster, samples=samples)
        finally:
            cluster.stop()


def bench_sequential(*, jobs: int, gen_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        cluster = cluster_in(directory, gen_seconds=gen_seconds, worker=True)
        try:
            bodies = [{"prompt": f"job {i}", "steps": 10} for i in range(jobs)]
            # The ideal: the same requests sent straight to A1111, one after another.
            ideal = 0.0
            for body in bodies:
                began = time.perf_counter()
                requests.post(f"{cluster.sim_url}/sdapi/v1/txt2img", json=body, timeout=60).raise_for_status()
                ideal += time.perf_counter() - began
            started = time.time()
            ids = [cluster.submit(body)["job_id"] for body in bodies]
            details = [cluster.wait_status(job_id, {"completed"}, timeout=jobs * gen_seconds * 3 + 30)
                       for job_id in ids]
            finished = max(parse_time(d["finished_at"]) for d in details)
        finally:
            cluster.stop()
    wall = finished - started
    return {"jobs": jobs, "wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal}


def print_submit_table(rows: list[dict]) -> None:
    print(f"| clients | route | requests | req/s (median of {ROUNDS} rounds) | p50 | p99 | API CPU per request | "
          "load generator CPU | submit req/s ÷ this route's | the same, round by round |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        by_round = "—" if r["round_ratios"] is None else " ".join(f"{x:.2f}" for x in r["round_ratios"])
        print(f"| {r['clients']} | {r['route']} | {r['requests']} | {r['throughput']:.0f} | {r['p50_ms']:.1f} ms | "
              f"{r['p99_ms']:.1f} ms | {r['api_cpu_ms']:.2f} ms | {r['client_cores']:.2f} cores | "
              f"{'—' if r['submit_ratio'] is None else format(r['submit_ratio'], '.2f')} | {by_round} |")


def submit_rows(scale: float) -> list[dict]:
    return [row for clients in CLIENT_COUNTS
            for row in bench_submit_vs_ceiling(clients=clients, total_requests=int(800 * scale), rounds=ROUNDS)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--only", choices=("submit", "deep-queue"), help="run one part alone")
    parser.add_argument("--no-postgres", action="store_true", help="the deep-queue part on SQLite only")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    if args.only == "deep-queue":
        print_deep_queue_table(deep_queue_rows(samples=int(400 * scale), postgres=not args.no_postgres))
        return 0
    if args.only == "submit":
        print_submit_table(submit_rows(scale))
        return 0

    submit = submit_rows(scale)
    deep = deep_queue_rows(samples=int(400 * scale), postgres=not args.no_postgres)
    dispatch = bench_dispatch(samples=int(40 * scale) or 1)
    sequential = bench_sequential(jobs=20, gen_seconds=0.5)

    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          "store: SQLite (default)")
    print_submit_table(submit)
    print()
    print_deep_queue_table(deep)
    print()
    print("| measure | result |")
    print("|---|---|")
    print(f"| idle-worker dispatch (submit → claim and A1111 call), {dispatch['samples']} jobs | "
          f"p50 {dispatch['p50_ms']:.1f} ms, p99 {dispatch['p99_ms']:.1f} ms, max {dispatch['max_ms']:.1f} ms |")
    print(f"| {sequential['jobs']} jobs × 0.5 s generation, one instance: wall through the service / "
          "the same calls made straight to A1111 | "
          f"{sequential['wall_s']:.2f} s / {sequential['ideal_s']:.2f} s = {sequential['ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
