"""The A1111 simulator behaves like A1111 v1.10.1 (shared/a1111/NOTES.md) and obeys its control API."""
from __future__ import annotations

import base64
import io
import json
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from PIL import Image

from tests import support
from tests.a1111_sim import server


ROOT = pathlib.Path(__file__).resolve().parents[2]
OPENAPI = next((p for p in (ROOT / "shared/a1111/openapi.json", ROOT.parent / "shared/a1111/openapi.json")
                if p.exists()), ROOT / "shared/a1111/openapi.json")
SMALL = {"width": 64, "height": 48, "steps": 4}
STATE_KEYS = {"skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp",
              "job_no", "sampling_step", "sampling_steps"}


shared_sim, sim = support.simulator_fixtures(gen_seconds=0.2, scope="module")


def post(sim, kind="txt2img", body=None, **kwargs):
    return requests.post(f"{sim.url}/sdapi/v1/{kind}", json=body if body is not None else dict(SMALL),
                         timeout=kwargs.pop("timeout", 10), **kwargs)


def get_progress(sim, **params):
    response = requests.get(f"{sim.url}/sdapi/v1/progress", params=params, timeout=10)
    assert response.status_code == 200
    return response.json()






def busy(sim):
    return get_progress(sim, skip_current_image="true")["state"]["job_count"] > 0


def pixels(b64: str) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        assert image.format == "PNG"
        return image.size, image.convert("RGB").tobytes()


# --- progress -------------------------------------------------------------------------------------


def test_idle_progress_has_a1111s_exact_idle_shape(sim):
    body = get_progress(sim)

    assert body == {"progress": 0, "eta_relative": 0, "state": body["state"], "current_image": None,
                    "textinfo": None}
    assert set(body["state"]) == STATE_KEYS
    assert body["state"]["job_count"] == 0 and body["state"]["job"] == ""


def test_progress_rises_by_a1111s_formula_during_generation(sim):
    sim.set_faults(gen_seconds=0.8)
    started = time.time()
    thread, box = support.in_background(lambda: post(sim, body={**SMALL, "n_iter": 2, "steps": 8}))
    samples = []
    while thread.is_alive():
        sample = get_progress(sim)
        if sample["state"]["job_count"] > 0:
            samples.append((time.time() - started, sample))
        time.sleep(0.02)
    thread.join()

    assert box["value"].status_code == 200
    assert len({s["progress"] for _, s in samples}) >= 4
    for elapsed, sample in samples:
        state = sample["state"]
        expected = 0.01 + state["job_no"] / state["job_count"] + (
            1 / state["job_count"]) * state["sampling_step"] / state["sampling_steps"]
        assert sample["progress"] == pytest.approx(min(expected, 1))
        assert state["job"] == "scripts_txt2img" and state["job_count"] == 2
        assert set(state) == STATE_KEYS
        if sample["progress"] >= 0.3:  # eta = elapsed/progress - elapsed, within timing noise
            assert sample["eta_relative"] == pytest.approx(
                elapsed / sample["progress"] - elapsed, abs=0.35)
    progresses = [s["progress"] for _, s in samples]
    assert progresses == sorted(progresses)
    assert progresses[0] < 0.5 < progresses[-1]
    later = [s["eta_relative"] for _, s in samples if s["progress"] >= 0.3]
    assert later[-1] < later[0]
    size, _ = pixels(samples[0][1]["current_image"])
    assert size == (64, 64)
    assert get_progress(sim)["state"]["job_count"] == 0


def test_progress_skips_the_preview_when_asked(sim):
    sim.set_faults(gen_seconds=0.6)
    thread, _ = support.in_background(lambda: post(sim))
    support.wait_until(lambda: busy(sim))

    assert get_progress(sim, skip_current_image="true")["current_image"] is None
    assert get_progress(sim, skip_current_image="false")["current_image"]
    thread.join()


# --- interrupt / skip -----------------------------------------------------------------------------


def test_interrupt_returns_the_finished_images_early_and_the_partial_one(sim):
    sim.set_faults(gen_seconds=1.2)
    started = time.monotonic()
    thread, box = support.in_background(lambda: post(sim, body={**SMALL, "n_iter": 4, "steps": 5, "seed": 7}))
    support.wait_until(lambda: get_progress(sim, skip_current_image="true")["state"]["job_no"] >= 1)

    answer = requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    thread.join()

    assert answer.status_code == 200 and answer.json() == {}
    response = box["value"]
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0
    body = response.json()
    info = json.loads(body["info"])
    assert 2 <= len(body["images"]) <= 4  # the finished jobs' images and the interrupted one's
    assert len(info["infotexts"]) == len(body["images"])
    assert info["all_seeds"] == [7, 8, 9, 10]
    stats = sim.stats()
    assert stats["interrupts"] == 1 and stats["generations_interrupted"] == 1


