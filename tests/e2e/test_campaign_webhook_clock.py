"""The fault campaign's webhook receiver down for 8 hours (issue 17 item 7), under a simulated clock:
the real dispatcher keeps the default retry schedule, and after each failed attempt the test moves
the clock forward by the delay it asked for (the delivery's due time, stored in the outbox, is set
to now). The receiver answers 503 until 8 simulated hours have passed; the event is delivered after
that, with the webhook-id and the bytes of the first attempt."""
from __future__ import annotations

import contextlib
import sqlite3

import psycopg
import pytest
import requests

from tests import webhook_receiver
from tests.harness import AUTH, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DOWN_SECONDS = 8 * 3600


class Outbox:
    """The deliveries table of either database, read and moved in time as the simulated clock says."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    @contextlib.contextmanager
    def _connect(self):
        if self.url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(self.url[len("sqlite:///"):], timeout=30)) as conn:
                with conn:
                    yield conn
        else:
            with psycopg.connect(self.url) as conn:
                yield conn

    def _sql(self, statement: str) -> str:
        return statement if self.url.startswith("sqlite") else statement.replace("?", "%s")

    def pending(self, job_id: str, *, attempts: int) -> tuple[str, float, float] | None:
        """(id, next_attempt_at, updated_at) once the delivery's `attempts`-th attempt is recorded as failed."""
        with self._connect() as conn:
            return conn.execute(self._sql(
                "SELECT id, next_attempt_at, updated_at FROM webhook_deliveries "
                "WHERE job_id = ? AND event_type = 'job.completed' AND status = 'pending' AND attempts = ? "
                "AND claim_token IS NULL"),  # the attempt is over, not in flight
                (job_id, attempts)).fetchone()

    def make_due(self, delivery_id: str, *, now: float) -> None:
        with self._connect() as conn:
            conn.execute(self._sql("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?"),
                         (now, delivery_id))


@pytest.mark.both_databases
def test_a_receiver_down_for_8_hours_gets_the_event_after_with_the_same_webhook_id(cluster, database_url):
    cluster.env.update(WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_TIMEOUT="2")  # the default retry schedule
    cluster.start_simulator(gen_seconds=0.1)
    cluster.start_api()
    cluster.start_worker()
    outbox = Outbox(database_url)
    with webhook_receiver.WebhookReceiver(secret=SECRET) as receiver:
        receiver.script([503])
        job_id = cluster.submit({"prompt": "a cat", "steps": 4, "webhook_url": receiver.url,
                                 "webhook_secret": SECRET})["job_id"]
        simulated, delays = 0.0, []
        while True:
            answered = receiver.wait_for(lambda got: len(got) > len(delays), timeout=30)
            if answered[-1].status == 200:
                break
            delivery_id, due, recorded = wait_until(lambda: outbox.pending(job_id, attempts=len(delays) + 1),
                                                    timeout=15, what="the failed attempt to be recorded")
            delays.append(due - recorded)
            simulated += due - recorded  # the clock jumps to the due time
            receiver.script([200] if simulated >= DOWN_SECONDS else [503])
            outbox.make_due(delivery_id, now=recorded)

    print(f"{len(answered)} attempts, delivered {simulated / 3600:.2f} simulated hours after the first; "
          f"delays {[round(d) for d in delays]} s")
    assert simulated >= DOWN_SECONDS and sum(delays[:-1]) < DOWN_SECONDS  # delivered at the first attempt after
    assert [r.status for r in answered] == [503] * len(delays) + [200]
    assert len({r.webhook_id for r in answered}) == 1 and len({r.body for r in answered}) == 1
    assert all(r.verified and r.event["type"] == "job.completed" for r in answered)
    assert delays[0] == pytest.approx(5, rel=0.25) and delays[-1] <= 8 * 3600 * 1.2  # the default schedule
    listed = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job_id}/webhooks", headers=AUTH, timeout=10).json()
    [delivery] = [d for d in listed["deliveries"] if d["type"] == "job.completed"]
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == len(answered)
    assert [a["status_code"] for a in delivery["attempts"]][-1] == 200
