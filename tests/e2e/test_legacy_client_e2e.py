"""A client written for the original async proxy, replayed as plain HTTP against the real processes
(issue 13): its payload mapping, model choice, webhook receiver with the 401 rule, queue view and cancel,
under /legacy and at the root, on SQLite and Postgres."""
from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest
import requests

from tests import harness

KEY = "app-own-api-token-7f3a9c"  # the application falls back to its own API token as the key
PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class AppReceiver:
    """The application's webhook route: 401 without the key header; job by key + uuid; images from
    `images || output || result.images`; `status || state` other than succeeded/completed is a failure."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.refused = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("x-webhook-key") != KEY:
                    receiver.refused += 1
                    self.send_response(401)
                else:
                    state = body.get("status") or body.get("state") or "succeeded"
                    images = body.get("images") or body.get("output") or (body.get("result") or {}).get("images")
                    receiver.jobs[body["uuid"]] = {"ok": state in ("succeeded", "completed"), "images": images,
                                                   "seed": body.get("seed"), "info": body.get("info")}
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def app_payload(kind: str) -> dict:
    """The application's mapping of a generation to an A1111 body."""
    body = {"prompt": "a portrait", "negative_prompt": "blurry", "sampler_name": "DPM++ 2M", "scheduler": "Karras",
            "width": 832, "height": 1216, "batch_size": 1, "steps": 4, "cfg_scale": 5, "seed": -1}
    if kind == "img2img":
        data_uri = "data:image/png;base64," + PNG_1X1
        body.update(init_images=[data_uri.split(",", 1)[1]], mask=PNG_1X1, denoising_strength=0.5)
    return body


@pytest.mark.both_databases
@pytest.mark.parametrize("base", ["/legacy", ""])
def test_the_original_proxys_client_works_unchanged(cluster, base):
    receiver = AppReceiver()
    cluster.start_simulators(2, gen_seconds=0.3)
    cluster.env.update(WEBHOOK_ALLOW_PRIVATE="true", CORS_ORIGINS="*")
    api = cluster.start_api() + base
    cluster.start_worker()
    auth = {**harness.AUTH, "Content-Type": "application/json"}

    # Model choice before each generation (errors swallowed by the application; checked here).
    chosen = requests.post(f"{api}/sdapi/v1/options", headers=auth, timeout=10,
                           json={"sd_model_checkpoint": "SDXL_sd_xl_base_1.0"})
    assert chosen.status_code == 200
    ids = {}
    for kind in ("txt2img", "img2img"):
        answer = requests.post(f"{api}/sdapi/v1/{kind}", headers=auth, timeout=10,
                               json={**app_payload(kind), "webhookUrl": receiver.url, "webhookKey": KEY})
        assert answer.status_code == 202, answer.text
        reply = answer.json()
        ids[kind] = reply.get("jobId") or reply.get("id") or reply.get("uuid")
        assert KEY not in answer.text
    harness.wait_until(lambda: len(receiver.jobs) == 2, timeout=60, what="both webhooks")
    for job_id in ids.values():
        got = receiver.jobs[job_id]
        assert got["ok"] and got["images"] and base64.b64decode(got["images"][0])[:4] == b"\x89PNG"
        assert isinstance(got["seed"], int) and got["seed"] != -1 and json.loads(got["info"])["seed"] == got["seed"]
    assert receiver.refused == 0

    # Other owner's jobs keep the default checkpoint; this owner's reached A1111 as override_settings.
    requests.post(f"{api}/sdapi/v1/txt2img", headers={"Authorization": "Bearer other-token"}, timeout=10,
                  json={"prompt": "other", "steps": 2}).raise_for_status()
    seen = []
    for url in cluster.env["A1111_BASE_URL"].split(","):
        seen += requests.get(f"{url}/_sim/requests", timeout=10).json()
    mine = [r for r in seen if r["force_task_id"] in ids.values()]
    assert mine and all(r["payload"]["override_settings"] == {"sd_model_checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}
                        for r in mine)
    assert all(KEY not in json.dumps(r) for r in seen)

    # Queue view and cancel.
    listed = requests.get(f"{api}/sdapi/v1/jobs", headers=auth, timeout=10).json()
    items = listed if isinstance(listed, list) else listed["jobs"]
    assert {item.get("id") or item.get("uuid") for item in items} >= set(ids.values())
    slow = requests.post(f"{api}/sdapi/v1/txt2img", headers=auth, timeout=10,
                         json={"prompt": "cancel me", "steps": 150, "webhookUrl": receiver.url, "webhookKey": KEY})
    slow_id = slow.json()["uuid"]
    cancel = requests.delete(f"{api}/sdapi/v1/jobs/{slow_id}", headers=auth, timeout=10)
    assert cancel.status_code in ((204,) if base else (200, 202))
    harness.wait_until(lambda: slow_id in receiver.jobs, timeout=60, what="the cancel webhook")
    assert receiver.jobs[slow_id]["ok"] is False

    # CORS for the browser, and the key in no log line.
    preflight = requests.options(f"{api}/sdapi/v1/txt2img", headers={"Origin": "https://app.example"}, timeout=10)
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    for process in cluster.processes:
        assert KEY not in process.log()
