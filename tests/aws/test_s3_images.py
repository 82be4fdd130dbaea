"""The S3 image store against moto: per-attempt keys, order, media types, presigned URLs, errors."""
from __future__ import annotations

import base64

import pytest
import requests

from chalicelib import errors
from chalicelib import images as images_module
from chalicelib.images import s3 as s3_images

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg bytes"


@pytest.fixture
def store(bucket) -> s3_images.S3ImageStore:
    return images_module.make_image_store(f"s3://{bucket}/images/", store=None)


def test_the_factory_reads_bucket_and_prefix_and_refuses_other_locations(bucket):
    built = images_module.make_image_store(f"s3://{bucket}/a/b", store=None)
    assert (built.bucket, built.prefix) == (bucket, "a/b")
    assert built.key("job", 2, 3) == "a/b/job/2/3"
    assert images_module.make_image_store(f"s3://{bucket}", store=None).key("job", 1, 0) == "job/1/0"
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        s3_images.parse_location("s3:///no-bucket")


def test_images_come_back_in_order_with_their_media_type(store, s3, bucket):
    pictures = [PNG + bytes([n]) for n in range(12)]  # 12: "10" must come after "9", not after "1"
    pictures[3] = JPEG
    store.put("job-1", 1, pictures)
    assert store.get_all("job-1", 1) == pictures
    assert store.get("job-1", 1, 3) == (JPEG, "image/jpeg")
    assert store.get("job-1", 1, 0) == (pictures[0], "image/png")
    head = s3.head_object(Bucket=bucket, Key="images/job-1/1/11")
    assert head["ContentType"] == "image/png"


def test_attempts_are_kept_apart_and_a_second_put_of_one_attempt_replaces_it(store):
    store.put("job-2", 1, [PNG, PNG, PNG])
    store.put("job-2", 2, [JPEG])
    store.put("job-2", 1, [JPEG])
    assert store.get_all("job-2", 1) == [JPEG]
    assert store.get("job-2", 1, 2) is None
    assert store.get_all("job-2", 2) == [JPEG]
    assert store.get_all("job-2", 3) == [] and store.get("nope", 1, 0) is None


def test_a_presigned_url_serves_the_image_and_expires(store):
    store.put("job-3", 1, [PNG])
    url = store.url("job-3", 1, 0, expires_in=600)
    assert "X-Amz-Expires=600" in url and "X-Amz-Signature=" in url and "/images/job-3/1/0" in url
    response = requests.get(url, timeout=5)  # moto answers presigned URLs as S3 would
    assert response.status_code == 200 and response.content == PNG
    assert response.headers["Content-Type"] == "image/png"


def test_s3_errors_become_store_unavailable(aws):
    missing = s3_images.S3ImageStore("no-such-bucket", "images")
    with pytest.raises(errors.StoreUnavailable,
                       match="S3 image store: could not store the images of job j: NoSuchBucket"):
        missing.put("j", 1, [PNG])
    with pytest.raises(errors.StoreUnavailable, match="NoSuchBucket"):
        missing.get_all("j", 1)


def test_delete_removes_every_attempt_of_the_named_jobs_only(store, s3, bucket):
    store.put("job-old", 1, [PNG, PNG])
    store.put("job-old", 2, [JPEG])
    store.put("job-kept", 1, [PNG])
    assert store.delete(["job-old", "job-never-stored"]) == 3
    assert store.get_all("job-old", 1) == [] and store.get_all("job-old", 2) == []
    assert store.get_all("job-kept", 1) == [PNG]
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["images/job-kept/1/0"]
    assert store.delete([]) == 0
