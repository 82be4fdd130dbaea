"""`python -m worker_fn submit FILE.jsonl (--queue-url URL | --api URL --token T) [--batch [--wait] [--out DIR]]`

Sends a file of job submissions, one JSON message a line (the submissions-queue format,
docs/submission.schema.json), to the submissions queue or to the API, printing progress to stderr.
Each line is checked against the message schema first; a line that fails is reported with its
number and not sent. A line without `idempotency_key` gets `jsonl-<file digest>-<line>`, so sending
the same file again creates no second job for any line (the queue's intake and the API both honour
it). Exit status: 0 when every line was accepted, 1 otherwise.

With `--batch` the file becomes one batch (docs/batches.md): through the API, one upload whose
Idempotency-Key is `jsonl-batch-<file digest>`, all or nothing (a bad line sends nothing); through
the queue, every message names the batch `jsonl-<file digest>`. `--wait` then shows a progress bar
until every job has ended, and `--out DIR` (which waits too) downloads the manifest and every image
into DIR, each file written whole under its final name, so a re-run after an interruption submits
nothing twice and downloads only what is missing. Exit status: 0 when the batch was accepted (and,
with --wait, every job completed), 1 otherwise.
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
import types
import typing

import pydantic
import requests
import tqdm

from chalicelib import backoff
from chalicelib import intake
from chalicelib.queue import base as queue_base

PROGRESS_EVERY = 1.0  # seconds between progress lines
API_TRIES = 3
API_RETRY_FIRST = 1.0  # seconds before the second try, doubling
API_RETRY_MAX = 10.0
API_TIMEOUT = 30.0
SQS_BATCH = 10
BATCH_POLL_SECONDS = 2.0
ENDED = ("completed", "error", "cancelled")


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
    parser.add_argument("--batch", action="store_true", help="send the file as one batch (docs/batches.md)")
    parser.add_argument("--wait", action="store_true", help="with --batch --api: show progress until every job ended")
    parser.add_argument("--out", help="with --batch --api: download the results (manifest and images) into this "
                                      "directory once every job ended (implies --wait); a re-run fetches only "
                                      "what is missing")
    args = parser.parse_args(argv)
    if args.api and not args.token:
        parser.error("--api needs --token (or API_TOKEN in the environment)")
    if (args.wait or args.out) and not (args.batch and args.api):
        parser.error("--wait and --out go with --batch --api")

    data = sys.stdin.buffer.read() if args.file == "-" else pathlib.Path(args.file).read_bytes()
    lines, problems = read_lines(data)
    if args.batch and args.api:
        return run_batch(lines, problems, key=f"jsonl-batch-{file_digest(data)}", api=args.api.rstrip("/"),
                         token=args.token, wait=args.wait or bool(args.out),
                         out=pathlib.Path(args.out) if args.out else None)
    if args.batch:
        lines = [named_batch(line, f"jsonl-{file_digest(data)}") for line in lines]
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


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def named_batch(line: Line, batch_id: str) -> Line:
    message = {**line.message, "batch_id": line.message.get("batch_id") or batch_id}
    return Line(number=line.number, message=message, text=json.dumps(message))


def read_lines(data: bytes) -> tuple[list[Line], list[tuple[int, str]]]:
    """The valid messages (each with its default idempotency key), and (line, why) for the others."""
    digest = file_digest(data)
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
    session = api_session(token)
    for line in lines:
        message = intake.SubmissionMessage.model_validate(line.message)
        body, conflicts = intake.api_body(message)
        if conflicts:
            progress.count(ok=False, line=line.number, why="; ".join(item["msg"] for item in conflicts))
            continue
        _, why = _post(session, f"{api}/sdapi/v1/{message.type.value}", body=body, key=message.idempotency_key)
        progress.count(ok=why is None, line=line.number, why=why)


def api_session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _post(session: requests.Session, url: str, *, body: dict,
          key: str | None) -> tuple[requests.Response | None, str | None]:
    """(the answer, None) once the API accepted the body; else (the answer if any, why not): 4xx
    at once, 5xx and errors after retries."""
    why, response = "not sent", None
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
            return response, None
        why = f"{response.status_code}: {response.text[:500]}"
        if response.status_code < 500:
            return response, why
    return response, why


def _get(source: requests.Session | types.ModuleType, url: str) -> requests.Response:
    """A GET that answered 200, retried on errors and 5xx; raises requests.RequestException."""
    attempt = 0
    while True:
        attempt += 1
        try:
            response = source.get(url, timeout=API_TIMEOUT)
        except requests.RequestException:
            if attempt >= API_TRIES:
                raise
        else:
            if response.status_code < 500 or attempt >= API_TRIES:
                response.raise_for_status()
                return response
        time.sleep(backoff.delay(attempt, first=API_RETRY_FIRST, cap=API_RETRY_MAX))


# -- one batch through the API ---------------------------------------------------------------------

def run_batch(lines: list[Line], problems: list[tuple[int, str]], *, key: str, api: str, token: str,
              wait: bool, out: pathlib.Path | None, poll: float = BATCH_POLL_SECONDS) -> int:
    """Submit the file as one batch (nothing when a line is bad), then optionally follow it and
    download its results."""
    jobs, bad = batch_jobs(lines)
    for number, why in sorted(problems + bad):
        print(f"line {number}: {why}", file=sys.stderr)
    if problems or bad:
        print(f"nothing sent: {len(problems) + len(bad)} bad lines (a batch is all or nothing)")
        return 1
    session = api_session(token)
    response, why = _post(session, f"{api}/sdapi/v1/batches", body={"jobs": jobs}, key=key)
    if why is not None:
        for number, problem in located_problems(response, lines):
            print(f"line {number}: {problem}", file=sys.stderr)
        print(f"batch not accepted: {why}")
        return 1
    batch = response.json()
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    print(f"batch {batch['batch_id']}: {batch['jobs']} jobs ({'sent before' if replayed else 'created'})")
    if not wait:
        return 0
    batch = follow(session, f"{api}/sdapi/v1/batches/{batch['batch_id']}", stream=sys.stderr, poll=poll)
    print(f"batch {batch['batch_id']} {batch['status']}: "
          + ", ".join(f"{n} {status}" for status, n in batch["counts"].items() if n))
    if out is not None:
        fetched, kept = download(session, api, batch["batch_id"], out)
        print(f"results in {out}: {fetched} images downloaded, {kept} already there")
    return 0 if batch["counts"]["completed"] == batch["jobs"] else 1


def batch_jobs(lines: list[Line]) -> tuple[list[dict], list[tuple[int, str]]]:
    """Each line as a job of the batch body (its own idempotency key and batch_id do not apply)."""
    jobs, bad = [], []
    for line in lines:
        message = intake.SubmissionMessage.model_validate(line.message)
        body, conflicts = intake.api_body(message)
        if conflicts:
            bad.append((line.number, "; ".join(item["msg"] for item in conflicts)))
        jobs.append({"type": message.type.value, **body})
    return jobs, bad


def located_problems(response: requests.Response | None, lines: list[Line]) -> list[tuple[int, str]]:
    """A 422's problems at `["body", "jobs", i, ...]`, as (line of the file, what is wrong)."""
    try:
        detail = response.json()["detail"] if response is not None else []
    except (ValueError, KeyError, TypeError):
        return []
    found = []
    for item in detail if isinstance(detail, list) else []:
        loc = item.get("loc") or []
        if len(loc) >= 3 and loc[:2] == ["body", "jobs"] and isinstance(loc[2], int) and loc[2] < len(lines):
            found.append((lines[loc[2]].number, f"{'.'.join(str(p) for p in loc[3:]) or 'job'}: {item.get('msg')}"))
    return found


