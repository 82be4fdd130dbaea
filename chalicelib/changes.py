"""The change signal of an API process: one listener on the store, fanning out to every waiter.

Every change of a job bumps its `version` in the changing statement, and the store signals it in
the same transaction: on SQLite a trigger writes it to the `job_changes` log, which the listener
reads when `PRAGMA data_version` moves; on Postgres a trigger NOTIFYs channel `job_changes` at
commit. One daemon thread per process (started by the first subscriber) turns those into
`store.base.JobChange`s and wakes the subscriptions that care; waiting requests never poll the
database. When the listener may have missed changes (it (re)connected, or fell behind SQLite's
log), it wakes every subscription with `resync`: the waiter re-reads what it watches.

How a request waits (event streams, long-polls, blocking requests):

    registry = changes.registry(ctx)
    with registry.subscribe(job_id=job_id) as subscription:   # subscribe first,
        job = ctx.store.get_job(job_id)                        # then read: no change is missed
        while job.version <= seen and (wake := subscription.wait(timeout=...)):
            job = ctx.store.get_job(job_id)

or, for one job after a read already made, `registry.wait_for_change(job_id, above_version=v,
timeout=t)`. `subscribe(counted=True)` takes one of the STREAM_MAX_OPEN slots (event streams and
long-polls) and raises `errors.ServerBusy` when none is free.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
import typing

from chalicelib import backoff
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib.store import base as store_base

log = logging.getLogger(__name__)

CHANNEL = "job_changes"
RECENT_VERSIONS = 10_000  # jobs whose latest signalled version is remembered (wait_for_change)
LOG_BATCH = 1_000
LISTEN_SLICE = 1.0
LISTENER_PING_SECONDS = 30.0
RECONNECT_FIRST_DELAY = 0.2
RECONNECT_MAX_DELAY = 5.0
BUSY_RETRY_AFTER = 5


@dataclasses.dataclass(frozen=True)
class Wake:
    """Why a subscription woke: jobs that changed (id → version), a job that left the queue (queue
    positions moved), the listener lost track (`resync`: re-read everything), or the registry closed
    (the process is stopping: end the wait). Empty (false) when the wait timed out."""

    versions: dict[str, int] = dataclasses.field(default_factory=dict)
    queue_moved: bool = False
    resync: bool = False
    closed: bool = False

    def __bool__(self) -> bool:
        return bool(self.versions) or self.queue_moved or self.resync or self.closed


class Subscription:
    """Changes of one job, of one owner's jobs, or both; `watch_queue` adds queue moves."""

    def __init__(self, registry: Registry, *, job_id: str | None, owner: str | None, watch_queue: bool,
                 counted: bool) -> None:
        self.registry = registry
        self.job_id = job_id
        self.owner = owner
        self.watch_queue = watch_queue
        self.counted = counted
        self._versions: dict[str, int] = {}
        self._queue_moved = False
        self._resync = False
        self._event = threading.Event()

    def wait(self, *, timeout: float) -> Wake:
        """What happened since the last wait, as soon as something did, or an empty Wake after `timeout`."""
        self._event.wait(max(timeout, 0))
        with self.registry._lock:
            self._event.clear()
            wake = Wake(versions=self._versions, queue_moved=self._queue_moved, resync=self._resync,
                        closed=self.registry.closed)
            self._versions, self._queue_moved, self._resync = {}, False, False
        return wake

    def close(self) -> None:
        self.registry._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _note(self, change: store_base.JobChange) -> None:
        """Under the registry's lock."""
        if change.version > self._versions.get(change.job_id, 0):
            self._versions[change.job_id] = change.version
        self._event.set()

    def _note_queue_moved(self) -> None:
        self._queue_moved = True
        self._event.set()

    def _note_resync(self) -> None:
        self._resync = True
        self._event.set()


