"""WAL checkpoints of this process's SQLite files, run by a background thread.

SQLite checkpoints a WAL file (copies its pages into the database file, with an fsync of each) in
the commit that takes the WAL past `wal_autocheckpoint` pages: every ~80th submit paid a few ms for
it (a submit's p99 at one client: 4.9 ms, 1.8 ms without; docs/performance.md). Here a writer only
counts its commits; one daemon thread per process checkpoints a file once it has
COMMITS_PER_CHECKPOINT of them, or IDLE_SECONDS after its first one, and ends when no file has any.
The checkpoint is PASSIVE on a connection of its own: it blocks neither readers nor writers (it
copies what no reader still needs), and other processes' checkpoints of the same file take turns.
A WAL starts over from its beginning only at a write that finds it copied to its end, so what this
process's writers added meanwhile is copied in a second pass with them paused (the process's write
lock held for it; usually nothing is left to copy). Should the thread fall behind, the writers'
own `wal_autocheckpoint` (BACKSTOP_PAGES) still bounds the WAL.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import urllib.parse

log = logging.getLogger(__name__)

COMMITS_PER_CHECKPOINT = 64  # about SQLite's default of 1,000 pages, at a submit's 12-16
IDLE_SECONDS = 5.0  # fewer commits than that are checkpointed this long after the first
POLL_SECONDS = 0.1
BACKSTOP_PAGES = 10_000  # the writers' wal_autocheckpoint: 40 MiB of 4 KiB pages

_pending: dict[str, list] = {}  # path → [commits since its last checkpoint, time of the first, write lock]
_guard = threading.Lock()
_thread: threading.Thread | None = None
_connect = sqlite3.connect  # this module's own, whatever a caller (or a test) puts in sqlite3 later


def committed(path: str, write_lock: threading.RLock) -> None:
    """Count a commit to the SQLite file at `path`, whose writers in this process take `write_lock`
    (and start the thread if none runs)."""
    global _thread
    with _guard:
        entry = _pending.get(path)
        if entry is None:
            _pending[path] = [1, time.monotonic(), write_lock]
        else:
            entry[0] += 1
        if _thread is None:
            _thread = threading.Thread(target=_run, name="sqlite-checkpoints", daemon=True)
            _thread.start()


def _forget_in_child() -> None:
    """A forked child has no checkpoint thread (and may have been forked while one held the guard)."""
    global _guard, _thread
    _guard, _thread = threading.Lock(), None
    _pending.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _run() -> None:
    global _thread
    while True:
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        with _guard:
            due = [(path, entry[2]) for path, entry in _pending.items()
                   if entry[0] >= COMMITS_PER_CHECKPOINT or now - entry[1] >= IDLE_SECONDS]
            for path, _ in due:
                del _pending[path]
            if not _pending and not due:
                _thread = None
                return
        for path, write_lock in due:
            checkpoint(path, write_lock)


def checkpoint(path: str, write_lock: threading.RLock) -> None:
    """A PASSIVE checkpoint of the file at `path`, finished with `write_lock` held; nothing when the
    file is gone (it is not created)."""
    try:
        conn = _connect(f"file:{urllib.parse.quote(path)}?mode=rw", uri=True, timeout=0,
                        isolation_level=None, check_same_thread=False)
    except sqlite3.Error:
        return
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with write_lock:  # what writers added meanwhile (often nothing: then it only reads the WAL's index)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error as exc:  # the next commits count again; the backstop bounds the WAL meanwhile
        log.debug("WAL checkpoint of %s failed: %s", path, exc)
    finally:
        conn.close()
