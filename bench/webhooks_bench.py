"""Webhook benchmarks: time from job completion to the receiver's 2xx (idle and under a burst), and
job throughput with a receiver that never answers versus one that answers at once (goal >= 0.95).

Starts the A1111 simulator, the API and a worker as real processes on 127.0.0.1 (the e2e harness)
with the local queue, and a verifying receiver in this process.
Run: `.venv/bin/python bench/webhooks_bench.py [--quick] [--database-url URL]`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests import harness
from tests import webhook_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEVER = {"status": 200, "delay": 3600}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def start_cluster(directory: str, database_url: str | None, *, gen_seconds: float) -> harness.Cluster:
    cluster = harness.Cluster(pathlib.Path(directory),
                              database_url=database_url or f"sqlite:///{directory}/jobs.db")
    cluster.env.update(PROGRESS_INTERVAL="1.0", HEARTBEAT_INTERVAL="5", SWEEP_INTERVAL="5", JOB_LEASE_SECONDS="30",
                       LOG_LEVEL="WARNING", WEBHOOK_ALLOW_PRIVATE="true", WORKER_SHUTDOWN_GRACE="1")
    cluster.start_simulator(gen_seconds=gen_seconds)
    cluster.start_api()
    cluster.start_worker("bench-worker")
    return cluster


def hooked(receiver: webhook_receiver.WebhookReceiver, n: int) -> dict:
    return {"prompt": f"bench {n}", "steps": 2, "width": 64, "height": 64, "webhook_url": receiver.url,
            "webhook_secret": SECRET}


def completion_to_2xx(received) -> list[float]:
    """Seconds from each job's completion (its event timestamp = finished_at) to the 2xx answer."""
    return [r.answered_at - parse_time(r.event["timestamp"]) for r in received
            if r.verified and r.status == 200 and r.event["type"] == "job.completed"]


def bench_latency(database_url: str | None, *, samples: int) -> dict:
    """One job at a time, dispatcher idle: the doorbell path."""
    with tempfile.TemporaryDirectory() as directory, \
            webhook_receiver.WebhookReceiver(secret=SECRET) as receiver:
        cluster = start_cluster(directory, database_url, gen_seconds=0.05)
        try:
            for n in range(samples):
                time.sleep(0.2)
                cluster.submit(hooked(receiver, n))
                receiver.wait_for(lambda got, n=n: len(got) == n + 1, timeout=30)
        finally:
            cluster.stop()
        latencies = completion_to_2xx(receiver.answered())
    return {"samples": len(latencies), "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


def run_batch(database_url: str | None, *, jobs: int, never_answer: bool) -> dict:
    """`jobs` submitted at once; throughput from the first submit to the last completion."""
    with tempfile.TemporaryDirectory() as directory, \
            webhook_receiver.WebhookReceiver(secret=SECRET) as receiver:
        if never_answer:
            receiver.script([NEVER] * (jobs * 2))
        cluster = start_cluster(directory, database_url, gen_seconds=0.05)
        try:
            began = time.time()
            ids = [cluster.submit(hooked(receiver, n))["job_id"] for n in range(jobs)]
            finished = []
            for job_id in ids:
                detail = cluster.wait_status(job_id, {"completed", "error"}, timeout=120)
                assert detail["status"] == "completed", detail
                finished.append(parse_time(detail["finished_at"]))
            if not never_answer:
                receiver.wait_for(lambda got: len(got) == jobs, timeout=60)
            webhooks = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{ids[-1]}/webhooks", headers=harness.AUTH,
                                    timeout=10).json()["deliveries"]
        finally:
            receiver.stop()  # releases the hanging answers, so the worker stops at once
            cluster.stop()
        latencies = completion_to_2xx(receiver.answered())
    return {"jobs": jobs, "seconds": max(finished) - began, "throughput": jobs / (max(finished) - began),
            "latencies": latencies, "last_delivery": webhooks[0]["status"] if webhooks else None,
            "received": len(receiver.received())}


def bench_throughput(database_url: str | None, *, jobs: int, rounds: int) -> dict:
    answering, silent = [], []
    for _ in range(rounds):  # interleaved, so drift on the machine hits both sides
        answering.append(run_batch(database_url, jobs=jobs, never_answer=False))
        silent.append(run_batch(database_url, jobs=jobs, never_answer=True))
    fast = statistics.median(r["throughput"] for r in answering)
    slow = statistics.median(r["throughput"] for r in silent)
    burst = [x for r in answering for x in r["latencies"]]
    return {"jobs_per_round": jobs, "rounds": rounds, "answering_jobs_per_s": fast, "silent_jobs_per_s": slow,
            "ratio": slow / fast, "burst_p50_ms": percentile(burst, 0.5) * 1000,
            "burst_p99_ms": percentile(burst, 0.99) * 1000,
            "silent_requests_in_flight": [r["received"] for r in silent]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    samples, jobs, rounds = (10, 20, 1) if args.quick else (100, 60, 3)
    latency = bench_latency(args.database_url, samples=samples)
    throughput = bench_throughput(args.database_url, jobs=jobs, rounds=rounds)
    print(f"machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}")
    print(f"completion -> receiver 2xx, idle ({latency['samples']} jobs): "
          f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms")
    print(f"completion -> receiver 2xx, burst of {jobs}: p50 {throughput['burst_p50_ms']:.1f} ms, "
          f"p99 {throughput['burst_p99_ms']:.1f} ms")
    print(f"throughput, receiver answers at once: {throughput['answering_jobs_per_s']:.2f} jobs/s; "
          f"never answers: {throughput['silent_jobs_per_s']:.2f} jobs/s; "
          f"ratio {throughput['ratio']:.3f} (goal >= 0.95)")
    print(json.dumps({"latency": latency, "throughput": throughput}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
