"""Small helpers every kind of test uses: free ports, waiting for a condition or a server, background
calls, a database that refuses writes."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import psycopg
import requests


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free ports: each socket stays bound until all are chosen, so that the system
    cannot give the same port twice to servers that have not bound it yet."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(contextlib.closing(socket.socket())) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def answers(url: str) -> bool:
    """Whether something serves `url` without a server error (a process is up)."""
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


def wait_until(predicate, *, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def in_background(fn):
    """Run fn in a thread; returns (thread, box) where box['value'] or box['error'] gets the outcome."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def simulator_fixtures(*, gen_seconds: float, scope: str):
    """(shared_sim, sim) fixtures: one in-process A1111 simulator per `scope`, reset around each test.

    A test module binds them with `shared_sim, sim = support.simulator_fixtures(...)`.
    """
    import pytest  # noqa: PLC0415 - the benches import this module too, and need no pytest

    from tests.a1111_sim import server  # noqa: PLC0415 - only the modules that bind the fixtures load it

    @pytest.fixture(scope=scope)
    def shared_sim():
        with server.SimulatedA1111(gen_seconds=gen_seconds) as simulator:
            yield simulator

    @pytest.fixture
    def sim(shared_sim):
        shared_sim.reset()
        yield shared_sim
        shared_sim.reset()

    return shared_sim, sim


@contextlib.contextmanager
def writes_refused(database):
    """`database` (a store's) refuses writes meanwhile, as on a full disk; reads go on. SQLite: the
    process's writer connection is query_only. Postgres: new transactions are read-only (the pool's
    idle connections are closed so that new ones open)."""
    if database.dialect == "sqlite":
        with database.write() as writer:  # the one connection this process writes with
            pass
        writer.execute("PRAGMA query_only = 1")
        try:
            yield
        finally:
            writer.execute("PRAGMA query_only = 0")
        return
    url = database.options.conninfo
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, dbname="postgres", autocommit=True) as admin:  # not one that turns read-only
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    database.close()
    try:
        yield
    finally:
        with psycopg.connect(url, dbname="postgres", autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        database.close()