def test_interrupt_before_the_first_job_finishes_returns_its_partial_image_unmarked(sim):
    sim.set_faults(gen_seconds=1.0)
    thread, box = support.in_background(lambda: post(sim, body={**SMALL, "n_iter": 2, "batch_size": 2}))
    support.wait_until(lambda: busy(sim))

    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    thread.join()

    assert box["value"].status_code == 200
    body = box["value"].json()
    assert len(body["images"]) == 2  # the first job's batch, decoded at the step reached, as A1111 does
    assert json.loads(body["info"])["steps"] == SMALL["steps"]  # nothing says it was cut short


def test_interrupt_while_idle_does_not_cut_the_next_generation(sim):
    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    assert get_progress(sim)["state"]["interrupted"] is True  # A1111 keeps the flag until begin()

    response = post(sim, body={**SMALL, "n_iter": 2})

    assert len(response.json()["images"]) == 2


def test_skip_drops_the_current_job_and_continues(sim):
    sim.set_faults(gen_seconds=0.9)
    thread, box = support.in_background(lambda: post(sim, body={**SMALL, "n_iter": 3, "seed": 100}))
    support.wait_until(lambda: busy(sim))

    answer = requests.post(f"{sim.url}/sdapi/v1/skip", timeout=5)
    thread.join()

    assert answer.status_code == 200 and answer.content == b"null"
    body = box["value"].json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 2
    assert ["Seed: 101" in t for t in info["infotexts"]] == [True, False]
    assert sim.stats()["skips"] == 1 and sim.stats()["generations_interrupted"] == 0


# --- the queue lock -------------------------------------------------------------------------------


def test_generations_run_one_at_a_time(sim):
    sim.set_faults(gen_seconds=0.3)
    started = time.monotonic()
    calls = [support.in_background(lambda: (post(sim), time.monotonic())) for _ in range(3)]
    for thread, _ in calls:
        thread.join()

    finished = sorted(box["value"][1] - started for _, box in calls)
    assert all(box["value"][0].status_code == 200 for _, box in calls)
    assert finished[-1] >= 0.85
    assert finished[1] - finished[0] >= 0.25 and finished[2] - finished[1] >= 0.25
    stats = sim.stats()
    assert stats["generations_started"] == 3 and stats["generations_completed"] == 3
    assert stats["max_concurrent_generations"] == 1


# --- validation and errors ------------------------------------------------------------------------


def test_wrong_type_gives_fastapi_422(sim):
    response = post(sim, body={"steps": "abc"})

    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": ["body", "steps"], "msg": "value is not a valid integer",
                                           "type": "type_error.integer"}]}


def test_every_wrong_field_is_reported_in_schema_order(sim):
    response = post(sim, body={"restore_faces": "maybe", "styles": ["ok", {}], "cfg_scale": "hot",
                               "override_settings": 3, "script_args": "x", "prompt": []})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "prompt"], "msg": "str type expected", "type": "type_error.str"},
        {"loc": ["body", "styles", 1], "msg": "str type expected", "type": "type_error.str"},
        {"loc": ["body", "cfg_scale"], "msg": "value is not a valid float", "type": "type_error.float"},
        {"loc": ["body", "restore_faces"], "msg": "value could not be parsed to a boolean",
         "type": "type_error.bool"},
        {"loc": ["body", "override_settings"], "msg": "value is not a valid dict",
         "type": "type_error.dict"},
        {"loc": ["body", "script_args"], "msg": "value is not a valid list", "type": "type_error.list"},
    ]


def test_values_are_coerced_and_unknown_keys_ignored(sim):
    response = post(sim, body={"steps": "3", "width": "64", "height": 48.0, "cfg_scale": 5,
                               "restore_faces": "yes", "prompt": 12, "no_such_field": 1})

    assert response.status_code == 200
    parameters = response.json()["parameters"]
    assert (parameters["steps"], parameters["width"], parameters["height"]) == (3, 64, 48)
    assert parameters["cfg_scale"] == 5.0 and isinstance(parameters["cfg_scale"], float)
    assert parameters["restore_faces"] is True and parameters["prompt"] == "12"
    assert "no_such_field" not in parameters
    assert list(parameters) == [name for name, _, _ in server.TXT2IMG_FIELDS]
    assert parameters["sampler_index"] == "Euler" and parameters["send_images"] is True