class Registry:
    """The process's subscriptions, and the listener thread that wakes them."""

    def __init__(self, listener: typing.Callable[[Registry], None], *, max_counted: int) -> None:
        self.max_counted = max_counted
        self.closed = False
        self._listener = listener
        self._lock = threading.Lock()
        self._has_subscribers = threading.Condition(self._lock)
        self._by_job: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._by_owner: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._all: set[Subscription] = set()
        self._counted = 0
        self._versions: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._thread: threading.Thread | None = None

    # -- for waiters ------------------------------------------------------------------------------

    def subscribe(self, *, job_id: str | None = None, owner: str | None = None, watch_queue: bool = False,
                  counted: bool = False) -> Subscription:
        """A subscription to `job_id`'s changes and/or every change of `owner`'s jobs. Subscribe
        before reading what you watch. `counted` takes a STREAM_MAX_OPEN slot (`errors.ServerBusy`
        when none is free; the slot is freed by `close`)."""
        subscription = Subscription(self, job_id=job_id, owner=owner, watch_queue=watch_queue, counted=counted)
        with self._lock:
            if counted:
                if self._counted >= self.max_counted:
                    raise errors.ServerBusy(
                        f"all {self.max_counted} event streams and long-polls of this server are open "
                        "(STREAM_MAX_OPEN); retry later, or poll GET /sdapi/v1/jobs/{job_id}",
                        retry_after=BUSY_RETRY_AFTER)
                self._counted += 1
            self._all.add(subscription)
            if job_id is not None:
                self._by_job[job_id].add(subscription)
            if owner is not None:
                self._by_owner[owner].add(subscription)
            self._has_subscribers.notify_all()
            self._start()
        return subscription

    def wait_for_change(self, job_id: str, *, above_version: int, timeout: float) -> bool:
        """Wait until `job_id`'s version is signalled above `above_version` (True), or `timeout`
        seconds (False). True may also mean "maybe": the listener lost track, or the process is
        stopping; re-read the job either way. Call it after reading the job at `above_version`."""
        deadline = time.monotonic() + timeout
        with self.subscribe(job_id=job_id) as subscription:
            if self.known_version(job_id) > above_version:
                return True
            while (remaining := deadline - time.monotonic()) > 0:
                wake = subscription.wait(timeout=remaining)
                if wake.resync or wake.closed or wake.versions.get(job_id, 0) > above_version:
                    return True
        return False

    def known_version(self, job_id: str) -> int:
        """The latest version of the job signalled recently in this process (0: none)."""
        with self._lock:
            return self._versions.get(job_id, 0)

    def open_counted(self) -> int:
        with self._lock:
            return self._counted

    def close(self) -> None:
        """Wake every subscription for the last time (the process is stopping)."""
        with self._lock:
            self.closed = True
            for subscription in self._all:
                subscription._event.set()
            self._has_subscribers.notify_all()

    # -- for the listener -------------------------------------------------------------------------

    def publish(self, changes: typing.Iterable[store_base.JobChange]) -> None:
        with self._lock:
            moved = False
            for change in changes:
                self._versions[change.job_id] = max(change.version, self._versions.pop(change.job_id, 0))
                if len(self._versions) > RECENT_VERSIONS:
                    self._versions.popitem(last=False)
                for subscription in self._by_job.get(change.job_id, ()):
                    subscription._note(change)
                for subscription in self._by_owner.get(change.owner, ()):
                    subscription._note(change)
                moved = moved or change.left_queue
            if moved:
                for subscription in self._all:
                    if subscription.watch_queue:
                        subscription._note_queue_moved()

    def resync(self) -> None:
        with self._lock:
            for subscription in self._all:
                subscription._note_resync()

    def wait_for_subscribers(self, *, timeout: float) -> bool:
        """For listeners that cost something while idle: whether anyone is subscribed (waits up to
        `timeout` for a first one)."""
        with self._lock:
            return self._has_subscribers.wait_for(lambda: bool(self._all) or self.closed, timeout=timeout)

    # -- inside -----------------------------------------------------------------------------------

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription not in self._all:
                return
            self._all.discard(subscription)
            if subscription.counted:
                self._counted -= 1
            for index, key in ((self._by_job, subscription.job_id), (self._by_owner, subscription.owner)):
                if key is not None:
                    index[key].discard(subscription)
                    if not index[key]:
                        del index[key]

    def _start(self) -> None:
        """Under the lock: the listener thread, once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen_forever, name="change-listener", daemon=True)
            self._thread.start()

    def _listen_forever(self) -> None:
        failures = 0
        while not self.closed:
            try:
                self._listener(self)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any surprise
                failures += 1
                delay = backoff.delay(failures, first=RECONNECT_FIRST_DELAY, cap=RECONNECT_MAX_DELAY)
                log.warning("change listener failed; waiters re-read until it is back: %s", exc,
                            extra={"retry_in": delay})
                time.sleep(delay)
            self.resync()


def sqlite_listener(store: store_base.JobStore, *, interval: float) -> typing.Callable[[Registry], None]:
    """Watch PRAGMA data_version (it moves when another connection commits), read the change log
    after the last change seen. Idle while nobody is subscribed."""
    def listen(registry: Registry) -> None:
        version = store.database.data_version()
        last, _ = store.changes_after(None, limit=0)
        registry.resync()  # changes before `last` were never seen by this listener
        while not registry.closed:
            if not registry.wait_for_subscribers(timeout=LISTEN_SLICE):
                continue
            time.sleep(interval)
            current = store.database.data_version()
            if current == version:
                continue
            version = current
            while True:
                first_wanted = last + 1
                last, changes = store.changes_after(last, limit=LOG_BATCH)
                if changes and changes[0].seq > first_wanted:
                    registry.resync()  # the log was trimmed past what this listener had read
                registry.publish(changes)
                if len(changes) < LOG_BATCH:
                    break
    return listen


def postgres_listener(store: store_base.JobStore) -> typing.Callable[[Registry], None]:
    """LISTEN job_changes on a connection of its own; the triggers' NOTIFYs arrive at commit."""
    def listen(registry: Registry) -> None:
        from chalicelib.store import postgres_db  # noqa: PLC0415 - psycopg only where Postgres is used

        conn = store.database.connect()
        try:
            with postgres_db.wrapped():
                conn.execute(f"LISTEN {CHANNEL}")
                registry.resync()  # notifications sent before LISTEN are lost
                last_ping = time.monotonic()
                while not registry.closed:
                    for notify in conn.notifies(timeout=LISTEN_SLICE):
                        registry.publish([_decoded(notify.payload)])
                    if time.monotonic() - last_ping > LISTENER_PING_SECONDS:
                        conn.execute(postgres_db.PING)  # finds a connection that died silently
                        last_ping = time.monotonic()
        finally:
            conn.close()
    return listen


def _decoded(payload: str) -> store_base.JobChange:
    values = json.loads(payload)
    return store_base.JobChange(job_id=values["job_id"], owner=values["owner"], version=values["version"],
                                left_queue=bool(values["left_queue"]))


def make_registry(store: store_base.JobStore, *, max_counted: int, watch_interval: float) -> Registry:
    """The registry over `store`'s own change signal."""
    if store.backend == "postgres":
        return Registry(postgres_listener(store), max_counted=max_counted)
    return Registry(sqlite_listener(store, interval=watch_interval), max_counted=max_counted)


_lock = threading.Lock()
_registry: Registry | None = None
_store: store_base.JobStore | None = None


def registry(ctx: context_module.Context) -> Registry:
    """The process's registry, over the context's store (a new one when the context was rebuilt)."""
    global _registry, _store
    with _lock:
        if _registry is None or _store is not ctx.store:
            if _registry is not None:
                _registry.close()
            _registry = make_registry(ctx.store, max_counted=ctx.settings.stream_limit(),
                                      watch_interval=ctx.settings.change_watch_interval)
            _store = ctx.store
        return _registry


def close() -> None:
    """Wake every waiter of this process for the last time (called when the server stops)."""
    with _lock:
        if _registry is not None:
            _registry.close()
