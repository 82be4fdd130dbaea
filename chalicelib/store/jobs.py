"""The job store: one class over either database adapter (`store.database`), its SQL in `queries`.

Every state change is a guarded statement: `... WHERE id = :id AND status = ...`; no row back
means someone else won, and nothing is written. Under Postgres's READ COMMITTED a statement that
waited for a row lock re-checks its guard on the row's newest version; SQLite has one writer at a
time. A change that reports a webhook event writes the delivery row (`base.write_event`) in its
own transaction and says so in the `base.Change` it returns; `chalicelib.transitions` rings the
doorbells.
"""
from __future__ import annotations

import contextlib
import dataclasses
import typing
import uuid

from chalicelib import errors
from chalicelib import vocabulary
from chalicelib.store import base
from chalicelib.store import database as database_module
from chalicelib.store import group_commit
from chalicelib.store import instances as store_instances
from chalicelib.store import queries

JSON_COLUMNS = ("request", "options", "progress", "result")
_STALE = object()  # a claim's walk corrected a head priority and starts again
CLAIM_PAGE = 8  # waiting owners (or lanes) read at once; the first usually has a job to claim
RELEASED_DETAIL = "the worker stopped before the job finished"

Status = vocabulary.JobStatus
Event = vocabulary.JobEvent
Outcome = vocabulary.RunOutcome


@dataclasses.dataclass(frozen=True)
class _JobInsert:
    job: base.NewJob
    now: float
    doorbell: base.InTransaction | None