def test_malformed_bodies_give_422(sim):
    bad_json = requests.post(f"{sim.url}/sdapi/v1/txt2img", data=b"{nope",
                             headers={"Content-Type": "application/json"}, timeout=5)
    not_object = post(sim, body=[1, 2])
    empty = requests.post(f"{sim.url}/sdapi/v1/txt2img", timeout=5)

    assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["type"] == "value_error.jsondecode"
    assert not_object.status_code == 422
    assert not_object.json()["detail"] == [{"loc": ["body"], "msg": "value is not a valid dict",
                                            "type": "type_error.dict"}]
    assert empty.status_code == 422 and empty.json()["detail"][0]["type"] == "value_error.missing"


@pytest.mark.parametrize("body", [dict(SMALL), {**SMALL, "init_images": None}])
def test_img2img_without_init_images_is_404(sim, body):
    response = post(sim, "img2img", body)

    assert response.status_code == 404
    assert response.json() == {"error": "HTTPException", "detail": "Init image not found", "body": "",
                               "errors": ""}


def test_img2img_with_an_undecodable_image_is_500(sim):
    response = post(sim, "img2img", {**SMALL, "init_images": ["bm90IGFuIGltYWdl"]})

    assert response.status_code == 500
    assert response.json() == {"error": "HTTPException", "detail": "Invalid encoded image", "body": "",
                               "errors": ""}


def test_img2img_accepts_raw_and_data_uri_images_and_hides_them_in_parameters(sim):
    init = post(sim).json()["images"][0]

    plain = post(sim, "img2img", {**SMALL, "init_images": [init]})
    echoed = post(sim, "img2img", {**SMALL, "init_images": ["data:image/png;base64," + init],
                                   "include_init_images": True})

    assert plain.status_code == 200 and echoed.status_code == 200
    assert plain.json()["parameters"]["init_images"] is None
    assert plain.json()["parameters"]["denoising_strength"] == 0.75
    assert echoed.json()["parameters"]["init_images"] == ["data:image/png;base64," + init]
    assert list(plain.json()["parameters"]) == [name for name, _, _ in server.IMG2IMG_FIELDS]


@pytest.mark.parametrize("body", [{"script_name": "x/y/z plot"},
                                  {"alwayson_scripts": {"ADetailer": {"args": []}}}])
def test_unknown_script_is_422_in_a1111_shape(sim, body):
    response = post(sim, body={**SMALL, **body})
    name = body.get("script_name") or "ADetailer"

    assert response.status_code == 422
    assert response.json() == {"error": "HTTPException", "detail": f"Script '{name}' not found",
                               "body": "", "errors": ""}


def test_null_for_a_field_a1111_cannot_process_is_500(sim):
    response = post(sim, body={**SMALL, "steps": None})

    assert response.status_code == 500
    assert response.json()["error"] == "TypeError"


def test_unknown_route_and_method(sim):
    assert requests.get(f"{sim.url}/sdapi/v1/nope", timeout=5).json() == {"detail": "Not Found"}
    assert requests.get(f"{sim.url}/sdapi/v1/txt2img", timeout=5).status_code == 405


# --- results --------------------------------------------------------------------------------------


def test_result_has_a1111s_shape_with_info_as_a_json_string(sim):
    response = post(sim, body={"prompt": "a cat", "negative_prompt": "dog", "width": 96, "height": 64,
                               "steps": 3, "batch_size": 2, "n_iter": 2, "seed": -1,
                               "sampler_name": "DPM++ 2M Karras"})

    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    info = json.loads(body["info"])
    assert {"prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "all_subseeds",
            "width", "height", "steps", "batch_size", "sampler_name", "cfg_scale", "sd_model_name",
            "sd_model_hash", "extra_generation_params", "index_of_first_image", "infotexts", "styles",
            "job_timestamp", "clip_skip", "version"} <= set(info)
    assert info["version"] == "v1.10.1" and info["index_of_first_image"] == 0
    assert info["seed"] != -1 and info["all_seeds"] == [info["seed"] + i for i in range(4)]
    assert info["all_prompts"] == ["a cat"] * 4 and info["sampler_name"] == "DPM++ 2M"
    assert re.fullmatch(r"\d{14}", info["job_timestamp"])
    assert len(body["images"]) == 4 and len(info["infotexts"]) == 4
    for b64, seed, infotext in zip(body["images"], info["all_seeds"], info["infotexts"], strict=True):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
            assert image.format == "PNG" and image.size == (96, 64)
            assert image.text["parameters"] == infotext
        assert infotext.startswith("a cat\nNegative prompt: dog\nSteps: 3, Sampler: DPM++ 2M, "
                                   "Schedule type: Karras")
        assert f"Seed: {seed}," in infotext and "Size: 96x64" in infotext
        assert infotext.endswith("Version: v1.10.1")
    assert body["parameters"]["sampler_name"] == "DPM++ 2M Karras"  # echoed as sent


