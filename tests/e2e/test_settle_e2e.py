"""A generation the worker gives up on is interrupted, and no other job reaches A1111 before it is idle."""
from __future__ import annotations


def test_a_generation_past_a1111_timeout_is_interrupted_before_the_next_job_is_sent(cluster):
    cluster.start_simulator(gen_seconds=0.3)
    cluster.start_api()
    cluster.start_worker(A1111_TIMEOUT="1", JOB_MAX_ATTEMPTS="1")
    cluster.sim("POST", "/_sim/faults", json={"slow_next": 1, "slow_seconds": 60})

    stuck = cluster.submit({"prompt": "far too long", "steps": 10})
    after = cluster.submit({"prompt": "the next tenant", "steps": 5})

    stuck_done = cluster.wait_status(stuck["job_id"], {"completed", "error", "cancelled"}, timeout=20)
    assert stuck_done["status"] == "error", stuck_done
    assert stuck_done["error"]["code"] == "a1111_unavailable" and "timed out" in stuck_done["error"]["message"]
    after_done = cluster.wait_status(after["job_id"], {"completed", "error", "cancelled"}, timeout=20)
    assert after_done["status"] == "completed", after_done
    stats = cluster.sim("GET", "/_sim/stats")
    assert stats["generations_interrupted"] == 1  # the abandoned generation was stopped, not left running
    assert stats["max_concurrent_generations"] == 1
    assert stats["generations_started"] == 2  # the next job started only after the first had ended
