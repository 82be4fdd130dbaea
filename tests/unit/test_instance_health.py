"""Instance health: a failing instance is skipped and re-probed with backoff; a healthy one tells
its loaded model."""
from __future__ import annotations

from chalicelib import errors
from chalicelib import instance_health


class FakeClient:
    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    def get_json(self, path: str, *, timeout: float) -> dict:
        assert path == "/sdapi/v1/options"
        self.probes += 1
        if not self.up:
            raise errors.A1111Unavailable("A1111 at http://gpu:7860 refused the connection (GET /sdapi/v1/options)")
        return {"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]"}


def test_a_down_instance_is_skipped_and_reprobed_with_doubling_backoff():
    clock = [100.0]
    client = FakeClient()
    health = instance_health.InstanceHealth(client, first_backoff=1.0, max_backoff=4.0, clock=lambda: clock[0])

    # given an instance that refuses connections
    assert health.usable() is False
    assert health.snapshot().last_error.endswith("refused the connection (GET /sdapi/v1/options)")

    # then it is not asked again before each backoff (1 s, 2 s, 4 s, capped at 4 s) has passed
    probe_times = []
    for _ in range(80):
        clock[0] += 0.25  # exact in binary, so the times compare exactly
        before = client.probes
        health.usable()
        if client.probes > before:
            probe_times.append(clock[0] - 100.0)
    assert probe_times == [1.0, 3.0, 7.0, 11.0, 15.0, 19.0]

    # when it answers again, it is usable at once at its next probe, and tells its model
    client.up = True
    clock[0] += 4.0
    assert health.usable() is True
    assert health.snapshot().loaded_model == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    probes = client.probes
    clock[0] += 1.0
    assert health.usable() is True and client.probes == probes  # no probe before RECHECK_SECONDS


def test_a_failed_job_marks_a_healthy_instance_down_until_the_backoff_passes():
    clock = [0.0]
    client = FakeClient()
    client.up = True
    health = instance_health.InstanceHealth(client, clock=lambda: clock[0])
    assert health.usable() is True

    health.mark_failed("A1111 at http://gpu:7860 closed the connection without a complete answer")

    assert health.usable() is False
    clock[0] += instance_health.FIRST_BACKOFF
    assert health.usable() is True
