"""Versioned SQLite schema. Entry N brings `PRAGMA user_version` from N to N+1; never edit a released one."""

# A job entering the queue (submitted, or back for a retry) raises its owner's and its lane's head
# priority: one body for both triggers of migration 10 (SQLite triggers cannot share a procedure).
_ENTER_QUEUE = """BEGIN
        INSERT INTO owners (owner, last_served_at, head_priority, first_seq)
        VALUES (NEW.owner, 0, NEW.priority, NEW.seq)
        ON CONFLICT (owner) DO UPDATE SET head_priority = excluded.head_priority
        WHERE head_priority IS NULL OR head_priority < excluded.head_priority;
        INSERT INTO lanes (owner, lane, head_priority, last_served_at, first_seq)
        VALUES (NEW.owner, COALESCE(NEW.batch_id, ''), NEW.priority, 0, NEW.seq)
        ON CONFLICT (owner, lane) DO UPDATE SET head_priority = excluded.head_priority
        WHERE head_priority IS NULL OR head_priority < excluded.head_priority;
    END"""

# The change log keeps its last 10,000 changes. Pruned one row at every change, each write of a job
# wrote one more page (the log's oldest leaf) once the log was full; pruned at every 100th change,
# 100 rows go at once (migration 12). Any other change deletes nothing: its range is seq <= 0.
_PRUNE_CHANGES = """DELETE FROM job_changes WHERE seq <= (
            SELECT CASE WHEN MAX(seq) % 100 = 0 THEN MAX(seq) - 10000 ELSE 0 END FROM job_changes);"""

