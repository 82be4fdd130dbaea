"""Concurrent submits of one process share a write transaction (group commit).

A write transaction costs about the same for one job as for fifty: BEGIN, the COMMIT (on Postgres
its WAL flush; on SQLite the process's write lock, which every other writer waits for). When many
requests submit at once, the first to find no group being written leads: it takes every item
waiting and writes them in one transaction, while the others sleep on a lock (no polling, no GIL
contention). A request whose item was written returns; one whose item came too late leads the next
group. A request alone leads a group of one: no wait and no thread of its own, so it behaves the
same on AWS Lambda (one request per process) as in a server.

One item's failure must not fail its neighbours: when a group's transaction fails for a reason other
than the store being unavailable, each item is written again alone and gets its own outcome.
"""
from __future__ import annotations

import threading
import typing

from chalicelib import errors

Item = typing.TypeVar("Item")
Result = typing.TypeVar("Result")

MOST_PER_GROUP = 64  # bounds how long one group holds the write lock


class _Entry(typing.Generic[Item, Result]):
    """One caller's item and, once its group is written, its result or its error."""

    __slots__ = ("item", "finished", "result", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.finished = False
        self.result: Result | None = None
        self.error: BaseException | None = None

    def settle(self, result: Result | None = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.finished = result, error, True

    def outcome(self) -> Result:
        if self.error is not None:
            raise self.error
        return typing.cast(Result, self.result)


class GroupCommit(typing.Generic[Item, Result]):
    """`write(items) -> results` (one transaction, one result per item, in order) called for groups
    of the items that concurrent callers hand to `__call__`."""

    def __init__(self, write: typing.Callable[[list[Item]], list[Result]], *, most: int = MOST_PER_GROUP) -> None:
        self._write = write
        self._most = most
        self._waiting: list[_Entry[Item, Result]] = []
        self._guard = threading.Lock()  # held for list operations only
        self._turn = threading.Lock()  # held by the caller writing a group

    def __call__(self, item: Item) -> Result:
        """`item` written (in a group with whatever other callers wait now); its result."""
        entry: _Entry[Item, Result] = _Entry(item)
        with self._guard:
            self._waiting.append(entry)
        with self._turn:
            while not entry.finished:
                self._lead()
        return entry.outcome()

    def _lead(self) -> None:
        with self._guard:
            group, self._waiting = self._waiting[:self._most], self._waiting[self._most:]
        try:
            self._settle(group)
        except BaseException:  # interrupted while writing: nobody may wait for this group forever
            for entry in group:
                if not entry.finished:
                    entry.settle(error=errors.StoreUnavailable("the write was interrupted; nothing was stored"))
            raise

    def _settle(self, group: list[_Entry[Item, Result]]) -> None:
        try:
            results = self._write([entry.item for entry in group])
        except errors.StoreUnavailable as exc:  # alone, each would meet the same store
            for entry in group:
                entry.settle(error=exc)
            return
        except Exception as exc:  # noqa: BLE001 - one item's fault: find out whose
            if len(group) == 1:
                group[0].settle(error=exc)
                return
            for entry in group:
                self._settle([entry])
            return
        for entry, result in zip(group, results, strict=True):
            entry.settle(result=result)