class JobStore:
    """`base.JobStore` on a `database.Database`."""

    def __init__(self, database: database_module.Database) -> None:
        self.database = database
        self.backend = database.dialect
        self.sql = queries.for_database(database)
        self._job_inserts = group_commit.GroupCommit(self._insert_jobs)

    def migrate(self) -> None:
        self.database.migrate()

    def ping(self) -> None:
        self.database.query_one("SELECT 1")

    def last_write_failure(self) -> database_module.WriteFailure | None:
        return self.database.write_failures.last

    # -- API side ---------------------------------------------------------------------------

    def create_job(self, job: base.NewJob, *, now: float,
                   doorbell: base.InTransaction | None = None) -> tuple[base.Job, bool]:
        """Insert, or return the job the same owner already created with this idempotency key.
        A new job's `doorbell` is written in the same transaction: a 202 never leaves a job without
        its queue message, nor a message without its job. Concurrent calls share transactions
        (`group_commit`)."""
        inserted = self._job_inserts(_JobInsert(job, now, doorbell))
        if inserted is not None:
            return inserted, True
        params = {"owner": job.owner, "idempotency_key": job.idempotency_key}
        return self._job(self.database.query_one(self.sql.SELECT_BY_IDEMPOTENCY, params)), False

    def _insert_jobs(self, inserts: list[_JobInsert]) -> list[base.Job | None]:
        """Each job (and its doorbell) in one transaction; per job the job as stored, or None when
        its idempotency key was taken (by an earlier job, or by one earlier in the same group)."""
        with self.database.transaction() as session:
            choices: dict[str, str | None] = {}  # each owner's model choice, read once per transaction
            return [self._insert_job(session, insert, choices) for insert in inserts]

    def _insert_job(self, session: database_module.Session, insert: _JobInsert,
                    choices: dict[str, str | None]) -> base.Job | None:
        job = insert.job
        if job.owner_checkpoint and job.owner not in choices:
            choices[job.owner] = self._owner_checkpoint(session, job.owner)
        request = self._request_to_store(job, choices.get(job.owner))
        row = session.query_one(self.sql.INSERT_JOB, self._insert_params(job, request=request, now=insert.now))
        if row is None:
            return None
        if insert.doorbell is not None:
            insert.doorbell.write(session)
        if job.batch_id is not None:
            session.execute(self.sql.COUNT_BATCH_JOB, {"id": job.batch_id})
        return base.Job.inserted(job, seq=row["seq"], version=row["version"], request=request, now=insert.now)

    def get_job(self, job_id: str, *, owner: str | None = None) -> base.Job | None:
        sql = self.sql.SELECT_JOB if owner is None else self.sql.SELECT_OWNED_JOB
        row = self.database.query_one(sql, {"id": job_id, "owner": owner})
        return self._job(row) if row else None

    def list_jobs(self, owner: str | None, *, status: str | None, limit: int, before: int | None) -> base.Page:
        params = {"owner": owner, "status": status, "before": before, "limit": limit + 1}
        where = " AND ".join(clause for name, clause in queries.LIST_FILTERS.items()
                             if params[name] is not None) or "TRUE"
        rows = self.database.query(self.database.native(queries.LIST_JOBS.format(where=where)), params)
        jobs, next_cursor = base.keyset_page([self._job(row) for row in rows], limit=limit)
        return base.Page(jobs=jobs, next_cursor=next_cursor)

    def list_recent(self, owner: str, *, since: float, limit: int) -> list[base.Job]:
        rows = self.database.query(self.sql.LIST_RECENT_JOBS, {"owner": owner, "since": since, "limit": limit})
        return [self._job(row) for row in rows]

    def queue_positions(self, jobs: list[base.Job]) -> dict[str, int]:
        window = base.queue_window(jobs)
        if window is None:
            return {}
        params = {**window, "seqs": self.database.array(window["seqs"])}
        return base.positions_by_id(jobs, self.database.query(self.sql.QUEUE_POSITIONS, params))

    def owner_jobs(self, owner: str, *, queued_only: bool, limit: int) -> list[base.Job]:
        """The owner's queued jobs in queue order, or its queued and processing ones newest first."""
        sql = self.sql.OWNER_QUEUED if queued_only else self.sql.OWNER_ACTIVE
        return [self._job(row) for row in self.database.query(sql, {"owner": owner, "limit": limit})]

    def changes_after(self, seq: int | None, *, limit: int) -> tuple[int, list[base.JobChange]]:
        """SQLite's change log: the changes after `seq` (None: the last seq, no changes) and the last
        seq read. The log keeps the latest changes only: a first seq past `seq + 1` means a gap."""
        if seq is None:
            return self.database.query_one(self.sql.LAST_CHANGE)["seq"], []
        rows = self.database.query(self.sql.CHANGES_AFTER, {"after": seq, "limit": limit})
        changes = [base.JobChange(seq=row["seq"], job_id=row["job_id"], owner=row["owner"],
                                  version=row["version"], left_queue=bool(row["left_queue"])) for row in rows]
        return (changes[-1].seq if changes else seq), changes

    def list_runs(self, job_id: str) -> list[base.JobRun]:
        return [base.JobRun(**row) for row in self.database.query(self.sql.SELECT_RUNS, {"id": job_id})]

    def count_by_status(self) -> dict[str, int]:
        return {row["status"]: row["n"] for row in self.database.query(self.sql.COUNT_BY_STATUS)}

    def stale_queued(self, *, older_than: float, now: float, limit: int) -> list[str]:
        rows = self.database.query(self.sql.STALE_QUEUED, {"cutoff": now - older_than, "limit": limit})
        return [row["id"] for row in rows]

    @staticmethod
    def _request_to_store(job: base.NewJob, checkpoint: str | None) -> dict:
        """`job`'s request; a job that takes its owner's `checkpoint` (if any) gets it."""
        if job.owner_checkpoint and checkpoint is not None:
            return store_instances.with_checkpoint(job.request, checkpoint)
        return job.request

    def _insert_params(self, job: base.NewJob, *, request: dict, now: float) -> dict:
        """INSERT_JOB's parameters, with `request` as the job's request."""
        db = self.database
        return {"id": job.id, "owner": job.owner, "kind": job.kind, "priority": job.priority,
                "request": db.dump_json(request), "options": db.dump_json(job.options),
                "webhook_secret": job.webhook_secret, "idempotency_key": job.idempotency_key,
                "batch_id": job.batch_id, "now": now}

    def _owner_checkpoint(self, session: database_module.Session, owner: str) -> str | None:
        """The checkpoint `owner` chose, read in the caller's transaction (see `NewJob.owner_checkpoint`)."""
        row = session.query_one(self.sql.SELECT_MODEL_CHOICE, {"owner": owner})
        return None if row is None else row["checkpoint"]

    def get_model_choice(self, owner: str) -> str | None:
        row = self.database.query_one(self.sql.SELECT_MODEL_CHOICE, {"owner": owner})
        return row["checkpoint"] if row else None

    def set_model_choice(self, owner: str, checkpoint: str, *, now: float) -> None:
        self.database.execute(self.sql.SET_MODEL_CHOICE, {"owner": owner, "checkpoint": checkpoint, "now": now})

    def count_active(self, owner: str, *, limit: int) -> int:
        row = self.database.query_one(self.sql.COUNT_ACTIVE_FOR_OWNER, {"owner": owner, "limit": limit})
        return row["n"]

    def recent_submit_times(self, owner: str, *, limit: int) -> list[float]:
        rows = self.database.query(self.sql.RECENT_SUBMITS, {"owner": owner, "limit": limit})
        return [row["created_at"] for row in rows]

    # -- retention --------------------------------------------------------------------------

    def finished_before(self, cutoff: float, *, limit: int) -> list[str]:
        return [row["id"] for row in self.database.query(self.sql.FINISHED_BEFORE,
                                                         {"cutoff": cutoff, "limit": limit})]

    def purge_jobs(self, job_ids: list[str]) -> base.Purged:
        if not job_ids:
            return base.Purged()
        params = {"ids": self.database.array(job_ids)}
        with self.database.transaction() as session:
            attempts = session.execute(self.sql.PURGE_ATTEMPTS, params)
            deliveries = session.execute(self.sql.PURGE_DELIVERIES, params)
            runs = session.execute(self.sql.PURGE_RUNS, params)
            jobs = session.execute(self.sql.PURGE_JOBS, params)
        return base.Purged(jobs=jobs, runs=runs, deliveries=deliveries, attempts=attempts)

    def purge_batches(self, cutoff: float, *, limit: int) -> base.Purged:
        with self.database.transaction() as session:
            batch_ids = [row["id"] for row in session.query(self.sql.EMPTY_BATCHES_BEFORE,
                                                            {"cutoff": cutoff, "limit": limit})]
            if not batch_ids:
                return base.Purged()
            params = {"ids": self.database.array(batch_ids)}
            attempts = session.execute(self.sql.PURGE_ATTEMPTS, params)
            deliveries = session.execute(self.sql.PURGE_DELIVERIES, params)
            batches = session.execute(self.sql.PURGE_BATCHES, params)
        return base.Purged(deliveries=deliveries, attempts=attempts, batches=batches)

    def purge_rejections(self, cutoff: float, *, limit: int) -> int:
        return self.database.execute(self.sql.PURGE_REJECTIONS, {"cutoff": cutoff, "limit": limit})

    # -- guarded changes (chalicelib.transitions is their one caller) -------------------------

    def cancel_queued(self, job_id: str, *, now: float) -> base.Change:
        with self.database.transaction() as session:
            row = session.query_one(self.sql.CANCEL_QUEUED, {"id": job_id, "now": now})
            if row is None:
                return base.NOT_APPLIED
            event = self._write_event(session, job_id, Event.CANCELLED, options=row["options"], now=now)
            batch_event = self._settle_batch(session, row["batch_id"], now=now)
        return base.Change(applied=True, job_id=job_id, status=Status.CANCELLED, event=event,
                           batch_event=batch_event)

    def request_cancel(self, job_id: str, *, now: float) -> base.Change:
        row = self.database.execute_one(self.sql.REQUEST_CANCEL, {"id": job_id, "now": now})
        if row is None:
            return base.NOT_APPLIED
        return base.Change(applied=True, job_id=job_id, status=Status.PROCESSING, cancel_requested=True)

    def claim_next(self, *, worker_id: str, instance: str, lease_seconds: float, now: float,
                   labels: typing.Sequence[str] = ()) -> base.Change:
        params = {"worker": worker_id, "instance": instance, "expires": now + lease_seconds, "now": now,
                  "labels": self.database.dump_json(list(labels))}
        with self.database.transaction() as session:
            row = self._claim_fairly(session, params)
            if row is None:
                return base.NOT_APPLIED
            job = self._job(row)
            self._refresh_heads(session, job.owner, job.batch_id or "", served=now)
            if self.sql.OPEN_RUN is not None:
                session.execute(self.sql.OPEN_RUN, {"id": job.id, "attempt": job.attempts, "worker": worker_id,
                                                    "instance": instance, "now": now})
            event = self._write_event(session, job.id, Event.STARTED, options=row["options"], now=now)
        return base.Change(applied=True, job_id=job.id, status=Status.PROCESSING, event=event, job=job,
                           cancel_requested=job.cancel_requested)

    def _claim_fairly(self, session: database_module.Session, params: dict) -> dict | None:
        """The claimed job's row (fair share: see queries). First the waiting lanes in turn, each at
        its head priority; if no head job is due for these labels, the first lane with any job that
        is. A head found higher than the truth is lowered and the walk starts again, so each restart
        follows a correction and the walk ends."""
        while (outcome := self._walk_heads(session, params)) is _STALE:
            pass
        if outcome is not None:
            return outcome
        for waiting in self._pages(session, self.sql.WAITING_OWNERS, {}):
            for found in self._pages(session, self.sql.OWNER_LANES, {"owner": waiting["owner"]}):
                row = session.query_one(self.sql.CLAIM_BLOCKED,
                                        {**params, "owner": waiting["owner"], "lane": found["lane"]})
                if row is not None:
                    return row
        return None

    def _walk_heads(self, session: database_module.Session, params: dict) -> typing.Any:
        """A claimed row, None, or _STALE after correcting a head."""
        for waiting in self._pages(session, self.sql.WAITING_OWNERS, {}):
            owner, priority = waiting["owner"], waiting["head_priority"]
            lanes = 0
            for found in self._pages(session, self.sql.WAITING_LANES, {"owner": owner, "priority": priority}):
                lanes += 1
                at = {**params, "owner": owner, "lane": found["lane"], "priority": priority}
                row = session.query_one(self.sql.CLAIM_NEXT, at)
                if row is not None:
                    return row
                if session.query_one(self.sql.LANE_HAS_PRIORITY, at) is None:
                    self._refresh_heads(session, owner, found["lane"], served=None)
                    return _STALE
            if not lanes:  # no lane of the owner is at the owner's head priority
                self._refresh_heads(session, owner, None, served=None)
                return _STALE
        return None

    @staticmethod
    def _pages(session: database_module.Session, sql: str, params: dict) -> typing.Iterator[dict]:
        """The rows of `sql` a few at a time: a claim usually needs only the first."""
        skip = 0
        while rows := session.query(sql, {**params, "limit": CLAIM_PAGE, "skip": skip}):
            yield from rows
            skip += len(rows)

    def _refresh_heads(self, session: database_module.Session, owner: str, lane: str | None, *,
                       served: float | None) -> None:
        """Set the lane's (if any) and the owner's head priority to the truth, and their last
        service time to `served` (None: unchanged); a lane with nothing queued goes."""
        if self.sql.LOCK_OWNER is not None:  # a statement of its own: what follows sees every commit before it
            session.query_one(self.sql.LOCK_OWNER, {"owner": owner})
        if lane is not None:
            refreshed = session.query_one(self.sql.REFRESH_LANE, {"owner": owner, "lane": lane, "served": served})
            if refreshed is not None and refreshed["head_priority"] is None:
                session.execute(self.sql.DROP_EMPTY_LANE, {"owner": owner, "lane": lane})
        session.execute(self.sql.REFRESH_OWNER, {"owner": owner, "served": served})

    def record_progress(self, job_id: str, *, worker_id: str, progress: dict, preview: str | None,
                        lease_seconds: float, now: float) -> base.Change:
        params = {"id": job_id, "worker": worker_id, "progress": self.database.dump_json(progress),
                  "preview": preview, "expires": now + lease_seconds, "now": now}
        with self.database.transaction() as session:
            if self.sql.PROGRESS_BEFORE is not None:
                before = session.query_one(self.sql.PROGRESS_BEFORE, params)
            row = session.query_one(self.sql.RECORD_PROGRESS, params)
            if row is None:
                return base.NOT_APPLIED
            replaced = before["progress"] if self.sql.PROGRESS_BEFORE is not None else row["progress_before"]
            event = None
            if self.database.load_json(replaced) != progress:
                event = self._write_event(session, job_id, Event.PROGRESS, options=row["options"], now=now)
        return base.Change(applied=True, job_id=job_id, status=Status.PROCESSING, event=event,
                           cancel_requested=bool(row["cancel_requested"]))

    def complete(self, job_id: str, *, worker_id: str, result: dict, image_count: int, now: float,
                 progress: dict | None = None) -> base.Change:
        db = self.database
        return self._finish(self.sql.COMPLETE, job_id, worker_id, now, status=Status.COMPLETED,
                            outcome=Outcome.COMPLETED, detail=None, event=Event.COMPLETED, values={
                                "result": db.dump_json(result), "image_count": image_count,
                                "progress": db.dump_json(progress or base.final_progress(None))})

    def finish_cancelled(self, job_id: str, *, worker_id: str, result: dict | None, image_count: int,
                         now: float) -> base.Change:
        return self._finish(self.sql.FINISH_CANCELLED, job_id, worker_id, now, status=Status.CANCELLED,
                            outcome=Outcome.CANCELLED, detail=None, event=Event.CANCELLED, values={
                                "result": None if result is None else self.database.dump_json(result),
                                "image_count": image_count})

    def fail(self, job_id: str, *, worker_id: str, code: str, message: str, now: float) -> base.Change:
        message = _text(message)
        return self._finish(self.sql.FAIL, job_id, worker_id, now, status=Status.ERROR, outcome=Outcome.ERROR,
                            detail=message, event=Event.ERROR, values={"code": code, "message": message})

    def retry_later(self, job_id: str, *, worker_id: str, delay: float, reason: str, now: float) -> base.Change:
        return self._finish(self.sql.RETRY_LATER, job_id, worker_id, now, status=Status.QUEUED,
                            outcome=Outcome.RETRY, detail=_text(reason), event=None,
                            values={"available_at": now + delay})

    def release(self, job_id: str, *, worker_id: str, now: float) -> base.Change:
        return self._finish(self.sql.RELEASE, job_id, worker_id, now, status=Status.QUEUED,
                            outcome=Outcome.RELEASED, detail=RELEASED_DETAIL, event=None, values={})

    def expire_leases(self, *, max_attempts: int, now: float) -> list[base.Change]:
        """Jobs whose worker vanished go back to the queue, or end once attempts are spent."""
        expire_to = {Status.QUEUED: self.sql.EXPIRE_TO_QUEUED, Status.ERROR: self.sql.EXPIRE_TO_ERROR,
                     Status.CANCELLED: self.sql.EXPIRE_TO_CANCELLED}
        changes = []
        for row in self.database.query(self.sql.EXPIRED_LEASES, {"now": now}):
            expiry = base.lease_expiry(attempts=row["attempts"], cancel_requested=bool(row["cancel_requested"]),
                                       max_attempts=max_attempts)
            params = {"id": row["id"], "worker": row["lease_owner"], "now": now, "message": expiry.detail}
            with self.database.transaction() as session:
                expired = session.query_one(expire_to[expiry.status], params)
                if expired is None:
                    continue
                session.execute(self.sql.FINISH_RUN, {**params, "outcome": Outcome.LOST, "detail": expiry.detail})
                event = batch_event = None
                if expiry.event_type is not None:
                    event = self._write_event(session, row["id"], expiry.event_type, options=expired["options"],
                                              now=now)
                    batch_event = self._settle_batch(session, expired["batch_id"], now=now)
            changes.append(base.Change(applied=True, job_id=row["id"], status=expiry.status, event=event,
                                       batch_event=batch_event))
        return changes

    # -- instance slots and workers ---------------------------------------------------------

    def ensure_slots(self, instance: str, capacity: int) -> None:
        params = {"instance": instance, "capacity": capacity}
        with self.database.transaction() as session:
            session.execute(self.sql.ENSURE_SLOTS, params)
            session.execute(self.sql.DROP_EXTRA_SLOTS, params)

    def acquire_slot(self, instance: str, *, holder: str, lease_seconds: float, now: float) -> int | None:
        row = self.database.execute_one(self.sql.ACQUIRE_SLOT, {"instance": instance, "holder": holder,
                                                                "expires": now + lease_seconds, "now": now})
        return None if row is None else row["slot"]

    def renew_slots(self, holder_prefix: str, *, lease_seconds: float, now: float) -> None:
        self.database.execute(self.sql.RENEW_SLOTS, {"expires": now + lease_seconds, "prefix": holder_prefix})

    def release_slot(self, instance: str, slot: int, *, holder: str) -> None:
        self.database.execute(self.sql.RELEASE_SLOT, {"instance": instance, "slot": slot, "holder": holder})

    def heartbeat(self, worker_id: str, *, info: dict, now: float) -> None:
        self.database.execute(self.sql.HEARTBEAT, {"id": worker_id, "now": now,
                                                   "info": self.database.dump_json(info)})

    def remove_worker(self, worker_id: str) -> None:
        self.database.execute(self.sql.REMOVE_WORKER, {"id": worker_id})

    def list_workers(self, *, now: float, keep_seconds: float) -> list[base.Worker]:
        """Those older than `keep_seconds` are pruned first, if the store takes writes: one that
        only reads (a full disk) still lists them."""
        with contextlib.suppress(errors.StoreUnavailable):
            self.database.execute(self.sql.PRUNE_WORKERS, {"cutoff": now - keep_seconds})
        return [base.Worker(**{**row, "info": self.database.load_json(row["info"])})
                for row in self.database.query(self.sql.SELECT_WORKERS)]

    # -- webhook outbox ---------------------------------------------------------------------

    def claim_delivery(self, *, dispatcher_id: str, lease_seconds: float, now: float,
                       per_host: int | None = None) -> base.WebhookDelivery | None:
        if self.sql.ANY_DUE_DELIVERY is not None and self.database.query_one(
                self.sql.ANY_DUE_DELIVERY, {"now": now}) is None:
            return None
        params = {"token": uuid.uuid4().hex, "lease_until": now + lease_seconds, "now": now,
                  "dispatcher": dispatcher_id, "lost_attempt": base.LOST_ATTEMPT, "per_host": per_host}
        with self.database.transaction() as session:
            row = session.query_one(self.sql.CLAIM_DELIVERY, params)
            if row is None:
                return None
            delivery = self._delivery(row)
            if self.sql.OPEN_ATTEMPT is not None:
                session.execute(self.sql.CLOSE_LOST_ATTEMPTS, {**params, "id": delivery.id})
                session.execute(self.sql.OPEN_ATTEMPT, {**params, "id": delivery.id, "attempt": delivery.attempts})
        return delivery

    def finish_delivery(self, delivery_id: str, *, claim_token: str, attempt: int, result: base.AttemptResult,
                        status: str, next_attempt_at: float | None, body: str | None, now: float) -> bool:
        params = {"id": delivery_id, "attempt": attempt, "token": claim_token, "status": status,
                  "status_code": result.status_code, "response": _text(result.response),
                  "error": _text(result.error), "next_attempt_at": next_attempt_at, "body": body, "now": now}
        with self.database.transaction() as session:
            if self.sql.FINISH_ATTEMPT is not None:
                session.execute(self.sql.FINISH_ATTEMPT, params)
            return session.execute(self.sql.FINISH_DELIVERY, params) == 1

    def list_deliveries(self, job_id: str, *, limit: int, before: int | None) -> base.DeliveryPage:
        rows = self.database.query(self.sql.LIST_DELIVERIES, {"job_id": job_id, "before": before,
                                                              "limit": limit + 1})
        deliveries, next_cursor = base.keyset_page([self._delivery(row) for row in rows], limit=limit)
        return base.DeliveryPage(deliveries=deliveries, next_cursor=next_cursor)

    def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[base.WebhookAttempt]]:
        if not delivery_ids:
            return {}
        rows = self.database.query(self.sql.LIST_ATTEMPTS, {"ids": self.database.array(delivery_ids)})
        return base.group_attempts(delivery_ids, rows)

    def redeliver_latest(self, job_id: str, *, now: float) -> base.WebhookDelivery | None:
        row = self.database.execute_one(self.sql.REDELIVER_LATEST, {"id": base.new_delivery_id(),
                                                                    "job_id": job_id, "now": now})
        return self._delivery(row) if row else None

    def count_due_deliveries(self, *, now: float) -> int:
        return self.database.query_one(self.sql.COUNT_DUE_DELIVERIES, {"now": now})["n"]

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, batch: base.NewBatch, jobs: list[base.NewJob], *, now: float) -> tuple[base.Batch, bool]:
        db = self.database
        params = {"id": batch.id, "owner": batch.owner, "options": db.dump_json(batch.options),
                  "webhook_secret": batch.webhook_secret, "idempotency_key": batch.idempotency_key,
                  "job_count": batch.job_count, "now": now}
        with db.transaction() as session:
            row = session.query_one(self.sql.INSERT_BATCH, params)
            if row is None:
                return self._batch(session.query_one(self.sql.SELECT_BATCH_BY_IDEMPOTENCY, params)), False
            chosen = self._owner_checkpoint(session, batch.owner) if any(job.owner_checkpoint for job in jobs) else None
            session.executemany(self.sql.INSERT_JOB, [
                {**self._insert_params(job, request=self._request_to_store(job, chosen), now=now),
                 "idempotency_key": None, "batch_id": batch.id}
                for job in jobs])
        return self._batch(row), True

    def ensure_batch(self, batch: base.NewBatch, *, now: float) -> base.Batch | None:
        db = self.database
        db.execute(self.sql.ENSURE_BATCH, {"id": batch.id, "owner": batch.owner, "now": now,
                                           "options": db.dump_json(batch.options),
                                           "webhook_secret": batch.webhook_secret})
        return self.get_batch(batch.id, owner=batch.owner)

    def get_batch(self, batch_id: str, *, owner: str | None = None) -> base.Batch | None:
        sql = self.sql.SELECT_BATCH if owner is None else self.sql.SELECT_OWNED_BATCH
        row = self.database.query_one(sql, {"id": batch_id, "owner": owner})
        return self._batch(row) if row else None

    def find_batch(self, owner: str, *, idempotency_key: str) -> base.Batch | None:
        row = self.database.query_one(self.sql.SELECT_BATCH_BY_IDEMPOTENCY,
                                      {"owner": owner, "idempotency_key": idempotency_key})
        return self._batch(row) if row else None

    def list_batches(self, owner: str, *, limit: int, before: int | None) -> base.BatchPage:
        rows = self.database.query(self.sql.LIST_BATCHES, {"owner": owner, "before": before, "limit": limit + 1})
        batches, next_cursor = base.keyset_page([self._batch(row) for row in rows], limit=limit)
        return base.BatchPage(batches=batches, next_cursor=next_cursor)

    def batch_members(self, batch_id: str) -> list[base.BatchMember]:
        return self._members(self.database, batch_id)

    def list_batch_jobs(self, batch_id: str, *, status: str | None, limit: int, after: int | None) -> base.Page:
        params = {"batch_id": batch_id, "status": status, "after": after, "limit": limit + 1}
        where = " AND ".join(clause for name, clause in queries.BATCH_JOB_FILTERS.items() if params[name] is not None)
        rows = self.database.query(self.database.native(queries.LIST_BATCH_JOBS.format(where=where)), params)
        jobs, next_cursor = base.keyset_page([self._job(row) for row in rows], limit=limit)
        return base.Page(jobs=jobs, next_cursor=next_cursor)

    def cancel_batch(self, batch_id: str, *, now: float) -> list[base.Change]:
        params = {"batch_id": batch_id, "now": now}
        changes = []
        with self.database.transaction() as session:
            for row in session.query(self.sql.REQUEST_CANCEL_BATCH, params):
                changes.append(base.Change(applied=True, job_id=row["id"], status=Status.PROCESSING,
                                           cancel_requested=True))
            for row in session.query(self.sql.CANCEL_BATCH_QUEUED, params):
                event = self._write_event(session, row["id"], Event.CANCELLED, options=row["options"], now=now)
                changes.append(base.Change(applied=True, job_id=row["id"], status=Status.CANCELLED, event=event))
            batch_event = self._settle_batch(session, batch_id, now=now)
        if batch_event is not None:
            changes.append(base.Change(applied=True, job_id=None, batch_event=batch_event))
        return changes

    def _settle_batch(self, session: database_module.Session, batch_id: str | None, *, now: float) -> str | None:
        """After a job of `batch_id` ended, in its transaction: if it was the batch's last job, the
        batch is finished and its `batch.completed` delivery written (when it has a webhook_url).
        The batch id when that delivery was written, else None."""
        if batch_id is None:
            return None
        if self.sql.LOCK_BATCH is not None:
            session.query_one(self.sql.LOCK_BATCH, {"id": batch_id})
        row = session.query_one(self.sql.FINISH_BATCH, {"id": batch_id, "now": now})
        if row is None:
            return None
        batch = self._decoded_batch(row)
        url = batch["options"].get("webhook_url")
        if not url:
            return None
        members = self._members(session, batch_id)
        body = base.batch_completed_body(batch, members=members, event_at=now)
        session.execute(self.sql.INSERT_BATCH_DELIVERY, {
            "id": base.new_delivery_id(), "batch_id": batch_id, "event_type": base.BATCH_COMPLETED, "now": now,
            "snapshot": self.database.dump_json({"batch": {k: v for k, v in batch.items() if k != "webhook_secret"},
                                                 "counts": base.batch_counts(members)}),
            "body": body, "host": base.destination_host(url)})
        return batch_id

    def _members(self, reader: typing.Any, batch_id: str) -> list[base.BatchMember]:
        members = []
        for row in reader.query(self.sql.BATCH_MEMBERS, {"id": batch_id}):
            values = self._decoded(row)
            members.append(base.BatchMember(**values))
        return members

    def _decoded_batch(self, row: dict) -> dict:
        return {**row, "options": self.database.load_json(row["options"])}

    def _batch(self, row: dict) -> base.Batch:
        return base.Batch(**self._decoded_batch(row))

    # -- rows -------------------------------------------------------------------------------

    def _write_event(self, session: database_module.Session, job_id: str, event: vocabulary.JobEvent, *,
                     options: typing.Any, now: float) -> vocabulary.JobEvent | None:
        """Inside the change's transaction: `base.write_event` for the job as the change left it."""
        return base.write_event(_EventWriter(self, session), job_id, event,
                                options=self.database.load_json(options), now=now)

    def _finish(self, sql: str, job_id: str, worker_id: str, now: float, *, status: vocabulary.JobStatus,
                outcome: vocabulary.RunOutcome, detail: str | None, event: vocabulary.JobEvent | None,
                values: dict) -> base.Change:
        """A guarded change by the lease owner, with its run row closed (and its webhook delivery
        written) in the same commit."""
        with self.database.transaction() as session:
            row = session.query_one(sql, {"id": job_id, "worker": worker_id, "now": now, **values})
            if row is None:
                return base.NOT_APPLIED
            session.execute(self.sql.FINISH_RUN, {"id": job_id, "worker": worker_id, "now": now,
                                                  "outcome": outcome, "detail": detail})
            batch_event = None
            if event is not None:
                event = self._write_event(session, job_id, event, options=row["options"], now=now)
                batch_event = self._settle_batch(session, row["batch_id"], now=now)
        return base.Change(applied=True, job_id=job_id, status=status, event=event, batch_event=batch_event)

    def _decoded(self, row: dict) -> dict:
        values = dict(row)
        for column in JSON_COLUMNS:
            if column in values:
                values[column] = self.database.load_json(values[column])
        if "cancel_requested" in values:
            values["cancel_requested"] = bool(values["cancel_requested"])
        return values

    def _job(self, row: dict) -> base.Job:
        return base.Job(**self._decoded(row))

    def _delivery(self, row: dict) -> base.WebhookDelivery:
        values = dict(row)
        if values.get("snapshot") is not None:
            values["snapshot"] = self.database.load_json(values["snapshot"])
        return base.WebhookDelivery(**values)


class _EventWriter:
    """`base.EventWriter` in the session of a change's transaction."""

    def __init__(self, store: JobStore, session: database_module.Session) -> None:
        self.store = store
        self.session = session

    def last_event_at(self, job_id: str, event_type: str) -> float | None:
        return self.session.query_one(self.store.sql.LAST_EVENT_AT, {"id": job_id, "event_type": event_type})["last"]

    def snapshot_rows(self, job_id: str) -> tuple[dict, list[dict]]:
        job = self.store._decoded(self.session.query_one(self.store.sql.EVENT_JOB, {"id": job_id}))
        return job, self.session.query(self.store.sql.SELECT_RUNS, {"id": job_id})

    def insert_delivery(self, values: dict) -> None:
        self.session.execute(self.store.sql.INSERT_DELIVERY,
                             {**values, "snapshot": self.store.database.dump_json(values["snapshot"])})


def _text(value: str | None) -> str | None:
    """Free text from outside (A1111's error messages, a webhook receiver's answer) minus NUL, which
    a Postgres text value cannot hold; otherwise the outcome could never be recorded."""
    return None if value is None else value.replace("\x00", "\ufffd")
