"""One JSON object per log line, with `job_id`, `worker_id` and other extras when given.

No line carries a configured secret: `configure` collects them from the settings (API tokens, every
`SecretStr` setting, the passwords in DATABASE_URL and A1111_AUTH) and the formatter masks any that
slips into a message, an extra or a traceback. Uncaught exceptions (of any thread) and Python
warnings are logged the same way, so nothing but JSON lines reaches the output.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import typing
import urllib.parse

import pydantic

from chalicelib import config

STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words; such tokens are unsafe anyway
# waitress warns "Task queue depth is N" at every request that finds no idle thread: a saturated
# server wrote (and formatted) one line per request. Such loggers keep one line per interval.
THROTTLED_LOGGERS = {"waitress.queue": 60.0}


class JsonFormatter(logging.Formatter):
    def __init__(self, *, secrets: typing.Iterable[str] = ()) -> None:
        super().__init__()
        variants = {form for secret in secrets if len(secret) >= MIN_SECRET_LENGTH
                    for form in (secret, json.dumps(secret)[1:-1])}  # as written, and as JSON escapes it
        self.secrets = sorted(variants, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str))

    def redact(self, line: str) -> str:
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


class Throttle(logging.Filter):
    """Lets one record through per `interval` seconds; the next one through says how many were
    dropped meanwhile (`suppressed`). For loggers that repeat one line at every request."""

    def __init__(self, interval: float, *, clock: typing.Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._next_at = float("-inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        with self._lock:
            if now < self._next_at:
                self._suppressed += 1
                return False
            self._next_at = now + self.interval
            if self._suppressed:
                record.suppressed = self._suppressed
                self._suppressed = 0
        return True


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(secrets=secrets_in(config.get_settings())))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, interval in THROTTLED_LOGGERS.items():
        throttled = logging.getLogger(name)
        throttled.filters[:] = [Throttle(interval)]
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def secrets_in(settings: config.Settings) -> list[str]:
    """Every secret value the settings hold (empty ones left out)."""
    values = list(settings.token_map())
    values += [value.get_secret_value() for _, value in settings if isinstance(value, pydantic.SecretStr)]
    values.append(settings.a1111_auth.partition(":")[2])
    try:
        values.append(urllib.parse.urlsplit(settings.database_url).password or "")
    except ValueError:
        pass  # not a URL this code can use either; it fails loudly elsewhere
    return [value for value in values if value]


def _log_uncaught(exc_type, exc, traceback) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, traceback)
        return
    logging.getLogger("uncaught").critical("the process stops on an uncaught exception",
                                           exc_info=(exc_type, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("uncaught").error("thread %s stopped on an uncaught exception", name,
                                        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
