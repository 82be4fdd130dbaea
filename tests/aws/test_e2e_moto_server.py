"""End to end on AWS's APIs, offline: moto's server on 127.0.0.1 stands in for SQS and S3 (reached
by the test through localstack-client, as one reaches LocalStack: LOCALSTACK_HOST), and real
processes do the rest. The API (QUEUE_BACKEND=sqs, IMAGE_STORE=s3://...) sends doorbells to SQS;
`python -m worker_fn` long-polls SQS over HTTP, calls the A1111 simulator and writes the images to
S3; the job completes and its webhook arrives. `python -m worker_fn submit` feeds the submissions
queue (and the API), and the worker's intake turns the messages into jobs."""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys

import pytest
import requests
from localstack_client import session as localstack_session

from tests import support
from tests import webhook_receiver
from tests.aws import conftest as aws_support
from tests import harness

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BUCKET = "a1111-images"
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    """moto's server in its own process (its state is apart from any in-process mock_aws)."""
    port = support.free_port()
    process = harness.Process("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                          env=dict(os.environ), log_dir=tmp_path_factory.mktemp("moto"))
    try:
        support.wait_until(lambda: support.answers(f"http://127.0.0.1:{port}/moto-api/"), timeout=20, interval=0.1,
                           what="moto's server")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate(timeout=10)


@pytest.fixture
def aws_cluster(tmp_path, moto_server, database_url, monkeypatch):
    """Queues and bucket of the test's own, made through localstack-client; a cluster of processes
    that use them."""
    aws_support.fake_aws_environment(monkeypatch)
    monkeypatch.setenv("LOCALSTACK_HOST", moto_server.removeprefix("http://"))
    local = localstack_session.Session(region_name=aws_support.REGION)
    sqs, s3 = local.client("sqs"), local.client("s3")
    suffix = secrets.token_hex(4)
    urls = {name: aws_support.create_queue(sqs, f"a1111-{name}-{suffix}") for name in aws_support.QUEUES}
    bucket = f"{BUCKET}-{suffix}"
    s3.create_bucket(Bucket=bucket)
    cluster = harness.Cluster(tmp_path, database_url=database_url)
    cluster.env = {k: v for k, v in cluster.env.items() if k not in aws_support.HIDDEN}
    cluster.env.update(
        QUEUE_BACKEND="sqs", JOBS_QUEUE_URL=urls["jobs"], WEBHOOKS_QUEUE_URL=urls["webhooks"],
        SUBMISSIONS_QUEUE_URL=urls["submissions"], IMAGE_STORE=f"s3://{bucket}/images",
        AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=aws_support.REGION, AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null", SUBMISSIONS_OWNER="e2e",
        WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_RETRY_SCHEDULE="0.3,0.3")
    cluster.sqs, cluster.s3, cluster.urls, cluster.bucket = sqs, s3, urls, bucket
    try:
        cluster.start_simulator(gen_seconds=0.3)
        cluster.start_api()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()


def test_a_job_goes_through_sqs_and_s3_and_its_webhook_arrives(aws_cluster):
    with webhook_receiver.WebhookReceiver(secret=SECRET) as receiver:
        job = aws_cluster.submit({"prompt": "a lighthouse", "steps": 6, "webhook_url": receiver.url,
                                  "webhook_secret": SECRET})
        done = aws_cluster.wait_status(job["job_id"], {"completed", "error"}, timeout=30)
        assert done["status"] == "completed", done
        got = receiver.wait_for(lambda got: [r for r in got if r.event and r.event["type"] == "job.completed"],
                                timeout=20)
    assert got[0].verified and got[0].event["data"]["job_id"] == job["job_id"]

    stored = aws_cluster.s3.get_object(Bucket=aws_cluster.bucket, Key=f"images/{job['job_id']}/1/0")["Body"].read()
    assert base64.b64decode(done["result"]["images"][0]) == stored and stored.startswith(b"\x89PNG")
    linked = requests.get(f"{aws_cluster.api_url}/sdapi/v1/jobs/{job['job_id']}?images=urls",
                          headers=harness.AUTH, timeout=10).json()
    assert requests.get(linked["image_urls"][0], timeout=10).content == stored  # presigned, from moto's S3
    assert aws_cluster.health()["queue"]["doorbells"] == {"visible": 0, "in_flight_or_delayed": 0, "dead_letter": 0}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store's part is proven above
def test_submit_sends_a_jsonl_file_to_the_queue_and_to_the_api(aws_cluster, tmp_path):
    lines = [
        json.dumps({"type": "txt2img", "request": {"prompt": "from the queue", "steps": 4}, "metadata": {"line": 1}}),
        "not json",
        json.dumps({"type": "txt2img", "request": {"prompt": "too long", "steps": 100000}}),  # the intake rejects it
        json.dumps({"type": "img2img", "request": {"prompt": "x", "init_images": [PNG_1X1]}, "metadata": {"line": 4}}),
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    queued = run_submit(aws_cluster, str(path), "--queue-url", aws_cluster.urls["submissions"])
    assert queued.returncode == 1 and "line 2: not JSON" in queued.stderr
    assert "3 of 4 submissions sent, 1 failed" in queued.stdout and "4/4 (100%)" in queued.stderr

    jobs = support.wait_until(lambda: (lambda js: js if len(js) == 2 else None)(list_jobs(aws_cluster)),
                              timeout=20, what="the two valid submissions to become jobs")
    for job in jobs:
        assert aws_cluster.wait_status(job["job_id"], {"completed", "error"})["status"] == "completed"
    assert sorted(job["metadata"]["line"] for job in jobs) == [1, 4]
    rejected = support.wait_until(lambda: run_tool(aws_cluster, "rejected").stdout.strip(), timeout=10,
                                  what="the rejection to be recorded")
    assert "message.request.steps" in json.loads(rejected.splitlines()[0])["reason"]

    again = run_submit(aws_cluster, str(path), "--queue-url", aws_cluster.urls["submissions"])
    assert again.returncode == 1  # line 2 still fails; the others are sent again ...
    direct = run_submit(aws_cluster, str(path), "--api", aws_cluster.api_url, "--token", harness.TOKEN)
    assert "2 of 4 submissions sent, 2 failed" in direct.stdout and "line 3: 422" in direct.stderr
    support.wait_until(lambda: aws_cluster.sqs.get_queue_attributes(
        QueueUrl=aws_cluster.urls["submissions"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"] == "0", timeout=20, what="the queue to drain")
    assert len(list_jobs(aws_cluster)) == 2  # ... and, by their idempotency keys, make no new job


def list_jobs(cluster) -> list[dict]:
    return requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"]


def run_tool(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker_fn", *args], cwd=harness.ROOT, env=cluster.env,
                          capture_output=True, text=True, timeout=60)


def run_submit(cluster, *args) -> subprocess.CompletedProcess:
    return run_tool(cluster, "submit", *args)
