"""Issue 21 against real processes, on SQLite and Postgres: the simulator records every generation
request it receives, so what reaches A1111 is checked where A1111 sees it; bad input over HTTP
(waitress) is a 4xx on both stores."""
from __future__ import annotations

import base64
import json

import pytest
import requests

from tests import harness

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
SMALL = {"prompt": "governed", "steps": 3, "width": 64, "height": 64}


def post(cluster, kind: str, body) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(f"{cluster.api_url}/sdapi/v1/{kind}", data=data, timeout=10,
                         headers={**harness.AUTH, "Content-Type": "application/json"})


def received(cluster, job_id: str) -> dict:
    """The body the simulator received for the job (the worker sends the job id as force_task_id)."""
    [seen] = [r["payload"] for r in cluster.sim("GET", "/_sim/requests") if r["force_task_id"] == job_id]
    return seen


def test_only_governed_fields_reach_a1111(cluster):
    # given an API that allows one script and forwards one fork field
    cluster.start_simulator(gen_seconds=0.1)
    cluster.env.update(A1111_ALLOWED_SCRIPTS="X/Y/Z plot", A1111_EXTRA_FIELDS="fork_flag")
    cluster.start_api()
    cluster.start_worker("worker-7f3a")

    # when a job asks to save on A1111's disk, sends unknown fields and a listed one
    job = cluster.submit({**SMALL, "save_images": True, "do_not_save_samples": False, "do_not_save_grid": False,
                          "outpath_samples": "/tmp/anywhere", "fork_other": {"x": 1}, "fork_flag": True,
                          "override_settings": {"sd_vae": "a.pt"}, "script_name": None, "script_args": [],
                          "alwayson_scripts": {}})
    done = cluster.wait_status(job["job_id"], {"completed", "error"})

    # then A1111 got the job without the dropped fields and with saving off, and the job says what was dropped
    assert done["status"] == "completed", done
    payload = received(cluster, job["job_id"])
    assert "outpath_samples" not in payload and "fork_other" not in payload and payload["fork_flag"] is True
    assert (payload["save_images"], payload["do_not_save_samples"], payload["do_not_save_grid"]) == (False, True, True)
    assert payload["override_settings"] == {"sd_vae": "a.pt"} and payload["override_settings_restore_afterwards"]
    assert done["dropped_fields"] == ["fork_other", "outpath_samples"]

    # when refused bodies are submitted
    before = cluster.sim("GET", "/_sim/stats")["generation_requests"]
    refused = {
        "options kept": ("txt2img", {**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2},
                                     "override_settings_restore_afterwards": False},
                         ["body", "override_settings_restore_afterwards"]),
        "an option for everyone": ("txt2img", {**SMALL, "override_settings": {"outdir_txt2img_samples": "/x"}},
                                   ["body", "override_settings", "outdir_txt2img_samples"]),
        "a script not allowed": ("txt2img", {**SMALL, "script_name": "prompts from file or textbox",
                                             "script_args": ["--outpath_samples /any/dir"]}, ["body", "script_name"]),
        "an always-on script not allowed": ("txt2img", {**SMALL, "alwayson_scripts": {"Dynamic Prompts": {}}},
                                            ["body", "alwayson_scripts", "Dynamic Prompts"]),
        "a URL init image": ("img2img", {**SMALL, "init_images": ["https://example.com/a.png"]},
                             ["body", "init_images", 0]),
    }
    for name, (kind, body, loc) in refused.items():
        response = post(cluster, kind, body)
        # then each is a 422 naming the field
        assert response.status_code == 422, (name, response.text)
        assert [item["loc"] for item in response.json()["detail"]] == [loc], name
    # and none reached A1111
    assert cluster.sim("GET", "/_sim/stats")["generation_requests"] == before

    # when an allowed always-on script (any case) and an allowed script are sent
    adetailer = {"args": [{"ad_model": "face_yolov8n.pt", "ad_image": IMAGE}]}
    with_adetailer = cluster.submit({**SMALL, "alwayson_scripts": {"adetailer": adetailer}})
    with_script = cluster.submit({**SMALL, "script_name": "x/y/z PLOT", "script_args": [1, "Steps", "3,4"]})
    # then both reach A1111 as sent (the simulator has no extensions, so it answers "Script ... not found")
    for job, key, value in ((with_adetailer, "alwayson_scripts", {"adetailer": adetailer}),
                            (with_script, "script_name", "x/y/z PLOT")):
        done = cluster.wait_status(job["job_id"], {"completed", "error"})
        assert received(cluster, job["job_id"])[key] == value
        assert done["error"]["code"] == "a1111_rejected" and "not found" in done["error"]["message"]

    # and anonymous /health tells none of it: no job id, error text, worker id or URL
    text = requests.get(f"{cluster.api_url}/health", timeout=10).text
    for secret in (with_script["job_id"], with_adetailer["job_id"], "not found", "Script", "worker-7f3a",
                   cluster.sim_url, "127.0.0.1"):
        assert secret not in text, secret
    assert json.loads(text)["components"]["instances"] == "up"
    assert any(w["id"] == "worker-7f3a" for w in cluster.health()["workers"])  # a token gets the detail


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.both_databases
def test_the_issues_500_cases_are_4xx_on_this_store(cluster):
    cluster.env.update(WEBHOOK_ALLOW_PRIVATE="true", A1111_BASE_URL="http://127.0.0.1:9")
    cluster.start_api()
    job = cluster.submit({**SMALL, "webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "k3y-k3y"})
    deep = "[" * 1000 + "]" * 1000
    big = "1" * 4301
    out_of_range = cursor_of(b'{"before": 9223372036854775808}')
    deep_cursor = cursor_of(b'{"before": ' + deep.encode() + b"}")
    deliveries = f"/sdapi/v1/jobs/{job['job_id']}/webhooks"
    cases = [
        ("POST", "/sdapi/v1/txt2img", '{"prompt": ' + deep + "}", 400),
        ("POST", "/sdapi/v1/img2img", '{"a": ' * 970 + "1" + "}" * 970, 400),
        ("POST", "/sdapi/v1/txt2img", '{"seed": ' + big + "}", 400),
        ("POST", "/sdapi/v1/img2img", '{"seed": ' + big + "}", 400),
        ("GET", "/sdapi/v1/jobs?limit=%C2%B2", None, 422),
        ("GET", deliveries + "?limit=%C2%B2", None, 422),
        ("GET", "/sdapi/v1/jobs?cursor=" + out_of_range, None, 422),
        ("GET", deliveries + "?cursor=" + out_of_range, None, 422),
        ("GET", "/sdapi/v1/jobs?cursor=" + deep_cursor, None, 422),
        ("GET", deliveries + "?cursor=" + deep_cursor, None, 422),
        ("GET", "/sdapi/v1/jobs?limit=" + "9" * 5000, None, 422),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "fork": NaN}', 400),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "metadata": {"n": Infinity}}', 400),
    ]
    for method, path, body, status in cases:
        response = requests.request(method, cluster.api_url + path, data=body, timeout=10,
                                    headers={**harness.AUTH, "Content-Type": "application/json"})
        assert response.status_code == status, (path[:60], response.text[:300])
        assert response.json()["error"] in {"BadRequest", "ValidationError"}
    listed = requests.get(f"{cluster.api_url}/sdapi/v1/jobs", headers=harness.AUTH, timeout=10).json()["jobs"]
    assert [j["job_id"] for j in listed] == [job["job_id"]]  # nothing else was stored
