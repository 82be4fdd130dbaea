"""WAL checkpoints run by sqlite_checkpoints' thread, not by the request whose commit crossed a threshold."""
from __future__ import annotations

import os
import threading
import time

import pytest

from chalicelib.store import sqlite_checkpoints


@pytest.fixture
def quick(monkeypatch):
    """A checkpoint after every 10 commits, looked for every 10 ms; the calls of `checkpoint`."""
    monkeypatch.setattr(sqlite_checkpoints, "COMMITS_PER_CHECKPOINT", 10)
    monkeypatch.setattr(sqlite_checkpoints, "POLL_SECONDS", 0.01)
    calls = []
    checkpoint = sqlite_checkpoints.checkpoint
    monkeypatch.setattr(sqlite_checkpoints, "checkpoint",
                        lambda path, lock: (calls.append(path), checkpoint(path, lock)))
    return calls


def write_pages(notes_database, commits: int) -> int:
    """`commits` transactions of a few pages each, a little apart; the WAL file's size after them."""
    for _ in range(commits):
        notes_database.execute("INSERT INTO notes (text) VALUES (?)", ("x" * 12_000,))
        time.sleep(0.003)
    time.sleep(0.1)
    notes_database.execute("INSERT INTO notes (text) VALUES ('last')")  # restarts a WAL checkpointed to its end
    return os.path.getsize(notes_database.path + "-wal")


def test_the_thread_keeps_the_wal_short_where_the_writers_would_let_it_grow(notes_database, quick, monkeypatch):
    assert write_pages(notes_database, 200) < 2_500_000  # about 5 MB of pages written
    assert notes_database.path in quick
    monkeypatch.setattr(sqlite_checkpoints, "committed", lambda path, lock: None)  # no thread: the backstop only
    assert write_pages(notes_database, 200) > 4_000_000


def test_writers_leave_checkpoints_to_the_thread_up_to_the_backstop(notes_database):
    with notes_database.write() as conn:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == sqlite_checkpoints.BACKSTOP_PAGES


def test_a_few_commits_are_checkpointed_when_idle_and_the_thread_then_ends(notes_database, quick, monkeypatch):
    monkeypatch.setattr(sqlite_checkpoints, "IDLE_SECONDS", 0.05)
    notes_database.execute("INSERT INTO notes (text) VALUES ('one')")
    deadline = time.monotonic() + 5
    while (sqlite_checkpoints._thread is not None or notes_database.path not in quick) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert notes_database.path in quick and sqlite_checkpoints._thread is None


def test_a_file_that_is_gone_is_left_gone(tmp_path):
    sqlite_checkpoints.checkpoint(str(tmp_path / "gone.db"), threading.RLock())
    assert not (tmp_path / "gone.db").exists()


def test_a_forked_child_starts_with_no_thread_and_nothing_pending(notes_database):
    notes_database.execute("INSERT INTO notes (text) VALUES ('one')")
    assert notes_database.path in sqlite_checkpoints._pending
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it inherited, then leave at once
        os.write(write, b"%d" % (sqlite_checkpoints._thread is None and not sqlite_checkpoints._pending))
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


def test_reclaiming_space_counts_its_commits_like_any_write(notes_database, monkeypatch):
    """reclaim_space frees pages outside write(); its own passive checkpoint may find the thread's
    running, so its commits are counted too, and the thread copies them."""
    notes_database.execute("INSERT INTO notes (text) VALUES (?)", ("x" * 200_000,))
    notes_database.execute("DELETE FROM notes")
    counted = []
    monkeypatch.setattr(sqlite_checkpoints, "committed", lambda path, lock: counted.append(path))
    assert notes_database.reclaim_space() > 0
    assert counted == [notes_database.path]
