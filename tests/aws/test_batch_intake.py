"""SQS submissions naming a batch_id (moto's SQS, both stores): one batch, seen like an API batch."""
from __future__ import annotations

from tests.aws import conftest as support
from tests.aws.test_intake import VALID, jobs_of, lambda_app, send  # noqa: F401 - lambda_app is a fixture

BATCH = {"Authorization": "Bearer tok-batch"}


def test_messages_with_a_batch_id_make_one_batch_of_the_submissions_owner(lambda_app, sqs, queue_urls):  # noqa: F811
    send(sqs, queue_urls, {**VALID, "batch_id": "nightly-7"}, {**VALID, "batch_id": "nightly-7"},
         {**VALID, "idempotency_key": "alone"})
    response = lambda_app.lambda_.invoke("take_submissions", support.lambda_event(sqs, queue_urls["submissions"]))
    assert response.payload == {"batchItemFailures": []}
    batch = lambda_app.http.get("/sdapi/v1/batches/nightly-7", headers=BATCH).json_body
    assert batch["jobs"] == 2 and batch["counts"]["queued"] == 2 and batch["status"] == "queued"
    members = lambda_app.http.get("/sdapi/v1/batches/nightly-7/jobs", headers=BATCH).json_body["jobs"]
    assert {job["batch_id"] for job in members} == {"nightly-7"}
    assert sorted(str(job["batch_id"]) for job in jobs_of(lambda_app)) == ["None", "nightly-7", "nightly-7"]
    other = lambda_app.http.get("/sdapi/v1/batches/nightly-7", headers={"Authorization": "Bearer tok-alice"})
    assert other.status_code == 404
