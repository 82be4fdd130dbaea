"""The API server for containers: waitress (what `python wsgi.py` runs) against gunicorn with threads,
on the same app (`wsgi:application`), the same machine and the same run: requests per second, p50/p99
and the API's CPU per request for the trivial route and a submit, at 16 and 64 clients.

Both get one process of 16 threads (API_THREADS): per core is the question, and the SQLite store
takes one writer at a time per file whatever the process count. gunicorn is not a dependency of
the service; install it to run this: `.venv/bin/python -m pip install gunicorn==23.0.0`.
Run: `.venv/bin/python bench/server.py [--quick]`.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import core
from tests import harness
from tests import support

THREADS = 16
CLIENTS = (16, 64)


def start_server(cluster: harness.Cluster, server: str) -> None:
    port = support.free_port()
    if server == "waitress":
        cluster.start("api", [sys.executable, "wsgi.py"], PORT=str(port), API_THREADS=str(THREADS))
    else:
        cluster.start("api", [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(THREADS),
                              "--worker-class", "gthread", "--bind", f"127.0.0.1:{port}",
                              "--log-level", "warning", "wsgi:application"], PORT=str(port))
    cluster.api_url = f"http://127.0.0.1:{port}"
    harness.wait_until(lambda: support.answers(f"{cluster.api_url}/health"), timeout=20, what="the API")


def api_cpu(pid: int) -> float:
    """CPU seconds of the server process and its children (gunicorn's worker)."""
    children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(core.cpu_seconds(p) for p in (pid, *map(int, children)))


def bench(server: str, *, requests_total: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        cluster = harness.Cluster(pathlib.Path(directory))
        cluster.env.update(LOG_LEVEL="WARNING", SWEEP_INTERVAL="3600")
        cluster.start_simulator(gen_seconds=0.5)
        try:
            start_server(cluster, server)
            pid = cluster.process("api").popen.pid
            for route in (core.TRIVIAL, core.SUBMIT):
                core.timed_calls(cluster.api_url, route, 20)
            for clients in CLIENTS:
                for route in (core.TRIVIAL, core.SUBMIT):
                    before = api_cpu(pid)
                    result = core.measure_load(cluster, route, clients=clients,
                                               requests_per_client=max(requests_total // clients, 5))
                    result["api_cpu_ms"] = (api_cpu(pid) - before) / result["requests"] * 1000
                    rows.append(dict(result, server=server, clients=clients, route=route.label))
        finally:
            cluster.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 400 if args.quick else 1600
    rows = [row for server in ("waitress", "gunicorn") for row in bench(server, requests_total=total)]
    print("| server | clients | route | requests | req/s | p50 | p99 | API CPU per request |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['clients']} | {r['route']} | {r['requests']} | {r['throughput']:.0f} | "
              f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['api_cpu_ms']:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
