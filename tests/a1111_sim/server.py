"""A simulated AUTOMATIC1111 v1.10.1 API server: a test double for the worker and the A1111 client.

It is a real HTTP/1.1 server (keep-alive, one thread per connection) on 127.0.0.1 that behaves the way
`shared/a1111/NOTES.md` (A.1-A.14) describes A1111 v1.10.1:

- `POST /sdapi/v1/txt2img` and `/sdapi/v1/img2img` validate the body like pydantic v1 (coercion, unknown
  keys ignored, 422 in FastAPI's shape), then block under ONE global lock (A1111's `queue_lock`) for the
  generation time. The time is spread over `n_iter` jobs of `steps` sampling steps; the shared state
  advances step by step, so `GET /sdapi/v1/progress` follows A1111's formula. Each finished job yields
  `batch_size` real PNGs of width x height whose pixels depend only on (seed, prompt), with the
  infotext in a `parameters` tEXt chunk: a flat background and a block (a few KB), or, with
  `--noise-images`, random noise that does not compress (a 1024x1024 PNG is ~3 MB, as big as a real
  render or bigger), to measure what real image sizes cost. `info` is a JSON string (A.6),
  `parameters` echoes the request with every default filled.
- `POST /sdapi/v1/interrupt` -> `{}`: the running generation returns 200 at once with the images of
  the jobs finished so far and, as A1111 does (NOTES.md G), the interrupted job's images decoded
  from the step it reached (noise), with nothing marking them as partial. `POST /sdapi/v1/skip` ->
  `null`: the current job is dropped and the next one starts. As in A1111, both flags are cleared
  when a generation begins, so an interrupt sent while idle has no effect on the next generation.
- Errors use A1111's shape `{"error", "detail", "body", "errors"}` (404 "Init image not found", 500
  "Invalid encoded image", 422 "Script '<name>' not found"), except 422 validation errors and unknown
  routes, which keep FastAPI's `{"detail": ...}`.
- `--auth user:pass[,user2:pass2]` protects `/sdapi/v1/*` except `loras`/`refresh-loras` with HTTP
  Basic; a 401 carries no `WWW-Authenticate` header, so clients must send credentials pre-emptively.
- Also served: `GET /sdapi/v1/{sd-models,loras,options,samplers,schedulers,scripts,sd-vae,upscalers,
  embeddings}`, `POST /sdapi/v1/{options,refresh-checkpoints,refresh-loras}`, `GET /internal/ping`.
  `--catalog second` serves other lists (CATALOGS), to play a second instance: one checkpoint and one
  LoRA in common with the default (the checkpoint not hashed yet there), one of each of its own, fewer
  samplers. Generation always resolves models and LoRAs against the default lists.

Deliberate simplifications (A1111 differs): a request field sent as `null` falls back to its default,
except `steps`, `width`, `height`, `batch_size`, `n_iter` and `cfg_scale`, which answer 500 as A1111
would crash on them; `infotext` is not applied; init images that are URLs are refused with 500
"Requests not allowed"; images are always PNG at exactly width x height; `current_image` is available
for the whole generation.

Control API (not part of A1111; no auth; JSON in and out)
--------------------------------------------------------
`GET  /_sim/faults`   -> the current fault settings (below).
`POST /_sim/faults`   body: any subset of the keys below; merged into the settings; answers the
                      full settings. A bad key or value -> 400 `{"error": "BadRequest", "detail"}`.
    fail_next: int     the next N generation calls answer `fail_status` at once (before the lock)
    fail_status: int   200-599, default 500
    fail_body: any     JSON body of those answers; default A1111's 500 shape with
                       `errors: "simulated failure"`
    fail_text: str     if set, a raw `text/html` body instead of JSON (e.g. a proxy's 502 page)
    fail_as: str       if set, the status and body of one of A1111's real failures (FAILURES) in
                       place of fail_status/fail_body/fail_text: `type_error` and `zero_division`
                       (500 naming the exception, as hires fix without a second-pass setting and
                       `steps: 0` answer), `out_of_memory` (500 OutOfMemoryError), `bad_gateway`,
                       `unavailable`, `gateway_timeout` (a proxy's 502/503/504 page)
    hang_next: int     the next N generation calls take the lock and stall at step 0 (progress shows
                       them busy). An interrupt makes them answer 200 with `images: []`; reset or
                       stop drops their connection; after `hang_seconds` they carry on normally.
    hang_seconds: float   default 300
    drop_next: int     the next N generation calls close the connection without any answer
    slow_next: int     the next N generations take `slow_seconds` instead of `gen_seconds`
    slow_seconds: float   default 5
    slow_progress: float  every `GET /sdapi/v1/progress` waits this long before answering (0 = off)
    gen_seconds: float    generation time of every later generation
    At most one of drop > fail > hang > slow applies to a call, in that order; each counter counts
    down only when its fault is applied. Faults apply after auth and validation succeed.
`POST /_sim/reset`    -> `{}`: faults and gen_seconds back to the start values, counters and request
                      log cleared, A1111 state idle; in-flight generations are aborted (their
                      connections dropped) before it answers.
`GET  /_sim/stats`    -> counters since start/reset:
    connections                  TCP connections accepted
    generation_requests          txt2img/img2img calls that passed auth (valid or not)
    generations_started          generations that took the lock and began
    generations_completed        generations answered 200 (including interrupted ones)
    generations_interrupted      of those, how many ended early because of an interrupt
    concurrent_generations, max_concurrent_generations   (the latter must never exceed 1)
    interrupts, skips, progress_calls, auth_failures
    faults: {failed, dropped, hung, slowed}
    force_task_ids               every `force_task_id` received, in order
`GET  /_sim/requests` -> the last 100 valid generation calls:
                      `[{"kind", "payload" (as received), "auth_user", "force_task_id"}]`

The same operations from Python: `set_faults(**settings)`, `faults()`, `reset()`, `stats()`,
`requests_seen()` on `SimulatedA1111`.

    with SimulatedA1111(gen_seconds=0.2) as sim:    # port 0 picks a free port
        requests.post(sim.url + "/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 5})

Command line: `python -m tests.a1111_sim --host 127.0.0.1 --port 7860 --gen-seconds 0.5
[--auth user:pass] [--hang-seconds 300] [--verbose] [--noise-images]` prints one line
`A1111 simulator v1.10.1 ready on http://HOST:PORT` when it accepts connections and stops cleanly on
SIGINT/SIGTERM.
"""
from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime
import hashlib
import http.server
import io
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse

