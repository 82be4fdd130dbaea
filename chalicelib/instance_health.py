"""Per-process health of each A1111 instance, so no runner claims jobs for an instance that is down.

A job claimed for a dead instance fails its attempt; with several instances that would burn the
job's attempts while healthy instances wait. So a runner asks `usable()` before it claims: a healthy
instance is re-probed every RECHECK_SECONDS, a failed one only after a backoff (1 s, 2 s, 4 s … 30 s)
and until then is skipped. The probe reads `/sdapi/v1/options`, which also tells the loaded model
(model-aware routing). One state per instance and process, shared by its runners, the Lambda handler
and /health.
"""
from __future__ import annotations

import dataclasses
import threading
import time

from chalicelib import a1111
from chalicelib import backoff
from chalicelib import errors

RECHECK_SECONDS = 5.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
PROBE_TIMEOUT = 2.0


@dataclasses.dataclass
class Snapshot:
    healthy: bool | None  # None: never probed
    loaded_model: str | None
    last_error: str | None
    checked_at: float | None  # time.time() of the last probe


class InstanceHealth:
    """Health of one instance, probed with capped exponential backoff while it fails."""

    def __init__(self, client: a1111.A1111Client, *, first_backoff: float = FIRST_BACKOFF,
                 max_backoff: float = MAX_BACKOFF, recheck: float = RECHECK_SECONDS, clock=time.monotonic) -> None:
        self.client = client
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._recheck = recheck
        self._clock = clock
        self._lock = threading.Lock()
        self._healthy: bool | None = None
        self._loaded_model: str | None = None
        self._last_error: str | None = None
        self._checked_at: float | None = None
        self._next_probe = 0.0
        self._failures = 0  # in a row

    def usable(self) -> bool:
        """True if the instance may take a job now; probes it when a probe is due."""
        with self._lock:
            due = self._clock() >= self._next_probe
            healthy = self._healthy
        if due:
            return self.probe()
        return bool(healthy)

    def probe(self, *, timeout: float = PROBE_TIMEOUT) -> bool:
        """Ask the instance now; record the outcome and schedule the next probe."""
        try:
            options = self.client.get_json("/sdapi/v1/options", timeout=timeout)
        except errors.A1111Error as exc:
            self.mark_failed(exc.message)
            return False
        model = options.get("sd_model_checkpoint") if isinstance(options, dict) else None
        with self._lock:
            self._healthy = True
            self._loaded_model = model if isinstance(model, str) else self._loaded_model
            self._checked_at = time.time()
            self._failures = 0
            self._next_probe = self._clock() + self._recheck
        return True

    def mark_failed(self, message: str) -> None:
        """A call failed (probe or job): skip the instance until the backoff has passed."""
        with self._lock:
            self._healthy = False
            self._last_error = message
            self._checked_at = time.time()
            self._failures += 1
            self._next_probe = self._clock() + backoff.delay(self._failures, first=self._first_backoff,
                                                             cap=self._max_backoff)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(healthy=self._healthy, loaded_model=self._loaded_model,
                            last_error=self._last_error, checked_at=self._checked_at)


_states: dict[tuple[str, str], InstanceHealth] = {}
_states_lock = threading.Lock()


def of(instance: a1111.Instance, client: a1111.A1111Client) -> InstanceHealth:
    """The process's one health state for `instance` (created with `client` on first use)."""
    key = (instance.url, instance.name)
    with _states_lock:
        state = _states.get(key)
        if state is None:
            state = _states[key] = InstanceHealth(client)
        return state
