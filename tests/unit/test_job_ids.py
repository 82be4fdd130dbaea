"""Job ids are UUIDv7: valid UUIDs, unique, and ordered by creation time (the index-locality point)."""
import uuid

from chalicelib import job_ids


def test_a_job_id_is_a_version_7_rfc_uuid_carrying_its_millisecond():
    now_ns = 1_764_000_000_123_456_789
    job_id = job_ids.new_job_id(now_ns=now_ns)
    parsed = uuid.UUID(job_id)
    assert str(parsed) == job_id
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == now_ns // 1_000_000


def test_ids_of_later_milliseconds_sort_after_earlier_ones_as_strings():
    earlier = [job_ids.new_job_id(now_ns=1_764_000_000_000_000_000 + i * 1_000_000) for i in range(200)]
    assert earlier == sorted(earlier)


def test_ids_of_the_same_millisecond_differ():
    ids = {job_ids.new_job_id(now_ns=1_764_000_000_000_000_000) for _ in range(10_000)}
    assert len(ids) == 10_000
