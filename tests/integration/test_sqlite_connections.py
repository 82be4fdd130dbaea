"""SQLite's connection model: one writer for every thread, a LIFO pool of readers, a watcher per
waiting thread (see chalicelib/store/sqlite_db.py for why)."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from chalicelib import errors
from chalicelib.store import sqlite_db


@pytest.fixture
def opened(monkeypatch):
    """Every connection the module opens from now on."""
    connections = []
    connect = sqlite3.connect

    def counting_connect(*args, **kwargs):
        connections.append(connect(*args, **kwargs))
        return connections[-1]
    monkeypatch.setattr(sqlite_db.sqlite3, "connect", counting_connect)
    return connections


def in_thread(function):
    """Run `function` on a thread of its own; what it returned."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join(timeout=10)
    assert result, "the thread failed or hung"
    return result[0]


def write_connection(notes_database):
    with notes_database.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('x')")
        return conn


def test_every_thread_writes_through_the_same_connection(notes_database):
    connections = {id(in_thread(lambda: write_connection(notes_database))) for _ in range(4)}
    assert len(connections) == 1
    assert notes_database.query_one("SELECT COUNT(*) AS n FROM notes")["n"] == 4


def test_a_read_inside_a_write_sees_the_write_and_other_threads_do_not(notes_database):
    with notes_database.transaction() as session:
        session.execute("INSERT INTO notes (text) VALUES ('uncommitted')")
        assert notes_database.query_one("SELECT text FROM notes")["text"] == "uncommitted"
        assert in_thread(lambda: notes_database.query("SELECT text FROM notes")) == []
    assert in_thread(lambda: notes_database.query("SELECT text FROM notes")) == [{"text": "uncommitted"}]


def test_two_threads_writing_at_once_both_commit(notes_database):
    first_inside, release_first = threading.Event(), threading.Event()

    def first():
        with notes_database.transaction() as session:
            session.execute("INSERT INTO notes (text) VALUES ('first')")
            first_inside.set()
            release_first.wait(timeout=5)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_inside.wait(timeout=5)
    second = threading.Thread(target=lambda: notes_database.execute("INSERT INTO notes (text) VALUES ('second')"))
    second.start()
    second.join(timeout=0.2)
    assert second.is_alive(), "the second writer must wait for the first's transaction"
    release_first.set()
    thread.join(timeout=5)
    second.join(timeout=5)
    assert [row["text"] for row in notes_database.query("SELECT text FROM notes ORDER BY id")] == ["first", "second"]


def test_data_version_moves_with_this_process_commits_from_any_thread(notes_database):
    version = notes_database.data_version()
    notes_database.execute("INSERT INTO notes (text) VALUES ('same thread')")
    assert notes_database.data_version() != version
    version = notes_database.data_version()
    in_thread(lambda: notes_database.execute("INSERT INTO notes (text) VALUES ('other thread')"))
    assert notes_database.data_version() != version
    version = notes_database.data_version()
    assert notes_database.query("SELECT * FROM notes") and notes_database.data_version() == version  # reads do not


def test_readers_follow_concurrency_not_threads(notes_database, opened):
    for _ in range(20):
        in_thread(lambda: notes_database.query("SELECT * FROM notes"))
        in_thread(lambda: notes_database.execute("INSERT INTO notes (text) VALUES ('x')"))
    assert len(opened) == 1  # one reader (the writer was opened by the fixture)


def test_a_failed_commit_leaves_no_transaction_behind(notes_database):
    notes_database.execute("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
    notes_database.execute(
        "CREATE TABLE children (parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError), notes_database.write() as conn:
        conn.execute("INSERT INTO children (parent) VALUES (42)")  # fails at COMMIT
    notes_database.execute("INSERT INTO notes (text) VALUES ('after')")
    assert in_thread(lambda: notes_database.query("SELECT text FROM notes")) == [{"text": "after"}]
    assert notes_database.query("SELECT * FROM children") == []


def test_close_from_any_thread_closes_the_writer_and_the_next_use_reopens(notes_database):
    writer = in_thread(lambda: write_connection(notes_database))
    notes_database.close()
    with pytest.raises(sqlite3.ProgrammingError):
        writer.execute("SELECT 1")
    notes_database.execute("INSERT INTO notes (text) VALUES ('reopened')")
    assert notes_database.query_one("SELECT COUNT(*) AS n FROM notes")["n"] == 2
    assert isinstance(notes_database.data_version(), int)


def test_a_file_that_cannot_be_opened_is_store_unavailable(tmp_path):
    database = sqlite_db.SqliteDatabase(str(tmp_path))  # a directory
    for use in (lambda: database.query("SELECT 1"), lambda: database.execute("SELECT 1"), database.data_version):
        with pytest.raises(errors.StoreUnavailable, match="cannot open the SQLite database"):
            use()


def test_a_reader_in_use_during_close_is_closed_when_given_back(notes_database):
    with notes_database._reader() as reader:
        assert reader.execute("SELECT COUNT(*) FROM notes").fetchone() == (0,)
        in_thread(notes_database.close)
    with pytest.raises(sqlite3.ProgrammingError):
        reader.execute("SELECT 1")
    assert notes_database.query("SELECT * FROM notes") == []  # a new reader
