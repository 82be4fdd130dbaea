"""Core benchmarks: submit latency and throughput, idle-worker dispatch latency, and the GPU-busy
ratio of sequential jobs. Starts the A1111 simulator, the API under waitress and a worker as real
processes on 127.0.0.1 (the e2e harness), measures, prints a table. Run: `make bench`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.e2e import conftest as harness  # noqa: E402

AUTH = harness.AUTH


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


def bench_submit(*, clients: int, requests_per_client: int) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        cluster = cluster_in(directory, gen_seconds=0.5, worker=False)
        try:
            url = f"{cluster.api_url}/sdapi/v1/txt2img"
            body = {"prompt": "a lighthouse at dusk", "steps": 20, "width": 512, "height": 512}

            def client(_):
                session = requests.Session()
                latencies = []
                for _ in range(requests_per_client):
                    started = time.perf_counter()
                    response = session.post(url, json=body, headers=AUTH, timeout=30)
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code == 202, response.text
                return latencies

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                latencies = [x for batch in pool.map(client, range(clients)) for x in batch]
            wall = time.perf_counter() - started
        finally:
            cluster.stop()
    return {"requests": len(latencies), "throughput": len(latencies) / wall,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0

    submit = bench_submit(clients=16, requests_per_client=int(50 * scale) or 1)
    dispatch = bench_dispatch(samples=int(40 * scale) or 1)
    sequential = bench_sequential(jobs=20, gen_seconds=0.5)

    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          "store: SQLite (default)")
    print("| measure | result |")
    print("|---|---|")
    print(f"| submit, 16 concurrent clients, {submit['requests']} requests (waitress) | "
          f"{submit['throughput']:.0f} req/s, p50 {submit['p50_ms']:.1f} ms, p99 {submit['p99_ms']:.1f} ms |")
    print(f"| idle-worker dispatch (submit → claim and A1111 call), {dispatch['samples']} jobs | "
          f"p50 {dispatch['p50_ms']:.1f} ms, p99 {dispatch['p99_ms']:.1f} ms, max {dispatch['max_ms']:.1f} ms |")
    print(f"| {sequential['jobs']} jobs × 0.5 s generation, one instance: wall through the service / "
          "the same calls made straight to A1111 | "
          f"{sequential['wall_s']:.2f} s / {sequential['ideal_s']:.2f} s = {sequential['ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
