"""The batch zip, streamed by the container server (wsgi.py): every image and the manifest."""
from __future__ import annotations

import io
import json
import zipfile

from chalicelib import context as context_module
from chalicelib import transitions

ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


def call(path: str, query: str, token: str = "tok-alice") -> tuple[str, dict, bytes]:
    import wsgi  # noqa: PLC0415 - after the client fixture configured the environment
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=dict(headers))
    body = b"".join(wsgi.application({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                                      "HTTP_AUTHORIZATION": f"Bearer {token}", "wsgi.input": io.BytesIO()},
                                     start_response))
    return answer["status"], answer["headers"], body


def test_the_zip_holds_every_image_named_by_index_and_the_manifest(client):
    jobs = [{"prompt": f"p{i}", "steps": 4} for i in range(3)]
    batch = client.http.post("/sdapi/v1/batches", headers=ALICE, body=json.dumps({"jobs": jobs})).json_body
    ctx = context_module.get_context()
    done = []
    for _ in range(2):
        job = transitions.claim_next(ctx, worker_id="w1", instance="gpu0").job
        ctx.images.put(job.id, job.attempts, [PNG, PNG + b"2"])
        transitions.complete(ctx, job.id, worker_id="w1", result={"info": "{}"}, image_count=2,
                             progress={"progress": 1.0})
        done.append(job.id)
    status, headers, body = call(f"/sdapi/v1/batches/{batch['batch_id']}/results", "format=zip")
    assert status.startswith("200") and headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == sorted(
        [f"{i}-{job_id}-{n}.png" for i, job_id in enumerate(done) for n in range(2)] + ["manifest.ndjson"])
    assert archive.read(f"1-{done[1]}-1.png") == PNG + b"2"
    lines = [json.loads(line) for line in archive.read("manifest.ndjson").decode().splitlines()]
    assert [line["status"] for line in lines] == ["completed", "completed", "queued"]
    assert lines[0]["image_urls"] == [f"0-{done[0]}-0.png", f"0-{done[0]}-1.png"]


def test_the_zip_route_answers_the_apis_errors(client):
    batch = client.http.post("/sdapi/v1/batches", headers=ALICE,
                             body=json.dumps({"jobs": [{"prompt": "p"}]})).json_body
    status, _, body = call(f"/sdapi/v1/batches/{batch['batch_id']}/results", "format=zip", token="tok-bob")
    assert status.startswith("404") and json.loads(body)["error"] == "NotFound"
    status, _, _ = call(f"/sdapi/v1/batches/{batch['batch_id']}/results", "format=zip", token="nope")
    assert status.startswith("401")
    status, headers, body = call(f"/sdapi/v1/batches/{batch['batch_id']}/results", "")
    assert status.startswith("200") and json.loads(body.decode().splitlines()[0])["status"] == "queued"
