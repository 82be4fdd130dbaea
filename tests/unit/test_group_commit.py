"""Group commit: concurrent callers share one write; each gets its own result or error."""
from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from chalicelib import errors
from chalicelib.store import group_commit


class Recorder:
    """A write that records its groups; the first group is held until `release` is set, so that
    the callers arriving meanwhile queue up behind it."""

    def __init__(self, *, fail_on: object = None, error: Exception | None = None) -> None:
        self.groups: list[list] = []
        self.release = threading.Event()
        self.fail_on = fail_on
        self.error = error or ValueError("bad item")

    def __call__(self, items: list) -> list:
        if not self.groups:
            self.release.wait(5)
        self.groups.append(list(items))
        if self.fail_on in items:
            raise self.error
        return [item * 10 for item in items]


def run_concurrently(commit, items, recorder) -> list:
    def call(item):
        try:
            return commit(item)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc

    with concurrent.futures.ThreadPoolExecutor(len(items)) as pool:
        futures = [pool.submit(call, items[0])]
        time.sleep(0.05)  # the first caller leads and is held in the write
        futures += [pool.submit(call, item) for item in items[1:]]
        time.sleep(0.1)  # the others wait for their turn
        recorder.release.set()
        return [future.result(5) for future in futures]


def test_a_caller_alone_writes_a_group_of_one():
    recorder = Recorder()
    recorder.release.set()
    commit = group_commit.GroupCommit(recorder)
    assert commit(3) == 30
    assert recorder.groups == [[3]]


def test_callers_arriving_during_a_write_share_the_next_one():
    recorder = Recorder()
    commit = group_commit.GroupCommit(recorder)
    results = run_concurrently(commit, list(range(1, 11)), recorder)
    assert results == [item * 10 for item in range(1, 11)]
    assert recorder.groups[0] == [1]
    assert sorted(recorder.groups[1]) == list(range(2, 11))  # nine callers, one transaction
    assert len(recorder.groups) == 2


def test_groups_are_bounded():
    recorder = Recorder()
    commit = group_commit.GroupCommit(recorder, most=3)
    results = run_concurrently(commit, list(range(1, 11)), recorder)
    assert results == [item * 10 for item in range(1, 11)]
    assert max(len(group) for group in recorder.groups) == 3
    assert sorted(item for group in recorder.groups for item in group) == list(range(1, 11))


def test_one_bad_item_fails_alone_and_its_neighbours_are_written_again():
    recorder = Recorder(fail_on=5)
    commit = group_commit.GroupCommit(recorder)
    results = run_concurrently(commit, list(range(1, 9)), recorder)
    assert isinstance(results[4], ValueError)
    assert [r for i, r in enumerate(results) if i != 4] == [item * 10 for item in range(1, 9) if item != 5]
    assert [5] in recorder.groups  # retried alone, failed alone


def test_an_unavailable_store_fails_the_whole_group_without_retries():
    recorder = Recorder(fail_on=5, error=errors.StoreUnavailable("the disk is full"))
    commit = group_commit.GroupCommit(recorder)
    results = run_concurrently(commit, list(range(1, 9)), recorder)
    assert results[0] == 10
    assert all(isinstance(r, errors.StoreUnavailable) for r in results[1:])
    assert len(recorder.groups) == 2  # no item written again alone


def test_an_interrupted_leader_leaves_no_caller_waiting():
    class Interrupt(BaseException):
        pass

    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            time.sleep(0.2)  # the others queue up meanwhile
            raise Interrupt()
        return items

    commit = group_commit.GroupCommit(write)
    outcomes: dict[int, object] = {}

    def call(item):
        try:
            outcomes[item] = commit(item)
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcomes[item] = exc

    first = threading.Thread(target=call, args=(1,))
    first.start()
    time.sleep(0.05)
    others = [threading.Thread(target=call, args=(item,)) for item in (2, 3)]
    for thread in others:
        thread.start()
    for thread in (first, *others):
        thread.join(5)
    assert isinstance(outcomes[1], Interrupt)
    assert outcomes[2] == 2 and outcomes[3] == 3  # written by the next leader
    assert not any(thread.is_alive() for thread in (first, *others))


@pytest.mark.parametrize("callers", [1, 4, 64])
def test_every_caller_gets_its_own_result_under_contention(callers):
    commit = group_commit.GroupCommit(lambda items: [(item, len(items)) for item in items])
    with concurrent.futures.ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(commit, range(callers * 20)))
    assert [item for item, _ in results] == list(range(callers * 20))
