"""Batches end to end (issue 16): real API, worker and simulator processes (tests/harness.py), a
receiver that verifies the `batch.completed` webhook, and the `worker_fn submit --batch` command."""
from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import time
import zipfile

import pytest
import requests

from tests import harness
from tests import webhook_receiver
from tests.harness import AUTH, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = {"Authorization": "Bearer other-token"}
GEN_SECONDS = 0.03


def post_batch(cluster, body, *, headers=None, **kwargs) -> requests.Response:
    return requests.post(f"{cluster.api_url}/sdapi/v1/batches", headers={**AUTH, **(headers or {})},
                         timeout=30, **({"json": body} if body is not None else {}), **kwargs)


def batch_view(cluster, batch_id, headers=AUTH) -> dict:
    response = requests.get(f"{cluster.api_url}/sdapi/v1/batches/{batch_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def jobs(n, **fields) -> list[dict]:
    return [{"prompt": f"job {i}", "steps": 2 + i % 3, **fields} for i in range(n)]


@pytest.mark.both_databases
def test_a_200_job_batch_runs_on_two_instances_to_one_webhook_a_manifest_and_a_zip(cluster):
    with webhook_receiver.WebhookReceiver(secret=SECRET) as receiver:
        cluster.env.update({"WEBHOOK_ALLOW_PRIVATE": "true"})
        urls = cluster.start_simulators(2, gen_seconds=GEN_SECONDS)
        cluster.start_api()
        cluster.start_worker()

        response = post_batch(cluster, {"jobs": jobs(200), "webhook_url": receiver.url, "webhook_secret": SECRET,
                                        "metadata": {"run": "e2e"}})
        assert response.status_code == 202, response.text
        batch_id = response.json()["batch_id"]

        seen = []

        def finished():
            view = batch_view(cluster, batch_id)
            seen.append(view)
            return view if view["status"] == "completed" else None

        final = wait_until(finished, timeout=180, what="the batch to finish")
        # counts and progress only ever move forward, to all completed
        done = [view["counts"]["completed"] for view in seen]
        progress = [view["progress"] for view in seen]
        assert done == sorted(done) and progress == sorted(progress) and len(set(done)) > 2
        assert final["counts"] == {"queued": 0, "processing": 0, "completed": 200, "error": 0, "cancelled": 0}
        assert final["progress"] == 1.0 and final["finished_at"] and final["eta_seconds"] in (0, None)
        assert all(requests.get(f"{url}/_sim/stats", timeout=10).json()["generations_completed"] > 0 for url in urls)

        # one batch.completed webhook, signed
        got = receiver.wait_for(lambda got: any(r.event and r.event["type"] == "batch.completed" for r in got),
                                timeout=30)
        time.sleep(1.0)  # a second delivery, if there were one, would have come by now
        completed = [r for r in receiver.received() if r.event and r.event["type"] == "batch.completed"]
        assert len(completed) == 1 and completed[0].verified and all(r.verified for r in got)
        data = completed[0].event["data"]
        assert data["batch_id"] == batch_id and data["jobs"] == 200 and data["counts"]["completed"] == 200
        assert data["metadata"] == {"run": "e2e"}

    # the manifest lists the 200 jobs in order, each with its image
    manifest = requests.get(f"{cluster.api_url}/sdapi/v1/batches/{batch_id}/results", headers=AUTH, timeout=30)
    lines = [json.loads(line) for line in manifest.text.splitlines()]
    assert [line["index"] for line in lines] == list(range(200))
    assert all(line["status"] == "completed" and len(line["image_urls"]) == 1 for line in lines)
    # the zip holds every PNG and the manifest
    zipped = requests.get(f"{cluster.api_url}/sdapi/v1/batches/{batch_id}/results", params={"format": "zip"},
                          headers=AUTH, timeout=60)
    assert zipped.status_code == 200, zipped.text[:500]
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    names = archive.namelist()
    assert sorted(names) == sorted([f"{line['index']}-{line['job_id']}-0.png" for line in lines] + ["manifest.ndjson"])
    assert all(archive.read(name).startswith(b"\x89PNG") for name in names if name.endswith(".png"))
    assert len(archive.read("manifest.ndjson").decode().splitlines()) == 200


def test_a_batch_with_one_bad_line_is_refused_naming_it_and_stores_nothing(cluster):
    cluster.start_simulator(gen_seconds=GEN_SECONDS)
    cluster.start_api()
    lines = [json.dumps(job) for job in jobs(5)]
    lines[3] = json.dumps({"prompt": "bad", "steps": "many"})
    response = post_batch(cluster, None, data="\n".join(lines).encode(),
                          headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["line", 4, "steps"]]
    listed = requests.get(f"{cluster.api_url}/sdapi/v1/batches", headers=AUTH, timeout=10).json()
    assert listed["batches"] == []
    assert requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=AUTH, timeout=10).json()["jobs"] == []


