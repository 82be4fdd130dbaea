"""Live progress benchmark: store change → SSE event delivered (p50/p99) with 1 and 100 open
streams, the API's CPU per open idle stream, and store change → long-poll answered.

Starts the API under waitress (the e2e harness) on SQLite or Postgres; this process makes the
changes itself, straight on the store (a claimed job's progress ticks, each a version bump), and
reads the streams in threads with sseclient-py. The readers share the machine's cores with the
server, so the latencies include their scheduling. Run: `python bench/live.py [--postgres URL]`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time
import uuid

import psycopg
import requests
import sseclient

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from chalicelib import store as store_module  # noqa: E402
from tests import harness  # noqa: E402

TICKS = 60
TICK_INTERVAL = 0.05


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def running_job(job_store, cluster) -> str:
    job = cluster.submit({"prompt": "bench", "steps": TICKS})
    claimed = job_store.claim_next(worker_id="bench", instance="bench", lease_seconds=600, now=time.time())
    assert claimed.applied and claimed.job.id == job["job_id"]
    return job["job_id"]


def stream_latency(cluster, job_store, *, streams: int) -> list[float]:
    job_id = running_job(job_store, cluster)
    committed: dict[int, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(streams + 1)

    def read() -> None:
        response = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job_id}/events", headers=harness.AUTH,
                                stream=True, timeout=60)
        first = True
        for event in sseclient.SSEClient(response).events():
            if first:
                first = False
                ready.wait()
                continue
            received = time.monotonic()
            step = json.loads(event.data)["progress"]["step"]
            with lock:
                latencies.append(received - committed[step])
            if step == TICKS:
                response.close()
                return

    threads = [threading.Thread(target=read, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=60)
    for step in range(1, TICKS + 1):
        progress = {"progress": step / TICKS, "eta_relative": 1.0, "step": step, "steps": TICKS,
                    "job_no": 0, "job_count": 1}
        committed[step] = time.monotonic()
        job_store.record_progress(job_id, worker_id="bench", progress=progress, preview=None, lease_seconds=600,
                                  now=time.time())
        time.sleep(TICK_INTERVAL)
    for thread in threads:
        thread.join(timeout=30)
    return latencies


def long_poll_latency(cluster, job_store) -> list[float]:
    job_id = running_job(job_store, cluster)
    latencies: list[float] = []
    for step in range(1, 21):
        version = job_store.get_job(job_id).version
        answered: list[float] = []
        thread = threading.Thread(target=_poll, args=(cluster, job_id, version, answered))
        thread.start()
        time.sleep(0.1)
        progress = {"progress": step / 20, "step": step, "steps": 20}
        committed = time.monotonic()
        job_store.record_progress(job_id, worker_id="bench", progress=progress, preview=None, lease_seconds=600,
                                  now=time.time())
        thread.join()
        latencies.append(answered[0] - committed)
    return latencies


def _poll(cluster, job_id: str, version: int, answered: list[float]) -> None:
    requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job_id}?wait=10&version={version}&images=urls",
                 headers=harness.AUTH, timeout=15)
    answered.append(time.monotonic())


def idle_cpu(cluster, *, streams: int, seconds: float = 10) -> float:
    """API CPU seconds per second with `streams` idle streams open (one queued job, no changes)."""
    job = cluster.submit()
    responses = [requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}/events", headers=harness.AUTH,
                              stream=True, timeout=60) for _ in range(streams)]
    time.sleep(1)
    pid = cluster.process("api").popen.pid
    before = cpu_seconds(pid)
    time.sleep(seconds)
    used = (cpu_seconds(pid) - before) / seconds
    for response in responses:
        response.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="a Postgres server URL: run on a scratch database there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = None
        if args.postgres:
            name = f"bench_live_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = harness.with_database(args.postgres, name)
        cluster = harness.Cluster(pathlib.Path(tmp), database_url=url)
        cluster.env.update(API_THREADS="128", STREAM_MAX_OPEN="110")
        try:
            cluster.start_simulator()
            cluster.start_api()
            job_store = store_module.make_store(cluster.env["DATABASE_URL"])
            print(f"database: {job_store.backend}; {TICKS} changes {TICK_INTERVAL * 1000:.0f} ms apart")
            print("| what | n | p50 ms | p99 ms |\n|---|---|---|---|")
            for streams in (1, 100):
                values = stream_latency(cluster, job_store, streams=streams)
                print(f"| change → SSE event, {streams} open stream(s) | {len(values)} | "
                      f"{statistics.median(values) * 1000:.1f} | {percentile(values, 0.99) * 1000:.1f} |")
            values = long_poll_latency(cluster, job_store)
            print(f"| change → long-poll answered | {len(values)} | {statistics.median(values) * 1000:.1f} | "
                  f"{percentile(values, 0.99) * 1000:.1f} |")
            idle = idle_cpu(cluster, streams=0)
            busy = idle_cpu(cluster, streams=100)
            print(f"\nAPI CPU, idle: {idle * 100:.2f} % of a core with 0 streams, {busy * 100:.2f} % with 100 idle "
                  f"streams: {(busy - idle) / 100 * 1e6:.0f} µs of CPU per second per idle stream")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
