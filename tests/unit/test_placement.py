"""Placement: which runner or slot takes the next job. The rule itself (labels, loaded checkpoint,
idle longest, healthy else all), then the same answer from both runtimes: a worker's idle line and a
Lambda invocation's order of slots."""
from __future__ import annotations

import pytest

from chalicelib import a1111
from chalicelib import consumers
from chalicelib import instance_health
from chalicelib import placement
from chalicelib import store
from chalicelib.store.instances import NextJob
from tests.unit import test_idle_line

SD15 = "v1-5-pruned-emaonly.safetensors [6ce0161689]"
SDXL = "SDXL/sd_xl_base_1.0.safetensors"


def candidate(name: str, *, idle_since: float, healthy: bool | None = True, model: str | None = SD15,
              labels: tuple[str, ...] = ()) -> placement.Candidate[str]:
    instance = a1111.Instance(url=f"http://{name}:7860", name=name, labels=labels)
    return placement.Candidate(member=name, instance=instance, idle_since=idle_since, healthy=healthy,
                               loaded_model=model)


def names(candidates) -> list[str]:
    return [c.member for c in candidates]


# --- the rule ------------------------------------------------------------------------------------

def test_without_a_head_job_the_longest_idle_comes_first():
    found = placement.order([candidate("b", idle_since=2), candidate("a", idle_since=1),
                             candidate("c", idle_since=3)], head=None)

    assert names(found) == ["a", "b", "c"]


def test_the_loaded_checkpoint_outranks_a_longer_wait():
    head = NextJob("job-1", "sd_xl_base_1.0", ())
    found = placement.order([candidate("sd15", idle_since=1), candidate("sdxl", idle_since=2, model=SDXL)],
                            head=head)

    assert names(found) == ["sdxl", "sd15"]


def test_labels_outrank_the_checkpoint_and_the_wait():
    head = NextJob("job-1", "sd_xl_base_1.0", ("sdxl", "fast"))
    found = placement.order([
        candidate("plain", idle_since=1, model=SDXL),
        candidate("half", idle_since=2, model=SDXL, labels=("sdxl",)),
        candidate("fits", idle_since=3, model=SD15, labels=("fast", "sdxl", "big")),
    ], head=head)

    assert names(found) == ["fits", "plain", "half"]  # then the checkpoint, then the wait


def test_a_job_naming_no_checkpoint_goes_to_the_longest_idle():
    found = placement.order([candidate("sdxl", idle_since=1, model=SDXL), candidate("sd15", idle_since=2)],
                            head=NextJob("job-1", None, ()))

    assert names(found) == ["sdxl", "sd15"]


def test_equal_candidates_keep_the_given_order():
    found = placement.order([candidate(n, idle_since=float("-inf")) for n in "cab"], head=None)

    assert names(found) == ["c", "a", "b"]  # stable, never shuffled


def test_an_instance_that_is_down_or_never_probed_is_left_out_while_another_answers():
    found = placement.order([candidate("down", idle_since=1, healthy=False, model=SDXL),
                             candidate("unknown", idle_since=2, healthy=None, model=SDXL),
                             candidate("up", idle_since=3)], head=NextJob("job-1", "sd_xl_base_1.0", ()))

    assert names(found) == ["up"]


def test_a_down_candidate_waits_for_a_busy_instance_that_answers():
    assert placement.usable([candidate("down", idle_since=1, healthy=False)], others_healthy=True) == []


def test_when_no_instance_answers_every_candidate_is_tried_longest_idle_first():
    found = placement.order([candidate("b", idle_since=2, healthy=False),
                             candidate("a", idle_since=1, healthy=None)], head=None)

    assert names(found) == ["a", "b"]


@pytest.mark.parametrize("healthy, any_healthy, expected", [
    (True, True, True), (False, True, False), (None, True, False), (False, False, True), (None, False, True)])
def test_may_run_is_healthy_else_all(healthy, any_healthy, expected):
    assert placement.may_run(healthy, any_healthy=any_healthy) is expected


