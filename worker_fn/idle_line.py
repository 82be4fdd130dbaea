"""The idle line of one worker process: idle runners wait here, and placement (placement.py)
chooses which of them takes the next job.

Idle runners wait here instead of each polling the doorbell queue, so this process, not the race
for a doorbell, decides who runs a job: the first in placement's order (labels fit, then checkpoint
loaded, then idle longest, among runners whose instance is healthy). When no idle runner fits the
head job's labels, the best of the others is woken all the same: its claim skips to a job it can
run, if there is one. Busy instances that have the checkpoint are not waited for: no job waits
while a healthy instance is idle. A runner that claims a job wakes the next best one (more jobs may
be queued than doorbells rang); one that finds nothing goes back to its place and wakes no one. A
wake that finds no runner idle is kept for the first one back, so a backlog needs no doorbells and
a runner that finishes a job looks for another only when there may be one.

The line is per process: the runners of several worker processes still compete, each process's
doorbell listener taking doorbells from the one queue.
"""
from __future__ import annotations

import threading
import time
import typing

from chalicelib import a1111
from chalicelib import instance_health
from chalicelib import placement
from chalicelib.store import instances as store_instances


class Member(typing.Protocol):
    """A runner as the line sees it: its instance and that instance's health state."""

    instance: a1111.Instance
    health: instance_health.InstanceHealth


class IdleLine:
    """Idle runners in the order they became idle; `wake_best` gives the turn to the best placed."""

    def __init__(self, *, next_job: typing.Callable[[], store_instances.NextJob | None],
                 any_healthy: typing.Callable[[], bool], clock=time.monotonic) -> None:
        self._next_job = next_job  # the most urgent queued job, or None
        self._any_healthy = any_healthy  # whether some instance of the process is healthy
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[Member, threading.Event] = {}
        self._idle_since: dict[Member, float] = {}
        self._missed = False  # a wake found no runner idle: the first one back takes it
        self._stopped = False

    def wait_turn(self, runner: Member, *, every: float, meanwhile: typing.Callable[[], object]) -> bool:
        """Wait until chosen (True) or stopped (False), calling `meanwhile()` every `every` seconds
        (a re-probe of the instance when due, so the choice sees its health and loaded model). A
        runner keeps its place (when it became idle) until it claims a job."""
        turn = threading.Event()
        with self._lock:
            if self._stopped:
                return False
            self._idle_since.setdefault(runner, self._clock())
            self._waiting[runner] = turn
            missed, self._missed = self._missed, False
        if missed:
            self.wake_best()
        while not turn.wait(every):
            meanwhile()
        return not self._stopped

    def claimed(self, runner: Member) -> None:
        """`runner` took a job: it loses its place and the next best idle runner looks for another."""
        with self._lock:
            self._idle_since.pop(runner, None)
        self.wake_best()

    def wake_best(self) -> bool:
        """Give the turn to the best idle runner (for a doorbell or the baton); False if none took
        it. The head job is asked for only when that can change the choice: several candidates with
        different models or labels (and then nobody is woken if nothing is queued)."""
        with self._lock:
            ask = placement.head_matters(self._candidates())
        if not ask:
            return self._wake(head=None)
        return self.wake_if_queued()

    def wake_if_queued(self) -> bool:
        """Wake the best idle runner if a job is queued (one may come without a doorbell): asking
        the store costs what a claim in vain would, without taking a runner out of the line."""
        head = self._next_job()
        return head is not None and self._wake(head=head)

    def stop(self) -> None:
        """Wake every waiting runner, and turn away those that come later."""
        with self._lock:
            self._stopped = True
            for turn in self._waiting.values():
                turn.set()
            self._waiting.clear()

    def _wake(self, *, head: store_instances.NextJob | None) -> bool:
        with self._lock:
            ordered = placement.order(self._candidates(), head=head)
            if not ordered:
                self._missed = True
                return False
            self._waiting.pop(ordered[0].member).set()
        return True

    def _candidates(self) -> list[placement.Candidate[Member]]:
        """Waiting runners that may take a job (placement's health rule, counting the busy
        instances of the process too)."""
        candidates = []
        for runner in self._waiting:
            snapshot = runner.health.snapshot()
            candidates.append(placement.Candidate(
                member=runner, instance=runner.instance, idle_since=self._idle_since[runner],
                healthy=snapshot.healthy, loaded_model=snapshot.loaded_model))
        return placement.usable(candidates, others_healthy=self._any_healthy())
