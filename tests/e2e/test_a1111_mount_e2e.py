"""A1111's own clients, unchanged, against the `/a1111` mount: the real `webuiapi` package and Open WebUI's
sequence replayed as plain HTTP, over the API under waitress, a worker and simulated A1111 instances.
Generation goes through the queue and blocks until the job ends (docs/a1111-clients.md)."""
from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import socket
import threading
import time
import urllib.parse

import PIL.Image
import pytest
import requests
import webuiapi

from tests import harness

OTHER_AUTH = {"Authorization": "Bearer other-token"}


def client_for(cluster, *, token: str = harness.TOKEN) -> webuiapi.WebUIApi:
    """webuiapi as its users set it up: a base URL, and `set_auth` (HTTP Basic, the token as password)."""
    api = webuiapi.WebUIApi(baseurl=f"{cluster.api_url}/a1111/sdapi/v1")
    api.set_auth("any-user", token)
    return api


@pytest.fixture
def service(cluster):
    cluster.start_simulator(gen_seconds=0.3)
    cluster.start_api()
    cluster.start_worker()
    return cluster


@pytest.mark.both_databases
def test_webuiapi_txt2img_and_img2img_block_and_answer_a1111s_body(service):
    api = client_for(service)
    result = api.txt2img(prompt="a lighthouse at dusk", steps=5, width=64, height=48, seed=7)
    assert isinstance(result.image, PIL.Image.Image) and result.image.size == (64, 48)
    assert result.info["all_seeds"] == [7] and result.parameters["prompt"] == "a lighthouse at dusk"
    # the job went through the queue: it is in the caller's history, completed
    jobs = requests.get(f"{service.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"]
    assert [(job["type"], job["status"]) for job in jobs] == [("txt2img", "completed")]
    edited = api.img2img(images=[result.image], prompt="an oil painting", steps=5, denoising_strength=0.5,
                         width=64, height=48)
    assert isinstance(edited.image, PIL.Image.Image) and "all_prompts" in edited.info
    assert [job["type"] for job in requests.get(f"{service.api_url}/sdapi/v1/jobs", headers=harness.AUTH,
                                                timeout=10).json()["jobs"]] == ["img2img", "txt2img"]


def test_the_job_id_is_in_x_job_id_and_errors_come_in_a1111s_shapes(service):
    url = f"{service.api_url}/a1111/sdapi/v1/txt2img"
    answer = requests.post(url, json={"prompt": "a cat", "steps": 3, "priority": 5}, headers=harness.AUTH,
                           timeout=30)
    assert answer.status_code == 200 and set(answer.json()) == {"images", "parameters", "info"}
    job = service.job(answer.headers["X-Job-Id"])
    assert job["status"] == "completed" and job["priority"] == 5
    # validation: FastAPI's 422, as A1111 answers it
    invalid = requests.post(url, json={"prompt": "a cat", "steps": "many"}, headers=harness.AUTH, timeout=10)
    assert invalid.status_code == 422 and set(invalid.json()) == {"detail"}
    assert invalid.json()["detail"][0]["loc"] == ["body", "steps"]
    broken = requests.post(url, data=b"{not json", headers=harness.AUTH, timeout=10)
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "value_error.jsondecode"
    # auth: A1111's error shape, with a Basic challenge
    refused = requests.post(url, json={"prompt": "a cat"}, auth=("u", "wrong"), timeout=10)
    assert refused.status_code == 401 and set(refused.json()) == {"error", "detail", "body", "errors"}
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    # a job that ends in error answers as A1111 answers a failed generation, and stays in the history
    service.sim("POST", "/_sim/faults", json={"fail_next": 1, "fail_as": "zero_division"})
    failed = requests.post(url, json={"prompt": "a cat", "steps": 3}, headers=harness.AUTH, timeout=30)
    assert failed.status_code == 500, failed.text
    assert set(failed.json()) == {"error", "detail", "body", "errors"} and failed.json()["error"]
    assert service.job(failed.headers["X-Job-Id"])["status"] == "error"
    assert requests.get(f"{service.api_url}/a1111/internal/ping", timeout=10).json() == {}


def test_util_set_model_then_txt2img_runs_on_that_model(service):
    api = client_for(service)
    api.util_set_model("SDXL/sd_xl_base_1.0")
    assert api.util_get_current_model() == "SDXL/sd_xl_base_1.0.safetensors"
    api.txt2img(prompt="a cat", steps=3, width=64, height=64)
    seen = service.sim("GET", "/_sim/requests")[-1]["payload"]
    assert seen["override_settings"]["sd_model_checkpoint"] == "SDXL/sd_xl_base_1.0.safetensors"
    # another owner's options and jobs are untouched
    other = requests.get(f"{service.api_url}/a1111/sdapi/v1/options", headers=OTHER_AUTH, timeout=10).json()
    assert other["sd_model_checkpoint"] == "v1-5-pruned-emaonly.safetensors [6ce0161689]"


def test_progress_rises_during_a_job_and_interrupt_ends_only_the_callers_job(service):
    service.sim("POST", "/_sim/faults", json={"gen_seconds": 4})
    api, other_api = client_for(service), client_for(service, token="other-token")
    assert api.get_progress()["state"]["job_count"] == 0  # idle shape
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        mine = pool.submit(api.txt2img, prompt="mine", steps=40, width=64, height=64)
        harness.wait_until(lambda: api.get_progress()["progress"] > 0, timeout=20, what="progress")
        seen = [api.get_progress()["progress"]]
        time.sleep(0.8)
        seen.append(api.get_progress()["progress"])
        assert 0 < seen[0] < seen[1] < 1, seen
        assert other_api.get_progress()["progress"] == 0  # not another owner's job
        assert other_api.interrupt() == {}  # the other owner has nothing running: nothing happens
        time.sleep(0.5)
        assert api.get_progress()["progress"] > seen[1]
        assert api.interrupt() == {}
        result = mine.result(timeout=20)
    assert result.images == [] or all(isinstance(image, PIL.Image.Image) for image in result.images)
    jobs = requests.get(f"{service.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"]
    assert jobs[0]["status"] == "cancelled"


