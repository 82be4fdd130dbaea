"""Batch benchmarks (issue 16): claim cost with 100,000 queued jobs from 50 owners vs 1 owner (the
fair-share claim; goal: ratio ≤ 1.5), batch submit of 1,000 jobs vs 1,000 single creates (store
level, one transaction vs one each), and the peak memory of streaming a 1,000-image zip.

Run: `.venv/bin/python bench/batches_bench.py [--postgres URL]` (SQLite always; Postgres when a URL
is given, in scratch databases bench_batches_*, left for the caller to drop). Prints Markdown.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
import types
import uuid

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from chalicelib import batches  # noqa: E402
from chalicelib import store as store_module  # noqa: E402
from chalicelib.store import base  # noqa: E402

QUEUED = 100_000
CLAIMS = 300
NOW = 1_800_000_000.0


def new_job(owner: str) -> base.NewJob:
    return base.NewJob(id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=0,
                       request={"prompt": "a cat", "steps": 20}, options={"metadata": None},
                       webhook_secret=None, idempotency_key=None)


def seed(job_store, owners: int) -> None:
    per_owner = QUEUED // owners
    for o in range(owners):
        for start in range(0, per_owner, 2000):
            count = min(2000, per_owner - start)
            batch = base.NewBatch(id=str(uuid.uuid4()), owner=f"owner{o}", options={}, webhook_secret=None,
                                  idempotency_key=None, job_count=count)
            job_store.create_batch(batch, [new_job(f"owner{o}") for _ in range(count)], now=NOW)


def claim_cost(url: str, owners: int) -> float:
    job_store = store_module.make_store(url)
    job_store.migrate()
    seed(job_store, owners)
    timings = []
    for i in range(CLAIMS):
        started = time.perf_counter()
        change = job_store.claim_next(worker_id="w", instance="gpu", lease_seconds=60, now=NOW + 1 + i)
        timings.append(time.perf_counter() - started)
        assert change.applied
    return statistics.median(timings) * 1000


def submit_cost(url: str) -> tuple[float, float]:
    job_store = store_module.make_store(url)
    job_store.migrate()
    jobs = [new_job("alice") for _ in range(1000)]
    started = time.perf_counter()
    batch = base.NewBatch(id=str(uuid.uuid4()), owner="alice", options={}, webhook_secret=None,
                          idempotency_key=None, job_count=1000)
    job_store.create_batch(batch, jobs, now=NOW)
    batched = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(1000):
        job_store.create_job(new_job("bob"), now=NOW)
    return batched, time.perf_counter() - started


def zip_peak(images: int = 1000, size: int = 200_000) -> tuple[float, int]:
    """Peak traced memory while a zip of `images` images of `size` bytes is streamed and dropped."""
    member = base.BatchMember
    members = [member(seq=i, id=str(uuid.uuid4()), status="completed", options={}, progress=None, image_count=1,
                      result_attempt=1, error_code=None, error_message=None, started_at=None, finished_at=None)
               for i in range(images)]
    ctx = types.SimpleNamespace(
        store=types.SimpleNamespace(get_batch=lambda batch_id, owner: types.SimpleNamespace(id=batch_id),
                                    batch_members=lambda batch_id: members),
        images=types.SimpleNamespace(get=lambda job_id, attempt, n: (b"\x89PNG" + bytes(size - 4), "image/png")))
    tracemalloc.start()
    total = 0
    for chunk in batches.zip_chunks(ctx, "b", owner="o"):
        total += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres")
    args = parser.parse_args()
    urls = {}
    with tempfile.TemporaryDirectory() as tmp:
        urls["sqlite"] = lambda tag: f"sqlite:///{tmp}/{tag}.db"
        if args.postgres:
            urls["postgres"] = lambda tag: scratch_postgres(args.postgres, tag)
        print("| store | claim, 50 owners (ms) | claim, 1 owner (ms) | ratio | 1,000 in a batch (s) | "
              "1,000 single creates (s) |")
        print("|---|---|---|---|---|---|")
        for name, url_of in urls.items():
            many, one = claim_cost(url_of("many"), 50), claim_cost(url_of("one"), 1)
            batched, singles = submit_cost(url_of("submit"))
            print(f"| {name} | {many:.3f} | {one:.3f} | {many / one:.2f} | {batched:.3f} | {singles:.3f} |")
    peak, total = zip_peak()
    print(f"\nzip of 1,000 images of 200 kB ({total / 2**20:.0f} MiB): peak traced memory {peak:.1f} MiB")


def scratch_postgres(url: str, tag: str) -> str:
    import psycopg  # noqa: PLC0415 - only with --postgres
    name = f"bench_batches_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    main()
