"""Random (UUIDv4) against time-ordered (UUIDv7) job ids on Postgres, with 100,000 jobs queued.

Per id scheme: a fresh database, 400 submits' inserts on an empty queue, then 100,000 queued jobs
written with ids of the same scheme, a CHECKPOINT (as happens every few minutes in production), and
400 more inserts. Each insert is the store's own INSERT_JOB run under `EXPLAIN (ANALYZE, BUFFERS,
WAL)`, which reports for that statement alone the WAL it wrote and its full-page images: counts that
other processes sharing the machine cannot disturb, unlike latency. Latency is printed too (p50).

    .venv/bin/python bench/id_locality.py [--queued 100000] [--inserts 400] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
import uuid


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import core
from chalicelib import job_ids
from chalicelib import store as store_module
from chalicelib.store import queries
from tests import harness

SCHEMES = {"UUIDv4 (random)": lambda: str(uuid.uuid4()), "UUIDv7 (time-ordered)": job_ids.new_job_id}


def inserts(db, new_id, count: int) -> dict:
    """`count` job inserts, each explained: WAL bytes, full-page images, dirtied buffers, time."""
    sql = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + db.native(queries.INSERT_JOB)
    wal, fpi, dirtied, took = [], [], [], []
    for _ in range(count):
        params = {"id": new_id(), "owner": "bench", "kind": "txt2img", "priority": 0,
                  "request": db.dump_json({"prompt": "a lighthouse", "steps": 20}),
                  "options": db.dump_json({}), "webhook_secret": None, "idempotency_key": None,
                  "batch_id": None, "now": time.time()}
        began = time.perf_counter()
        with db.transaction() as session:
            (row,) = session.query(sql, params)
        took.append(time.perf_counter() - began)
        plan = (row["QUERY PLAN"] if isinstance(row["QUERY PLAN"], list) else json.loads(row["QUERY PLAN"]))[0]
        node = plan["Plan"]
        wal.append(node.get("WAL Bytes", 0))
        fpi.append(node.get("WAL FPI", 0))
        dirtied.append(node.get("Shared Dirtied Blocks", 0))
    return {"wal_bytes": statistics.mean(wal), "fpi": statistics.mean(fpi), "dirtied": statistics.mean(dirtied),
            "p50_ms": core.percentile(took, 0.5) * 1000}


def fill(db, new_id, count: int) -> None:
    now = time.time()
    for start in range(0, count, 10_000):
        ids = [new_id() for _ in range(start, min(start + 10_000, count))]
        with db.transaction() as session:
            session.executemany(db.native(core.FILL_JOB), [
                {"id": job_id, "request": db.dump_json({"prompt": "filler"}), "options": db.dump_json({}),
                 "now": now} for job_id in ids])
    db.execute("VACUUM ANALYZE")


def one_scheme(label: str, new_id, *, queued: int, count: int) -> dict:
    with harness.scratch_postgres("bench_ids") as url:
        if url is None:
            raise SystemExit("no Postgres server answers")
        job_store = store_module.make_store(url)
        job_store.migrate()
        db = job_store.database
        try:
            db.execute("CHECKPOINT")
            empty = inserts(db, new_id, count)
            fill(db, new_id, queued)
            db.execute("CHECKPOINT")
            deep = inserts(db, new_id, count)
        finally:
            db.close()
    return {"label": label, "empty": empty, "deep": deep}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=core.QUEUED)
    parser.add_argument("--inserts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2, help="each scheme this many times")
    args = parser.parse_args()
    rows = []
    for round_ in range(args.rounds):  # the order swaps every round: neither scheme always runs second
        order = list(SCHEMES.items())[::-1 if round_ % 2 else 1]
        rows += [one_scheme(label, new_id, queued=args.queued, count=args.inserts) for label, new_id in order]
    print("| job ids | queue | WAL bytes per insert | full-page images per insert | buffers dirtied per insert | "
          "insert p50 |\n|---|---|---|---|---|---|")
    for row in rows:
        for queue, values in (("empty", row["empty"]), (f"{args.queued:,} queued", row["deep"])):
            print(f"| {row['label']} | {queue} | {values['wal_bytes']:.0f} | {values['fpi']:.2f} | "
                  f"{values['dirtied']:.2f} | {values['p50_ms']:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
