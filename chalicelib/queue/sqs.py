"""The queue port on Amazon SQS (QUEUE_BACKEND=sqs): each queue name is one SQS queue.

Only the factory imports this module, and only when SQS is chosen, so importing app.py (a Lambda
cold start) never pays for boto3. botocore errors become `errors.StoreUnavailable` here, once.
SQS's own limits apply and are clamped to, not exceeded: a delay of at most 15 minutes, a long poll
of at most 20 s, 10 messages per receive, a visibility timeout of at most 12 hours. The endpoint is
botocore's (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS point it at LocalStack or moto's server).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import typing

import botocore.config
import botocore.exceptions

from chalicelib import aws
from chalicelib import config
from chalicelib import errors
from chalicelib.queue import base

MAX_DELAY_SECONDS = 900
MAX_WAIT_SECONDS = 20
MAX_MESSAGES = 10
MAX_VISIBILITY_SECONDS = 43_200
MAX_BATCH_BYTES = 256 * 1024
# A receipt that no longer names a message in flight: the message was deleted or handed to another
# receiver. As with the local queue, deleting or hiding it is then a no-op, not an outage.
GONE_RECEIPT_CODES = frozenset({"ReceiptHandleIsInvalid", "AWS.SimpleQueueService.MessageNotInflight",
                                "MessageNotInflight", "InvalidParameterValue"})
CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=MAX_WAIT_SECONDS + 10,
                                       retries={"mode": "standard", "max_attempts": 3})
REGION_IN_URL = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


class SqsQueue:
    """`Queue` on SQS standard queues, one URL per queue name (JOBS, WEBHOOKS, SUBMISSIONS)."""

    def __init__(self, urls: dict[str, str], *, client=None) -> None:
        self.urls = {name: url for name, url in urls.items() if url}
        self.client = client or make_client(next(iter(self.urls.values()), ""))
        self._dead_letter_urls: dict[str, str | None] = {}

    def close(self) -> None:
        """Nothing runs in the background: a receive is one long poll."""

    @classmethod
    def from_settings(cls, settings: config.Settings) -> "SqsQueue":
        missing = [name for name, url in (("JOBS_QUEUE_URL", settings.jobs_queue_url),
                                          ("WEBHOOKS_QUEUE_URL", settings.webhooks_queue_url)) if not url]
        if missing:
            raise ValueError(f"QUEUE_BACKEND=sqs needs {' and '.join(missing)}")
        return cls({base.JOBS: settings.jobs_queue_url, base.WEBHOOKS: settings.webhooks_queue_url,
                    base.SUBMISSIONS: settings.submissions_queue_url})

    def url(self, queue: str) -> str:
        try:
            return self.urls[queue]
        except KeyError:
            raise ValueError(f"no SQS queue URL for the {queue!r} queue (set {queue.upper()}_QUEUE_URL)") from None

    def send(self, queue: str, body: dict, *, delay: float = 0) -> None:
        with wrapped(f"send to the {queue} queue"):
            self.client.send_message(QueueUrl=self.url(queue), MessageBody=json.dumps(body),
                                     DelaySeconds=_whole_seconds(delay, MAX_DELAY_SECONDS))

    def send_on_commit(self, queue: str, body: dict) -> "AfterCommit":
        """SQS cannot join the store's transaction: the message is sent once it has committed."""
        return AfterCommit(self, queue, body)

    def send_batch(self, queue: str, bodies: list[str]) -> list[str | None]:
        """Send up to 10 message bodies as they are (text) in one call; for each, None if SQS took it,
        else SQS's reason. The caller keeps each batch within 256 KiB (MAX_BATCH_BYTES)."""
        entries = [{"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies)]
        with wrapped(f"send a batch to the {queue} queue"):
            response = self.client.send_message_batch(QueueUrl=self.url(queue), Entries=entries)
        outcome: list[str | None] = [None] * len(bodies)
        for failure in response.get("Failed", []):
            outcome[int(failure["Id"])] = f"{failure.get('Code')}: {failure.get('Message', '')}".strip()
        return outcome

    def receive(self, queue: str, *, max_messages: int = 1, wait_seconds: float = 0,
                visibility_timeout: float | None = None) -> list[base.Message]:
        request = {
            "QueueUrl": self.url(queue),
            "MaxNumberOfMessages": max(1, min(max_messages, MAX_MESSAGES)),
            "WaitTimeSeconds": _whole_seconds(wait_seconds, MAX_WAIT_SECONDS),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = _whole_seconds(visibility_timeout, MAX_VISIBILITY_SECONDS)
        with wrapped(f"receive from the {queue} queue"):
            response = self.client.receive_message(**request)
        return [message_of(item) for item in response.get("Messages", [])]

    def delete(self, queue: str, receipt: str) -> None:
        with wrapped(f"delete from the {queue} queue", ignore=GONE_RECEIPT_CODES):
            self.client.delete_message(QueueUrl=self.url(queue), ReceiptHandle=receipt)

    def change_visibility(self, queue: str, receipt: str, *, timeout: float) -> None:
        with wrapped(f"change a message's visibility in the {queue} queue", ignore=GONE_RECEIPT_CODES):
            self.client.change_message_visibility(
                QueueUrl=self.url(queue), ReceiptHandle=receipt,
                VisibilityTimeout=_whole_seconds(timeout, MAX_VISIBILITY_SECONDS))

    def depth(self, queue: str) -> dict[str, int]:
        """SQS's approximate counts; `dead_letter` from the queue's redrive target, if it has one."""
        attributes = self._attributes(queue, self.url(queue), ["ApproximateNumberOfMessages",
                                                               "ApproximateNumberOfMessagesNotVisible",
                                                               "ApproximateNumberOfMessagesDelayed",
                                                               "RedrivePolicy"])
        dead_letter = 0
        dead_letter_url = self._dead_letter_url(queue, attributes.get("RedrivePolicy"))
        if dead_letter_url:
            dead = self._attributes(queue, dead_letter_url, ["ApproximateNumberOfMessages"])
            dead_letter = int(dead.get("ApproximateNumberOfMessages", 0))
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight_or_delayed": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
            + int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            "dead_letter": dead_letter,
        }

    def _attributes(self, queue: str, url: str, names: list[str]) -> dict[str, str]:
        with wrapped(f"read the {queue} queue's attributes"):
            return self.client.get_queue_attributes(QueueUrl=url, AttributeNames=names).get("Attributes", {})

    def _dead_letter_url(self, queue: str, redrive_policy: str | None) -> str | None:
        if queue not in self._dead_letter_urls:
            url = None
            if redrive_policy:
                arn = json.loads(redrive_policy).get("deadLetterTargetArn", "")
                *_, account, name = arn.split(":")
                with wrapped(f"find the {queue} queue's dead-letter queue"):
                    url = self.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            self._dead_letter_urls[queue] = url
        return self._dead_letter_urls[queue]


@dataclasses.dataclass(frozen=True)
class AfterCommit:
    """`base.OnCommit` on SQS: nothing inside the transaction, one send after it."""

    sqs: SqsQueue
    queue: str
    body: dict

    def write(self, session: object) -> None:
        """SQS is outside the database; see `send`."""

    def send(self) -> None:
        self.sqs.send(self.queue, self.body)


def make_client(queue_url: str):
    """An SQS client; without a configured region, the region named in an AWS queue URL."""
    region = aws.session().region_name
    if region is None:
        match = REGION_IN_URL.match(queue_url)
        region = match.group(1) if match else None
    return aws.client("sqs", region_name=region, config=CLIENT_CONFIG)


def message_of(item: dict) -> base.Message:
    """An SQS message as the port's `Message`: `body` is its JSON object ({} if it is not one) and
    `raw` the text as sent, so a consumer can reject a malformed body with a reason."""
    raw = item.get("Body", "")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return base.Message(id=item["MessageId"], body=body if isinstance(body, dict) else {},
                        receipt=item["ReceiptHandle"],
                        receive_count=int(item.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                        raw=raw)


def _whole_seconds(seconds: float, maximum: int) -> int:
    """SQS takes whole seconds: round up (a 0.4 s delay waits 1 s rather than none), within limits."""
    return max(0, min(math.ceil(seconds), maximum))


@contextlib.contextmanager
def wrapped(action: str, *, ignore: typing.Collection[str] = ()) -> typing.Iterator[None]:
    """botocore's errors as `StoreUnavailable` naming the action and AWS's error code."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ignore:
            return
        message = exc.response.get("Error", {}).get("Message", "")
        raise errors.StoreUnavailable(f"SQS: could not {action}: {code}: {message}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise errors.StoreUnavailable(f"SQS: could not {action}: {exc}") from exc