def test_pixels_depend_only_on_seed_and_prompt(sim):
    def image(**fields):
        return pixels(post(sim, body={**SMALL, **fields}).json()["images"][0])

    first = image(seed=42, prompt="a red fox")
    again = image(seed=42, prompt="a red fox", steps=2, cfg_scale=3)
    other_seed = image(seed=43, prompt="a red fox")
    other_prompt = image(seed=42, prompt="a blue fox")

    assert first == again
    assert first[1] != other_seed[1] and first[1] != other_prompt[1]
    assert first[0] == (64, 48)


def test_send_images_false_returns_no_images(sim):
    response = post(sim, body={**SMALL, "send_images": False})

    assert response.status_code == 200 and response.json()["images"] == []
    assert json.loads(response.json()["info"])["infotexts"]


def test_lora_tags_appear_as_lora_hashes(sim):
    info = json.loads(post(sim, body={**SMALL, "prompt": "x <lora:add_detail:0.7>"}).json()["info"])

    short = server.LORAS[0]["metadata"]["sshs_model_hash"][:12]
    assert info["extra_generation_params"] == {"Lora hashes": f"add_detail: {short}"}
    assert f'Lora hashes: "add_detail: {short}"' in info["infotexts"][0]


def test_force_task_ids_and_requests_are_recorded(sim):
    post(sim, body={**SMALL, "force_task_id": "job-1"})
    post(sim, "img2img", {**SMALL, "force_task_id": "job-2"})  # 404, but A1111 saw the task id

    assert sim.stats()["force_task_ids"] == ["job-1", "job-2"]
    seen = sim.requests_seen()
    assert [(r["kind"], r["force_task_id"]) for r in seen] == [("txt2img", "job-1"), ("img2img", "job-2")]
    assert seen[0]["payload"] == {**SMALL, "force_task_id": "job-1"}


# --- catalogue ------------------------------------------------------------------------------------


def test_catalogue_routes_have_a1111s_shapes(sim):
    def get(path):
        response = requests.get(f"{sim.url}{path}", timeout=5)
        assert response.status_code == 200, path
        return response.json()

    models = get("/sdapi/v1/sd-models")
    assert len(models) >= 2
    assert all(set(m) == {"title", "model_name", "hash", "sha256", "filename", "config"} for m in models)
    hashed = [m for m in models if m["hash"]]
    assert any(m["hash"] is None and m["sha256"] is None for m in models)
    assert all(m["hash"] == m["sha256"][:10] and m["title"].endswith(f" [{m['hash']}]") for m in hashed)
    loras = get("/sdapi/v1/loras")
    assert all(set(lora) == {"name", "alias", "path", "metadata"} for lora in loras)
    assert any(re.fullmatch(r"[0-9a-f]{64}", lora["metadata"].get("sshs_model_hash", "")) for lora in loras)
    assert get("/sdapi/v1/options")["sd_model_checkpoint"] in {m["title"] for m in models}
    samplers = get("/sdapi/v1/samplers")
    assert all(isinstance(s["name"], str) and isinstance(s["aliases"], list)
               and isinstance(s["options"], dict) for s in samplers)
    assert all(set(s) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
               for s in get("/sdapi/v1/schedulers"))
    assert get("/sdapi/v1/scripts") == {"txt2img": [], "img2img": []}
    assert get("/internal/ping") == {}


