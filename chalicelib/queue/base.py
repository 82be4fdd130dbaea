"""The doorbell queue port. A message carries ids only; the store stays the source of truth."""
from __future__ import annotations

import dataclasses
import typing

from chalicelib.store import database

JOBS = "jobs"
WEBHOOKS = "webhooks"  # doorbells for the webhook dispatcher: {"job_id": ...}
SUBMISSIONS = "submissions"  # whole job submissions from other systems (SQS only; see intake.py)


@dataclasses.dataclass(frozen=True)
class Message:
    id: str
    body: dict
    receipt: str
    receive_count: int
    raw: str | None = None  # the body as sent, when the backend has it (SQS: may not be JSON)


class OnCommit(typing.Protocol):
    """A message that goes out with a store transaction (`Queue.send_on_commit`). A queue that is a
    table of the store's database writes it inside the transaction (`write`), so it commits or
    vanishes with the job; SQS cannot join the transaction, so `send` sends it after the commit (a
    message lost between the two is re-rung by the sweep)."""

    def write(self, session: database.Session) -> None: ...
    def send(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class TableMessage:
    """`OnCommit` for a queue table: one INSERT in the store's transaction; nothing after it."""

    sql: str
    params: dict

    def write(self, session: database.Session) -> None:
        session.execute(self.sql, self.params)

    def send(self) -> None:
        """Already committed with the transaction."""


class Queue(typing.Protocol):
    """SQS semantics: delayed send, visibility timeout, receive count, dead letter after N receives."""

    def send(self, queue: str, body: dict, *, delay: float = 0) -> None: ...
    def send_on_commit(self, queue: str, body: dict) -> OnCommit: ...
    def receive(self, queue: str, *, max_messages: int = 1, wait_seconds: float = 0,
                visibility_timeout: float | None = None) -> list[Message]: ...
    def delete(self, queue: str, receipt: str) -> None: ...
    def change_visibility(self, queue: str, receipt: str, *, timeout: float) -> None: ...
    def depth(self, queue: str) -> dict[str, int]: ...
    def close(self) -> None:
        """Stop what the queue runs in the background (Postgres: its LISTEN thread); it still works,
        its receivers poll."""
