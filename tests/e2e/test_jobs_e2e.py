"""Submit → queue → worker → A1111 simulator → images, over real HTTP between real processes."""
from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import signal

import pytest
import requests
from PIL import Image

from tests.harness import AUTH, wait_until


def started(cluster, *, gen_seconds=0.3, workers=1):
    cluster.start_simulator(gen_seconds=gen_seconds)
    cluster.start_api()
    return [cluster.start_worker(f"worker{i}") for i in range(workers)]


def test_submitted_job_completes_with_valid_pngs(cluster):
    started(cluster)
    job = cluster.submit({"prompt": "a lighthouse", "seed": 7, "width": 64, "height": 48, "batch_size": 2,
                          "steps": 5})
    done = cluster.wait_status(job["job_id"], {"completed", "error"})
    assert done["status"] == "completed", done
    result = done["result"]
    assert len(result["images"]) == 2
    info = json.loads(result["info"])
    assert info["seed"] == 7 and info["all_seeds"] == [7, 8]
    assert result["parameters"]["prompt"] == "a lighthouse"
    for n, encoded in enumerate(result["images"]):
        data = base64.b64decode(encoded)
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (64, 48)
        served = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}/images/{n}", headers=AUTH,
                              timeout=10)
        assert served.headers["Content-Type"] == "image/png" and served.content == data
    assert done["attempts"] == 1 and [r["outcome"] for r in done["runs"]] == ["completed"]
    assert cluster.sim("GET", "/_sim/stats")["force_task_ids"] == [job["job_id"]]
    # Shorter than a progress tick: the counts come from the request.
    assert {k: done["progress"][k] for k in ("progress", "eta_relative", "step", "steps", "job_no", "job_count")} == {
        "progress": 1.0, "eta_relative": 0.0, "step": 5, "steps": 5, "job_no": 1, "job_count": 1}


def test_progress_is_seen_rising_while_the_job_runs(cluster):
    started(cluster, gen_seconds=3)
    job = cluster.submit({"prompt": "slow", "steps": 30})
    seen = []

    def sample():
        detail = cluster.job(job["job_id"])
        if detail["status"] == "processing" and detail["progress"] and detail["progress"]["progress"]:
            seen.append(detail["progress"])
        return detail["status"] == "completed"

    wait_until(sample, timeout=30, interval=0.1, what="completion")
    values = [p["progress"] for p in seen]
    assert len(set(values)) >= 3, values
    assert values == sorted(values) and 0 < values[0] < values[-1] < 1
    assert any(p["step"] and p["steps"] == 30 for p in seen)
    assert any(p["eta_relative"] is not None and p["eta_relative"] > 0 for p in seen)
    final = cluster.job(job["job_id"])["progress"]
    counts = (final["progress"], final["step"], final["steps"], final["job_no"], final["job_count"])
    assert counts == (1.0, 30, 30, 1, 1)


