"""What only the Postgres backend has: a connection pool that heals, a database that goes away and
comes back (through a TCP proxy we can cut), migrations racing at start, SKIP LOCKED and
LISTEN/NOTIFY. The behaviour both backends share is in test_store_contract and test_local_queue."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import psycopg
import pytest
from chalice import test as chalice_test

from chalicelib import config
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import queue as queue_module
from chalicelib import store as store_module
from chalicelib.queue import postgres as postgres_queue
from chalicelib.store import base
from chalicelib.store import postgres_db
from chalicelib.store import postgres_schema
from tests import support

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
TOKEN = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}


def new_job(*, key=None, owner="alice") -> base.NewJob:
    return base.NewJob(id=str(uuid.uuid4()), owner=owner, kind="txt2img", priority=0,
                       request={"prompt": "a cat"}, options={}, webhook_secret=None, idempotency_key=key)


def with_address(url: str, host: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}:{port}" if user else f"{host}:{port}"))


def backend_pid(database: postgres_db.PostgresDatabase) -> int:
    return database.query_one("SELECT pg_backend_pid() AS pid")["pid"]


def terminate(url: str, pid: int) -> None:
    """Ends a session the way a server restart or a failover does, and waits until it is gone."""
    with psycopg.connect(url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()[0]


class TcpProxy:
    """127.0.0.1:port → Postgres. `stop()` is the database going away: the port refuses
    connections and every open session is cut; `start()` brings it back on the same port."""

    def __init__(self, target_url: str) -> None:
        parts = urllib.parse.urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = support.free_port()
        self.url = with_address(target_url, "127.0.0.1", self.port)
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets + [self._listener], []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(postgres_url):
    proxy = TcpProxy(postgres_url)
    yield proxy
    proxy.stop()


@pytest.fixture
def database(postgres_url):
    database = postgres_db.PostgresDatabase.from_url(postgres_url)
    database.migrate()
    yield database
    database.close()


# -- connections ------------------------------------------------------------------------------


def test_one_connection_is_reused_call_after_call(database):
    pids = {backend_pid(database) for _ in range(20)}
    assert len(pids) == 1


def test_threads_share_a_pool_no_larger_than_pool_size(postgres_url):
    url = f"{postgres_url}?pool_size=3&application_name=pool-size-test"
    job_store = store_module.make_store(url)
    job_store.migrate()
    barrier = threading.Barrier(16)
    failures = []

    def submit_and_read(i: int) -> None:
        barrier.wait()
        try:
            for _ in range(10):
                job, _ = job_store.create_job(new_job(owner=f"o{i}"), now=NOW)
                assert job_store.get_job(job.id).owner == f"o{i}"
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=submit_and_read, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    with psycopg.connect(postgres_url) as admin:
        opened = admin.execute("SELECT COUNT(*) FROM pg_stat_activity "
                               "WHERE application_name = 'pool-size-test'").fetchone()[0]
    job_store.database.close()
    assert failures == []
    assert job_store.count_by_status() == {"queued": 160}
    assert 1 <= opened <= 3


def test_connection_that_died_while_idle_is_replaced_before_use(database, postgres_url):
    before = backend_pid(database)
    terminate(postgres_url, before)
    after = backend_pid(database)  # no error: the pool noticed and reconnected
    assert after != before


def test_connection_that_breaks_in_use_fails_that_call_with_store_unavailable_then_heals(database, postgres_url):
    with pytest.raises(errors.StoreUnavailable, match="Postgres error: AdminShutdown"):
        with database.connection() as conn:
            terminate(postgres_url, conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])
            conn.execute("SELECT 1")
    assert database.query_one("SELECT 41 + 1 AS answer") == {"answer": 42}


def test_idempotency_key_race_between_threads_creates_one_job(database, postgres_url):
    job_store = store_module.make_store(postgres_url)
    barrier = threading.Barrier(8)
    results = []

    def create() -> None:
        barrier.wait()
        results.append(job_store.create_job(new_job(key="same-key"), now=NOW))

    threads = [threading.Thread(target=create) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    job_store.database.close()
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert len({job.id for job, _ in results}) == 1


def test_url_options_are_ours_and_the_rest_goes_to_libpq():
    options = postgres_db.parse_url("postgresql://app:p%40ss@proxy.example:5432/jobs?sslmode=require&pool_size=2"
                                    "&options=-c%20statement_timeout%3D5000&prepare_threshold=none")
    assert options.pool_size == 2 and options.prepare_threshold is None
    params = psycopg.conninfo.conninfo_to_dict(options.conninfo)
    assert params["sslmode"] == "require" and params["connect_timeout"] == "5" and params["password"] == "p@ss"
    assert params["options"] == "-c statement_timeout=5000"
    assert "pool_size" not in params and "prepare_threshold" not in params
    assert postgres_db.parse_url("postgresql://h/db?prepare_threshold=5").prepare_threshold == 5
    with pytest.raises(ValueError, match="pool_size") as raised:
        postgres_db.parse_url("postgresql://app:secret-pw@h/db?pool_size=0")
    assert "secret-pw" not in str(raised.value)


def test_no_statement_is_prepared_server_side_by_default(database):
    for _ in range(10):  # psycopg would prepare from the 5th run with its default threshold
        database.query_one(postgres_db.PING)
    assert database.query_one("SELECT COUNT(*) AS n FROM pg_prepared_statements") == {"n": 0}


# -- the database going away ------------------------------------------------------------------


@pytest.fixture
def api_via_proxy(proxy, monkeypatch):
    proxy.start()
    monkeypatch.setenv("DATABASE_URL", proxy.url)
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("A1111_BASE_URL", "http://127.0.0.1:9")
    context_module.reset_context()
    from app import app
    with chalice_test.Client(app) as client:
        yield client
    context_module.reset_context()  # the pool's idle connections close with it


def test_api_answers_503_while_the_database_is_down_and_recovers_when_it_is_back(api_via_proxy, proxy):
    client = api_via_proxy
    submitted = client.http.post("/sdapi/v1/txt2img", headers=TOKEN, body='{"prompt": "a cat"}')
    assert submitted.status_code == 202
    proxy.stop()
    started = time.monotonic()
    down = [client.http.get("/sdapi/v1/jobs", headers=TOKEN),
            client.http.post("/sdapi/v1/txt2img", headers=TOKEN, body='{"prompt": "a dog"}'),
            client.http.get("/health", headers=TOKEN)]
    assert [r.status_code for r in down] == [503, 503, 503]
    assert down[0].json_body["error"] == "StoreUnavailable" and down[2].json_body["store"]["ok"] is False
    assert time.monotonic() - started < 3  # refused at once, no hanging request threads
    proxy.start()
    listed = client.http.get("/sdapi/v1/jobs", headers=TOKEN)
    assert listed.status_code == 200
    assert [j["job_id"] for j in listed.json_body["jobs"]] == [submitted.json_body["job_id"]]


def test_api_that_starts_while_the_database_is_down_answers_503_then_serves(proxy, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", proxy.url)
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    context_module.reset_context()
    from app import app
    try:
        with chalice_test.Client(app) as client:
            assert client.http.get("/sdapi/v1/jobs", headers=TOKEN).status_code == 503
            proxy.start()
            assert client.http.get("/sdapi/v1/jobs", headers=TOKEN).status_code == 200
    finally:
        context_module.reset_context()


def test_worker_started_while_the_database_is_down_waits_then_runs(proxy, postgres_url, tmp_path):
    env = dict(os.environ, DATABASE_URL=proxy.url, A1111_BASE_URL="http://127.0.0.1:9",
               HEARTBEAT_INTERVAL="0.2", WEBHOOK_DISPATCHER_THREADS="0", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "worker_fn", "--worker-id", "patient"], cwd=ROOT,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2.0)
        assert worker.poll() is None, log_path.read_text()
        assert "job store unavailable; the worker waits for it" in log_path.read_text()
        proxy.start()
        job_store = store_module.make_store(postgres_url)
        support.wait_until(lambda: [w for w in _workers(job_store) if w.id == "patient"], timeout=20,
                           interval=0.1, what="the worker's first heartbeat")
        job_store.database.close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _workers(job_store) -> list[base.Worker]:
    try:
        return job_store.list_workers(now=time.time(), keep_seconds=60)
    except errors.StoreUnavailable:
        return []  # the worker has not created the schema yet


# -- migrations -------------------------------------------------------------------------------


def _migrate(url: str, barrier) -> None:
    database = postgres_db.PostgresDatabase.from_url(url)
    barrier.wait()
    database.migrate()
    database.close()


def test_processes_migrating_at_once_all_succeed_and_apply_each_version_once(postgres_url):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    processes = [ctx.Process(target=_migrate, args=(postgres_url, barrier)) for _ in range(4)]
    [p.start() for p in processes]
    [p.join(timeout=60) for p in processes]
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    with psycopg.connect(postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert versions == list(range(1, len(postgres_schema.MIGRATIONS) + 1))
    assert {"jobs", "job_runs", "images", "queue_messages", "workers", "instance_slots"} <= tables


def test_migration_waits_for_the_one_already_running(postgres_url):
    database = postgres_db.PostgresDatabase.from_url(postgres_url)
    done = threading.Event()
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        with holder.transaction():
            holder.execute(postgres_db.LOCK_MIGRATIONS, {"key": postgres_db.MIGRATION_LOCK_KEY})
            thread = threading.Thread(target=lambda: (database.migrate(), done.set()))
            thread.start()
            assert not done.wait(0.5)  # blocked behind the lock another process holds
        thread.join(timeout=10)
    assert done.is_set()
    assert database.query_one("SELECT COUNT(*) AS n FROM jobs") == {"n": 0}
    database.close()


def test_migrate_command_applies_the_schema_and_fails_fast_when_the_database_is_down(postgres_url):
    env = dict(os.environ, DATABASE_URL=postgres_url)
    applied = subprocess.run([sys.executable, "-m", "worker_fn", "migrate"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == len(
            postgres_schema.MIGRATIONS)
    env["DATABASE_URL"] = with_address(postgres_url, "127.0.0.1", support.free_port())
    started = time.monotonic()
    refused = subprocess.run([sys.executable, "-m", "worker_fn", "migrate"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "migrations not applied" in refused.stdout + refused.stderr
    assert time.monotonic() - started < 20


# -- claims and the doorbell ------------------------------------------------------------------


def test_claim_skips_a_job_another_transaction_has_locked_instead_of_waiting(database, postgres_url):
    job_store = store_module.make_store(postgres_url)
    first, _ = job_store.create_job(new_job(), now=NOW)
    second, _ = job_store.create_job(new_job(), now=NOW + 1)
    with psycopg.connect(postgres_url, autocommit=True) as other, other.transaction():
        other.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", [first.id])
        started = time.monotonic()
        claimed = job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=NOW + 2).job
        assert time.monotonic() - started < 0.5
    assert claimed.id == second.id
    assert job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=NOW + 2).job.id == first.id
    job_store.database.close()


@pytest.fixture
def pg_queue(database, postgres_url):
    settings = config.Settings(queue_backend="local", queue_max_receives=3, queue_visibility_timeout=5)
    job_store = store_module.make_store(postgres_url)
    queue = queue_module.make_queue(settings, store=job_store)
    assert isinstance(queue, postgres_queue.PostgresQueue)
    yield queue
    queue.close()
    job_store.database.close()


def _send_timed(url: str, count: int, interval: float) -> None:
    settings = config.Settings(queue_backend="local")
    job_store = store_module.make_store(url)
    queue = queue_module.make_queue(settings, store=job_store)
    for _ in range(count):
        time.sleep(interval)
        queue.send("jobs", {"sent_at": time.time()})
    job_store.database.close()


def test_notify_wakes_a_receiver_within_100ms_of_a_send_from_another_process(pg_queue, postgres_url,
                                                                             monkeypatch):
    monkeypatch.setattr(postgres_queue, "FALLBACK_POLL", 30.0)  # only the NOTIFY can wake it in time
    assert pg_queue.receive("jobs", wait_seconds=0.2) == []  # the listener is up
    sender = multiprocessing.get_context("spawn").Process(
        target=_send_timed, args=(postgres_url, 5, 0.3))
    sender.start()
    latencies = []
    while len(latencies) < 5:
        for message in pg_queue.receive("jobs", wait_seconds=10):
            latencies.append(time.time() - message.body["sent_at"])
            pg_queue.delete("jobs", message.receipt)
    sender.join(timeout=30)
    assert sender.exitcode == 0
    assert max(latencies) < 0.1, latencies


def test_lost_notification_costs_at_most_one_fallback_poll(pg_queue):
    assert pg_queue.receive("jobs", wait_seconds=0.1) == []

    def insert_silently():  # a message whose NOTIFY never came
        time.sleep(0.2)
        pg_queue.database.execute(postgres_queue.SEND, {"queue": "jobs", "body": '{"job_id": "quiet"}',
                                                        "visible_at": time.time(), "now": time.time()})

    threading.Thread(target=insert_silently).start()
    started = time.monotonic()
    [message] = pg_queue.receive("jobs", wait_seconds=5)
    assert message.body == {"job_id": "quiet"}
    assert time.monotonic() - started < 0.2 + postgres_queue.FALLBACK_POLL + 0.3


def test_listener_reconnects_after_its_connection_is_cut(pg_queue, postgres_url, monkeypatch):
    monkeypatch.setattr(postgres_queue, "FALLBACK_POLL", 30.0)
    assert pg_queue.receive("jobs", wait_seconds=0.2) == []
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        [pid] = [row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            [f"LISTEN {postgres_queue.CHANNEL}"])]
    terminate(postgres_url, pid)
    time.sleep(1.5)  # the listener notices within its listen slice and reconnects
    threading.Timer(0.3, lambda: pg_queue.send("jobs", {"sent_at": time.time()})).start()
    [message] = pg_queue.receive("jobs", wait_seconds=5)
    assert time.time() - message.body["sent_at"] < 0.1


def test_a_forgotten_context_stops_its_queues_listener(postgres_url, monkeypatch):
    """reset_context (tests, between apps) would otherwise leave the LISTEN thread running, which
    outlives the test's database and logs at the end of the run."""
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setattr(postgres_queue, "LISTEN_SLICE", 0.1)
    context_module.reset_context()
    assert context_module.get_context().queue.receive("jobs", wait_seconds=0.2) == []

    def listeners() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name == "queue-listener"]

    assert listeners()
    context_module.reset_context()
    support.wait_until(lambda: not listeners(), timeout=5, what="the listener thread to end")