def test_setting_the_checkpoint_option_takes_any_alias_and_refuses_unknown_models(sim):
    url = f"{sim.url}/sdapi/v1/options"

    changed = requests.post(url, json={"sd_model_checkpoint": "SDXL_sd_xl_base_1.0"}, timeout=5)
    unknown = requests.post(url, json={"sd_model_checkpoint": "nope.safetensors"}, timeout=5)

    assert changed.status_code == 200 and changed.content == b"null"
    assert requests.get(url, timeout=5).json()["sd_model_checkpoint"] == "SDXL/sd_xl_base_1.0.safetensors"
    assert unknown.status_code == 500
    assert unknown.json() == {"error": "RuntimeError", "detail": "", "body": "",
                              "errors": "model 'nope.safetensors' not found"}


# --- auth -----------------------------------------------------------------------------------------


def test_basic_auth_guards_sdapi_except_loras_and_answers_without_challenge():
    with server.SimulatedA1111(gen_seconds=0.05, auth="alice:s3cret") as sim:
        progress_url = f"{sim.url}/sdapi/v1/progress"
        missing = requests.get(progress_url, timeout=5)
        wrong = requests.get(progress_url, auth=("alice", "nope"), timeout=5)
        right = requests.get(progress_url, auth=("alice", "s3cret"), timeout=5)
        generated = requests.post(f"{sim.url}/sdapi/v1/txt2img", json=SMALL, auth=("alice", "s3cret"),
                                  timeout=5)
        loras = requests.get(f"{sim.url}/sdapi/v1/loras", timeout=5)
        ping = requests.get(f"{sim.url}/internal/ping", timeout=5)

        assert missing.status_code == 401
        assert missing.json() == {"error": "HTTPException", "detail": "Not authenticated", "body": "",
                                  "errors": ""}
        assert "WWW-Authenticate" not in missing.headers
        assert wrong.status_code == 401 and wrong.json()["detail"] == "Incorrect username or password"
        assert right.status_code == 200 and generated.status_code == 200
        assert loras.status_code == 200 and ping.status_code == 200
        assert sim.requests_seen()[0]["auth_user"] == "alice"
        assert sim.stats()["auth_failures"] == 2


# --- faults ---------------------------------------------------------------------------------------


def test_fail_next_answers_errors_then_recovers(sim):
    sim.set_faults(fail_next=2)

    answers = [post(sim) for _ in range(3)]

    assert [a.status_code for a in answers] == [500, 500, 200]
    assert answers[0].json() == {"error": "RuntimeError", "detail": "", "body": "",
                                 "errors": "simulated failure"}
    stats = sim.stats()
    assert stats["faults"]["failed"] == 2 and stats["generations_started"] == 1


def test_fail_with_a_custom_status_and_text_body(sim):
    sim.set_faults(fail_next=1, fail_status=502, fail_text="<html>bad gateway</html>")

    response = post(sim)

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html>bad gateway</html>"


def test_faults_apply_only_to_valid_generation_calls(sim):
    sim.set_faults(fail_next=1)

    assert post(sim, body={"steps": "x"}).status_code == 422
    assert post(sim).status_code == 500


def test_hang_stalls_at_step_zero_until_interrupted(sim):
    sim.set_faults(hang_next=1)
    thread, box = support.in_background(lambda: post(sim))
    support.wait_until(lambda: busy(sim))
    time.sleep(0.4)  # twice the generation time

    state = get_progress(sim)["state"]
    assert thread.is_alive() and state["sampling_step"] == 0 and state["job_count"] == 1
    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    thread.join(5)

    assert box["value"].status_code == 200 and box["value"].json()["images"] == []
    assert sim.stats()["faults"]["hung"] == 1


def test_reset_drops_hung_requests_and_clears_everything(sim):
    sim.set_faults(hang_next=1, gen_seconds=3)
    thread, box = support.in_background(lambda: post(sim))
    support.wait_until(lambda: busy(sim))

    started = time.monotonic()
    sim.reset()
    thread.join(5)

    assert time.monotonic() - started < 2
    assert isinstance(box.get("error"), requests.ConnectionError)
    assert sim.faults()["gen_seconds"] == 0.2 and sim.faults()["hang_next"] == 0
    assert sim.stats()["generation_requests"] == 0
    assert get_progress(sim)["state"]["job_count"] == 0
    assert post(sim).status_code == 200


def test_drop_closes_the_connection_without_an_answer(sim):
    sim.set_faults(drop_next=1)

    with pytest.raises(requests.ConnectionError):
        post(sim)
    assert post(sim).status_code == 200
    assert sim.stats()["faults"]["dropped"] == 1


