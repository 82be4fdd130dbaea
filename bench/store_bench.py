"""Store benchmarks, SQLite vs Postgres: claim throughput with 1 and 4 worker processes,
GET /sdapi/v1/jobs latency with 100,000 jobs in the store (with the query plans behind it), and how
soon an idle worker starts a submitted job.

Claims: N queued jobs, W worker processes released at once by a barrier, each looping on the store's
`claim_next` (and, in the second column, `complete`) until the queue is empty; jobs/s = N / wall time.
Listing: 100,000 jobs (60 % of them one owner's, 1 % queued) seeded in bulk, then the real route
through Chalice's test client in this process (routing, auth, service, store, JSON; no socket), one
request at a time. Postgres runs in a scratch database on BENCH_POSTGRES_URL (default
TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end.
Dispatch: the e2e harness's real processes (simulator, API, one worker); a job is submitted while
the worker idles on its doorbell, and created_at → started_at is the delay.

Run: `.venv/bin/python bench/store_bench.py` (about a minute). Prints Markdown; writes
bench/results/store_bench.json.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import pathlib
import platform
import random
import secrets
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from chalice import test as chalice_test  # noqa: E402

from chalicelib import context as context_module  # noqa: E402
from chalicelib import store as store_module  # noqa: E402
from chalicelib.store import base  # noqa: E402
from chalicelib.store import queries  # noqa: E402
from bench import core  # noqa: E402
from tests import harness  # noqa: E402

TOKENS = "alice:tok-alice,bob:tok-bob,owner3:tok-owner3"
ALICE = {"Authorization": "Bearer tok-alice"}
SMALL_OWNER = {"Authorization": "Bearer tok-owner3"}
OWNER_SHARES = [("alice", 0.60), ("bob", 0.30)] + [(f"owner{i}", 0.0125) for i in range(8)]
STATUS_SHARES = [("completed", 0.90), ("error", 0.06), ("cancelled", 0.028), ("queued", 0.01),
                 ("processing", 0.002)]
# A queue is FIFO: what still waits is what came last. `--scatter-queued` spreads the queued and
# processing jobs over the whole history instead (the worst case for queue positions).
RECENT_SHARES = {"queued": 0.01, "processing": 0.002}
SEED_COLUMNS = ("id", "owner", "kind", "status", "priority", "request", "options", "attempts", "result",
                "image_count", "result_attempt", "available_at", "created_at", "started_at",
                "finished_at", "updated_at")


# -- databases --------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_scratch(server_url: str):
    """A database of our own on the server, dropped afterwards."""
    name = f"a1111_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield harness.with_database(server_url, name)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fresh_store(url: str):
    """An empty, migrated store at `url` (SQLite file removed, Postgres schema dropped)."""
    if url.startswith("sqlite:///"):
        path = pathlib.Path(url[len("sqlite:///"):])
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    job_store = store_module.make_store(url)
    job_store.migrate()
    return job_store


def seed(job_store, rows: list[dict]) -> None:
    """Bulk-load job rows (COPY on Postgres, one executemany transaction on SQLite)."""
    columns = ", ".join(SEED_COLUMNS)
    if job_store.backend == "postgres":
        with job_store.database.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(f"COPY jobs ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in SEED_COLUMNS])
            cursor.execute("ANALYZE jobs")
    else:
        placeholders = ", ".join(f":{c}" for c in SEED_COLUMNS)
        with job_store.database.write() as conn:
            conn.executemany(f"INSERT INTO jobs ({columns}) VALUES ({placeholders})", rows)
            conn.execute("ANALYZE")


def job_rows(count: int, *, statuses=None, owners=None, start: float, scatter: bool = True) -> list[dict]:
    rng = random.Random(42)
    owner_names, owner_weights = zip(*(owners or OWNER_SHARES), strict=True)
    shares = statuses or STATUS_SHARES
    if not scatter:
        shares = [(name, weight) for name, weight in shares if name not in RECENT_SHARES]
    status_names, status_weights = zip(*shares, strict=True)
    queued_from = count - int(count * RECENT_SHARES["queued"])
    processing_from = queued_from - int(count * RECENT_SHARES["processing"])
    rows = []
    for i in range(count):
        status = rng.choices(status_names, status_weights)[0]
        if not scatter and i >= processing_from:
            status = "queued" if i >= queued_from else "processing"
        created = start + i * 0.5
        done = status in ("completed", "error", "cancelled")
        rows.append({
            "id": str(uuid.UUID(int=rng.getrandbits(128))), "owner": rng.choices(owner_names, owner_weights)[0],
            "kind": "txt2img", "status": status, "priority": rng.choice([0, 0, 0, 5]),
            "request": json.dumps({"prompt": f"a lighthouse {i}", "steps": 20, "width": 512, "height": 512}),
            "options": json.dumps({"webhook_url": None, "webhook_events": None, "metadata": {"n": i}}),
            "attempts": 1 if status != "queued" else 0,
            "result": json.dumps({"parameters": {"prompt": f"a lighthouse {i}"}, "info": "{}"})
            if status == "completed" else None,
            "image_count": 1 if status == "completed" else 0,
            "result_attempt": 1 if status == "completed" else None,
            "available_at": created, "created_at": created,
            "started_at": created + 1 if status != "queued" else None,
            "finished_at": created + 5 if done else None, "updated_at": created + 5,
        })
    return rows


# -- claim throughput -------------------------------------------------------------------------


def _claim_worker(url: str, worker: str, complete: bool, barrier, out) -> None:
    job_store = store_module.make_store(url)
    job_store.ping()  # connect before the clock starts
    barrier.wait()
    started, claimed = time.time(), 0
    while True:
        job = job_store.claim_next(worker_id=worker, instance="gpu0", lease_seconds=60, now=time.time()).job
        if job is None:
            break
        claimed += 1
        if complete:
            job_store.complete(job.id, worker_id=worker, result={"info": "{}"}, image_count=0, now=time.time())
    out.put((started, time.time(), claimed))


def bench_claims(url: str, *, workers: int, jobs: int, complete: bool) -> dict:
    job_store = fresh_store(url)
    seed(job_store, job_rows(jobs, statuses=[("queued", 1.0)], start=time.time() - jobs))
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    processes = [ctx.Process(target=_claim_worker, args=(url, f"w{i}", complete, barrier, out))
                 for i in range(workers)]
    [p.start() for p in processes]
    results = [out.get(timeout=300) for _ in processes]
    [p.join() for p in processes]
    claimed = sum(r[2] for r in results)
    assert claimed == jobs, (claimed, jobs)
    assert job_store.count_by_status() == {"completed" if complete else "processing": jobs}
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    job_store.database.close()
    return {"workers": workers, "jobs": jobs, "complete": complete, "seconds": round(wall, 3),
            "jobs_per_second": round(jobs / wall)}


# -- list latency -----------------------------------------------------------------------------


def cursor_for(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": seq}).encode()).decode().rstrip("=")


def bench_list(url: str, *, jobs: int, requests: int, scatter: bool) -> tuple[list[dict], dict]:
    job_store = fresh_store(url)
    seed(job_store, job_rows(jobs, start=1_800_000_000.0, scatter=scatter))
    middle = job_store.list_jobs("alice", status=None, limit=1, before=None).jobs[0].seq // 2
    scenarios = {
        "first page (limit 20)": ("/sdapi/v1/jobs", ALICE),
        "page in the middle (cursor)": (f"/sdapi/v1/jobs?cursor={cursor_for(middle)}", ALICE),
        "limit 100": ("/sdapi/v1/jobs?limit=100", ALICE),
        "status=completed": ("/sdapi/v1/jobs?status=completed", ALICE),
        "status=queued (queue positions, one query)": ("/sdapi/v1/jobs?status=queued", ALICE),
        "owner with 1.25 % of the jobs": ("/sdapi/v1/jobs", SMALL_OWNER),
    }
    os.environ.update(DATABASE_URL=url, API_TOKENS=TOKENS, A1111_BASE_URL="http://127.0.0.1:9",
                      LOG_LEVEL="WARNING")
    context_module.reset_context()
    from app import app  # noqa: PLC0415 - after the environment above: app reads it when imported
    results = []
    with chalice_test.Client(app) as client:
        for name, (path, headers) in scenarios.items():
            for _ in range(20):  # warm up caches and the connection
                assert client.http.get(path, headers=headers).status_code == 200
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.http.get(path, headers=headers)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200 and response.json_body["jobs"], response.body
            results.append({"scenario": name, "path": path, "requests": requests,
                            "p50_ms": round(core.percentile(latencies, 0.5) * 1000, 2),
                            "p99_ms": round(core.percentile(latencies, 0.99) * 1000, 2),
                            "max_ms": round(max(latencies) * 1000, 2)})
    context_module.reset_context()
    newest_queued = job_store.list_jobs("alice", status="queued", limit=100, before=None).jobs
    plans = explain(job_store, middle=middle, queued_page=newest_queued)
    job_store.database.close()
    return results, plans


def explain(job_store, *, middle: int, queued_page: list[base.Job]) -> dict:
    """The plans of the list, queue-positions (of a page of the newest queued jobs, at the back of
    the queue) and claim statements on the seeded data."""
    window = base.queue_window(queued_page)
    params = {"owner": "alice", "small_owner": "owner3", "status": "completed", "rare_status": "queued",
              "before": middle, "limit": 21, "last_priority": window["last_priority"],
              "last_seq": window["last_seq"], "now": 1_900_000_000.0, "worker": "explain", "instance": "gpu0",
              "expires": 1_900_000_060.0, "labels": "[]"}
    database, sql = job_store.database, queries.for_database(job_store.database)
    statements = {name: database.native(queries.LIST_JOBS.format(where=where)) for name, where in {
        "list, first page": "owner = :owner",
        "list, cursor": "owner = :owner AND seq < :before",
        "list, status": "owner = :owner AND status = :status",
        "list, rare status": "owner = :owner AND status = :rare_status",
        "list, small owner": "owner = :small_owner",
    }.items()}
    statements.update({"queue positions": sql.QUEUE_POSITIONS, "claim": sql.CLAIM_NEXT})
    params["seqs"] = database.array(window["seqs"])
    params["labels"] = database.dump_json([])
    if job_store.backend == "postgres":
        plans = {}
        with database.connection() as conn:
            for name, statement in statements.items():
                with conn.transaction(force_rollback=True):  # EXPLAIN ANALYZE runs the claim for real
                    rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}", params).fetchall()
                plans[name] = [row["QUERY PLAN"] for row in rows]
        return plans
    return {name: [row["detail"] for row in database.query(f"EXPLAIN QUERY PLAN {statement}", params)]
            for name, statement in statements.items()}


# -- dispatch ---------------------------------------------------------------------------------


def bench_dispatch(url: str, *, samples: int) -> dict:
    fresh_store(url).database.close()
    with tempfile.TemporaryDirectory() as directory:
        cluster = harness.Cluster(pathlib.Path(directory), database_url=url)
        cluster.env.update(LOG_LEVEL="WARNING", WEBHOOK_DISPATCHER_THREADS="0")
        try:
            cluster.start_simulator(gen_seconds=0.05)
            cluster.start_api()
            cluster.start_worker("bench-worker")
            measured = core.measure_dispatch(cluster, samples=samples)
        finally:
            cluster.stop()
    return {key: round(value, 1) for key, value in measured.items()}


# -- report -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claim-jobs", type=int, default=2000)
    parser.add_argument("--list-jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--dispatch-samples", type=int, default=30)
    parser.add_argument("--scatter-queued", action="store_true",
                        help="queued jobs spread over the whole history, not the newest 1 %%")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL")
                        or harness.postgres_server_url())
    args = parser.parse_args()

    report = {"machine": f"{platform.node()} · {platform.processor() or platform.machine()} · "
                         f"{os.cpu_count()} CPUs · Python {platform.python_version()}",
              "claims": [], "list": {}, "plans": {}, "dispatch": {}}
    with tempfile.TemporaryDirectory() as directory, postgres_scratch(args.postgres_url) as postgres_url:
        with psycopg.connect(postgres_url) as conn:
            report["postgres_version"] = conn.execute("SHOW server_version").fetchone()[0]
        urls = {"sqlite": f"sqlite:///{directory}/jobs.db", "postgres": postgres_url}
        for backend, url in urls.items():
            for workers in (1, 4):
                for complete in (False, True):
                    result = bench_claims(url, workers=workers, jobs=args.claim_jobs, complete=complete)
                    report["claims"].append({"backend": backend, **result})
            report["list"][backend], report["plans"][backend] = bench_list(
                url, jobs=args.list_jobs, requests=args.requests, scatter=args.scatter_queued)
            if args.dispatch_samples:
                report["dispatch"][backend] = bench_dispatch(url, samples=args.dispatch_samples)

    print_report(report, args)
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    name = "store_bench_scattered.json" if args.scatter_queued else "store_bench.json"
    (results_dir / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_report(report: dict, args) -> None:
    print(f"# Store benchmark\n\n{report['machine']} · PostgreSQL {report['postgres_version']}\n")
    print(f"## Claim throughput ({args.claim_jobs} queued jobs, worker processes)\n")
    print("| backend | workers | claim only (jobs/s) | claim + complete (jobs/s) |")
    print("|---|---:|---:|---:|")
    for backend in ("sqlite", "postgres"):
        for workers in (1, 4):
            rates = {r["complete"]: r["jobs_per_second"] for r in report["claims"]
                     if r["backend"] == backend and r["workers"] == workers}
            print(f"| {backend} | {workers} | {rates[False]} | {rates[True]} |")
    where = "spread over the history" if args.scatter_queued else "the newest 1 %"
    print(f"\n## GET /sdapi/v1/jobs with {args.list_jobs:,} jobs, queued ones {where} "
          f"({args.requests} requests each)\n")
    print("| scenario | SQLite p50 / p99 (ms) | Postgres p50 / p99 (ms) |")
    print("|---|---:|---:|")
    for sqlite_row, postgres_row in zip(report["list"]["sqlite"], report["list"]["postgres"], strict=True):
        print(f"| {sqlite_row['scenario']} | {sqlite_row['p50_ms']} / {sqlite_row['p99_ms']} "
              f"| {postgres_row['p50_ms']} / {postgres_row['p99_ms']} |")
    if report["dispatch"]:
        print(f"\n## Idle worker: submit → started_at ({args.dispatch_samples} jobs)\n")
        print("| backend | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|")
        for backend, row in report["dispatch"].items():
            print(f"| {backend} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |")
    for backend, plans in report["plans"].items():
        print(f"\n## Plans ({backend})\n")
        for name, lines in plans.items():
            print(f"{name}:\n```\n" + "\n".join(lines) + "\n```")


if __name__ == "__main__":
    sys.exit(main())
