"""Live progress over real HTTP: the event streams (read by a real SSE parser, sseclient-py), the
long-poll on the job detail, and the cap on open streams."""
from __future__ import annotations

import concurrent.futures
import json
import time

import pytest
import requests
import sseclient

from tests.harness import AUTH, wait_until

OTHER = {"Authorization": "Bearer other-token"}


def events_of(cluster, path: str, *, headers: dict | None = None, until=None, timeout: float = 60) -> list:
    """The events of the stream at `path` (id, event, data as JSON), read until the stream ends or
    `until(events)` is true."""
    response = requests.get(f"{cluster.api_url}{path}", headers={**AUTH, **(headers or {})}, stream=True,
                            timeout=timeout)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = []
    try:
        for event in sseclient.SSEClient(response).events():
            events.append((None if event.id is None else int(event.id), event.event, json.loads(event.data)))
            if until is not None and until(events):
                break
    finally:
        response.close()
    return events


def started(cluster, *, gen_seconds: float = 1.5, simulators: int = 1, **api_env) -> None:
    if simulators == 1:
        cluster.start_simulator(gen_seconds=gen_seconds)
    else:
        cluster.start_simulators(simulators, gen_seconds=gen_seconds)
    cluster.env.update(api_env)
    cluster.start_api()
    cluster.start_worker()


