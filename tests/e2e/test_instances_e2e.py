"""Several A1111 instances behind one queue, with real processes: capacity (never two jobs at once
on one instance), the instance idle longest taking the next job, failover (an instance dies
mid-job), model-aware routing and instance labels. On SQLite; those marked `both_databases` on
Postgres as well."""
from __future__ import annotations

import time

import pytest
import requests

from chalicelib import store
from tests import harness

SECOND_MODEL = "SDXL/sd_xl_base_1.0.safetensors"


def stats(url: str) -> dict:
    return requests.get(f"{url}/_sim/stats", timeout=10).json()


@pytest.mark.both_databases
def test_forty_jobs_on_four_instances_never_run_two_at_once_on_one(cluster):
    # given four capacity-1 instances and two workers, eight runner threads in all
    urls = cluster.start_simulators(4, gen_seconds=0.3)
    cluster.start_api()
    cluster.start_worker("worker-a")
    cluster.start_worker("worker-b")

    # when 40 jobs are submitted at once
    jobs = [cluster.submit({"prompt": f"job {n}", "steps": 5})["job_id"] for n in range(40)]

    # then all complete, each instance ran some, and none ever ran two at once
    for job_id in jobs:
        assert cluster.wait_status(job_id, {"completed", "error"}, timeout=60)["status"] == "completed"
    counts = [stats(url) for url in urls]
    assert [c["max_concurrent_generations"] for c in counts] == [1, 1, 1, 1]
    assert sum(c["generations_completed"] for c in counts) == 40
    assert all(c["generations_completed"] > 0 for c in counts)


def test_sequential_jobs_go_to_the_instance_idle_longest_so_they_take_turns(cluster):
    # given four idle instances with the same model and one worker whose runners all wait
    urls = cluster.start_simulators(4, gen_seconds=0.1)
    cluster.start_api()
    cluster.start_worker()
    time.sleep(1.0)  # every runner has probed its instance and taken its place in the idle line

    # when eight jobs arrive one after the other
    jobs = []
    for n in range(8):
        jobs.append(cluster.submit({"prompt": f"job {n}", "steps": 5})["job_id"])
        assert cluster.wait_status(jobs[-1], {"completed", "error"}, timeout=30)["status"] == "completed"

    # then the instances took turns: four different ones, then the same four in the same order
    ran_on = {}
    for url in urls:
        for call in requests.get(f"{url}/_sim/requests", timeout=10).json():
            ran_on[call["force_task_id"]] = url
    order = [ran_on[job_id] for job_id in jobs]
    assert sorted(order[:4]) == sorted(urls)
    assert order[4:] == order[:4]
    assert [stats(url)["generations_completed"] for url in urls] == [2, 2, 2, 2]


def test_a_job_whose_instance_dies_mid_generation_completes_on_another(cluster):
    # given two instances and a job running on one of them
    urls = cluster.start_simulators(2, gen_seconds=3)
    cluster.start_api()
    cluster.start_worker()
    job_id = cluster.submit()["job_id"]
    busy = harness.wait_until(
        lambda: [i for i, url in enumerate(urls) if stats(url)["concurrent_generations"]],
        timeout=15, what="the job to start on an instance")[0]
    # when that instance dies
    cluster.process(f"simulator-{busy}").kill()

    # then the job is retried on the other instance and completes there
    job = cluster.wait_status(job_id, {"completed", "error"}, timeout=30)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert stats(urls[1 - busy])["generations_completed"] == 1
    instances = {i["name"]: i for i in cluster.health()["instances"]}
    assert instances[urls[busy]]["healthy"] is False
    assert instances[urls[1 - busy]]["healthy"] is True


def test_jobs_naming_a_checkpoint_run_where_it_is_loaded(cluster):
    # given two idle instances, the second with another checkpoint loaded
    urls = cluster.start_simulators(2, gen_seconds=0.2)
    requests.post(f"{urls[1]}/sdapi/v1/options", json={"sd_model_checkpoint": SECOND_MODEL},
                  timeout=10).raise_for_status()
    first_model = requests.get(f"{urls[0]}/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"]
    cluster.start_api()
    cluster.start_worker()

    # when jobs naming either checkpoint arrive one after the other, not alternating (so instances
    # that merely took turns would run some on the wrong one)
    wanted = {}
    names = [first_model, "sd_xl_base_1.0"]  # by title or by bare name
    for n, instance in enumerate([1, 1, 0, 0, 1, 0]):
        job_id = cluster.submit({"prompt": f"job {n}", "steps": 5,
                                 "override_settings": {"sd_model_checkpoint": names[instance]}})["job_id"]
        assert cluster.wait_status(job_id, {"completed", "error"}, timeout=30)["status"] == "completed"
        wanted[job_id] = urls[instance]

    # then each ran on the instance that had its checkpoint loaded
    ran_on = {}
    for url in urls:
        for call in requests.get(f"{url}/_sim/requests", timeout=10).json():
            ran_on[call["force_task_id"]] = url
    assert ran_on == wanted


def test_jobs_with_instance_labels_run_only_where_the_labels_are_and_hold_up_no_other(cluster):
    # given two instances, only the second labelled sdxl
    urls = cluster.start_simulators(2, gen_seconds=0.2)
    cluster.env["A1111_BASE_URL"] = f"{urls[0]},{urls[1]};labels=sdxl+fast"
    cluster.start_api()
    cluster.start_worker()

    # when labelled jobs, then plain ones, arrive at once
    labelled = [cluster.submit({"prompt": f"xl {n}", "steps": 5, "instance_labels": ["sdxl"]})["job_id"]
                for n in range(4)]
    plain = [cluster.submit({"prompt": f"plain {n}", "steps": 5})["job_id"] for n in range(2)]

    # then every labelled job ran on the labelled instance, and the plain ones did not wait for them
    done = {job_id: cluster.wait_status(job_id, {"completed", "error"}, timeout=30) for job_id in labelled + plain}
    assert {job["status"] for job in done.values()} == {"completed"}
    assert {done[job_id]["instance"] for job_id in labelled} == {urls[1]}
    assert all(done[job_id]["instance_labels"] == ["sdxl"] for job_id in labelled)
    assert urls[0] in {done[job_id]["instance"] for job_id in plain}
    last_labelled = max(done[job_id]["finished_at"] for job_id in labelled)
    assert min(done[job_id]["finished_at"] for job_id in plain) < last_labelled


@pytest.mark.both_databases
def test_a_stopped_worker_gives_back_the_slot_of_a_job_stuck_past_the_grace(cluster):
    # given a worker whose only instance hangs in a job, with long leases
    cluster.start_simulator()
    cluster.sim("POST", "/_sim/faults", json={"hang_next": 1})
    cluster.start_api()
    worker = cluster.start_worker(WORKER_SHUTDOWN_GRACE="0.5", JOB_LEASE_SECONDS="120")
    job_id = cluster.submit()["job_id"]
    cluster.wait_status(job_id, {"processing"})

    # when the worker stops
    assert worker.terminate() == 0

    # then the job is queued again and the instance's slot is free at once, not after 120 s
    assert cluster.job(job_id)["status"] == "queued"
    job_store = store.make_store(cluster.env["DATABASE_URL"])
    assert job_store.acquire_slot(cluster.sim_url, holder="test", lease_seconds=5, now=time.time()) is not None
