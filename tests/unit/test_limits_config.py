"""Settings of retention, limits and roles: durations, hashed token entries, admin names; IMAGE_STORE."""
from __future__ import annotations

import hashlib

import pydantic
import pytest

from chalicelib import config

HEX = hashlib.sha256(b"secret").hexdigest()


@pytest.mark.parametrize(("value", "seconds"), [("30d", 30 * 86400.0), ("12h", 43200.0), ("10s", 10.0),
                                                 ("90", 90.0), ("0", None), ("0d", None)])
def test_job_retention_reads_a_duration_and_0_keeps_forever(value, seconds):
    assert config.Settings(job_retention=value).job_retention_seconds() == seconds


def test_job_retention_defaults_to_30_days():
    assert config.Settings().job_retention_seconds() == 30 * 86400.0


@pytest.mark.parametrize("value", ["forever", "1d,2d", "", "-1d"])
def test_job_retention_refuses_what_is_not_one_duration(value):
    with pytest.raises(pydantic.ValidationError, match="job_retention"):
        config.Settings(job_retention=value)


@pytest.mark.parametrize("value", ["db", "s3://bucket", "s3://bucket/images/"])
def test_image_store_is_db_or_an_s3_location(value):
    assert config.Settings(image_store=value).image_store == value


@pytest.mark.parametrize("value", ["file:///tmp/images", "s3://", "S3://bucket", "database", ""])
def test_an_unknown_image_store_is_refused_at_start_up(value):
    """Not a 500 at every request that would build the image store."""
    with pytest.raises(pydantic.ValidationError, match="IMAGE_STORE is db"):
        config.Settings(image_store=value)


def test_hashed_entries_keep_their_names_and_digests():
    settings = config.Settings(api_tokens=f"alice:plain,carol:sha256:{HEX.upper()},sha256:{HEX}")
    digests = dict((owner, digest) for digest, owner in settings.token_digests())
    assert digests["alice"] == hashlib.sha256(b"plain").digest()
    assert digests["carol"] == bytes.fromhex(HEX)
    assert digests[f"tok-{HEX[:12]}"] == bytes.fromhex(HEX)  # the name a bare plaintext "secret" would get
    assert "plain" in settings.token_map() and "secret" not in settings.api_tokens


@pytest.mark.parametrize("value", ["carol:sha256:abc", f"sha256:{HEX}0", "carol:sha256:" + "g" * 64])
def test_a_malformed_hashed_entry_is_refused_without_echoing_it(value):
    with pytest.raises(pydantic.ValidationError, match="hashed token") as caught:
        config.Settings(api_tokens=value)
    assert value not in str(caught.value)


def test_admin_names_and_owner_limits():
    settings = config.Settings(api_admin_tokens=" root, ops ,", max_queued_per_owner=5)
    assert settings.admin_names() == {"root", "ops"}
    assert config.Settings().admin_names() == frozenset()
    assert (settings.max_queued_per_owner, settings.submits_per_minute_per_owner) == (5, 0)
    with pytest.raises(pydantic.ValidationError):
        config.Settings(max_queued_per_owner=-1)