@pytest.mark.both_databases
def test_a_jobs_events_arrive_in_order_and_end_with_completed(cluster):
    started(cluster)
    job = cluster.submit({"prompt": "a lighthouse", "steps": 20})
    events = events_of(cluster, f"/sdapi/v1/jobs/{job['job_id']}/events")

    names = [name for _, name, _ in events]
    assert names[0] in ("job.queued", "job.started"), names  # the first event is the state now
    assert names[-1] == "job.completed" and names.count("job.completed") == 1, names
    assert "job.started" in names and names.count("job.progress") >= 2, names
    ids = [event_id for event_id, _, _ in events]
    assert all(event_id is not None for event_id in ids) and ids == sorted(set(ids)), ids
    assert all(data["version"] == event_id for event_id, _, data in events)
    progress = [data["progress"]["progress"] for _, name, data in events if name == "job.progress"]
    assert progress == sorted(progress) and progress[-1] > progress[0], progress
    assert all("current_image" not in (data["progress"] or {}) for _, _, data in events)  # no images
    final = events[-1][2]
    assert final["status"] == "completed" and final["job_id"] == job["job_id"]
    assert cluster.job(job["job_id"])["version"] == ids[-1]

    # Resume: nothing at or below Last-Event-ID is sent again (header or query parameter).
    middle = ids[len(ids) // 2]
    resumed = events_of(cluster, f"/sdapi/v1/jobs/{job['job_id']}/events", headers={"Last-Event-ID": str(middle)})
    assert resumed and all(event_id > middle for event_id, _, _ in resumed)
    assert resumed[-1][1] == "job.completed"
    assert events_of(cluster, f"/sdapi/v1/jobs/{job['job_id']}/events?last_event_id={ids[-1]}") == []


def test_previews_are_sent_only_when_asked_for(cluster):
    started(cluster)
    job = cluster.submit({"prompt": "a lighthouse", "steps": 20})
    events = events_of(cluster, f"/sdapi/v1/jobs/{job['job_id']}/events?previews=true")
    progress = [data["progress"] for _, name, data in events if name == "job.progress"]
    assert progress and all("current_image" in item for item in progress)


def test_another_owners_job_is_404_and_a_token_is_required(cluster):
    started(cluster)
    job = cluster.submit()
    path = f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}/events"
    other = requests.get(path, headers=OTHER, timeout=10)
    assert other.status_code == 404 and other.json()["error"] == "NotFound"
    anonymous = requests.get(path, timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    unknown = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/nope/events", headers=AUTH, timeout=10)
    assert unknown.status_code == 404
    bad_status = requests.get(f"{cluster.api_url}/sdapi/v1/events?status=nope", headers=AUTH, timeout=10)
    assert bad_status.status_code == 422


def test_the_owner_stream_sees_two_jobs_interleaved_and_not_another_owners(cluster):
    started(cluster, simulators=2)
    cluster.start_worker("worker2")
    foreign = requests.post(f"{cluster.api_url}/sdapi/v1/txt2img", json={"prompt": "not yours", "steps": 5},
                            headers=OTHER, timeout=10).json()
    done: set[str] = set()

    def both_done(events):
        if events[-1][1] == "job.completed":
            done.add(events[-1][2]["job_id"])
        return len(done) == 2

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(events_of, cluster, "/sdapi/v1/events", until=both_done)
        time.sleep(0.5)
        first, second = cluster.submit({"prompt": "one", "steps": 20}), cluster.submit({"prompt": "two", "steps": 20})
        events = future.result(timeout=90)
    ids = [data["job_id"] for _, _, data in events]
    assert foreign["job_id"] not in ids
    assert set(ids) == {first["job_id"], second["job_id"]}
    # Interleaved: the second job's events start before the first job's end.
    assert ids.index(second["job_id"]) < len(ids) - 1 - ids[::-1].index(first["job_id"])
    for job_id in (first["job_id"], second["job_id"]):
        versions = [data["version"] for event_id, _, data in events if data["job_id"] == job_id and event_id]
        assert versions == sorted(set(versions))


def test_long_poll_answers_within_100_ms_of_a_change_and_after_n_seconds_without_one(cluster):
    cluster.start_simulator()
    cluster.start_api()  # no worker: the job stays queued until it is cancelled
    job = cluster.submit()
    version = cluster.job(job["job_id"])["version"]
    url = f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}"

    started_at = time.monotonic()
    unchanged = requests.get(f"{url}?wait=1&version={version}", headers=AUTH, timeout=10)
    waited = time.monotonic() - started_at
    assert unchanged.status_code == 200 and unchanged.json()["version"] == version
    assert 1.0 <= waited < 2.5, waited

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        def poll():
            answer = requests.get(f"{url}?wait=10&version={version}", headers=AUTH, timeout=15)
            return answer, time.monotonic()
        future = pool.submit(poll)
        time.sleep(0.5)  # the long-poll is waiting
        cancelled = requests.post(f"{url}/cancel", headers=AUTH, timeout=10)
        changed_at = time.monotonic()
        answer, answered_at = future.result(timeout=15)
    assert cancelled.status_code == 200
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert answer.json()["version"] > version
    assert answered_at - changed_at < 0.1, answered_at - changed_at

    # A finished job answers at once; bad parameters are 422, never a 500.
    started_at = time.monotonic()
    assert requests.get(f"{url}?wait=10&version=999", headers=AUTH, timeout=15).status_code == 200
    assert time.monotonic() - started_at < 1
    for query in ("wait=soon", "wait=-1", "wait=nan", "version=x", "version=-1"):
        assert requests.get(f"{url}?{query}", headers=AUTH, timeout=10).status_code == 422, query


def test_the_stream_cap_answers_503_and_a_client_that_left_frees_its_slot(cluster):
    cluster.start_simulator()
    cluster.env.update(STREAM_MAX_OPEN="1", STREAM_KEEPALIVE_SECONDS="0.5")
    cluster.start_api()
    job = cluster.submit()
    stream_url = f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}/events"
    first = requests.get(stream_url, headers=AUTH, stream=True, timeout=10)
    assert first.status_code == 200
    busy = requests.get(stream_url, headers=AUTH, timeout=10)
    assert busy.status_code == 503 and busy.json()["error"] == "ServerBusy"
    assert int(busy.headers["Retry-After"]) > 0
    long_poll = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}?wait=5", headers=AUTH, timeout=10)
    assert long_poll.status_code == 503  # long-polls hold a thread too: same cap
    assert requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job['job_id']}", headers=AUTH,
                        timeout=10).status_code == 200  # everything else is answered
    first.close()  # the client goes away: its slot is free within the keep-alive interval

    def reopened():
        again = requests.get(stream_url, headers=AUTH, stream=True, timeout=10)
        again.close()
        return again.status_code == 200
    wait_until(reopened, timeout=5, what="the closed stream's slot to be freed")
