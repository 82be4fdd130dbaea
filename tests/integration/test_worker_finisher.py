"""A runner's finisher: a job's images and outcome are written while its instance already runs the
next job, one job at a time per runner, and a stopping worker waits for the last write (on SQLite
and on Postgres: the images land in each one's own table)."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import context as context_module
from tests import support
from worker_fn import finisher
from worker_fn import worker as worker_module

shared_sim, sim = support.simulator_fixtures(gen_seconds=0.2, scope="module")
AUTH = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}


def test_writes_run_in_order_one_at_a_time_off_the_caller():
    writer = finisher.Finisher("finisher-test")
    writer.start()
    gate, done, threads = threading.Event(), [], set()

    def write(n):
        threads.add(threading.current_thread().name)
        if n == 0:
            gate.wait(5)
        done.append(n)

    writer.hand_over(lambda: write(0))
    assert writer.wait(0.1) is False  # the first write is held at the gate
    second, _ = support.in_background(lambda: writer.hand_over(lambda: write(1)))
    second.join(0.2)
    assert second.is_alive() and done == []  # a second hand-over waits for the first write to end
    gate.set()
    second.join(5)
    assert writer.wait(5) and done == [0, 1] and threads == {"finisher-test"}
    writer.close()
    writer.join(5)
    assert not writer.is_alive()  # a closed finisher's thread ends


def test_a_failed_write_is_logged_and_the_next_one_still_runs(caplog):
    writer = finisher.Finisher("finisher-test")
    writer.start()
    done = []
    with caplog.at_level(logging.ERROR, logger="worker_fn.finisher"):
        writer.hand_over(lambda: 1 / 0)
        writer.hand_over(lambda: done.append("second"))
        writer.close()
        writer.join(5)
    assert done == ["second"]
    assert any("storing a finished job failed" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.fixture
def api(monkeypatch, database_url, sim):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
    monkeypatch.setenv("A1111_BASE_URL", sim.url)
    monkeypatch.setenv("PROGRESS_INTERVAL", "0.1")
    context_module.reset_context()
    with chalice_test.Client(app_module.app) as client:
        yield client
    context_module.reset_context()


def status(api, job_id: str) -> str:
    return api.http.get(f"/sdapi/v1/jobs/{job_id}", headers=AUTH).json_body["status"]


def test_the_instance_runs_the_next_job_while_the_last_ones_outcome_is_written_and_stop_waits(api, sim):
    ctx = context_module.get_context()
    gates, puts = {}, []
    put = ctx.images.put

    def held_put(job_id, attempt, images):  # a slow image store (S3, a busy database), one job at a time
        puts.append(job_id)
        gates[job_id].wait(10)
        put(job_id, attempt, images)

    ctx.images.put = held_put
    first, second = (api.http.post("/sdapi/v1/txt2img", headers=AUTH, body=json.dumps({"prompt": f"job {n}"}))
                     .json_body["job_id"] for n in range(2))
    gates.update({first: threading.Event(), second: threading.Event()})
    worker = worker_module.Worker(ctx, worker_id="finisher-test")
    worker.start()
    stopped = None
    try:
        support.wait_until(lambda: sim.stats()["generations_completed"] == 2, timeout=10,
                           what="both generations, the first job's images still being written")
        assert puts == [first]  # the second job's write waits for the first's to end
        assert status(api, first) == "processing" and status(api, second) == "processing"
        stopped, _ = support.in_background(lambda: worker.stop(grace=10))
        gates[first].set()
        support.wait_until(lambda: puts == [first, second], what="the second job's write")
        stopped.join(1.5)  # longer than the other threads take to stop (a doorbell receive waits 1 s)
        assert stopped.is_alive()  # a stopping worker waits for the outcome it still holds
        assert status(api, first) == "completed" and status(api, second) == "processing"
        gates[second].set()
        stopped.join(10)
        assert not stopped.is_alive()
    finally:
        for gate in gates.values():
            gate.set()
        if stopped is None:
            worker.stop(grace=5)
    assert status(api, second) == "completed"
    assert ctx.images.get_all(first, 1) and ctx.images.get_all(second, 1)
    assert sim.stats()["max_concurrent_generations"] == 1
    assert ctx.store.acquire_slot(ctx.instances[0].name, holder="next", lease_seconds=5,
                                  now=time.time()) is not None  # the slot was given back
    support.wait_until(lambda: not any(runner.finisher.is_alive() for runner in worker.runners),
                       what="the finishers' threads to end with their runners")
