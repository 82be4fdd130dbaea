"""Stores a runner's generated job while the runner starts the next one.

A1111 is idle from the moment it answers a generation until our next call reaches it. Writing the
answer's images and the job's outcome takes a few ms on Postgres (two transactions, each a WAL flush)
and more with S3; done on the runner's thread, every job would leave the GPU idle that long. The
runner hands the writing over and claims its next job at once. One job at a time per runner: a new
hand-over waits for the previous one, so no runner ever holds two answers' images, and a runner
that stops waits for the last before giving back its slot (`wait`).

A crash before the outcome is written loses nothing more than a crash inside the write would: the
job keeps its lease until it expires, and the sweep puts it back in the queue.
"""
from __future__ import annotations

import logging
import queue
import threading
import typing

log = logging.getLogger(__name__)


class Finisher(threading.Thread):
    """One runner's writer of finished jobs: runs each handed-over write, in order, one at a time."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._writes: queue.SimpleQueue[typing.Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()

    def hand_over(self, write: typing.Callable[[], None]) -> None:
        """Run `write` on this thread, once the previous one has ended."""
        self._idle.wait()
        self._idle.clear()
        self._writes.put(write)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the last write handed over has ended (waiting up to `timeout` s for it)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """End the thread once the writes handed over before are done."""
        self._writes.put(None)

    def run(self) -> None:
        while (write := self._writes.get()) is not None:
            try:
                write()
            except Exception:  # noqa: BLE001 - the thread must outlive any failed write, and say so
                log.exception("storing a finished job failed; it returns to the queue when its lease expires")
            finally:
                self._idle.set()
