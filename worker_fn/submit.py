"""`python -m worker_fn submit FILE.jsonl (--queue-url URL | --api URL --token T)`

Sends a file of job submissions, one JSON message a line (the submissions-queue format,
docs/submission.schema.json), to the submissions queue or to the API, printing progress to stderr.
Each line is checked against the message schema first; a line that fails is reported with its
number and not sent. A line without `idempotency_key` gets `jsonl-<file digest>-<line>`, so sending
the same file again creates no second job for any line (the queue's intake and the API both honour
it). Exit status: 0 when every line was accepted, 1 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
import typing

import pydantic
import requests

from chalicelib import backoff
from chalicelib import intake
from chalicelib.queue import base as queue_base

PROGRESS_EVERY = 1.0  # seconds between progress lines
API_TRIES = 3
API_RETRY_FIRST = 1.0  # seconds before the second try, doubling
API_RETRY_MAX = 10.0
API_TIMEOUT = 30.0
SQS_BATCH = 10


@dataclasses.dataclass
class Line:
    number: int
    message: dict
    text: str


@dataclasses.dataclass
class Progress:
    """Counts, printed at most once a second and once at the end."""

    total: int
    stream: typing.TextIO
    sent: int = 0
    failed: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    _printed: float = 0.0

    def count(self, *, ok: bool, line: int | None = None, why: str | None = None) -> None:
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            print(f"line {line}: {why}", file=self.stream)
        if time.monotonic() - self._printed >= PROGRESS_EVERY:
            self.show()

    def show(self) -> None:
        done = self.sent + self.failed
        elapsed = max(time.monotonic() - self.started, 1e-9)
        percent = 100.0 * done / self.total if self.total else 100.0
        print(f"{done}/{self.total} ({percent:.0f}%): {self.sent} sent, {self.failed} failed, "
              f"{done / elapsed:.1f}/s", file=self.stream, flush=True)
        self._printed = time.monotonic()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker_fn submit",
                                     description="Send a JSONL file of job submissions (docs/submission.schema.json).")
    parser.add_argument("file", help="the JSONL file, one submission message a line ('-' for stdin)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--queue-url", help="the submissions queue (SQS): every line becomes one message")
    target.add_argument("--api", help="the API's base URL, e.g. https://abc.execute-api.eu-west-1.amazonaws.com/api")
    parser.add_argument("--token", default=os.environ.get("API_TOKEN"),
                        help="API token for --api (default: $API_TOKEN)")
    args = parser.parse_args(argv)
    if args.api and not args.token:
        parser.error("--api needs --token (or API_TOKEN in the environment)")

    data = sys.stdin.buffer.read() if args.file == "-" else pathlib.Path(args.file).read_bytes()
    lines, problems = read_lines(data)
    progress = Progress(total=len(lines) + len(problems), stream=sys.stderr)
    for number, why in problems:
        progress.count(ok=False, line=number, why=why)
    if args.queue_url:
        send_to_queue(lines, queue_url=args.queue_url, progress=progress)
    else:
        send_to_api(lines, api=args.api.rstrip("/"), token=args.token, progress=progress)
    progress.show()
    print(f"{progress.sent} of {progress.total} submissions sent, {progress.failed} failed")
    return 0 if progress.failed == 0 else 1


def read_lines(data: bytes) -> tuple[list[Line], list[tuple[int, str]]]:
    """The valid messages (each with its default idempotency key), and (line, why) for the others."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    lines, problems = [], []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            message = json.loads(raw)
            intake.SubmissionMessage.model_validate(message)
        except ValueError as exc:  # json.JSONDecodeError and pydantic.ValidationError both are
            problems.append((number, _describe(exc)))
            continue
        message.setdefault("idempotency_key", f"jsonl-{digest}-{number}")
        lines.append(Line(number=number, message=message, text=json.dumps(message)))
    return lines, problems


def _describe(exc: ValueError) -> str:
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                         for item in exc.errors(include_url=False, include_input=False))
    return f"not JSON: {exc}"


def send_to_queue(lines: list[Line], *, queue_url: str, progress: Progress) -> None:
    """SendMessageBatch, 10 messages or 256 KiB a call, whichever comes first."""
    from chalicelib.queue import sqs  # noqa: PLC0415 - boto3 only for this target

    queue = sqs.SqsQueue({queue_base.SUBMISSIONS: queue_url})
    for batch in batches(lines, count=SQS_BATCH, size=sqs.MAX_BATCH_BYTES, progress=progress):
        try:
            outcome = queue.send_batch(queue_base.SUBMISSIONS, [line.text for line in batch])
        except Exception as exc:  # noqa: BLE001 - reported per line; the next batch may go through
            outcome = [str(exc)] * len(batch)
        for line, why in zip(batch, outcome, strict=True):
            progress.count(ok=why is None, line=line.number, why=why)


def batches(lines: list[Line], *, count: int, size: int, progress: Progress) -> typing.Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        length = len(line.text.encode())
        if length > size:
            progress.count(ok=False, line=line.number,
                           why=f"the message is {length} bytes; an SQS message has at most {size}")
            continue
        if len(batch) == count or sum(len(item.text.encode()) for item in batch) + length > size:
            yield batch
            batch = []
        batch.append(line)
    if batch:
        yield batch


def send_to_api(lines: list[Line], *, api: str, token: str, progress: Progress) -> None:
    """POST /sdapi/v1/{type} per line with its Idempotency-Key; 202 is success."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for line in lines:
        message = intake.SubmissionMessage.model_validate(line.message)
        body, conflicts = intake.api_body(message)
        if conflicts:
            progress.count(ok=False, line=line.number, why="; ".join(item["msg"] for item in conflicts))
            continue
        why = _post(session, f"{api}/sdapi/v1/{message.type.value}", body=body, key=message.idempotency_key)
        progress.count(ok=why is None, line=line.number, why=why)


def _post(session: requests.Session, url: str, *, body: dict, key: str | None) -> str | None:
    """None once the API accepted the job; else why not (4xx at once, 5xx and errors after retries)."""
    why = "not sent"
    for attempt in range(API_TRIES):
        if attempt:
            time.sleep(backoff.delay(attempt, first=API_RETRY_FIRST, cap=API_RETRY_MAX))
        try:
            response = session.post(url, json=body, headers={"Idempotency-Key": key} if key else {},
                                    timeout=API_TIMEOUT)
        except requests.RequestException as exc:
            why = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code == 202:
            return None
        why = f"{response.status_code}: {response.text[:500]}"
        if response.status_code < 500:
            return why
    return why
