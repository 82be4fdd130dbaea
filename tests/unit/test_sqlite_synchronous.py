"""SQLITE_SYNCHRONOUS reaches every SQLite connection; anything but NORMAL or FULL is refused at start."""
from __future__ import annotations

import pydantic
import pytest

from chalicelib import config
from chalicelib import store as store_module


@pytest.mark.parametrize(("level", "pragma"), [("NORMAL", 1), ("FULL", 2)])
def test_the_setting_is_the_connections_synchronous_pragma(tmp_path, level, pragma):
    job_store = store_module.make_store(f"sqlite:///{tmp_path / 'jobs.db'}", sqlite_synchronous=level)
    try:
        database = job_store.database
        # A pooled reader, then the writer.
        assert database.query_one("PRAGMA synchronous")["synchronous"] == pragma
        assert database.execute_one("PRAGMA synchronous")["synchronous"] == pragma
        assert database.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
    finally:
        job_store.database.close()


def test_the_default_is_normal(monkeypatch):
    monkeypatch.delenv("SQLITE_SYNCHRONOUS", raising=False)
    assert config.Settings().sqlite_synchronous == "NORMAL"


def test_an_unknown_level_stops_the_process_at_start(monkeypatch):
    monkeypatch.setenv("SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(pydantic.ValidationError):
        config.Settings()