from PIL import Image, ImageDraw, PngImagePlugin

VERSION = "v1.10.1"

# --- Request models -----------------------------------------------------------------------------
# (field, kind, default) in schema order, from shared/a1111/openapi.json
# (StableDiffusionProcessingTxt2Img / StableDiffusionProcessingImg2Img). Every field is optional and
# nullable, as A1111 wraps every type in Optional.

_COMMON_FIELDS = (
    ("prompt", "str", ""),
    ("negative_prompt", "str", ""),
    ("styles", "list[str]", None),
    ("seed", "int", -1),
    ("subseed", "int", -1),
    ("subseed_strength", "float", 0),
    ("seed_resize_from_h", "int", -1),
    ("seed_resize_from_w", "int", -1),
    ("sampler_name", "str", None),
    ("scheduler", "str", None),
    ("batch_size", "int", 1),
    ("n_iter", "int", 1),
    ("steps", "int", 50),
    ("cfg_scale", "float", 7.0),
    ("width", "int", 512),
    ("height", "int", 512),
    ("restore_faces", "bool", None),
    ("tiling", "bool", None),
    ("do_not_save_samples", "bool", False),
    ("do_not_save_grid", "bool", False),
    ("eta", "float", None),
    ("denoising_strength", "float", None),
    ("s_min_uncond", "float", None),
    ("s_churn", "float", None),
    ("s_tmax", "float", None),
    ("s_tmin", "float", None),
    ("s_noise", "float", None),
    ("override_settings", "dict", None),
    ("override_settings_restore_afterwards", "bool", True),
    ("refiner_checkpoint", "str", None),
    ("refiner_switch_at", "float", None),
    ("disable_extra_networks", "bool", False),
    ("firstpass_image", "str", None),
    ("comments", "dict", None),
)

_TRAILING_FIELDS = (
    ("script_name", "str", None),
    ("script_args", "list", []),
    ("send_images", "bool", True),
    ("save_images", "bool", False),
    ("alwayson_scripts", "dict", {}),
    ("infotext", "str", None),
)

TXT2IMG_FIELDS = _COMMON_FIELDS + (
    ("enable_hr", "bool", False),
    ("firstphase_width", "int", 0),
    ("firstphase_height", "int", 0),
    ("hr_scale", "float", 2.0),
    ("hr_upscaler", "str", None),
    ("hr_second_pass_steps", "int", 0),
    ("hr_resize_x", "int", 0),
    ("hr_resize_y", "int", 0),
    ("hr_checkpoint_name", "str", None),
    ("hr_sampler_name", "str", None),
    ("hr_scheduler", "str", None),
    ("hr_prompt", "str", ""),
    ("hr_negative_prompt", "str", ""),
    ("force_task_id", "str", None),
    ("sampler_index", "str", "Euler"),
) + _TRAILING_FIELDS

IMG2IMG_FIELDS = tuple(
    ("denoising_strength", "float", 0.75) if name == "denoising_strength" else (name, kind, default)
    for name, kind, default in _COMMON_FIELDS
) + (
    ("init_images", "list", None),
    ("resize_mode", "int", 0),
    ("image_cfg_scale", "float", None),
    ("mask", "str", None),
    ("mask_blur_x", "int", 4),
    ("mask_blur_y", "int", 4),
    ("mask_blur", "int", None),
    ("mask_round", "bool", True),
    ("inpainting_fill", "int", 0),
    ("inpaint_full_res", "bool", True),
    ("inpaint_full_res_padding", "int", 0),
    ("inpainting_mask_invert", "int", 0),
    ("initial_noise_multiplier", "float", None),
    ("latent_mask", "str", None),
    ("force_task_id", "str", None),
    ("sampler_index", "str", "Euler"),
    ("include_init_images", "bool", False),
) + _TRAILING_FIELDS

REQUEST_FIELDS = {"txt2img": TXT2IMG_FIELDS, "img2img": IMG2IMG_FIELDS}

# Fields whose null makes A1111's processing crash (the sim answers 500 like it would).
def _a1111_exception(name: str, text: str) -> dict:
    """The body A1111's API answers for an exception it did not expect (a 500)."""
    return {"error": name, "detail": "", "body": "", "errors": text}


def _proxy_page(status: int, reason: str) -> str:
    return f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>"


# fail_as: (status, JSON body or an HTML page) of A1111's real failures (NOTES.md G).
FAILURES = {
    "type_error": (500, _a1111_exception("TypeError", "'>' not supported between instances of 'NoneType' and 'int'")),
    "zero_division": (500, _a1111_exception("ZeroDivisionError", "integer division or modulo by zero")),
    "out_of_memory": (500, _a1111_exception(
        "OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity; "
        "5.12 GiB already allocated; 1.03 GiB free; 5.50 GiB reserved in total by PyTorch)")),
    "bad_gateway": (502, _proxy_page(502, "Bad Gateway")),
    "unavailable": (503, _proxy_page(503, "Service Unavailable")),
    "gateway_timeout": (504, _proxy_page(504, "Gateway Timeout")),
}

_NOT_NULL = ("steps", "width", "height", "batch_size", "n_iter", "cfg_scale")
_MAX_PIXELS = 4096 * 4096

# --- Catalogue ------------------------------------------------------------------------------------

_MODELS_DIR = "/stable-diffusion-webui/models"

SD_MODELS = (
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": f"{_MODELS_DIR}/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    },
    {   # never loaded yet, so never hashed (A.8)
        "title": "SDXL/sd_xl_base_1.0.safetensors",
        "model_name": "SDXL_sd_xl_base_1.0",
        "hash": None,
        "sha256": None,
        "filename": f"{_MODELS_DIR}/Stable-diffusion/SDXL/sd_xl_base_1.0.safetensors",
        "config": None,
    },
)

LORAS = (
    {
        "name": "add_detail",
        "alias": "add_detail",
        "path": f"{_MODELS_DIR}/Lora/add_detail.safetensors",
        "metadata": {
            "ss_output_name": "add_detail",
            "ss_network_module": "networks.lora",
            "ss_tag_frequency": {"img": {"detailed": 12, "highres": 3}},
            "sshs_model_hash": hashlib.sha256(b"sim-lora:add_detail").hexdigest(),
            "sshs_legacy_hash": hashlib.sha256(b"sim-lora-legacy:add_detail").hexdigest()[:8],
        },
    },
    {
        "name": "film_grain",
        "alias": "film_grain",
        "path": f"{_MODELS_DIR}/Lora/film_grain.pt",
        "metadata": {},
    },
)

