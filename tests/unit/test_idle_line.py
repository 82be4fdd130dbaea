"""The idle line's choice of runner: longest idle, the loaded model, health, the baton, wakes that
found nobody idle, and stop."""
from __future__ import annotations

import pytest

from chalicelib import a1111
from chalicelib import instance_health
from chalicelib.store.instances import NextJob
from tests import support
from worker_fn import idle_line

SD15 = "v1-5-pruned-emaonly.safetensors [6ce0161689]"
SDXL = "SDXL/sd_xl_base_1.0.safetensors"


class Clock:
    """Counts its calls: the line reads it once as a runner takes a new place."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return float(self.calls)


class FakeHealth:
    def __init__(self, *, model: str | None, healthy: bool | None) -> None:
        self.healthy = healthy
        self.model = model

    def snapshot(self) -> instance_health.Snapshot:
        return instance_health.Snapshot(healthy=self.healthy, loaded_model=self.model,
                                        last_error=None, checked_at=None)


class FakeRunner:
    def __init__(self, name: str, *, model: str | None = SD15, healthy: bool | None = True,
                 labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.instance = a1111.Instance(url=f"http://{name}:7860", name=name, labels=labels)
        self.health = FakeHealth(model=model, healthy=healthy)

    def __repr__(self) -> str:
        return self.name


class Line:
    """An IdleLine with runners waiting in background threads, entered in a known order."""

    def __init__(self, *, head=None, any_healthy: bool = True) -> None:
        self.clock = Clock()
        self.heads_asked = 0
        self.head = head
        self.any_healthy = any_healthy
        self.line = idle_line.IdleLine(next_job=self._next_job, any_healthy=lambda: self.any_healthy,
                                       clock=self.clock)
        self.waiting: dict[FakeRunner, tuple] = {}

    def _next_job(self):
        self.heads_asked += 1
        return self.head

    def enter(self, *runners: FakeRunner, every: float = 60, meanwhile=lambda: None) -> None:
        for runner in runners:
            before = self.clock.calls
            self.waiting[runner] = support.in_background(
                lambda runner=runner: self.line.wait_turn(runner, every=every, meanwhile=meanwhile))
            support.wait_until(lambda before=before: self.clock.calls > before, what=f"{runner} to take its place")

    def woken(self) -> dict[FakeRunner, bool]:
        """Runners whose wait ended since the last call, with what wait_turn answered."""
        ended = {}
        for runner, (thread, box) in list(self.waiting.items()):
            thread.join(0.2)
            if not thread.is_alive():
                ended[runner] = box["value"]
                del self.waiting[runner]
        return ended


@pytest.fixture
def line():
    made = []

    def make(**kwargs) -> Line:
        made.append(Line(**kwargs))
        return made[-1]

    yield make
    for each in made:
        each.line.stop()


def test_the_runner_idle_longest_is_woken_and_only_it(line):
    idle = line()
    a, b, c = FakeRunner("a"), FakeRunner("b"), FakeRunner("c")
    idle.enter(b, a, c)

    assert idle.line.wake_best() is True
    assert idle.woken() == {b: True}
    assert idle.line.wake_best() is True
    assert idle.woken() == {a: True}
    assert idle.heads_asked == 0  # every instance has the same model: the head job cannot matter


def test_a_runner_woken_in_vain_keeps_its_place_and_one_that_claimed_loses_it(line):
    idle = line()
    a, b = FakeRunner("a"), FakeRunner("b")
    idle.enter(a, b)
    idle.line.wake_best()
    assert idle.woken() == {a: True}

    idle.enter(a)  # found no job: back to its place, ahead of b
    idle.line.wake_best()
    assert idle.woken() == {a: True}

    idle.line.claimed(a)  # the baton: b looks for the next job
    assert idle.woken() == {b: True}
    idle.enter(a, b)
    idle.line.wake_best()
    assert idle.woken() == {b: True}  # a ran a job, so b has been idle longer


def test_the_instance_with_the_head_jobs_model_wins_over_a_longer_idle_one(line):
    idle = line(head=NextJob("job-1", "sd_xl_base_1.0", ()))
    sd15, sdxl = FakeRunner("sd15", model=SD15), FakeRunner("sdxl", model=SDXL)
    idle.enter(sd15, sdxl)

    idle.line.wake_best()

    assert idle.woken() == {sdxl: True}
    assert idle.heads_asked == 1


def test_with_different_models_nobody_is_woken_when_nothing_is_queued(line):
    idle = line(head=None)
    idle.enter(FakeRunner("sd15", model=SD15), FakeRunner("sdxl", model=SDXL))

    assert idle.line.wake_best() is False
    assert idle.woken() == {}


def test_without_an_idle_instance_having_the_model_the_longest_idle_takes_the_job_at_once(line):
    idle = line(head=NextJob("job-1", "dreamshaper_8", ()))
    sd15, sdxl = FakeRunner("sd15", model=SD15), FakeRunner("sdxl", model=SDXL)
    idle.enter(sd15, sdxl)

    idle.line.wake_best()

    assert idle.woken() == {sd15: True}


def test_a_job_naming_no_model_goes_to_the_longest_idle(line):
    idle = line(head=NextJob("job-1", None, ()))
    sdxl, sd15 = FakeRunner("sdxl", model=SDXL), FakeRunner("sd15", model=SD15)
    idle.enter(sdxl, sd15)

    idle.line.wake_best()

    assert idle.woken() == {sdxl: True}


def test_a_job_with_instance_labels_goes_to_the_longest_idle_instance_having_them_all(line):
    idle = line(head=NextJob("job-1", "sd_xl_base_1.0", ("sdxl", "fast")))
    plain = FakeRunner("plain", model=SDXL)
    half = FakeRunner("half", model=SDXL, labels=("sdxl",))
    fits = FakeRunner("fits", model=SD15, labels=("fast", "sdxl", "big"))
    idle.enter(plain, half, fits)

    idle.line.wake_best()

    assert idle.woken() == {fits: True}  # the labels outrank both a longer wait and the loaded model
    assert idle.heads_asked == 1


def test_when_no_idle_instance_has_the_labels_the_longest_idle_looks_for_another_job(line):
    idle = line(head=NextJob("job-1", None, ("sdxl",)))
    first, second = FakeRunner("first", labels=("small",)), FakeRunner("second")
    idle.enter(first, second)

    idle.line.wake_best()

    assert idle.woken() == {first: True}  # its claim skips to a job without labels, if there is one


def test_an_unhealthy_instance_is_skipped_while_another_is_healthy(line):
    idle = line(head=NextJob("job-1", "sd_xl_base_1.0", ()))
    down = FakeRunner("down", model=SDXL, healthy=False)
    never_probed = FakeRunner("never-probed", model=SDXL, healthy=None)
    up = FakeRunner("up", model=SD15)
    idle.enter(down, never_probed, up)

    idle.line.wake_best()

    assert idle.woken() == {up: True}  # neither its idle time nor the model brings a dead one a job
    assert idle.line.wake_best() is False
    assert idle.woken() == {}


def test_no_idle_runner_is_woken_when_only_a_busy_instance_is_healthy(line):
    idle = line(any_healthy=True)
    idle.enter(FakeRunner("down", healthy=False))

    assert idle.line.wake_best() is False
    assert idle.woken() == {}


def test_when_every_instance_is_down_the_longest_idle_still_takes_jobs(line):
    idle = line(any_healthy=False)
    first, second = FakeRunner("first", healthy=False), FakeRunner("second", healthy=False)
    idle.enter(first, second)

    assert idle.line.wake_best() is True
    assert idle.woken() == {first: True}


def test_a_wake_that_found_nobody_idle_goes_to_the_first_runner_back_and_only_it(line):
    idle = line()
    assert idle.line.wake_best() is False  # every runner busy: the doorbell is kept

    first, second = FakeRunner("first"), FakeRunner("second")
    idle.enter(first)
    assert idle.woken() == {first: True}
    idle.enter(second)
    assert idle.woken() == {}


def test_a_baton_that_found_nobody_idle_is_kept_too(line):
    idle = line()
    busy, back = FakeRunner("busy"), FakeRunner("back")
    idle.line.claimed(busy)  # the only other runner is busy as well

    idle.enter(back)

    assert idle.woken() == {back: True}


def test_a_receive_that_ends_empty_wakes_a_runner_only_for_a_queued_job(line):
    idle = line(head=None)
    runner = FakeRunner("r")
    idle.enter(runner)

    assert idle.line.wake_if_queued() is False  # nothing queued: no claim in vain
    assert idle.woken() == {}

    idle.head = NextJob("retried-job", None, ())
    assert idle.line.wake_if_queued() is True
    assert idle.woken() == {runner: True}


def test_a_waiting_runner_re_probes_its_instance_and_is_skipped_once_it_is_down(line):
    idle = line()
    down, up = FakeRunner("down"), FakeRunner("up")
    idle.enter(down, every=0.01, meanwhile=lambda: setattr(down.health, "healthy", False))
    idle.enter(up)
    support.wait_until(lambda: down.health.healthy is False, what="the re-probe")

    idle.line.wake_best()

    assert idle.woken() == {up: True}


def test_stop_wakes_every_waiting_runner_and_turns_away_later_ones(line):
    idle = line()
    runners = [FakeRunner(f"r{n}") for n in range(3)]
    idle.enter(*runners)

    idle.line.stop()

    assert idle.woken() == {runner: False for runner in runners}
    assert idle.line.wait_turn(FakeRunner("late"), every=60, meanwhile=lambda: None) is False
    assert idle.line.wake_best() is False