def test_a_batch_cancelled_midway_ends_with_what_ran_and_nothing_more(cluster):
    cluster.start_simulator(gen_seconds=0.1)
    cluster.start_api()
    cluster.start_worker()
    batch_id = post_batch(cluster, {"jobs": jobs(60)}).json()["batch_id"]
    wait_until(lambda: batch_view(cluster, batch_id)["counts"]["completed"] >= 3, timeout=60,
               what="a few jobs to complete")

    response = requests.post(f"{cluster.api_url}/sdapi/v1/batches/{batch_id}/cancel", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text

    final = wait_until(lambda: (lambda v: v if v["status"] == "completed" else None)(batch_view(cluster, batch_id)),
                       timeout=30, what="the cancelled batch to finish")
    counts = final["counts"]
    assert counts["queued"] == counts["processing"] == counts["error"] == 0
    assert counts["completed"] >= 3 and counts["cancelled"] >= 30 and counts["completed"] + counts["cancelled"] == 60
    time.sleep(0.5)
    assert batch_view(cluster, batch_id)["counts"] == counts  # nothing ran after
    again = requests.post(f"{cluster.api_url}/sdapi/v1/batches/{batch_id}/cancel", headers=AUTH, timeout=10)
    assert again.status_code == 409


def test_a_lone_job_of_another_owner_starts_within_two_generations_of_a_300_job_batch(cluster):
    gen_seconds = 1.0  # long enough that the bound is about the queue, not about the machine's load
    cluster.start_simulator(gen_seconds=gen_seconds)
    cluster.start_api()
    cluster.start_worker()
    batch_id = post_batch(cluster, {"jobs": jobs(300)}).json()["batch_id"]
    wait_until(lambda: batch_view(cluster, batch_id)["counts"]["processing"] == 1, timeout=30,
               what="the batch's first job to start")

    response = requests.post(f"{cluster.api_url}/sdapi/v1/txt2img", json={"prompt": "just one", "steps": 2},
                             headers=OTHER, timeout=10)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def started():
        job = requests.get(f"{cluster.api_url}/sdapi/v1/jobs/{job_id}", headers=OTHER, timeout=10).json()
        return job if job["started_at"] else None

    job = wait_until(started, timeout=30, what="the lone job to start")
    waited = _seconds(job["started_at"]) - _seconds(job["created_at"])
    assert waited <= 2 * gen_seconds, waited
    assert batch_view(cluster, batch_id)["counts"]["queued"] >= 290  # it did not wait for the batch


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_cli_submits_one_batch_shows_progress_downloads_and_resumes_after_an_interruption(cluster, tmp_path):
    cluster.start_simulators(2, gen_seconds=0.2)
    cluster.start_api()
    cluster.start_worker()
    source = tmp_path / "jobs.jsonl"
    source.write_text("".join(json.dumps({"type": "txt2img", "request": {"prompt": f"cli {n}", "steps": 3},
                                          "metadata": {"n": n}}) + "\n" for n in range(20)))
    out = tmp_path / "results"
    command = [sys.executable, "-m", "worker_fn", "submit", str(source), "--api", cluster.api_url,
               "--token", harness.TOKEN, "--batch", "--wait", "--out", str(out)]

    # interrupted while it waits for the batch
    first = subprocess.Popen(command, cwd=harness.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    created = first.stdout.readline()
    assert "20 jobs (created)" in created, created + first.stderr.read()
    first.kill()
    first.wait(timeout=10)

    # a re-run finds the same batch, waits with a progress bar and downloads everything
    rerun = subprocess.run(command, cwd=harness.ROOT, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "20 jobs (sent before)" in rerun.stdout and "20 images downloaded, 0 already there" in rerun.stdout
    assert "job/s" in rerun.stderr or "20/20" in rerun.stderr  # tqdm's bar
    listed = requests.get(f"{cluster.api_url}/sdapi/v1/batches", headers=AUTH, timeout=10).json()["batches"]
    assert len(listed) == 1 and listed[0]["jobs"] == 20
    pngs = sorted(out.glob("*.png"))
    manifest = [json.loads(line) for line in (out / "manifest.ndjson").read_text().splitlines()]
    assert len(pngs) == 20 and [entry["metadata"] for entry in manifest] == [{"n": n} for n in range(20)]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in pngs) and not list(out.glob("*.part"))

    # a download cut short: only the missing images are fetched again
    kept = {path: path.stat().st_mtime_ns for path in pngs[5:]}
    for path in pngs[:5]:
        path.unlink()
    again = subprocess.run(command, cwd=harness.ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "5 images downloaded, 15 already there" in again.stdout
    assert {path: path.stat().st_mtime_ns for path in kept} == kept and len(list(out.glob("*.png"))) == 20
    assert len(requests.get(f"{cluster.api_url}/sdapi/v1/batches", headers=AUTH, timeout=10).json()["batches"]) == 1