# Its 12-hex prefix is the real AutoV3 of Civitai's sample (shared/civitai/); the rest is made up.
WHIMSY_LORA = {
    "name": "pp-enchanted-whimsy",
    "alias": "pp-enchanted-whimsy",
    "path": f"{_MODELS_DIR}/Lora/pp-enchanted-whimsy.safetensors",
    "metadata": {
        "ss_output_name": "pp-enchanted-whimsy",
        "ss_base_model_version": "flux1",
        "sshs_model_hash": "bf82986f8597" + hashlib.sha256(b"sim-lora:pp-enchanted-whimsy").hexdigest()[12:],
    },
}
LORAS = LORAS + (WHIMSY_LORA,)

SAMPLERS = (
    {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {}},
    {"name": "DPM++ SDE", "aliases": ["k_dpmpp_sde"], "options": {"brownian_noise": "True"}},
    {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {"uses_ensd": "True"}},
    {"name": "Euler", "aliases": ["k_euler"], "options": {}},
    {"name": "DDIM", "aliases": ["ddim"], "options": {}},
    {"name": "UniPC", "aliases": ["unipc"], "options": {}},
)

SCHEDULERS = (
    {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": None,
     "need_inner_model": None},
    {"name": "uniform", "label": "Uniform", "aliases": None, "default_rho": None,
     "need_inner_model": True},
    {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
     "need_inner_model": None},
    {"name": "exponential", "label": "Exponential", "aliases": None, "default_rho": None,
     "need_inner_model": None},
    {"name": "sgm_uniform", "label": "SGM Uniform", "aliases": ["SGMUniform"], "default_rho": None,
     "need_inner_model": True},
)

SD_VAE = (
    {"model_name": "vae-ft-mse-840000-ema-pruned.safetensors",
     "filename": f"{_MODELS_DIR}/VAE/vae-ft-mse-840000-ema-pruned.safetensors"},
)

UPSCALERS = (
    {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4.0},
    {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None, "scale": 4.0},
    {"name": "R-ESRGAN 4x+", "model_name": "R-ESRGAN 4x+", "model_path": None, "model_url": None, "scale": 4.0},
)

EMBEDDINGS = {
    "loaded": {"easynegative": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768,
                                "vectors": 8}},
    "skipped": {},
}

CATALOGS = {
    "default": {"sd-models": SD_MODELS, "loras": LORAS, "samplers": SAMPLERS, "schedulers": SCHEDULERS,
                "sd-vae": SD_VAE, "upscalers": UPSCALERS, "embeddings": EMBEDDINGS},
    "second": {
        "sd-models": (
            {   # the same file as the default's first checkpoint, not loaded (so not hashed) here yet
                "title": "v1-5-pruned-emaonly.safetensors", "model_name": "v1-5-pruned-emaonly", "hash": None,
                "sha256": None, "filename": f"{_MODELS_DIR}/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
                "config": None,
            },
            {
                "title": "dreamshaper_8.safetensors [879db523c3]", "model_name": "dreamshaper_8",
                "hash": "879db523c3",
                "sha256": "879db523c3" + hashlib.sha256(b"sim-model:dreamshaper_8").hexdigest()[10:],
                "filename": f"{_MODELS_DIR}/Stable-diffusion/dreamshaper_8.safetensors", "config": None,
            },
        ),
        "loras": (
            LORAS[0],
            {"name": "ghibli_style", "alias": "ghibli_style", "path": f"{_MODELS_DIR}/Lora/ghibli_style.safetensors",
             "metadata": {"ss_output_name": "ghibli_style",
                          "sshs_model_hash": hashlib.sha256(b"sim-lora:ghibli_style").hexdigest()}},
        ),
        "samplers": SAMPLERS[:3], "schedulers": SCHEDULERS, "sd-vae": (), "upscalers": UPSCALERS[:2],
        "embeddings": {"loaded": {}, "skipped": {}},
    },
}

DEFAULT_OPTIONS = {
    "sd_model_checkpoint": SD_MODELS[0]["title"],
    "sd_checkpoint_hash": SD_MODELS[0]["sha256"],
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "samples_format": "png",
    "show_progress_every_n_steps": 10,
    "live_previews_enable": True,
    "sd_checkpoints_limit": 1,
    "lora_add_hashes_to_infotext": True,
}

# --- Validation like pydantic v1 ------------------------------------------------------------------

_BOOL_TRUE = {1, "1", "on", "t", "true", "y", "yes"}
_BOOL_FALSE = {0, "0", "off", "f", "false", "n", "no"}


class _FieldError(Exception):
    def __init__(self, msg: str, type_: str) -> None:
        super().__init__(msg)
        self.msg, self.type = msg, type_


