"""The doorbell queue port. A message carries ids only; the store stays the source of truth."""
from __future__ import annotations

import dataclasses
import typing

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


class Queue(typing.Protocol):
    """SQS semantics: delayed send, visibility timeout, receive count, dead letter after N receives."""

    def send(self, queue: str, body: dict, *, delay: float = 0) -> None: ...
    def receive(self, queue: str, *, max_messages: int = 1, wait_seconds: float = 0,
                visibility_timeout: float | None = None) -> list[Message]: ...
    def delete(self, queue: str, receipt: str) -> None: ...
    def change_visibility(self, queue: str, receipt: str, *, timeout: float) -> None: ...
    def depth(self, queue: str) -> dict[str, int]: ...