def test_the_head_job_matters_only_between_instances_that_differ():
    same = [candidate("a", idle_since=1), candidate("b", idle_since=2)]
    models = [candidate("a", idle_since=1), candidate("b", idle_since=2, model=SDXL)]
    labels = [candidate("a", idle_since=1), candidate("b", idle_since=2, labels=("sdxl",))]

    assert placement.head_matters(same) is False
    assert placement.head_matters(same[:1] + labels[1:]) is True
    assert placement.head_matters(models) is True and placement.head_matters(labels) is True
    assert placement.head_matters(models[1:]) is False  # one candidate: nothing to choose


# --- the same answer in both runtimes ------------------------------------------------------------

class FakeHealth:
    """A health state as consumers.placement_order reads it, probing nothing."""

    def __init__(self, *, healthy: bool | None, model: str | None) -> None:
        self.healthy, self.model = healthy, model

    def usable(self) -> bool:
        return bool(self.healthy)

    def snapshot(self) -> instance_health.Snapshot:
        return instance_health.Snapshot(healthy=self.healthy, loaded_model=self.model, last_error=None,
                                        checked_at=None)


class FakeStats:
    def __init__(self, head: NextJob | None) -> None:
        self.head = head

    def next_job(self, *, now: float) -> NextJob | None:
        return self.head


class FakeContext:
    def __init__(self, instances) -> None:
        self.instances = instances
        self.store = None


# (name, labels, model, healthy) in the order they became idle; the head job; who should take it.
SCENARIOS = {
    "longest idle": ([("a", (), SD15, True), ("b", (), SD15, True)], NextJob("j", None, ()), "a"),
    "loaded checkpoint": ([("a", (), SD15, True), ("b", (), SDXL, True)], NextJob("j", "sd_xl_base_1.0", ()), "b"),
    "labels first": ([("a", (), SDXL, True), ("b", (), SDXL, True), ("c", ("sdxl",), SD15, True)],
                     NextJob("j", "sd_xl_base_1.0", ("sdxl",)), "c"),
    "no label fits": ([("a", ("small",), SD15, True), ("b", (), SD15, True)], NextJob("j", None, ("sdxl",)), "a"),
    "healthy first": ([("a", (), SDXL, False), ("b", (), SD15, None), ("c", (), SD15, True)],
                      NextJob("j", "sd_xl_base_1.0", ()), "c"),
    "all down": ([("a", (), SD15, False), ("b", (), SDXL, False)], NextJob("j", "sd_xl_base_1.0", ()), "b"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_idle_line_and_a_lambda_invocation_choose_the_same_instance(scenario, monkeypatch, request):
    specs, head, expected = SCENARIOS[scenario]

    # the worker: runners enter the idle line in this order
    line = test_idle_line.Line(head=head, any_healthy=any(spec[3] for spec in specs))
    request.addfinalizer(line.line.stop)
    runners = [test_idle_line.FakeRunner(name, labels=labels, model=model, healthy=healthy)
               for name, labels, model, healthy in specs]
    line.enter(*runners)
    line.line.wake_best()
    [woken] = line.woken()

    # Lambda: this process released the instances' slots in the same order
    instances = [runner.instance for runner in runners]
    healths = {runner.instance.name: FakeHealth(healthy=runner.health.healthy, model=runner.health.model)
               for runner in runners}
    monkeypatch.setattr(consumers, "health_of", lambda ctx, instance: healths[instance.name])
    monkeypatch.setattr(consumers, "_released_at", {i.name: float(n) for n, i in enumerate(instances)})
    monkeypatch.setattr(store, "make_instance_stats", lambda job_store: FakeStats(head))
    tried = consumers.placement_order(FakeContext(instances))

    assert woken.name == tried[0].name == expected


def test_under_lambda_an_instance_this_process_never_used_counts_as_idle_longest(monkeypatch):
    instances = [a1111.Instance(url=f"http://{n}:7860", name=n) for n in ("used", "fresh", "other")]
    monkeypatch.setattr(consumers, "health_of", lambda ctx, instance: FakeHealth(healthy=True, model=SD15))
    monkeypatch.setattr(consumers, "_released_at", {"used": 5.0})

    tried = consumers.placement_order(FakeContext(instances))

    assert [i.name for i in tried] == ["fresh", "other", "used"]  # then the configuration's order
