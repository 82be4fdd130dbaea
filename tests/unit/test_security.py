"""Issue 21 in-process: what a1111_policy lets reach A1111, bad input as 4xx, the anonymous /health
and its cache, the docs' security headers, and settings that refuse to start."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import pydantic
import pytest
from chalice import test as chalice_test

import app as app_module
from chalicelib import a1111_policy
from chalicelib import config
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import request_models
from tests.a1111_sim import server as a1111_sim

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALICE = {"Authorization": "Bearer tok-alice", "Content-Type": "application/json"}
LIMITS = request_models.Limits(max_width=2048, max_height=2048, max_steps=150, max_images=16, max_prompt_length=10000)
IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def parse(body, kind="txt2img", policy=a1111_policy.DEFAULT) -> request_models.Submission:
    return request_models.parse_submission(kind, body, limits=LIMITS, policy=policy)


def refused(body, kind="txt2img", policy=a1111_policy.DEFAULT) -> list[tuple[str, str]]:
    """(dotted loc after "body", type) of each problem of the 422."""
    with pytest.raises(errors.ValidationFailed) as raised:
        parse(body, kind, policy)
    return sorted((".".join(str(p) for p in item["loc"][1:]), item["type"]) for item in raised.value.detail)


# --- the policy ----------------------------------------------------------------------------------

REFUSED = {
    # name: (kind, body, problems)
    "an option outside the allow-list": (
        "txt2img", {"override_settings": {"sd_vae": "a.pt", "outdir_txt2img_samples": "/tmp/x",
                                          "samples_filename_pattern": "[seed]"}},
        [("override_settings.outdir_txt2img_samples", "not_allowed"),
         ("override_settings.samples_filename_pattern", "not_allowed")]),
    "options kept after the job": ("txt2img", {"override_settings_restore_afterwards": False},
                                   [("override_settings_restore_afterwards", "not_allowed")]),
    "a script not allowed": ("txt2img", {"script_name": "prompts from file or textbox",
                                         "script_args": ["--outpath_samples /any/dir"]},
                             [("script_name", "not_allowed")]),
    "script args without a script": ("txt2img", {"script_args": [1, 2]}, [("script_args", "not_allowed")]),
    "an always-on script not allowed": ("txt2img", {"alwayson_scripts": {"Dynamic Prompts": {"args": []}}},
                                        [("alwayson_scripts.Dynamic Prompts", "not_allowed")]),
    "a URL in an allowed always-on script's args": (
        "txt2img", {"alwayson_scripts": {"ControlNet": {"args": [{"image": " HTTPS://example.com/a.png"}]}}},
        [("alwayson_scripts.ControlNet.args.0.image", "url_not_allowed")]),
    "a URL as init image": ("img2img", {"init_images": [IMAGE, "https://example.com/a.png"]},
                            [("init_images.1", "base64_image")]),
    "a URL as mask": ("img2img", {"init_images": [IMAGE], "mask": "http://10.0.0.1/m.png"}, [("mask", "base64_image")]),
    "an init image that is not a string": ("img2img", {"init_images": [{"url": "x"}]},
                                           [("init_images.0", "base64_image")]),
    "a URL as the first-pass image": ("txt2img", {"firstpass_image": "http://example.com/a.png"},
                                      [("firstpass_image", "base64_image")]),
    "NaN inside a governed dict (from a queue message)": (
        "txt2img", {"override_settings": {"s_noise": float("nan"), "eta_ddim": float("inf")}},
        [("override_settings.eta_ddim", "finite_number"), ("override_settings.s_noise", "finite_number")]),
    "NaN inside nested lists of a script's args (from a queue message)": (
        "txt2img", {"alwayson_scripts": {"ControlNet": {"args": [[0.5, [float("nan")]], {"w": float("-inf")}]}}},
        [("alwayson_scripts.ControlNet.args.0.1.0", "finite_number"),
         ("alwayson_scripts.ControlNet.args.1.w", "finite_number")]),
    "a URL behind whitespace, beside a long base64 string": (
        "txt2img", {"alwayson_scripts": {"ControlNet": {"args": [{"image": "A" * 100_000 + "==",
                                                                  "mask": "\n\t HtTpS://example.com/m.png"}]}}},
        [("alwayson_scripts.ControlNet.args.0.mask", "url_not_allowed")]),
}


@pytest.mark.parametrize("kind, body, problems", REFUSED.values(), ids=REFUSED.keys())
def test_refused_fields_are_a_422_naming_them(kind, body, problems):
    assert refused(body, kind) == problems


def test_the_message_names_the_field_and_the_setting_that_widens_it():
    with pytest.raises(errors.ValidationFailed) as raised:
        parse({"override_settings": {"outdir_samples": "/x"}, "script_name": "x/y/z plot"})
    messages = {item["loc"][-1]: item["msg"] for item in raised.value.detail}
    assert "'outdir_samples'" in messages["outdir_samples"] and "A1111_ALLOWED_OVERRIDES" in messages["outdir_samples"]
    assert "'x/y/z plot'" in messages["script_name"] and "A1111_ALLOWED_SCRIPTS" in messages["script_name"]


def test_empty_governed_fields_as_webuiapi_sends_them_pass():
    body = {"prompt": "x", "script_name": None, "script_args": [], "alwayson_scripts": {}, "save_images": False,
            "override_settings": {}, "override_settings_restore_afterwards": True, "do_not_save_samples": False,
            "do_not_save_grid": False}
    submission = parse(body)
    assert submission.payload == {**body, "do_not_save_samples": True, "do_not_save_grid": True}
    assert submission.dropped_fields == ()


def test_saving_is_forced_off_unless_the_operator_allows_it():
    body = {"save_images": True, "do_not_save_samples": False, "do_not_save_grid": False}
    forced = parse(body).payload
    assert (forced["save_images"], forced["do_not_save_samples"], forced["do_not_save_grid"]) == (False, True, True)
    allowed = parse(body, policy=a1111_policy.Policy(allow_save=True)).payload
    assert allowed == {**body, "override_settings_restore_afterwards": True}


def test_allowed_scripts_and_options_pass_and_names_compare_as_a1111_does():
    policy = a1111_policy.Policy.from_settings(config.Settings(
        a1111_allowed_scripts="X/Y/Z plot", a1111_allowed_overrides="sd_model_checkpoint,samples_format"))
    body = {"script_name": "x/y/z PLOT", "script_args": [1, "a"], "override_settings": {"samples_format": "png"},
            "alwayson_scripts": {"adetailer": {"args": [{"ad_model": "face_yolov8n.pt"}]},
                                 "CONTROLNET": {"args": [{"image": IMAGE}]}}}
    assert parse(body, policy=policy).payload["alwayson_scripts"] == body["alwayson_scripts"]
    assert refused({"override_settings": {"sd_vae": "x"}}, policy=policy) == [
        ("override_settings.sd_vae", "not_allowed")]


def test_a_star_allows_every_name():
    policy = a1111_policy.Policy.from_settings(config.Settings(
        a1111_allowed_scripts="*", a1111_allowed_alwayson_scripts="*", a1111_allowed_overrides="*",
        a1111_extra_fields="*"))
    body = {"script_name": "anything", "alwayson_scripts": {"Other": {}}, "override_settings": {"outdir_save": "/x"},
            "fork_field": 1}
    submission = parse(body, policy=policy)
    assert submission.payload["fork_field"] == 1 and submission.dropped_fields == ()
    assert refused({"override_settings_restore_afterwards": False}, policy=policy)  # never widened


def test_unknown_fields_are_dropped_and_recorded_unless_listed():
    submission = parse({"prompt": "x", "fork_flag": True, "outpath_samples": "/tmp", "enable_hr": True})
    assert "fork_flag" not in submission.payload and "outpath_samples" not in submission.payload
    assert submission.dropped_fields == ("fork_flag", "outpath_samples")
    listed = parse({"fork_flag": True, "other": 1},
                   policy=a1111_policy.Policy.from_settings(config.Settings(a1111_extra_fields="fork_flag")))
    assert listed.payload["fork_flag"] is True and listed.dropped_fields == ("other",)


def test_data_uri_and_wrapped_base64_images_pass():
    wrapped = "\n".join(IMAGE[i:i + 20] for i in range(0, len(IMAGE), 20))
    payload = parse({"init_images": ["data:image/png;base64," + IMAGE, wrapped], "mask": IMAGE}, "img2img").payload
    assert payload["init_images"][1] == wrapped


def test_defaults_are_generation_only():
    settings = config.Settings()
    assert a1111_policy.Policy.from_settings(settings) == a1111_policy.Policy()
    assert not settings.a1111_allow_save and settings.a1111_allowed_scripts == ""
    assert {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"} <= a1111_policy.Policy().allowed_overrides
    assert not any(re.search(r"save|dir|path|filename|format|api_|temp", key)
                   for key in a1111_policy.Policy().allowed_overrides)


# --- routes ----------------------------------------------------------------------------------------

def test_the_job_detail_shows_the_governed_request_and_the_dropped_fields(client):
    body = {"prompt": "p", "fork_flag": 1, "save_images": True, "override_settings": {"sd_vae": "a.pt"}}
    job = client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=json.dumps(body)).json_body
    detail = client.http.get(f"/sdapi/v1/jobs/{job['job_id']}", headers=ALICE).json_body
    assert detail["dropped_fields"] == ["fork_flag"]
    assert detail["request"] == {"prompt": "p", "override_settings": {"sd_vae": "a.pt"}, "save_images": False,
                                 "do_not_save_samples": True, "do_not_save_grid": True,
                                 "override_settings_restore_afterwards": True}


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


DEEP = "[" * 1000 + "]" * 1000
BIG = "1" * 4301
# The 11 cases that answered 500, and NaN (which was stored), as (method, path, body, status).
BAD_INPUT = {
    "body nested 1000 deep (txt2img)": ("POST", "/sdapi/v1/txt2img", '{"prompt": ' + DEEP + "}", 400),
    "body nested 1000 deep (img2img)": ("POST", "/sdapi/v1/img2img", '{"x": ' + DEEP + "}", 400),
    "object nested 1000 deep": ("POST", "/sdapi/v1/txt2img", '{"a":' * 1000 + "1" + "}" * 1000, 400),
    "a 4301-digit integer (txt2img)": ("POST", "/sdapi/v1/txt2img", '{"seed": ' + BIG + "}", 400),
    "a 4301-digit integer (img2img)": ("POST", "/sdapi/v1/img2img", '{"seed": -' + BIG + "}", 400),
    "limit=² on jobs": ("GET", "/sdapi/v1/jobs?limit=%C2%B2", None, 422),
    "limit=² on deliveries": ("GET", "/sdapi/v1/jobs/{job}/webhooks?limit=%C2%B2", None, 422),
    "cursor 2**63 on jobs": ("GET", "/sdapi/v1/jobs?cursor=" + cursor_of(b'{"before": 9223372036854775808}'),
                             None, 422),
    "cursor 2**63 on deliveries": ("GET", "/sdapi/v1/jobs/{job}/webhooks?cursor="
                                   + cursor_of(b'{"before": 9223372036854775808}'), None, 422),
    "deep cursor on jobs": ("GET", "/sdapi/v1/jobs?cursor=" + cursor_of(b'{"before": ' + DEEP.encode() + b"}"),
                            None, 422),
    "deep cursor on deliveries": ("GET", "/sdapi/v1/jobs/{job}/webhooks?cursor="
                                  + cursor_of(b'{"before": ' + DEEP.encode() + b"}"), None, 422),
    "NaN in a body": ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "metadata": {"score": NaN}}', 400),
    "-Infinity in a body": ("POST", "/sdapi/v1/txt2img", '{"cfg_scale": -Infinity}', 400),
    "a float that overflows": ("POST", "/sdapi/v1/txt2img", '{"cfg_scale": 1e400}', 400),
    "NaN inside a nested list": ("POST", "/sdapi/v1/txt2img",
                                 '{"alwayson_scripts": {"ControlNet": {"args": [[1, [NaN]]]}}}', 400),
    "a body one level deeper than the limit": ("POST", "/sdapi/v1/txt2img",
                                               '{"comments": ' + '{"a": ' * 63 + "[]" + "}" * 63 + "}", 400),
    "a 21-digit integer in override_settings": ("POST", "/sdapi/v1/txt2img",
                                                '{"override_settings": {"eta_noise_seed_delta": 1' + "0" * 20 + "}}",
                                                400),
    "a 5000-digit limit": ("GET", "/sdapi/v1/jobs?limit=" + "9" * 5000, None, 422),
}


@pytest.mark.parametrize("method, path, body, status", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_a_4xx_that_names_the_problem(client, monkeypatch, method, path, body, status):
    monkeypatch.setenv("MAX_BODY_BYTES", "65536")  # the unit client's 4 KiB would refuse these first
    context_module.reset_context()
    job = client.http.post("/sdapi/v1/txt2img", headers=ALICE, body=json.dumps(
        {"prompt": "x", "webhook_url": "https://example.com/h", "webhook_secret": "k3y-k3y"})).json_body
    response = client.http.request(method, path.format(job=job["job_id"]), headers=ALICE, body=(body or "").encode())
    assert response.status_code == status, response.body
    detail = json.dumps(response.json_body["detail"])
    assert re.search(r"nested|digits|NaN|Infinity|finite|limit|cursor", detail), detail
    assert sum(context_module.get_context().store.count_by_status().values()) == 1


# --- /health ---------------------------------------------------------------------------------------

@pytest.fixture
def sim_client(monkeypatch, tmp_path):
    """The API with one live simulated instance and one dead one, and a job that failed on the live
    one with a message a tenant chose."""
    with a1111_sim.SimulatedA1111(gen_seconds=0.05) as sim:
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
        monkeypatch.setenv("API_TOKENS", "alice:tok-alice")
        monkeypatch.setenv("A1111_BASE_URL", f"{sim.url},http://127.0.0.1:9")
        monkeypatch.setenv("HEALTH_CACHE_SECONDS", "30")
        context_module.reset_context()
        with chalice_test.Client(app_module.app) as test_client:
            yield test_client, sim
        context_module.reset_context()


def test_anonymous_health_tells_nothing_and_probes_a1111_at_most_once_per_cache_period(sim_client):
    client, sim = sim_client
    ctx = context_module.get_context()
    running = client.http.post("/sdapi/v1/txt2img", headers=ALICE, body='{"prompt": "a"}').json_body["job_id"]
    failed = client.http.post("/sdapi/v1/txt2img", headers=ALICE, body='{"prompt": "b"}').json_body["job_id"]
    now = 9e9
    claimed = ctx.store.claim_next(worker_id="worker-secret-7", instance=sim.url, lease_seconds=30, now=now).job
    ctx.store.heartbeat("worker-secret-7", info={"current_jobs": [claimed.id]}, now=now)
    other = ctx.store.claim_next(worker_id="worker-secret-7", instance=sim.url, lease_seconds=30, now=now).job
    ctx.store.fail(other.id, worker_id="worker-secret-7", code="a1111_rejected",
                   message="Script 'tenant-secret-script' not found", now=now)
    assert {claimed.id, other.id} == {running, failed}
    before = sim.stats()["connections"]

    answers = [client.http.get("/health") for _ in range(200)]

    assert {a.status_code for a in answers} == {200}
    body = answers[0].json_body
    assert body == {"status": "degraded", "components": {"store": "up", "queue": "up", "workers": "up",
                                                         "instances": "degraded"}}
    text = answers[-1].body.decode()
    for secret in (running, failed, "tenant-secret-script", "worker-secret-7", sim.url, "127.0.0.1", "sqlite"):
        assert secret not in text
    assert sim.stats()["connections"] - before <= 1  # one refresh for 200 calls
    detail = client.http.get("/health", headers=ALICE).json_body
    assert detail["store"]["ok"] is True and {i["name"] for i in detail["instances"]} == {sim.url, "http://127.0.0.1:9"}
    assert client.http.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_instances_tell_a_token_no_more_than_the_detailed_health(sim_client):
    client, _ = sim_client
    assert client.http.get("/sdapi/v1/instances").status_code == 401
    instances = client.http.get("/sdapi/v1/instances", headers=ALICE).json_body["instances"]
    detail = client.http.get("/health", headers=ALICE).json_body["instances"]
    assert [set(i) for i in instances] == [set(i) for i in detail]


# --- docs headers ----------------------------------------------------------------------------------

def test_docs_send_csp_nosniff_and_frame_options(client):
    for path in ("/doc", "/doc/swagger-ui.css", "/doc/swagger-ui-bundle.js", "/doc/nope", "/openapi.json"):
        headers = client.http.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
    page = client.http.get("/doc")
    csp = page.headers["Content-Security-Policy"]
    [script] = re.findall(r"<script>(.*?)</script>", page.body.decode(), re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}'" in csp and "unsafe-eval" not in csp


# --- settings --------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens", ["alice:", ",,", " ", "alice:tok,", ":tok", "bob:s3cret-value,alice: "])
def test_api_tokens_with_an_empty_entry_are_refused_without_echoing_them(tokens):
    with pytest.raises(pydantic.ValidationError) as raised:
        config.Settings(api_tokens=tokens)
    assert "API_TOKENS" in str(raised.value).upper() and "s3cret-value" not in str(raised.value)


def test_waitress_settings_reach_the_server(monkeypatch):
    import wsgi  # noqa: PLC0415 - binds nothing until main()
    monkeypatch.setenv("API_THREADS", "3")
    monkeypatch.setenv("API_CONNECTION_LIMIT", "50")
    monkeypatch.setenv("API_CHANNEL_TIMEOUT", "7")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////proc/no-such-dir/jobs.db")
    config.get_settings.cache_clear()
    context_module.reset_context()
    seen = {}
    monkeypatch.setattr(wsgi, "serve", lambda app, **kwargs: seen.update(kwargs))
    wsgi.main()
    context_module.reset_context()
    assert (seen["threads"], seen["connection_limit"], seen["channel_timeout"]) == (3, 50, 7.0)


@pytest.mark.parametrize("command", [["scripts/serve_all.py"], ["wsgi.py"], ["-m", "worker_fn"]])
def test_a_process_with_an_empty_token_refuses_to_start_and_says_why(command, tmp_path):
    env = dict(os.environ, API_TOKENS="bob:s3cret-value,alice:", DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
               PORT="9")
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "api_tokens" in done.stderr and "entry 2 of 2 has an empty token" in done.stderr
    assert "s3cret-value" not in done.stderr + done.stdout