def follow(session: requests.Session, url: str, *, stream: typing.TextIO, poll: float) -> dict:
    """Poll the batch until every job ended, with a progress bar of ended jobs."""
    with tqdm.tqdm(unit="job", file=stream, dynamic_ncols=True) as bar:
        while True:
            batch = _get(session, url).json()
            bar.total = batch["jobs"]
            bar.update(sum(batch["counts"].get(status, 0) for status in ENDED) - bar.n)
            bar.set_postfix({status: n for status, n in batch["counts"].items() if n}, refresh=True)
            if batch["status"] == "completed":
                return batch
            time.sleep(poll)


def download(session: requests.Session, api: str, batch_id: str, out: pathlib.Path) -> tuple[int, int]:
    """The manifest and every image into `out` (as the zip names them); an image already there is
    not fetched again. Each file is written under a temporary name and renamed once whole.
    Returns (downloaded, already there)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = _get(session, f"{api}/sdapi/v1/batches/{batch_id}/results").content
    fetched = kept = 0
    for raw in manifest.splitlines():
        entry = json.loads(raw)
        for n, url in enumerate(entry["image_urls"]):
            target = out / f"{entry['index']}-{entry['job_id']}-{n}.png"
            if target.exists():
                kept += 1
                continue
            # Our own image route takes the token; a presigned URL carries its own signature.
            source = session if url.startswith("/") else requests
            _write_whole(target, _get(source, f"{api}{url}" if url.startswith("/") else url).content)
            fetched += 1
    _write_whole(out / "manifest.ndjson", manifest)
    return fetched, kept


def _write_whole(target: pathlib.Path, content: bytes) -> None:
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(content)
    partial.replace(target)
