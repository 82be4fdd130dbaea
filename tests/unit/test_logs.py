"""Log lines: one JSON object each, with job_id / worker_id when given, and never a configured secret."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from chalicelib import config
from chalicelib import logs
from tests import harness

SECRETS_ENV = {
    "API_TOKENS": "alice:tok-alice-123,bare-token-456",
    "METRICS_TOKEN": "scrape-token-789",
    "DATABASE_URL": "postgresql://app:db-password-000@db.internal:5432/jobs",
    "A1111_AUTH": "webui:a1111-password",
}


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("worker_fn", logging.WARNING, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_a_line_is_one_json_object_with_level_time_message_and_the_extras():
    line = logs.JsonFormatter().format(record("job %s failed", "j1", job_id="j1", worker_id="w1"))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING" and entry["message"] == "job j1 failed" and entry["logger"] == "worker_fn"
    assert entry["job_id"] == "j1" and entry["worker_id"] == "w1"
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_a_traceback_stays_inside_the_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        line = logs.JsonFormatter().format(record("failed", exc_info=sys.exc_info()))
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_every_configured_secret_is_found_in_the_settings(monkeypatch):
    for name, value in SECRETS_ENV.items():
        monkeypatch.setenv(name, value)
    found = set(logs.secrets_in(config.Settings()))
    assert {"tok-alice-123", "bare-token-456", "scrape-token-789", "db-password-000", "a1111-password"} <= found


def test_a_secret_that_slips_into_a_message_an_extra_or_a_traceback_is_masked():
    formatter = logs.JsonFormatter(secrets=["tok-alice-123", 'quo"te-secret', "abc"])
    try:
        raise RuntimeError("auth failed for tok-alice-123")
    except RuntimeError:
        line = formatter.format(record("header was Bearer %s", "tok-alice-123", exc_info=sys.exc_info(),
                                       sent='quo"te-secret'))
    assert "tok-alice-123" not in line and "quo" not in line
    entry = json.loads(line)
    assert entry["message"] == f"header was Bearer {logs.REDACTED}" and entry["sent"] == logs.REDACTED
    assert "abc" in formatter.format(record("abc"))  # too short to be a secret: left alone


@pytest.mark.parametrize("code, expected_message", [
    ("raise RuntimeError('main thread died')", "the process stops on an uncaught exception"),
    ("import threading\nt = threading.Thread(target=lambda: 1 / 0, name='runner-x')\nt.start(); t.join()",
     "thread runner-x stopped on an uncaught exception"),
    ("import warnings\nwarnings.warn('old api', DeprecationWarning, stacklevel=1)", "old api"),
])
def test_uncaught_exceptions_and_warnings_are_json_lines_too(code, expected_message):
    script = "from chalicelib import logs\nlogs.configure('INFO')\nimport warnings\n" \
             "warnings.simplefilter('always')\n" + textwrap.dedent(code)
    run = subprocess.run([sys.executable, "-c", script], cwd=harness.ROOT, capture_output=True, text=True,
                         timeout=30, check=False)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert any(expected_message in entry["message"] for entry in entries), lines


def test_a_throttled_logger_keeps_one_line_per_interval_and_counts_the_rest():
    now = [100.0]
    logger = logging.getLogger("tests.throttled")
    logger.filters[:] = [logs.Throttle(60.0, clock=lambda: now[0])]
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    try:
        for depth in range(1, 6):  # a saturated server: one warning per request
            logger.warning("Task queue depth is %d", depth)
        now[0] += 59.9
        logger.warning("Task queue depth is %d", 6)
        now[0] += 0.1
        logger.warning("Task queue depth is %d", 7)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["Task queue depth is 1", "Task queue depth is 7"]
    assert not hasattr(seen[0], "suppressed") and seen[1].suppressed == 5


def test_waitress_queue_depth_warnings_are_throttled_once_configured():
    script = ("from chalicelib import logs\nlogs.configure('INFO')\n"
              "from waitress import task\nqueue_logger = task.ThreadedTaskDispatcher.queue_logger\n"
              "for depth in range(1, 51):\n    queue_logger.warning('Task queue depth is %d', depth)\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=harness.ROOT, capture_output=True, text=True,
                         timeout=30, check=True, env={**os.environ, "API_TOKENS": "alice:tok-alice-123"})
    entries = [json.loads(line) for line in run.stderr.splitlines() if line]
    assert [(e["logger"], e["message"]) for e in entries] == [("waitress.queue", "Task queue depth is 1")]