MIGRATIONS = [
    # 1: jobs, their runs, image rows, the local doorbell queue, workers and instance slots.
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        request TEXT NOT NULL,
        options TEXT NOT NULL,
        webhook_secret TEXT,
        idempotency_key TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at REAL,
        instance TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        progress TEXT,
        preview TEXT,
        result TEXT,
        image_count INTEGER NOT NULL DEFAULT 0,
        result_attempt INTEGER,
        error_code TEXT,
        error_message TEXT,
        available_at REAL NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX jobs_owner_idempotency ON jobs (owner, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_owner_seq ON jobs (owner, seq);
    CREATE INDEX jobs_owner_status_seq ON jobs (owner, status, seq);
    CREATE INDEX jobs_queued ON jobs (priority DESC, seq) WHERE status = 'queued';
    CREATE INDEX jobs_processing_lease ON jobs (lease_expires_at) WHERE status = 'processing';
    CREATE TABLE job_runs (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker_id TEXT NOT NULL,
        instance TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        outcome TEXT,
        detail TEXT,
        PRIMARY KEY (job_id, attempt)
    );
    CREATE TABLE images (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        n INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (job_id, attempt, n)
    );
    CREATE TABLE queue_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        body TEXT NOT NULL,
        visible_at REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX queue_messages_visible ON queue_messages (queue, visible_at);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        info TEXT NOT NULL
    );
    CREATE TABLE instance_slots (
        instance TEXT NOT NULL,
        slot INTEGER NOT NULL,
        holder TEXT,
        expires_at REAL,
        PRIMARY KEY (instance, slot)
    )
    """,
    # 2: the webhook outbox. A delivery row is written in the transaction of the job state change it
    # reports (with a snapshot of the job as of that change); the dispatcher claims due rows by
    # pushing next_attempt_at past a lease and records every attempt in webhook_attempts.
    """
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        status TEXT NOT NULL,
        event_at REAL NOT NULL,
        snapshot TEXT NOT NULL,
        body TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        claim_token TEXT,
        redelivery_of TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, seq);
    CREATE TABLE webhook_attempts (
        delivery_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        dispatcher_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status_code INTEGER,
        response TEXT,
        error TEXT,
        PRIMARY KEY (delivery_id, attempt)
    )
    """,
    # 3: the cache port (chalicelib/store/cache.py): A1111's lists and Civitai's answers, as JSON, with
    # the time each was stored; readers decide what is fresh.
    """
    CREATE TABLE cache_entries (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        stored_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    )
    """,
    # 4: submissions the queue intake rejected, and why (chalicelib/rejections.py); one row per message.
    """
    CREATE TABLE rejected_submissions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        received_at REAL NOT NULL,
        reason TEXT NOT NULL,
        problems TEXT NOT NULL,
        excerpt TEXT NOT NULL
    )
    """,
    # 5: the destination host of each delivery, so a claim can skip hosts that already have
    # WEBHOOK_HOST_CONCURRENCY attempts in flight (one tenant's slow receivers never hold every dispatcher).
    """
    ALTER TABLE webhook_deliveries ADD COLUMN host TEXT;
    CREATE INDEX webhook_deliveries_in_flight ON webhook_deliveries (host)
        WHERE status = 'pending' AND claim_token IS NOT NULL
    """,
    # 6: each owner's default checkpoint (POST /sdapi/v1/options; chalicelib/model_choice.py), applied to
    # its later jobs that name none.
    """
    CREATE TABLE model_choices (
        owner TEXT PRIMARY KEY,
        checkpoint TEXT NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    # 7: live progress (chalicelib/changes.py): each job's `version`, bumped by every change of its row
    # in the changing statement, and a short log of those changes written by triggers in the same
    # transaction, which each API process's listener reads after PRAGMA data_version moves (the log
    # keeps the last 10000 changes; a listener further behind wakes every waiter instead).
    """
    ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE job_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        version INTEGER NOT NULL,
        left_queue INTEGER NOT NULL
    );
    CREATE TRIGGER jobs_inserted_change AFTER INSERT ON jobs
    BEGIN
        INSERT INTO job_changes (job_id, owner, version, left_queue) VALUES (NEW.id, NEW.owner, NEW.version, 0);
        DELETE FROM job_changes WHERE seq <= (SELECT MAX(seq) FROM job_changes) - 10000;
    END;
    CREATE TRIGGER jobs_updated_change AFTER UPDATE OF version ON jobs WHEN NEW.version <> OLD.version
    BEGIN
        INSERT INTO job_changes (job_id, owner, version, left_queue)
        VALUES (NEW.id, NEW.owner, NEW.version, OLD.status = 'queued' AND NEW.status <> 'queued');
        DELETE FROM job_changes WHERE seq <= (SELECT MAX(seq) FROM job_changes) - 10000;
    END
    """,
    # 8: batches (chalicelib/batches.py): a batch row, each job's batch_id, and the fair share of the
    # claim: the owners table says when each owner was last served, and jobs_owner_queued finds each
    # owner's next job by index.
    """
    CREATE TABLE batches (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        options TEXT NOT NULL,
        webhook_secret TEXT,
        idempotency_key TEXT,
        job_count INTEGER NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE UNIQUE INDEX batches_owner_idempotency ON batches (owner, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX batches_owner_seq ON batches (owner, seq);
    ALTER TABLE jobs ADD COLUMN batch_id TEXT;
    CREATE INDEX jobs_batch_seq ON jobs (batch_id, seq) WHERE batch_id IS NOT NULL;
    CREATE INDEX jobs_batch_status ON jobs (batch_id, status, seq) WHERE batch_id IS NOT NULL;
    CREATE INDEX jobs_owner_queued ON jobs (owner, priority DESC, seq) WHERE status = 'queued';
    CREATE TABLE owners (
        owner TEXT PRIMARY KEY,
        last_served_at REAL NOT NULL
    )
    """,
    # 9: finished jobs by age, for retention (JOB_RETENTION: the sweep purges the oldest first).
    """
    CREATE INDEX jobs_finished ON jobs (finished_at)
    """,
    # 10: fair share between an owner's batches too, at a cost that does not grow with the number
    # of owners: each owner's and each lane's (one batch, or the owner's single jobs: lane '') most
    # urgent queued priority is kept by triggers as jobs enter the queue and lowered by the claim
    # (store/queries.py, "fair share"); first_seq orders those never served, first in first.
    f"""
    ALTER TABLE owners ADD COLUMN head_priority INTEGER;
    ALTER TABLE owners ADD COLUMN first_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE lanes (
        owner TEXT NOT NULL,
        lane TEXT NOT NULL,
        head_priority INTEGER,
        last_served_at REAL NOT NULL,
        first_seq INTEGER NOT NULL,
        PRIMARY KEY (owner, lane)
    );
    CREATE INDEX owners_waiting ON owners (head_priority DESC, last_served_at, first_seq)
        WHERE head_priority IS NOT NULL;
    CREATE INDEX lanes_waiting ON lanes (owner, head_priority DESC, last_served_at, first_seq)
        WHERE head_priority IS NOT NULL;
    CREATE INDEX jobs_lane_queued ON jobs (owner, COALESCE(batch_id, ''), priority DESC, seq) WHERE status = 'queued';
    INSERT INTO lanes (owner, lane, head_priority, last_served_at, first_seq)
    SELECT owner, COALESCE(batch_id, ''), MAX(priority), 0, MIN(seq) FROM jobs WHERE status = 'queued'
    GROUP BY owner, COALESCE(batch_id, '');
    INSERT INTO owners (owner, last_served_at, head_priority, first_seq)
    SELECT owner, 0, MAX(head_priority), MIN(first_seq) FROM lanes WHERE true GROUP BY owner
    ON CONFLICT (owner) DO UPDATE SET head_priority = excluded.head_priority, first_seq = excluded.first_seq;
    CREATE TRIGGER jobs_entered_queue AFTER INSERT ON jobs WHEN NEW.status = 'queued'
    {_ENTER_QUEUE};
    CREATE TRIGGER jobs_reentered_queue AFTER UPDATE OF status ON jobs
        WHEN NEW.status = 'queued' AND OLD.status <> 'queued'
    {_ENTER_QUEUE}
    """,
    # 11: a job enters jobs_finished when it finishes, not at submit: every submit wrote a page of
    # this index for a NULL no query reads (retention's `finished_at < :cutoff` implies NOT NULL).
    """
    DROP INDEX jobs_finished;
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL
    """,
    # 12: the change log pruned 100 rows at every 100th change (_PRUNE_CHANGES), not a row at each.
    f"""
    DROP TRIGGER jobs_inserted_change;
    CREATE TRIGGER jobs_inserted_change AFTER INSERT ON jobs
    BEGIN
        INSERT INTO job_changes (job_id, owner, version, left_queue) VALUES (NEW.id, NEW.owner, NEW.version, 0);
        {_PRUNE_CHANGES}
    END;
    DROP TRIGGER jobs_updated_change;
    CREATE TRIGGER jobs_updated_change AFTER UPDATE OF version ON jobs WHEN NEW.version <> OLD.version
    BEGIN
        INSERT INTO job_changes (job_id, owner, version, left_queue)
        VALUES (NEW.id, NEW.owner, NEW.version, OLD.status = 'queued' AND NEW.status <> 'queued');
        {_PRUNE_CHANGES}
    END
    """,
]
