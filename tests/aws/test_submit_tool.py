"""`python -m worker_fn submit`: reading a JSONL file and batching it for SQS (moto), offline."""
from __future__ import annotations

import io
import json

from chalicelib import intake
from tests.aws import conftest as support
from worker_fn import __main__ as worker_main
from worker_fn import submit

VALID = {"type": "txt2img", "request": {"prompt": "a cat"}}


def test_lines_are_checked_against_the_message_schema_and_get_a_stable_idempotency_key():
    data = "\n".join([json.dumps(VALID), "", "{oops", json.dumps({"type": "txt2img"}),
                      json.dumps({**VALID, "idempotency_key": "mine"})]).encode()
    lines, problems = submit.read_lines(data)
    assert [line.number for line in lines] == [1, 5]
    assert problems[0][0] == 3 and problems[0][1].startswith("not JSON")
    assert problems[1] == (4, "request: Field required")
    key = lines[0].message["idempotency_key"]
    assert key.startswith("jsonl-") and key.endswith("-1")
    assert lines[1].message["idempotency_key"] == "mine"
    again, _ = submit.read_lines(data)
    assert again[0].message["idempotency_key"] == lines[0].message["idempotency_key"]  # same file, same key
    other, _ = submit.read_lines(data + b"\n")
    assert other[0].message["idempotency_key"] != lines[0].message["idempotency_key"]


def test_batches_keep_within_ten_messages_and_the_size_limit():
    lines = [submit.Line(number=n, message={}, text="x" * 100) for n in range(1, 24)]
    lines.insert(5, submit.Line(number=99, message={}, text="y" * 2000))
    progress = submit.Progress(total=len(lines), stream=io.StringIO())
    batches = list(submit.batches(lines, count=10, size=950, progress=progress))
    assert [len(batch) for batch in batches] == [9, 9, 5]  # a tenth 100-byte message would pass 950
    assert progress.failed == 1 and "line 99: the message is 2000 bytes" in progress.stream.getvalue()


def test_the_command_sends_every_valid_line_as_one_message(sqs, queue_urls, tmp_path, capsys):
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps({**VALID, "metadata": {"n": n}}) for n in range(25)) + "\nnope\n")

    status = worker_main.main(["submit", str(path), "--queue-url", queue_urls["submissions"]])

    out = capsys.readouterr()
    assert status == 1 and "25 of 26 submissions sent, 1 failed" in out.out and "line 26: not JSON" in out.err
    bodies = [json.loads(m["Body"]) for m in support.drain(sqs, queue_urls["submissions"])]
    assert sorted(body["metadata"]["n"] for body in bodies) == list(range(25))
    assert all(intake.SubmissionMessage.model_validate(body) for body in bodies)


def test_an_excerpt_never_shows_a_webhook_secret_even_in_a_broken_message():
    text = '{"type": "txt2img", "webhook_secret": "whsec_c2VjcmV0", "request": {"prompt": "x"'
    assert "c2VjcmV0" not in intake.excerpt_of(None, text)
    parsed = {"type": "txt2img", "webhook_secret": "s3cret-value", "request": {"webhook_secret": "s3cret-value",
                                                                              "init_images": ["A" * 5000]}}
    excerpt = intake.excerpt_of(parsed, json.dumps(parsed))
    assert "s3cret-value" not in excerpt and "(5000 characters)" in excerpt
