"""Worker memory: the worker process's peak RSS while it runs one txt2img job of batch_size 8 at
1024×1024, next to its idle RSS and the size of A1111's answer.

The simulator runs with `--noise-images`, so every PNG is incompressible noise (~3 MB, ~4 MB of
base64; the JSON answer is ~32 MB), not the few-KB flat images of the tests. Starts the simulator,
the API under waitress and one worker as real processes (the e2e harness), on SQLite and on Postgres.
A small warm-up job loads everything the worker imports lazily; then the idle RSS is read, the
kernel's peak counter is reset (`/proc/<pid>/clear_refs` ← 5) and the batch job runs; the peak is
VmHWM of /proc/<pid>/status. Each run is a new job in the same worker: glibc keeps much of what
the first job freed in its heap, so later jobs start, and peak, higher. Each store runs twice: with
glibc's default malloc, and with MALLOC_MMAP_THRESHOLD_=131072 (big buffers always mmap'ed, so they go
back to the system when freed), a setting of the worker's environment, not of the code.
Run: `.venv/bin/python bench/worker_memory.py [--runs 3] [--no-postgres]` (about a minute).
"""
from __future__ import annotations

import argparse
import base64
import os
import pathlib
import platform
import sys
import tempfile

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests import harness

BATCH = {"prompt": "a lighthouse at dusk", "steps": 4, "width": 1024, "height": 1024, "batch_size": 8}
WARM_UP = {"prompt": "warm-up", "steps": 2, "width": 64, "height": 64}
MIB = 1024 * 1024
MALLOC_SETTINGS = (("default", {}), ("mmap ≥ 128 KiB", {"MALLOC_MMAP_THRESHOLD_": "131072"}))


def proc_status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in KiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux ≥ 4.0)."""
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")


def answer_size(cluster: harness.Cluster) -> dict:
    """What A1111 sends back for BATCH: the JSON body, and the PNGs it carries once decoded."""
    response = requests.post(f"{cluster.sim_url}/sdapi/v1/txt2img", json=BATCH, timeout=120)
    response.raise_for_status()
    images = [base64.b64decode(item) for item in response.json()["images"]]
    return {"json_mib": len(response.content) / MIB, "png_mib": sum(map(len, images)) / MIB,
            "images": len(images)}


def run_batch(cluster: harness.Cluster, pid: int) -> float:
    """The worker's peak RSS in MiB while it ran one batch job."""
    reset_peak(pid)
    job = cluster.submit(BATCH)
    done = cluster.wait_status(job["job_id"], {"completed", "error"}, timeout=180)
    assert done["status"] == "completed", done
    assert len(done["image_urls"]) == BATCH["batch_size"], done["image_urls"]
    return proc_status_kib(pid, "VmHWM") / 1024


def bench_worker(*, runs: int, database_url: str | None, worker_env: dict) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        cluster = harness.Cluster(pathlib.Path(directory), database_url=database_url)
        cluster.env.update(PROGRESS_INTERVAL="1.0", HEARTBEAT_INTERVAL="5", SWEEP_INTERVAL="5",
                           JOB_LEASE_SECONDS="60", A1111_TIMEOUT="120", LOG_LEVEL="WARNING")
        try:
            cluster.start_simulator(gen_seconds=0.1, flags=("--noise-images",))
            cluster.start_api()
            pid = cluster.start_worker("bench-worker", **worker_env).popen.pid
            size = answer_size(cluster)
            cluster.wait_status(cluster.submit(WARM_UP)["job_id"], {"completed"}, timeout=60)
            idle = proc_status_kib(pid, "VmRSS") / 1024  # before the first batch: later ones keep freed heap
            peaks = [run_batch(cluster, pid) for _ in range(runs)]
        finally:
            cluster.stop()
    return {**size, "idle_mib": idle, "peaks_mib": peaks}


def bench_store(label: str, *, runs: int, database_url: str | None) -> list[tuple[str, str, dict]]:
    return [(label, malloc, bench_worker(runs=runs, database_url=database_url, worker_env=env))
            for malloc, env in MALLOC_SETTINGS]


def print_table(rows: list[tuple[str, str, dict]]) -> None:
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| store | worker malloc | A1111 answer (JSON) | PNGs | worker idle RSS | peak RSS, job 1 / 2 / … | "
          "peak − idle, job 1 | peak − idle, worst | worst ÷ answer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for store, malloc, r in rows:
        first, worst = r["peaks_mib"][0] - r["idle_mib"], max(r["peaks_mib"]) - r["idle_mib"]
        print(f"| {store} | {malloc} | {r['json_mib']:.1f} MiB | "
              f"{r['images']} × {r['png_mib'] / r['images']:.2f} MiB | "
              f"{r['idle_mib']:.0f} MiB | {' / '.join(f'{p:.0f}' for p in r['peaks_mib'])} MiB | "
              f"{first:.0f} MiB | {worst:.0f} MiB | {worst / r['json_mib']:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="batch jobs per store")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()

    rows = bench_store("SQLite", runs=args.runs, database_url=None)
    if not args.no_postgres:
        with harness.scratch_postgres("bench_worker_memory") as url:
            if url is None:
                print("Postgres not reachable: its row is skipped", file=sys.stderr)
            else:
                rows += bench_store("Postgres", runs=args.runs, database_url=url)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