def test_receivers_on_many_threads_never_get_the_same_message(pg_queue):
    for i in range(200):
        pg_queue.send("jobs", {"n": i})
    got, lock = [], threading.Lock()

    def drain():
        while messages := pg_queue.receive("jobs", max_messages=3):
            with lock:
                got.extend(m.body["n"] for m in messages)

    threads = [threading.Thread(target=drain) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(got) == list(range(200))


def test_an_error_message_with_a_nul_byte_is_still_recorded(postgres_url, database):
    job_store = store_module.make_store(postgres_url)
    job_store.create_job(new_job(), now=NOW)
    job = job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=NOW).job
    assert job_store.fail(job.id, worker_id="w1", code="a1111_rejected", message="bad\x00byte", now=NOW).applied
    assert job_store.get_job(job.id).error_message == "bad\ufffdbyte"
    job_store.database.close()


# -- webhook outbox ---------------------------------------------------------------------------


def hooked_job() -> base.NewJob:
    return base.NewJob(id=str(uuid.uuid4()), owner="alice", kind="txt2img", priority=0,
                       request={"prompt": "a cat"}, options={"webhook_url": "https://hooks.example.com/sd"},
                       webhook_secret="s3cret", idempotency_key=None)


def ended_hooked_job(job_store, *, now: float) -> base.Job:
    job, _ = job_store.create_job(hooked_job(), now=now)
    assert job_store.claim_next(worker_id="w1", instance="gpu0", lease_seconds=30, now=now).job.id == job.id
    assert job_store.complete(job.id, worker_id="w1", result={}, image_count=0, now=now).applied
    return job


