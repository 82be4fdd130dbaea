"""Blocking clients (the /a1111 mount): job completion → waiting client answered (p50/p99), the GPU-busy
ratio of 8 blocking clients on 1 and 4 simulated instances, and the API's memory with 64 clients waiting.

The API runs under waitress (the e2e harness) with a worker and simulators, on SQLite (or Postgres with
`--postgres URL`). Latency is the client's receive time minus the job's `finished_at` (both wall
clocks of this machine): the change signal, the wake, the job read and the answer. The busy ratio is
as in bench/instances.py: the wall time of the jobs (first submit → last finished_at) over the ideal
(jobs × one direct generation ÷ instances). Run: `python bench/blocking.py [--quick] [--postgres URL]`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import core  # noqa: E402
from tests import harness  # noqa: E402

GEN_SECONDS = 0.3
BODY = {"prompt": "a lighthouse", "steps": 10, "width": 64, "height": 64}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def vm_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def blocking_call(cluster: harness.Cluster, prompt: str) -> tuple[str, float]:
    """(job id, the time its answer arrived)."""
    answer = requests.post(f"{cluster.api_url}/a1111/sdapi/v1/txt2img", json={**BODY, "prompt": prompt},
                           headers=harness.AUTH, timeout=600)
    received = time.time()
    answer.raise_for_status()
    return answer.headers["X-Job-Id"], received


def new_cluster(directory: str, database_url: str | None, **env) -> harness.Cluster:
    cluster = harness.Cluster(pathlib.Path(directory), database_url=database_url)
    cluster.env.update(PROGRESS_INTERVAL="1.0", HEARTBEAT_INTERVAL="5", SWEEP_INTERVAL="5", JOB_LEASE_SECONDS="30",
                       LOG_LEVEL="WARNING", **env)
    return cluster


def bench_clients(*, instances: int, clients: int, jobs: int, database_url: str | None) -> dict:
    """`clients` blocking clients, each sending its next job when its answer comes, `jobs` in all."""
    with tempfile.TemporaryDirectory() as directory:
        cluster = new_cluster(directory, database_url)
        try:
            urls = cluster.start_simulators(instances, gen_seconds=GEN_SECONDS)
            cluster.start_api()
            cluster.start_worker("bench-worker")
            direct = []
            for _ in range(5):
                began = time.perf_counter()
                requests.post(f"{urls[0]}/sdapi/v1/txt2img", json=BODY, timeout=60).raise_for_status()
                direct.append(time.perf_counter() - began)
            ideal = sum(direct) / len(direct) * jobs / instances
            counter = iter(range(jobs))
            lock = threading.Lock()

            def client() -> list[tuple[str, float]]:
                done = []
                while True:
                    with lock:
                        n = next(counter, None)
                    if n is None:
                        return done
                    done.append(blocking_call(cluster, f"job {n}"))

            started = time.time()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                answered = [item for part in pool.map(lambda _: client(), range(clients)) for item in part]
            latencies, finished = [], []
            for job_id, received in answered:
                at = core.parse_time(cluster.job(job_id)["finished_at"])
                finished.append(at)
                latencies.append(received - at)
        finally:
            cluster.stop()
    wall = max(finished) - started
    return {"instances": instances, "clients": clients, "jobs": jobs, "ratio": wall / ideal, "wall_s": wall,
            "ideal_s": ideal, "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


def bench_memory(*, waiting: int, database_url: str | None) -> dict:
    """The API's RSS idle, then with `waiting` clients blocked on queued jobs (no worker runs them)."""
    with tempfile.TemporaryDirectory() as directory:
        cluster = new_cluster(directory, database_url, API_THREADS="128", SYNC_MAX_WAITING=str(waiting))
        try:
            cluster.start_simulator(gen_seconds=GEN_SECONDS)
            cluster.start_api()
            pid = cluster.process("api").popen.pid
            requests.get(f"{cluster.api_url}/a1111/sdapi/v1/progress", headers=harness.AUTH, timeout=10)
            idle = vm_rss_mib(pid)
            threads = [threading.Thread(target=lambda n=n: requests.post(
                f"{cluster.api_url}/a1111/sdapi/v1/txt2img", json={**BODY, "prompt": f"w{n}"}, headers=harness.AUTH,
                timeout=120), daemon=True) for n in range(waiting)]
            for thread in threads:
                thread.start()
            harness.wait_until(lambda: len(requests.get(f"{cluster.api_url}/sdapi/v1/jobs?limit=100",
                                                        headers=harness.AUTH, timeout=10).json()["jobs"]) == waiting,
                               timeout=60, what="every client's job")
            time.sleep(1)
            loaded = vm_rss_mib(pid)
            busy = requests.post(f"{cluster.api_url}/a1111/sdapi/v1/txt2img", json=BODY, headers=harness.AUTH,
                                 timeout=10)
            cluster.start_worker("bench-worker")  # let them finish, so the clients end
            for thread in threads:
                thread.join(timeout=120)
        finally:
            cluster.stop()
    return {"waiting": waiting, "idle_mib": idle, "loaded_mib": loaded,
            "per_waiting_kib": (loaded - idle) * 1024 / waiting, "one_more": busy.status_code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 jobs per run instead of 48")
    parser.add_argument("--postgres", help="a Postgres database URL instead of a SQLite file")
    args = parser.parse_args()
    jobs = 24 if args.quick else 48
    print("| instances | blocking clients | jobs | wall s | ideal s | busy ratio | goal "
          "| completion → answer p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for instances, goal in ((1, 1.02), (4, 1.05)):
        r = bench_clients(instances=instances, clients=8, jobs=jobs, database_url=args.postgres)
        print(f"| {instances} | 8 | {jobs} | {r['wall_s']:.2f} | {r['ideal_s']:.2f} | {r['ratio']:.3f} | ≤ {goal} "
              f"{'✓' if r['ratio'] <= goal else '✗'} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms |", flush=True)
    m = bench_memory(waiting=64, database_url=args.postgres)
    print(f"\nAPI memory: {m['idle_mib']:.1f} MiB idle, {m['loaded_mib']:.1f} MiB with {m['waiting']} clients waiting "
          f"({m['per_waiting_kib']:.0f} KiB each); one more → {m['one_more']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