def test_eight_concurrent_webuiapi_clients_on_two_instances_get_their_own_images(cluster):
    cluster.start_simulators(2, gen_seconds=0.3)
    cluster.start_api()
    cluster.start_worker()

    def generate(n: int) -> tuple[int, list[int]]:
        result = client_for(cluster).txt2img(prompt=f"client {n}", steps=3, seed=1000 + n, width=64, height=64)
        return n, result.info["all_seeds"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(generate, range(8)))
    assert answers == {n: [1000 + n] for n in range(8)}
    instances = {job["instance"] for job in (cluster.job(j["job_id"]) for j in requests.get(
        f"{cluster.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"])}
    assert len(instances) == 2


def test_a_client_that_disconnects_mid_wait_leaves_a_job_that_completes(service):
    service.sim("POST", "/_sim/faults", json={"gen_seconds": 1.5})
    address = urllib.parse.urlsplit(service.api_url)
    body = json.dumps({"prompt": "left early", "steps": 5}).encode()
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(b"POST /a1111/sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           + f"Authorization: Bearer {harness.TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                           + body)
        job_id = harness.wait_until(lambda: next(iter(requests.get(
            f"{service.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"]), None),
            timeout=10, what="the job")["job_id"]
    assert service.wait_status(job_id, {"completed", "error", "cancelled"})["status"] == "completed"


def test_open_webui_sequence_as_plain_http(service):
    """Open WebUI's engine "automatic1111": Basic auth from AUTOMATIC1111_API_AUTH, GET options to verify the
    URL, POST options with the whole object and a new model, txt2img reading `images`."""
    base = f"{service.api_url}/a1111"
    headers = {"authorization": "Basic " + base64.b64encode(f"openwebui:{harness.TOKEN}".encode()).decode()}
    options = requests.get(f"{base}/sdapi/v1/options", headers=headers, timeout=10)
    assert options.status_code == 200 and options.json()["sd_model_checkpoint"]
    models = requests.get(f"{base}/sdapi/v1/sd-models", headers=headers, timeout=10).json()
    chosen = next(model for model in models if model["model_name"] == "SDXL_sd_xl_base_1.0")
    changed = requests.post(f"{base}/sdapi/v1/options", json={**options.json(), "sd_model_checkpoint": chosen["title"]},
                            headers=headers, timeout=10)
    assert changed.status_code == 200, changed.text
    assert requests.get(f"{base}/sdapi/v1/options", headers=headers, timeout=10).json()["sd_model_checkpoint"] \
        == chosen["title"]
    answer = requests.post(f"{base}/sdapi/v1/txt2img", headers=headers, timeout=30, json={
        "prompt": "a fox", "batch_size": 1, "width": 64, "height": 64, "steps": 3, "cfg_scale": 7,
        "sampler_name": "Euler a", "scheduler": "automatic", "negative_prompt": ""})
    assert answer.status_code == 200
    image = PIL.Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert image.size == (64, 64)
    assert service.sim("GET", "/_sim/requests")[-1]["payload"]["override_settings"]["sd_model_checkpoint"] \
        == chosen["title"]


def test_prefer_wait_answers_200_in_time_and_202_when_too_short(service):
    url = f"{service.api_url}/sdapi/v1/txt2img"
    in_time = requests.post(url, json={"prompt": "a cat", "steps": 3}, timeout=30,
                            headers={**harness.AUTH, "Prefer": "wait=20"})
    assert in_time.status_code == 200, in_time.text
    assert in_time.headers["Preference-Applied"] == "wait=20"
    assert in_time.json()["status"] == "completed" and in_time.json()["result"]["images"]
    service.sim("POST", "/_sim/faults", json={"gen_seconds": 3})
    started = time.monotonic()
    too_short = requests.post(url, json={"prompt": "a cat", "steps": 3}, timeout=30,
                              headers={**harness.AUTH, "Prefer": "wait=0.5"})
    assert too_short.status_code == 202 and "Preference-Applied" not in too_short.headers
    assert 0.4 < time.monotonic() - started < 2.5
    assert too_short.json()["status"] in {"queued", "processing"}


def test_waiting_beyond_sync_max_waiting_answers_503_with_retry_after(cluster):
    cluster.start_simulator(gen_seconds=3)
    cluster.env.update(SYNC_MAX_WAITING="1")
    cluster.start_api()
    cluster.start_worker()
    first = threading.Thread(target=requests.post, args=(f"{cluster.api_url}/a1111/sdapi/v1/txt2img",),
                             kwargs={"json": {"prompt": "first", "steps": 3}, "headers": harness.AUTH, "timeout": 30})
    first.start()
    harness.wait_until(lambda: requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=harness.AUTH,
                                            timeout=10).json()["jobs"], timeout=10, what="the first job")
    for url, headers in ((f"{cluster.api_url}/a1111/sdapi/v1/txt2img", {}),
                         (f"{cluster.api_url}/sdapi/v1/txt2img", {"Prefer": "wait=5"})):
        busy = requests.post(url, json={"prompt": "second", "steps": 3}, headers={**harness.AUTH, **headers},
                             timeout=10)
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) > 0, busy.text
    first.join()
    assert len(requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"]) == 1