def test_cancel_of_a_queued_job_never_reaches_a1111(cluster):
    started(cluster, gen_seconds=2)
    running = cluster.submit()
    cluster.wait_status(running["job_id"], {"processing"})
    queued = cluster.submit()
    assert cluster.job(queued["job_id"])["queue_position"] == 1
    response = requests.post(f"{cluster.api_url}/sdapi/v1/jobs/{queued['job_id']}/cancel", headers=AUTH,
                             timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert cluster.wait_status(running["job_id"], {"completed"})["status"] == "completed"
    assert queued["job_id"] not in cluster.sim("GET", "/_sim/stats")["force_task_ids"]
    assert cluster.job(queued["job_id"])["status"] == "cancelled"


def test_cancel_of_a_running_job_interrupts_a1111(cluster):
    started(cluster, gen_seconds=20)
    job = cluster.submit({"prompt": "long", "steps": 50})
    wait_until(lambda: (cluster.job(job["job_id"])["progress"] or {}).get("progress"), timeout=15,
               what="progress")
    response = requests.delete(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}", headers=AUTH, timeout=10)
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    # PROGRESS_INTERVAL is 0.2 s: the job must end within two intervals (plus process scheduling).
    done = cluster.wait_status(job["job_id"], {"cancelled", "completed", "error"}, timeout=3)
    assert done["status"] == "cancelled"
    assert cluster.sim("GET", "/_sim/stats")["interrupts"] >= 1


def test_a1111_down_is_retried_then_ends_in_error(cluster):
    cluster.env["A1111_BASE_URL"] = "http://127.0.0.1:9"  # discard port: connection refused
    cluster.start_api()
    cluster.start_worker()
    job = cluster.submit()
    done = cluster.wait_status(job["job_id"], {"completed", "error"}, timeout=30)
    assert done["status"] == "error" and done["error"]["code"] == "a1111_unavailable"
    assert "127.0.0.1:9" in done["error"]["message"] and "attempt 3 of 3" in done["error"]["message"]
    assert [r["outcome"] for r in done["runs"]] == ["retry", "retry", "error"]


def test_transient_a1111_failure_is_retried_and_completes(cluster):
    started(cluster)
    cluster.sim("POST", "/_sim/faults", json={"fail_next": 1, "fail_as": "unavailable"})  # a 503
    job = cluster.submit()
    done = cluster.wait_status(job["job_id"], {"completed", "error"})
    assert done["status"] == "completed" and done["attempts"] == 2
    assert [r["outcome"] for r in done["runs"]] == ["retry", "completed"]


def test_a1111_rejection_is_an_error_at_once_with_its_detail(cluster):
    started(cluster)
    job = cluster.submit({"init_images": ["not-an-image"]}, kind="img2img")
    done = cluster.wait_status(job["job_id"], {"completed", "error"})
    assert done["status"] == "error" and done["error"]["code"] == "a1111_rejected"
    assert "Invalid encoded image" in done["error"]["message"] and done["attempts"] == 1


@pytest.mark.both_databases
def test_worker_killed_mid_job_loses_nothing(cluster):
    [first] = started(cluster, gen_seconds=2)
    job = cluster.submit()
    cluster.wait_status(job["job_id"], {"processing"})
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(timeout=10)
    cluster.start_worker("worker-replacement")
    done = cluster.wait_status(job["job_id"], {"completed", "error"}, timeout=40)
    assert done["status"] == "completed" and done["attempts"] == 2
    outcomes = [r["outcome"] for r in done["runs"]]
    assert outcomes == ["lost", "completed"] and outcomes.count("completed") == 1
    assert done["runs"][1]["worker_id"] == "worker-replacement"


def test_sigterm_lets_the_running_job_finish_and_stops_cleanly(cluster):
    [worker] = started(cluster, gen_seconds=1.5)
    job = cluster.submit()
    cluster.wait_status(job["job_id"], {"processing"})
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(timeout=15) == 0
    assert cluster.job(job["job_id"])["status"] == "completed"
    assert all(w["id"] != "worker0" for w in cluster.health()["workers"])


@pytest.mark.both_databases
def test_sigterm_past_the_grace_period_releases_the_job_to_the_queue(cluster):
    cluster.env["WORKER_SHUTDOWN_GRACE"] = "0.5"
    [worker] = started(cluster, gen_seconds=20)
    job = cluster.submit()
    cluster.wait_status(job["job_id"], {"processing"})
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(timeout=15) == 0
    released = cluster.job(job["job_id"])
    assert released["status"] == "queued" and released["attempts"] == 0
    assert [r["outcome"] for r in released["runs"]] == ["released"]
    assert cluster.sim("GET", "/_sim/stats")["interrupts"] >= 1


@pytest.mark.both_databases
def test_many_jobs_from_several_clients_all_complete_exactly_once(cluster):
    started(cluster, gen_seconds=0.05, workers=2)
    tokens = ["e2e-token", "other-token"]

    def submit(i):
        headers = {"Authorization": f"Bearer {tokens[i % 2]}"}
        response = requests.post(f"{cluster.api_url}/sdapi/v1/txt2img", json={"prompt": f"job {i}", "steps": 2},
                                 headers=headers, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["job_id"], headers

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(submit, range(40)))

    def detail(job_id, headers):
        return requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job_id}", headers=headers, timeout=10).json()

    wait_until(lambda: all(detail(*job)["status"] == "completed" for job in jobs), timeout=60, interval=0.5,
               what="all 40 jobs")
    for job in jobs:
        assert [r["outcome"] for r in detail(*job)["runs"]] == ["completed"]
    stats = cluster.sim("GET", "/_sim/stats")
    assert sorted(stats["force_task_ids"]) == sorted(job_id for job_id, _ in jobs)
    assert stats["max_concurrent_generations"] == 1