def _to_int(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise _FieldError("value is not a valid integer", "type_error.integer") from None


def _to_float(value):
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _FieldError("value is not a valid float", "type_error.float") from None


def _to_str(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    raise _FieldError("str type expected", "type_error.str")


def _to_bool(value):
    if value is True or value is False:
        return value
    if isinstance(value, str):
        value = value.lower()
    try:
        if value in _BOOL_TRUE:
            return True
        if value in _BOOL_FALSE:
            return False
    except TypeError:  # unhashable (list, dict)
        pass
    raise _FieldError("value could not be parsed to a boolean", "type_error.bool")


def _to_list(value):
    if isinstance(value, list):
        return value
    raise _FieldError("value is not a valid list", "type_error.list")


def _to_dict(value):
    if isinstance(value, dict):
        return value
    try:
        return dict(value)
    except (TypeError, ValueError):
        raise _FieldError("value is not a valid dict", "type_error.dict") from None


_COERCE = {"str": _to_str, "int": _to_int, "float": _to_float, "bool": _to_bool, "list": _to_list,
           "dict": _to_dict}


def validate_request(body: object, fields: tuple) -> tuple[dict, list[dict]]:
    """Validate a parsed JSON body like pydantic v1: returns (values with defaults, errors)."""
    if not isinstance(body, dict):
        try:
            body = _to_dict(body)
        except _FieldError as exc:
            return {}, [{"loc": ["body"], "msg": exc.msg, "type": exc.type}]
    values, problems = {}, []
    for name, kind, default in fields:
        if name not in body:
            values[name] = copy.deepcopy(default)
            continue
        raw = body[name]
        if raw is None:
            values[name] = None
            continue
        try:
            if kind == "list[str]":
                items = _to_list(raw)
                out = []
                for index, item in enumerate(items):
                    try:
                        out.append(_to_str(item))
                    except _FieldError as exc:
                        problems.append({"loc": ["body", name, index], "msg": exc.msg, "type": exc.type})
                values[name] = out
            else:
                values[name] = _COERCE[kind](raw)
        except _FieldError as exc:
            problems.append({"loc": ["body", name], "msg": exc.msg, "type": exc.type})
    return values, problems


# --- Images ---------------------------------------------------------------------------------------


def _image_digest(seed: int, prompt: str) -> bytes:
    return hashlib.sha256(f"{seed}\n{prompt}".encode()).digest()


def render_png(width: int, height: int, seed: int, prompt: str, infotext: str, *, noise: bool = False) -> bytes:
    """A PNG whose pixels depend only on (seed, prompt): a background colour and a block, or with
    `noise` random pixels (incompressible, so the PNG is as big as a photo-like render)."""
    digest = _image_digest(seed, prompt)
    if noise:
        image = Image.frombytes("RGB", (width, height), random.Random(digest).randbytes(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), tuple(digest[0:3]))
        left, top = digest[6] * width // 256, digest[7] * height // 256
        right = min(width - 1, left + max(1, width // 3))
        bottom = min(height - 1, top + max(1, height // 3))
        ImageDraw.Draw(image).rectangle((left, top, right, bottom), fill=tuple(digest[3:6]))
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def render_preview(seed: int, prompt: str, fraction: float) -> bytes:
    """A 64x64 live preview fading from grey to the final colour as sampling advances."""
    target = _image_digest(seed, prompt)[0:3]
    colour = tuple(int(128 + (c - 128) * max(0.0, min(1.0, fraction))) for c in target)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_image(value: object) -> None:
    """Accept what A1111's decode_base64_to_image accepts; raise _HTTPError 500 otherwise."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        raise _HTTPError.a1111(500, "Requests not allowed")
    if isinstance(value, str) and value.startswith("data:image/"):
        value = value.split(";", 1)[1].split(",", 1)[1] if ";" in value and "," in value else ""
    try:
        data = base64.b64decode(value)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any failure is "Invalid encoded image" in A1111
        raise _HTTPError.a1111(500, "Invalid encoded image") from None


# --- HTTP plumbing --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


_DROP = object()  # "close the connection without answering"


def _json_reply(status: int, payload: object) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


class _HTTPError(Exception):
    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply

    @classmethod
    def a1111(cls, status: int, detail: str, *, error: str = "HTTPException", errors: str = ""):
        """A1111's api_middleware shape (A.13)."""
        return cls(_json_reply(status, {"error": error, "detail": detail, "body": "",
                                        "errors": errors}))

    @classmethod
    def fastapi(cls, status: int, detail: object):
        return cls(_json_reply(status, {"detail": detail}))


# --- Simulated A1111 state ------------------------------------------------------------------------


@dataclasses.dataclass
class _State:
    """A1111's `shared.state`, plus what the simulator needs for previews."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    time_start: float = 0.0
    textinfo: str | None = None
    preview: tuple | None = None  # (seed, prompt) of the current job

    def as_dict(self) -> dict:
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def begin(self, job: str) -> None:
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.skipped = self.interrupted = self.stopping_generation = False
        self.textinfo = None
        self.preview = None
        self.job = job

    def end(self) -> None:
        self.job = ""
        self.job_count = 0
        self.preview = None


def _new_stats() -> dict:
    return {
        "connections": 0,
        "generation_requests": 0,
        "generations_started": 0,
        "generations_completed": 0,
        "generations_interrupted": 0,
        "concurrent_generations": 0,
        "max_concurrent_generations": 0,
        "interrupts": 0,
        "skips": 0,
        "progress_calls": 0,
        "auth_failures": 0,
        "faults": {"failed": 0, "dropped": 0, "hung": 0, "slowed": 0},
        "force_task_ids": [],
    }


_COUNT_FAULTS = ("fail_next", "hang_next", "drop_next", "slow_next")
_SECONDS_FAULTS = ("hang_seconds", "slow_seconds", "slow_progress", "gen_seconds")
_LOG_LIMIT = 100


class SimulatedA1111:
    """The simulator: `start()` serves it on a background thread, `stop()` ends every thread."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, gen_seconds: float = 0.5,
                 auth: str = "", hang_seconds: float = 300.0, verbose: bool = False,
                 catalog: str = "default", noise_images: bool = False) -> None:
        if catalog not in CATALOGS:
            raise ValueError(f"unknown catalog {catalog!r}; known: {sorted(CATALOGS)}")
        self._catalog = CATALOGS[catalog]
        self.host, self._requested_port = host, port
        self.verbose = verbose
        self.noise_images = noise_images
        self._credentials = _parse_credentials(auth)
        self._initial_faults = {
            "fail_next": 0, "fail_status": 500, "fail_body": None, "fail_text": None, "fail_as": None,
            "hang_next": 0, "hang_seconds": float(hang_seconds), "drop_next": 0,
            "slow_next": 0, "slow_seconds": 5.0, "slow_progress": 0.0,
            "gen_seconds": float(gen_seconds),
        }
        self._cv = threading.Condition()  # guards everything below but the queue lock
        self._queue_lock = threading.Lock()  # A1111's queue_lock: one generation at a time
        self._faults = dict(self._initial_faults)
        self._stats = _new_stats()
        self._log: list[dict] = []
        self._state = _State()
        self._options = dict(DEFAULT_OPTIONS)
        self._epoch = 0  # bumped by reset(); in-flight generations of an older epoch are dropped
        self._closing = threading.Event()
        self._connections: dict[int, tuple[threading.Thread, socket.socket]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SimulatedA1111":
        if self._server is not None:
            return self
        self._closing.clear()
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"a1111-sim-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, release blocked requests, close connections and join every thread."""
        server = self._server
        if server is None:
            return
        self._closing.set()
        with self._cv:
            self._cv.notify_all()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                live = list(self._connections.values())
            if not live:
                break
            for _thread, sock in live:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for thread, _sock in live:
                thread.join(max(0.0, min(0.2, deadline - time.monotonic())))
        self._server = self._thread = None

    def __enter__(self) -> "SimulatedA1111":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- control API ---

    def faults(self) -> dict:
        with self._cv:
            return dict(self._faults)

    def set_faults(self, **settings) -> dict:
        """Merge fault settings (see the module docstring); raises ValueError on a bad one."""
        clean = {}
        for key, value in settings.items():
            if key in _COUNT_FAULTS:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{key} must be an integer >= 0")
            elif key in _SECONDS_FAULTS:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{key} must be a number >= 0")
                value = float(value)
            elif key == "fail_status":
                if not isinstance(value, int) or isinstance(value, bool) or not 200 <= value <= 599:
                    raise ValueError("fail_status must be an integer in 200..599")
            elif key == "fail_text":
                if value is not None and not isinstance(value, str):
                    raise ValueError("fail_text must be a string or null")
            elif key == "fail_as":
                if value is not None and value not in FAILURES:
                    raise ValueError(f"fail_as must be null or one of {sorted(FAILURES)}")
            elif key != "fail_body":
                raise ValueError(f"unknown fault {key!r}; known: {sorted(self._initial_faults)}")
            clean[key] = value
        with self._cv:
            self._faults.update(clean)
            return dict(self._faults)

    def reset(self, timeout: float = 5.0) -> None:
        """Back to the start: no faults, zero counters, idle state; in-flight generations dropped."""
        with self._cv:
            self._epoch += 1
            self._faults = dict(self._initial_faults)
            self._cv.notify_all()
        acquired = self._queue_lock.acquire(timeout=timeout)
        try:
            with self._cv:
                self._stats = _new_stats()
                self._log.clear()
                self._state = _State()
                self._options = dict(DEFAULT_OPTIONS)
        finally:
            if acquired:
                self._queue_lock.release()

    def stats(self) -> dict:
        with self._cv:
            return copy.deepcopy(self._stats)

    def requests_seen(self) -> list[dict]:
        with self._cv:
            return copy.deepcopy(self._log)

    # --- connection bookkeeping (called by the handler) ---

    def _track(self, handler: "_Handler") -> None:
        with self._cv:
            self._stats["connections"] += 1
            self._connections[id(handler)] = (threading.current_thread(), handler.connection)

    def _untrack(self, handler: "_Handler") -> None:
        with self._cv:
            self._connections.pop(id(handler), None)

    # --- request dispatch ---

    def handle(self, method: str, path: str, query: dict, headers, body: bytes):
        """Answer one request: a _Reply, or _DROP to close the connection without answering."""
        routes = _ROUTES.get(path)
        if routes is None:
            return _json_reply(404, {"detail": "Not Found"})
        route = routes.get(method)
        if route is None:
            return _json_reply(405, {"detail": "Method Not Allowed"})
        handler_name, needs_auth = route
        try:
            user = self._check_auth(headers) if needs_auth else None
            return getattr(self, handler_name)(query=query, headers=headers, body=body, user=user)
        except _HTTPError as exc:
            return exc.reply
        except Exception as exc:  # noqa: BLE001 - A1111 renders any exception as a 500
            return _HTTPError.a1111(500, "", error=type(exc).__name__, errors=str(exc)).reply

    def _check_auth(self, headers) -> str | None:
        if not self._credentials:
            return None
        scheme, _, param = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            self._count_auth_failure()
            raise _HTTPError.a1111(401, "Not authenticated")
        try:
            user, sep, password = base64.b64decode(param, validate=True).decode("ascii").partition(":")
            if not sep:
                raise ValueError("no colon")
        except (ValueError, binascii.Error):
            self._count_auth_failure()
            raise _HTTPError.a1111(401, "Invalid authentication credentials") from None
        expected = self._credentials.get(user)
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            self._count_auth_failure()
            raise _HTTPError.a1111(401, "Incorrect username or password")
        return user

    def _count_auth_failure(self) -> None:
        with self._cv:
            self._stats["auth_failures"] += 1

    # --- A1111 routes ---

    def _get_ping(self, **_):
        return _json_reply(200, {})

    def _get_sd_models(self, **_):
        return _json_reply(200, list(self._catalog["sd-models"]))

    def _get_loras(self, **_):
        return _json_reply(200, list(self._catalog["loras"]))

    def _get_samplers(self, **_):
        return _json_reply(200, list(self._catalog["samplers"]))

    def _get_schedulers(self, **_):
        return _json_reply(200, list(self._catalog["schedulers"]))

    def _get_sd_vae(self, **_):
        return _json_reply(200, list(self._catalog["sd-vae"]))

    def _get_upscalers(self, **_):
        return _json_reply(200, list(self._catalog["upscalers"]))

    def _get_embeddings(self, **_):
        return _json_reply(200, self._catalog["embeddings"])

    def _get_scripts(self, **_):
        return _json_reply(200, {"txt2img": [], "img2img": []})

    def _get_options(self, **_):
        with self._cv:
            return _json_reply(200, dict(self._options))

    def _post_options(self, *, body, headers, **_):
        changes = _parse_json_body(body, headers)
        if not isinstance(changes, dict):
            raise _HTTPError.fastapi(422, [{"loc": ["body"], "msg": "value is not a valid dict",
                                            "type": "type_error.dict"}])
        with self._cv:
            for key, value in changes.items():
                if key == "sd_model_checkpoint":
                    model = _find_model(value)
                    if model is None:
                        raise _HTTPError.a1111(500, "", error="RuntimeError",
                                               errors=f"model {value!r} not found")
                    self._options[key] = model["title"]
                    self._options["sd_checkpoint_hash"] = model["sha256"] or ""
                elif key in self._options:
                    self._options[key] = value
                elif value is not None:
                    raise _HTTPError.a1111(500, "", error="KeyError", errors=repr(key))
        return _json_reply(200, None)

    def _post_null(self, **_):
        return _json_reply(200, None)

    def _post_interrupt(self, **_):
        with self._cv:
            self._state.interrupted = True
            self._stats["interrupts"] += 1
            self._cv.notify_all()
        return _json_reply(200, {})

    def _post_skip(self, **_):
        with self._cv:
            self._state.skipped = True
            self._stats["skips"] += 1
            self._cv.notify_all()
        return _json_reply(200, None)

    def _get_progress(self, *, query, **_):
        try:
            skip_image = _to_bool(query.get("skip_current_image", ["false"])[-1])
        except _FieldError as exc:
            raise _HTTPError.fastapi(422, [{"loc": ["query", "skip_current_image"], "msg": exc.msg,
                                            "type": exc.type}]) from None
        with self._cv:
            delay = self._faults["slow_progress"]
        if delay:
            self._closing.wait(delay)
        with self._cv:
            self._stats["progress_calls"] += 1
            state = self._state
            snapshot = state.as_dict()
            if state.job_count == 0:
                return _json_reply(200, {"progress": 0.0, "eta_relative": 0.0, "state": snapshot,
                                         "current_image": None, "textinfo": state.textinfo})
            progress = 0.01
            if state.job_count > 0:
                progress += state.job_no / state.job_count
            if state.sampling_steps > 0:
                progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
            elapsed = time.time() - state.time_start
            eta_relative = elapsed / progress - elapsed
            progress = min(progress, 1)
            preview = state.preview
            fraction = state.sampling_step / state.sampling_steps if state.sampling_steps else 0.0
            textinfo = state.textinfo
        current_image = None
        if preview is not None and not skip_image:
            current_image = base64.b64encode(render_preview(*preview, fraction)).decode()
        return _json_reply(200, {"progress": progress, "eta_relative": eta_relative,
                                 "state": snapshot, "current_image": current_image,
                                 "textinfo": textinfo})

    def _post_txt2img(self, **kwargs):
        return self._generate("txt2img", **kwargs)

    def _post_img2img(self, **kwargs):
        return self._generate("img2img", **kwargs)

    # --- control routes ---

    def _sim_get_faults(self, **_):
        return _json_reply(200, self.faults())

    def _sim_post_faults(self, *, body, headers, **_):
        try:
            settings = json.loads(body or b"{}")
            if not isinstance(settings, dict):
                raise ValueError("body must be a JSON object")
            return _json_reply(200, self.set_faults(**settings))
        except ValueError as exc:
            return _json_reply(400, {"error": "BadRequest", "detail": str(exc)})

    def _sim_post_reset(self, **_):
        self.reset()
        return _json_reply(200, {})

    def _sim_get_stats(self, **_):
        return _json_reply(200, self.stats())

    def _sim_get_requests(self, **_):
        return _json_reply(200, self.requests_seen())

    # --- generation ---

    def _generate(self, kind: str, *, body, headers, user, **_):
        with self._cv:
            self._stats["generation_requests"] += 1
            epoch = self._epoch
        payload = _parse_json_body(body, headers)
        values, problems = validate_request(payload, REQUEST_FIELDS[kind])
        if problems:
            raise _HTTPError.fastapi(422, problems)
        with self._cv:
            self._log.append({"kind": kind, "payload": payload, "auth_user": user,
                              "force_task_id": values["force_task_id"]})
            del self._log[:-_LOG_LIMIT]
            if values["force_task_id"]:
                self._stats["force_task_ids"].append(values["force_task_id"])
        plan = self._plan(kind, values)  # every check A1111 makes before it takes the lock
        fault = self._take_fault()
        if fault == "drop":
            return _DROP
        if isinstance(fault, _Reply):
            return fault
        hang = fault == "hang"
        gen_seconds = fault[1] if isinstance(fault, tuple) else self.faults()["gen_seconds"]

        while not self._queue_lock.acquire(timeout=0.05):
            if self._aborted(epoch):
                return _DROP
        try:
            if self._aborted(epoch):
                return _DROP
            outcome = self._run(kind, plan, epoch=epoch, hang=hang, gen_seconds=gen_seconds)
        finally:
            self._queue_lock.release()
        if outcome is None:
            return _DROP
        images, interrupted, job_timestamp = outcome
        info = _info(plan, [index for index, _ in images], job_timestamp)
        parameters = dict(values)
        if kind == "img2img" and not values["include_init_images"]:
            parameters["init_images"] = parameters["mask"] = None
        response = {
            "images": [base64.b64encode(png).decode() for _, png in images] if plan["send_images"] else [],
            "parameters": parameters,
            "info": json.dumps(info),
        }
        with self._cv:
            if self._epoch == epoch:
                self._stats["generations_completed"] += 1
                self._stats["generations_interrupted"] += int(interrupted)
        return _json_reply(200, response)

    def _aborted(self, epoch: int) -> bool:
        return self._closing.is_set() or self._epoch != epoch

    def _take_fault(self):
        """The fault to apply to this generation call: 'drop', a _Reply, 'hang', ('slow', s) or None."""
        with self._cv:
            faults, counts = self._faults, self._stats["faults"]
            if faults["drop_next"]:
                faults["drop_next"] -= 1
                counts["dropped"] += 1
                return "drop"
            if faults["fail_next"]:
                faults["fail_next"] -= 1
                counts["failed"] += 1
                if faults["fail_as"] is not None:
                    status, failure = FAILURES[faults["fail_as"]]
                    if isinstance(failure, str):
                        return _Reply(status, failure.encode(), "text/html; charset=utf-8")
                    return _json_reply(status, failure)
                if faults["fail_text"] is not None:
                    return _Reply(faults["fail_status"], faults["fail_text"].encode(),
                                  "text/html; charset=utf-8")
                body = faults["fail_body"]
                if body is None:
                    body = {"error": "RuntimeError", "detail": "", "body": "",
                            "errors": "simulated failure"}
                return _json_reply(faults["fail_status"], body)
            if faults["hang_next"]:
                faults["hang_next"] -= 1
                counts["hung"] += 1
                return "hang"
            if faults["slow_next"]:
                faults["slow_next"] -= 1
                counts["slowed"] += 1
                return ("slow", faults["slow_seconds"])
            return None

    def _plan(self, kind: str, values: dict) -> dict:
        """Resolve the request the way A1111 does before and at the start of processing."""
        script_name = values["script_name"]
        if script_name:
            raise _HTTPError.a1111(422, f"Script '{script_name}' not found")
        for title in values["alwayson_scripts"] or {}:
            raise _HTTPError.a1111(422, f"Script '{title}' not found")
        if kind == "img2img":
            if values["init_images"] is None:
                raise _HTTPError.a1111(404, "Init image not found")
            if values["mask"]:
                _decode_image(values["mask"])
            for image in values["init_images"]:
                _decode_image(image)
            if not values["init_images"]:
                raise IndexError("list index out of range")
        for name in _NOT_NULL:
            if values[name] is None:
                raise TypeError(f"'{name}' must not be None")
        width, height = values["width"], values["height"]
        batch_size, n_iter, steps = values["batch_size"], values["n_iter"], values["steps"]
        if width < 1 or height < 1 or width * height > _MAX_PIXELS:
            raise ValueError(f"cannot generate a {width}x{height} image")
        if steps < 1:
            raise ZeroDivisionError("integer division or modulo by zero")  # what A1111 1.10 answers
        if batch_size < 1 or n_iter < 1:
            raise ValueError("batch_size and n_iter must be positive")

        def given(name, default):
            return default if values[name] is None else values[name]

        seed = given("seed", -1)
        seed = random.randrange(4294967294) if seed == -1 else seed
        subseed = given("subseed", -1)
        subseed = random.randrange(4294967294) if subseed == -1 else subseed
        subseed_strength = given("subseed_strength", 0)
        count = batch_size * n_iter
        sampler, scheduler = _resolve_sampler(values["sampler_name"] or values["sampler_index"],
                                              values["scheduler"])
        override = values["override_settings"] or {}
        with self._cv:
            model = _find_model(override.get("sd_model_checkpoint")) or _find_model(
                self._options["sd_model_checkpoint"])
        denoising = values["denoising_strength"]
        if kind == "img2img":
            denoising = 0.75 if denoising is None else denoising
            sampling_steps = max(1, int(min(denoising, 0.999) * steps))
        else:
            sampling_steps = steps
        prompt = given("prompt", "")
        loras = [] if values["disable_extra_networks"] else _lora_hashes(prompt)
        return {
            "kind": kind, "prompt": prompt, "negative_prompt": given("negative_prompt", ""),
            "seeds": [seed + (i if subseed_strength == 0 else 0) for i in range(count)],
            "subseeds": [subseed + i for i in range(count)], "subseed_strength": subseed_strength,
            "width": width, "height": height, "steps": steps, "sampling_steps": sampling_steps,
            "batch_size": batch_size, "n_iter": n_iter, "cfg_scale": values["cfg_scale"],
            "sampler": sampler, "scheduler": scheduler, "model": model,
            "denoising_strength": denoising, "styles": values["styles"] or [],
            "restore_faces": values["restore_faces"], "loras": loras,
            "seed_resize_from_w": given("seed_resize_from_w", -1),
            "seed_resize_from_h": given("seed_resize_from_h", -1),
            "clip_skip": (override.get("CLIP_stop_at_last_layers")
                          or self._options["CLIP_stop_at_last_layers"]),
            "send_images": given("send_images", True),
        }

    def _run(self, kind: str, plan: dict, *, epoch: int, hang: bool, gen_seconds: float):
        """Run one generation under the queue lock; None when aborted by reset/stop."""
        state = self._state
        n_iter, batch_size = plan["n_iter"], plan["batch_size"]
        sampling_steps = plan["sampling_steps"]
        with self._cv:
            state.begin(job=f"scripts_{kind}")
            state.job_count = n_iter
            job_timestamp = state.job_timestamp
            self._stats["generations_started"] += 1
            self._stats["concurrent_generations"] += 1
            self._stats["max_concurrent_generations"] = max(
                self._stats["max_concurrent_generations"], self._stats["concurrent_generations"])
        images: list[tuple[int, bytes]] = []  # (index in the batch, PNG)
        try:
            if hang:
                with self._cv:
                    state.preview = (plan["seeds"][0], plan["prompt"])
                    self._cv.wait_for(lambda: state.interrupted or self._aborted(epoch),
                                      timeout=self._faults["hang_seconds"])
                    if self._aborted(epoch):
                        return None
            step_seconds = gen_seconds / (n_iter * sampling_steps)
            for job_no in range(n_iter):
                first = job_no * batch_size
                with self._cv:
                    state.skipped = False
                    if state.interrupted:
                        break
                    state.job_no, state.sampling_step = job_no, 0
                    state.sampling_steps = sampling_steps
                    state.preview = (plan["seeds"][first], plan["prompt"])
                finished = True
                for step in range(1, sampling_steps + 1):
                    with self._cv:
                        self._cv.wait_for(
                            lambda: state.interrupted or state.skipped or self._aborted(epoch),
                            timeout=step_seconds)
                        if self._aborted(epoch):
                            return None
                        if state.interrupted or state.skipped:
                            finished = False
                            break
                        state.sampling_step = step
                if not finished and state.interrupted:  # A1111 decodes the latents of the step reached
                    for index in range(first, first + batch_size):
                        images.append((index, render_png(plan["width"], plan["height"], plan["seeds"][index],
                                                         plan["prompt"], _infotext(plan, index), noise=True)))
                if finished:
                    for index in range(first, first + batch_size):
                        png = render_png(plan["width"], plan["height"], plan["seeds"][index],
                                         plan["prompt"], _infotext(plan, index), noise=self.noise_images)
                        images.append((index, png))
            with self._cv:
                state.job_no = n_iter if not state.interrupted else state.job_no
                interrupted = state.interrupted
            return images, interrupted, job_timestamp
        finally:
            with self._cv:
                state.end()
                self._stats["concurrent_generations"] -= 1


# --- Generation helpers ---------------------------------------------------------------------------


def _resolve_sampler(name: str | None, scheduler: str | None) -> tuple[str, str]:
    """A1111's get_sampler_and_scheduler: 'DPM++ 2M Karras' splits; unknown -> first sampler."""
    names = [s["name"] for s in SAMPLERS]
    by_label = {s["label"]: s["label"] for s in SCHEDULERS}
    by_label.update({s["name"]: s["label"] for s in SCHEDULERS})
    chosen = by_label.get(scheduler or "", None)
    if name not in names:
        for label in by_label.values():
            if name and name.endswith(" " + label) and name[: -len(label) - 1] in names:
                name, chosen = name[: -len(label) - 1], chosen or label
                break
        else:
            name = names[0]
    return name, chosen or "Automatic"


def _find_model(alias: object) -> dict | None:
    if not isinstance(alias, str) or not alias:
        return None
    for model in SD_MODELS:
        name = model["title"].split(" [")[0]
        candidates = {model["title"], name, model["model_name"], name.rsplit("/", 1)[-1].rsplit(".", 1)[0]}
        if model["hash"]:
            candidates |= {model["hash"], model["sha256"], f"{name} [{model['hash']}]"}
        if alias in candidates:
            return model
    return None


_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")


def _lora_hashes(prompt: str) -> list[tuple[str, str]]:
    """(alias, 12-hex shorthash) for each known LoRA named in the prompt (A.9)."""
    found = []
    for name in _LORA_TAG.findall(prompt):
        for lora in LORAS:
            if name in (lora["name"], lora["alias"]):
                full = lora["metadata"].get("sshs_model_hash") or hashlib.sha256(
                    lora["path"].encode()).hexdigest()
                if (lora["alias"], full[:12]) not in found:
                    found.append((lora["alias"], full[:12]))
    return found


def _model_hash(model: dict) -> str:
    return model["hash"] or hashlib.sha256(model["title"].encode()).hexdigest()[:10]


def _infotext(plan: dict, index: int) -> str:
    lines = [plan["prompt"]]
    if plan["negative_prompt"]:
        lines.append(f"Negative prompt: {plan['negative_prompt']}")
    params = {
        "Steps": plan["steps"],
        "Sampler": plan["sampler"],
        "Schedule type": plan["scheduler"],
        "CFG scale": f"{plan['cfg_scale']:g}",
        "Seed": plan["seeds"][index],
        "Size": f"{plan['width']}x{plan['height']}",
        "Model hash": _model_hash(plan["model"]),
        "Model": plan["model"]["model_name"],
        "Denoising strength": plan["denoising_strength"] if plan["kind"] == "img2img" else None,
        "Variation seed": plan["subseeds"][index] if plan["subseed_strength"] else None,
        "Variation seed strength": plan["subseed_strength"] or None,
        "Lora hashes": _lora_param(plan["loras"]),
        "Version": VERSION,
    }
    lines.append(", ".join(f"{key}: {value}" for key, value in params.items() if value is not None))
    return "\n".join(lines)


def _lora_param(loras: list) -> str | None:
    if not loras:
        return None
    return '"' + ", ".join(f"{alias}: {short}" for alias, short in loras) + '"'


def _info(plan: dict, indices: list[int], job_timestamp: str) -> dict:
    """`Processed.js()` of A1111 v1.10.1 (A.6)."""
    count = len(plan["seeds"])
    extra = {"Lora hashes": _lora_param(plan["loras"]).strip('"')} if plan["loras"] else {}
    return {
        "prompt": plan["prompt"],
        "all_prompts": [plan["prompt"]] * count,
        "negative_prompt": plan["negative_prompt"],
        "all_negative_prompts": [plan["negative_prompt"]] * count,
        "seed": plan["seeds"][0],
        "all_seeds": plan["seeds"],
        "subseed": plan["subseeds"][0],
        "all_subseeds": plan["subseeds"],
        "subseed_strength": plan["subseed_strength"],
        "width": plan["width"],
        "height": plan["height"],
        "sampler_name": plan["sampler"],
        "cfg_scale": plan["cfg_scale"],
        "steps": plan["steps"],
        "batch_size": plan["batch_size"],
        "restore_faces": plan["restore_faces"],
        "face_restoration_model": None,
        "sd_model_name": plan["model"]["model_name"],
        "sd_model_hash": _model_hash(plan["model"]),
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": plan["seed_resize_from_w"],
        "seed_resize_from_h": plan["seed_resize_from_h"],
        "denoising_strength": plan["denoising_strength"],
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": [_infotext(plan, i) for i in indices],
        "styles": plan["styles"],
        "job_timestamp": job_timestamp,
        "clip_skip": plan["clip_skip"],
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }


def _parse_json_body(body: bytes, headers) -> object:
    """FastAPI 0.94's body handling: JSON when the content type says so (or is absent)."""
    if not body:
        raise _HTTPError.fastapi(422, [{"loc": ["body"], "msg": "field required",
                                        "type": "value_error.missing"}])
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type and not (content_type == "application/json" or content_type.endswith("+json")):
        return body.decode("latin-1")  # not parsed: fails validation as "not a valid dict"
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0) or 0
        raise _HTTPError.fastapi(422, [{
            "loc": ["body", pos], "msg": str(exc), "type": "value_error.jsondecode",
            "ctx": {"msg": getattr(exc, "msg", str(exc)), "doc": body.decode("utf-8", "replace"),
                    "pos": pos, "lineno": getattr(exc, "lineno", 1), "colno": getattr(exc, "colno", 1)},
        }]) from None


def _parse_credentials(auth: str) -> dict[str, str]:
    """`--api-auth user:pass[,user2:pass2]` as {user: password}."""
    credentials = {}
    for item in filter(None, (part.strip() for part in (auth or "").split(","))):
        user, sep, password = item.partition(":")
        if not sep:
            raise ValueError("auth must be user:pass[,user2:pass2]")
        credentials[user] = password
    return credentials


_ROUTES = {
    "/internal/ping": {"GET": ("_get_ping", False)},
    "/sdapi/v1/txt2img": {"POST": ("_post_txt2img", True)},
    "/sdapi/v1/img2img": {"POST": ("_post_img2img", True)},
    "/sdapi/v1/progress": {"GET": ("_get_progress", True)},
    "/sdapi/v1/interrupt": {"POST": ("_post_interrupt", True)},
    "/sdapi/v1/skip": {"POST": ("_post_skip", True)},
    "/sdapi/v1/options": {"GET": ("_get_options", True), "POST": ("_post_options", True)},
    "/sdapi/v1/sd-models": {"GET": ("_get_sd_models", True)},
    "/sdapi/v1/refresh-checkpoints": {"POST": ("_post_null", True)},
    "/sdapi/v1/loras": {"GET": ("_get_loras", False)},
    "/sdapi/v1/refresh-loras": {"POST": ("_post_null", False)},
    "/sdapi/v1/samplers": {"GET": ("_get_samplers", True)},
    "/sdapi/v1/schedulers": {"GET": ("_get_schedulers", True)},
    "/sdapi/v1/scripts": {"GET": ("_get_scripts", True)},
    "/sdapi/v1/sd-vae": {"GET": ("_get_sd_vae", True)},
    "/sdapi/v1/upscalers": {"GET": ("_get_upscalers", True)},
    "/sdapi/v1/embeddings": {"GET": ("_get_embeddings", True)},
    "/_sim/faults": {"GET": ("_sim_get_faults", False), "POST": ("_sim_post_faults", False)},
    "/_sim/reset": {"POST": ("_sim_post_reset", False)},
    "/_sim/stats": {"GET": ("_sim_get_stats", False)},
    "/_sim/requests": {"GET": ("_sim_get_requests", False)},
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn
    server_version = "uvicorn"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # like uvicorn: no 40 ms delayed-ACK stall on keep-alive connections

    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self.server.sim._track(self)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.sim._untrack(self)

    def handle_one_request(self) -> None:
        if self.server.sim._closing.is_set():
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        except OSError:  # the client went away
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        body = self.rfile.read(length) if length > 0 else b""
        parts = urllib.parse.urlsplit(self.path)
        reply = self.server.sim.handle(self.command, parts.path, urllib.parse.parse_qs(parts.query),
                                       self.headers, body)
        if reply is _DROP:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("X-Process-Time", f"{time.perf_counter() - started:.4f}")
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        if self.server.sim.verbose:
            sys.stderr.write(f"a1111-sim: {self.address_string()} {format % args}\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # SimulatedA1111.stop() joins the handler threads itself

    def __init__(self, address: tuple[str, int], sim: SimulatedA1111) -> None:
        self.sim = sim
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)
