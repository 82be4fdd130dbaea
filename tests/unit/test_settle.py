"""jobrunner.settle: interrupt A1111 until it reports idle, within a deadline."""
from __future__ import annotations

import pytest

from chalicelib import a1111
from chalicelib import errors
from chalicelib import jobrunner

IDLE = {"progress": 0, "eta_relative": 0, "state": {"job": "", "job_count": 0}}
BUSY = {"progress": 0.4, "eta_relative": 3, "state": {"job": "scripts_txt2img", "job_count": 1}}
STARTING = {"progress": 0, "eta_relative": 0, "state": {"job": "", "job_count": -1}}


class FakeClient:
    """Answers progress from a script of answers (an exception is raised); counts interrupts."""

    def __init__(self, answers: list) -> None:
        self.answers = list(answers)
        self.interrupts = 0

    def progress(self, *, skip_current_image: bool = False) -> dict:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def interrupt(self) -> None:
        self.interrupts += 1


@pytest.mark.parametrize("progress, idle", [(IDLE, True), (BUSY, False), (STARTING, False), ({}, False),
                                            ({"state": None}, False)])
def test_is_idle_reads_job_count(progress, idle):
    assert a1111.is_idle(progress) is idle


def test_an_idle_instance_is_settled_at_once_without_an_interrupt():
    client = FakeClient([IDLE])
    assert jobrunner.settle(client, wait=5, interval=0.01) is True
    assert client.interrupts == 0


def test_a_busy_instance_is_interrupted_until_it_reports_idle():
    client = FakeClient([BUSY, STARTING, BUSY, IDLE])
    assert jobrunner.settle(client, wait=5, interval=0.01) is True
    assert client.interrupts == 3


def test_an_instance_still_busy_at_the_deadline_is_not_settled():
    client = FakeClient([BUSY])
    assert jobrunner.settle(client, wait=0.1, interval=0.02) is False
    assert client.interrupts >= 2


def test_an_instance_that_cannot_be_asked_is_not_settled():
    client = FakeClient([errors.A1111Unavailable("A1111 at x refused the connection")])
    assert jobrunner.settle(client, wait=5, interval=0.01) is False