def test_delivery_claim_skips_a_delivery_another_transaction_has_locked_instead_of_waiting(database,
                                                                                            postgres_url):
    job_store = store_module.make_store(postgres_url)
    first = ended_hooked_job(job_store, now=NOW)
    second = ended_hooked_job(job_store, now=NOW + 1)
    with psycopg.connect(postgres_url, autocommit=True) as other, other.transaction():
        other.execute("SELECT 1 FROM webhook_deliveries WHERE job_id = %s FOR UPDATE", [first.id])
        started = time.monotonic()
        claimed = job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW + 2)
        assert time.monotonic() - started < 0.5
    assert claimed.job_id == second.id
    assert job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW + 2).job_id == first.id
    job_store.database.close()


def test_a_receiver_answer_with_a_nul_byte_is_still_recorded(database, postgres_url):
    job_store = store_module.make_store(postgres_url)
    ended_hooked_job(job_store, now=NOW)
    delivery = job_store.claim_delivery(dispatcher_id="d1", lease_seconds=30, now=NOW)
    answer = base.AttemptResult(status_code=500, response="bad\x00byte", error="reset\x00")
    assert job_store.finish_delivery(delivery.id, claim_token=delivery.claim_token, attempt=1, result=answer,
                                     status="pending", next_attempt_at=NOW + 60, body="{}", now=NOW + 1)
    [attempt] = job_store.list_attempts([delivery.id])[delivery.id]
    assert (attempt.response, attempt.error) == ("bad\ufffdbyte", "reset\ufffd")
    job_store.database.close()