def test_slow_progress_delays_progress_answers(sim):
    sim.set_faults(slow_progress=0.3)

    started = time.monotonic()
    get_progress(sim)

    assert time.monotonic() - started >= 0.3


def test_gen_seconds_and_slow_next_set_generation_time(sim):
    def timed():
        started = time.monotonic()
        assert post(sim).status_code == 200
        return time.monotonic() - started

    sim.set_faults(gen_seconds=0.05, slow_next=1, slow_seconds=0.6)
    slowed, normal = timed(), timed()

    assert slowed >= 0.6 and normal < 0.4
    assert sim.stats()["faults"]["slowed"] == 1


def test_control_api_over_http(sim):
    url = f"{sim.url}/_sim"

    merged = requests.post(f"{url}/faults", json={"fail_next": 1, "fail_status": 503}, timeout=5).json()
    bad = requests.post(f"{url}/faults", json={"explode": 1}, timeout=5)
    failed = post(sim)
    stats = requests.get(f"{url}/stats", timeout=5).json()
    seen = requests.get(f"{url}/requests", timeout=5).json()
    reset = requests.post(f"{url}/reset", timeout=5)

    assert merged["fail_next"] == 1 and merged["fail_status"] == 503 and merged["gen_seconds"] == 0.2
    assert bad.status_code == 400 and "explode" in bad.json()["detail"]
    assert failed.status_code == 503 and stats["faults"]["failed"] == 1
    assert seen[0]["kind"] == "txt2img"
    assert reset.status_code == 200
    assert requests.get(f"{url}/faults", timeout=5).json()["fail_status"] == 500


@pytest.mark.parametrize("settings", [{"fail_next": -1}, {"fail_status": 99}, {"gen_seconds": "x"},
                                      {"nope": 1}])
def test_bad_fault_settings_are_refused(sim, settings):
    with pytest.raises(ValueError):
        sim.set_faults(**settings)


# --- lifecycle ------------------------------------------------------------------------------------


def test_stop_releases_hung_requests_and_ends_every_thread():
    before = set(threading.enumerate())
    sim = server.SimulatedA1111(gen_seconds=0.05).start()
    session = requests.Session()
    assert session.get(f"{sim.url}/internal/ping", timeout=5).status_code == 200  # idle keep-alive
    sim.set_faults(hang_next=1)
    thread, box = support.in_background(lambda: post(sim))
    support.wait_until(lambda: busy(sim))

    url = sim.url
    started = time.monotonic()
    sim.stop()
    thread.join(5)

    assert time.monotonic() - started < 2
    assert isinstance(box.get("error"), requests.ConnectionError)
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/internal/ping", timeout=1)
    session.close()


def test_command_line_serves_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.a1111_sim", "--host", "127.0.0.1", "--port", "0",
         "--gen-seconds", "0.05", "--auth", "u:p"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        thread, box = support.in_background(process.stdout.readline)
        thread.join(10)
        match = re.fullmatch(r"A1111 simulator v1\.10\.1 ready on (http://127\.0\.0\.1:\d+)\n",
                             box.get("value", ""))
        assert match, box
        url = match.group(1)

        assert requests.get(f"{url}/internal/ping", timeout=5).json() == {}
        requests.post(f"{url}/_sim/faults", json={"fail_next": 1}, timeout=5).raise_for_status()
        first = requests.post(f"{url}/sdapi/v1/txt2img", json=SMALL, auth=("u", "p"), timeout=5)
        second = requests.post(f"{url}/sdapi/v1/txt2img", json=SMALL, auth=("u", "p"), timeout=5)
        assert (first.status_code, second.status_code) == (500, 200)
        assert requests.get(f"{url}/_sim/stats", timeout=5).json()["faults"]["failed"] == 1

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


@pytest.mark.skipif(not OPENAPI.exists(), reason="shared/a1111/openapi.json is not available")
@pytest.mark.parametrize("kind, schema", [("txt2img", "StableDiffusionProcessingTxt2Img"),
                                          ("img2img", "StableDiffusionProcessingImg2Img")])
def test_request_fields_match_the_saved_openapi(kind, schema):
    properties = json.loads(OPENAPI.read_text())["components"]["schemas"][schema]["properties"]

    fields = server.REQUEST_FIELDS[kind]
    assert [name for name, _, _ in fields] == list(properties)
    assert {name: default for name, _, default in fields} == {
        name: prop.get("default") for name, prop in properties.items()}
