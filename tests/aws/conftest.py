"""AWS offline: moto answers every SQS, S3, SSM and Secrets Manager call; no test reaches a real
cloud. Credentials and region are fake, and whatever AWS configuration the machine has (profiles,
endpoints, the settings' SSM path or secret) is hidden from the tests."""
from __future__ import annotations

import json

import boto3
import moto
import pytest

from chalicelib import aws as aws_module
from tests import support

REGION = "us-east-1"
HIDDEN = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS",
          "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "CONFIG_SSM_PATH",
          "CONFIG_SECRET_ID", "LOCALSTACK_HOST")
QUEUES = ("jobs", "webhooks", "submissions")
BUCKET = "a1111-images"


def fake_aws_environment(monkeypatch) -> None:
    aws_module.session.cache_clear()  # the shared boto3 session read the environment of its time
    for name in HIDDEN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def aws(monkeypatch):
    """Fake credentials and region, and moto in place of AWS for the test."""
    fake_aws_environment(monkeypatch)
    with moto.mock_aws():
        yield


@pytest.fixture
def sqs(aws):
    return boto3.client("sqs", region_name=REGION)


@pytest.fixture
def s3(aws):
    return boto3.client("s3", region_name=REGION)


def create_queue(sqs, name: str, *, max_receives: int = 5, visibility: int = 30) -> str:
    """A queue with a dead-letter queue, as infra/template.yaml makes them; returns its URL."""
    dead = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(visibility),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receives)}),
    })["QueueUrl"]


@pytest.fixture
def queue_urls(sqs) -> dict[str, str]:
    return {name: create_queue(sqs, f"a1111-{name}") for name in QUEUES}


@pytest.fixture
def bucket(s3) -> str:
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


shared_sim, sim = support.simulator_fixtures(gen_seconds=0.1, scope="session")


def lambda_event(sqs, queue_url: str, *, count: int = 10, wait: int = 0) -> dict:
    """A Lambda SQS event made of messages really received from the (moto) queue: their own
    message ids, receipt handles, bodies and receive counts, in Lambda's record shape."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=wait,
                                   MessageSystemAttributeNames=["All"]).get("Messages", [])
    return {"Records": [{
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
        "attributes": message["Attributes"], "messageAttributes": {}, "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": REGION,
    } for message in messages]}


def drain(sqs, queue_url: str) -> list[dict]:
    """Every visible message of the queue (received, so now in flight)."""
    found = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return found
        found += batch
