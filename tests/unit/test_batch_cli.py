"""`python -m worker_fn submit --batch`: the parts that need no server (the e2e test runs the rest)."""
from __future__ import annotations

import json
import pathlib
import re

import pytest
import requests

from worker_fn import submit

ROOT = pathlib.Path(__file__).resolve().parents[2]
VALID = {"type": "txt2img", "request": {"prompt": "a cat"}}


def read(*messages) -> list[submit.Line]:
    lines, problems = submit.read_lines("\n".join(json.dumps(m) for m in messages).encode())
    assert problems == []
    return lines


def test_each_line_becomes_a_job_of_the_batch_with_its_type_and_own_fields():
    lines = read(VALID, {"type": "img2img", "request": {"prompt": "x", "init_images": ["A"]}, "priority": 3,
                         "metadata": {"n": 2}, "batch_id": "ignored"})
    jobs, bad = submit.batch_jobs(lines)
    assert bad == []
    assert jobs == [{"type": "txt2img", "prompt": "a cat"},
                    {"type": "img2img", "prompt": "x", "init_images": ["A"], "priority": 3, "metadata": {"n": 2}}]


def test_a_line_whose_fields_conflict_is_named():
    lines = read(VALID, {"type": "txt2img", "request": {"prompt": "x", "priority": 1}, "priority": 2})
    _, bad = submit.batch_jobs(lines)
    assert [number for number, _ in bad] == [2]


def test_a_refused_batch_names_the_file_lines_of_its_problems():
    lines = read(VALID, VALID, VALID)
    lines = [submit.Line(number=n, message=line.message, text=line.text)
             for n, line in zip((1, 4, 7), lines, strict=True)]
    response = requests.Response()
    response.status_code = 422
    response._content = json.dumps({"detail": [{"loc": ["body", "jobs", 2, "steps"], "msg": "not an integer"},
                                               {"loc": ["body"], "msg": "elsewhere"}]}).encode()
    assert submit.located_problems(response, lines) == [(7, "steps: not an integer")]
    response._content = b"<html>bad gateway</html>"
    assert submit.located_problems(response, lines) == []


def test_bad_lines_send_no_batch(tmp_path, capsys):
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(VALID) + "\n{oops\n")
    status = submit.main([str(path), "--api", "http://127.0.0.1:9", "--token", "t", "--batch"])
    out = capsys.readouterr()
    assert status == 1 and "nothing sent: 1 bad lines" in out.out and "line 2: not JSON" in out.err


def test_wait_and_out_need_a_batch_through_the_api(tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(VALID))
    with pytest.raises(SystemExit):
        submit.main([str(path), "--api", "http://127.0.0.1:9", "--token", "t", "--wait"])
    with pytest.raises(SystemExit):
        submit.main([str(path), "--queue-url", "http://q", "--batch", "--out", str(tmp_path)])


def test_through_the_queue_every_message_names_the_files_batch():
    lines = read(VALID, {**VALID, "batch_id": "mine"})
    named = [submit.named_batch(line, "jsonl-abc") for line in lines]
    assert [json.loads(line.text)["batch_id"] for line in named] == ["jsonl-abc", "mine"]


def test_the_progress_bar_library_stays_out_of_the_lambda_package():
    lambda_requirements = (ROOT / "requirements.txt").read_text()
    assert not re.search(r"^tqdm\b", lambda_requirements, re.MULTILINE)
    assert re.search(r"^tqdm==", (ROOT / "requirements-server.txt").read_text(), re.MULTILINE)
    packaged = [ROOT / "app.py", *(ROOT / "chalicelib").rglob("*.py")]
    assert not [path for path in packaged if re.search(r"^\s*(import|from) tqdm", path.read_text(), re.MULTILINE)]
