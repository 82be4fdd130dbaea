"""A1111's real failures against simulator processes (issue 17 items 1 and 4): each failure class
with its code and attempt count, a stalled (SIGSTOPped) instance abandoned for another, and a
cancel that keeps only the iterations A1111 finished."""
from __future__ import annotations

import signal

import requests

from tests.harness import AUTH, wait_until


def fault(url: str, **settings) -> None:
    requests.post(f"{url}/_sim/faults", json=settings, timeout=10).raise_for_status()


def test_each_failure_class_has_its_code_and_retry_rule_on_one_instance(cluster):
    cluster.start_simulator(gen_seconds=0.2)
    cluster.start_api()
    cluster.start_worker()

    # a 500 naming an exception: A1111 crashed on this request; not retried
    fault(cluster.sim_url, fail_next=1, fail_as="type_error")
    failed = cluster.wait_status(cluster.submit()["job_id"], {"completed", "error"})
    assert failed["status"] == "error" and failed["error"]["code"] == "a1111_failed" and failed["attempts"] == 1
    assert failed["error"]["message"].startswith("TypeError: '>' not supported between instances of")

    # a proxy's 503: unavailable, retried, then it completes
    fault(cluster.sim_url, fail_next=1, fail_as="unavailable")
    retried = cluster.wait_status(cluster.submit()["job_id"], {"completed", "error"})
    assert retried["status"] == "completed" and retried["attempts"] == 2
    assert [r["outcome"] for r in retried["runs"]] == ["retry", "completed"]
    assert retried["runs"][0]["detail"].startswith("a1111_unavailable: ")

    # out of memory with no other instance: not retried
    fault(cluster.sim_url, fail_next=1, fail_as="out_of_memory")
    oom = cluster.wait_status(cluster.submit()["job_id"], {"completed", "error"})
    assert oom["status"] == "error" and oom["error"]["code"] == "a1111_out_of_memory" and oom["attempts"] == 1
    assert "no other instance may run it" in oom["error"]["message"]

    assert cluster.sim("GET", "/_sim/stats")["generation_requests"] == 4  # 1 + 2 + 1 attempts


def test_out_of_memory_is_retried_once_on_the_other_instance(cluster):
    urls = cluster.start_simulators(2, gen_seconds=0.2)
    cluster.start_api()
    cluster.start_worker()
    for url in urls:
        fault(url, fail_next=1, fail_as="out_of_memory")

    done = cluster.wait_status(cluster.submit()["job_id"], {"completed", "error"})

    assert done["status"] == "error" and done["error"]["code"] == "a1111_out_of_memory"
    assert done["attempts"] == 2 and "ran out of memory on another one too" in done["error"]["message"]
    assert [r["outcome"] for r in done["runs"]] == ["retry", "error"]
    assert {r["instance"] for r in done["runs"]} == set(urls)


def test_a_stalled_instance_is_abandoned_and_the_job_completes_on_the_other(cluster):
    # The lease must outlast stall detection plus the interrupt attempt on the stopped instance (as the
    # defaults do), else the sweep may see an expired lease first and record the run as lost.
    cluster.env.update(A1111_STALL_SECONDS="2", A1111_TIMEOUT="120", JOB_LEASE_SECONDS="15")
    urls = cluster.start_simulators(2, gen_seconds=6)
    cluster.start_api()
    cluster.start_worker()
    job = cluster.submit({"prompt": "hang", "steps": 30})
    running = wait_until(
        lambda: (lambda j: j if (j["progress"] or {}).get("step") else None)(cluster.job(job["job_id"])),
        timeout=20, what="progress")
    stopped = cluster.process(f"simulator-{urls.index(running['instance'])}")
    stopped.popen.send_signal(signal.SIGSTOP)
    try:
        started = wait_until(lambda: (lambda j: j if len(j["runs"]) >= 2 else None)(cluster.job(job["job_id"])),
                             timeout=30, what="the run to be abandoned")
        # the anonymous summary is cached for HEALTH_CACHE_SECONDS (5 s): it turns degraded, not down
        summary = wait_until(lambda: (lambda h: h if h["components"]["instances"] == "degraded" else None)(
            requests.get(f"{cluster.api_url}/health", timeout=10).json()), timeout=15, what="degraded")
        assert summary["status"] == "degraded" and cluster.health()["status"] == "degraded"
        first = started["runs"][0]
        assert first["outcome"] == "retry" and first["instance"] == running["instance"]
        assert first["detail"].startswith("a1111_unavailable: ") and "stalled" in first["detail"]
        done = cluster.wait_status(job["job_id"], {"completed", "error"}, timeout=40)
    finally:
        stopped.popen.send_signal(signal.SIGCONT)
    assert done["status"] == "completed" and done["instance"] != running["instance"]
    assert len(done["result"]["images"]) == 1


def test_cancel_mid_batch_keeps_only_the_iterations_a1111_finished(cluster):
    cluster.start_simulator(gen_seconds=6)
    cluster.start_api()
    cluster.start_worker()
    job = cluster.submit({"prompt": "batch", "steps": 10, "n_iter": 3, "batch_size": 2})
    wait_until(lambda: (cluster.job(job["job_id"])["progress"] or {}).get("job_no") == 1, timeout=20,
               what="the second iteration")

    response = requests.delete(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}", headers=AUTH, timeout=10)
    assert response.status_code == 202
    done = cluster.wait_status(job["job_id"], {"cancelled", "completed", "error"}, timeout=10)

    assert done["status"] == "cancelled"
    # A1111 answered the first iteration's two images and the second one's, cut short: only the first kept
    assert done["interrupted"] == {"iterations_finished": 1, "images_kept": 2, "images_discarded": 2}
    assert len(done["result"]["images"]) == 2 and len(done["image_urls"]) == 2
