"""pydantic models of what a client sends: the A1111 request bodies, our own job options, and submit parsing.

The two A1111 models mirror `StableDiffusionProcessingTxt2Img` / `StableDiffusionProcessingImg2Img` of
A1111 v1.10.1's openapi.json field for field, because a client's body is validated against them and
then sent on to A1111. They are written out here rather than read from that document at run time;
tests/unit/test_a1111_drift.py fails when they drift from it.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import re
import typing
import urllib.parse

import pydantic
import pydantic_core
import typing_extensions

from chalicelib import a1111_policy
from chalicelib import config
from chalicelib import errors
from chalicelib import vocabulary


class JobKind(str, enum.Enum):
    """The A1111 route a job runs on; also its `type` in job views."""

    txt2img = "txt2img"
    img2img = "img2img"


# --- A1111 request bodies ------------------------------------------------------------------------
#
# Types and defaults follow the document. A field without a default there is Optional in A1111
# (pydantic v1), so it is `X | None = None` here; a field with a default is not nullable, so a null
# that A1111 would trip over mid-job (steps, width, prompt...) is a 422 at submit instead. `seed` and
# `subseed` are the exceptions: A1111 takes their null as a random seed, so a null is sent on as -1
# (A1111's own "random"), and the model stays the document's.

_A1111_CONFIG = pydantic.ConfigDict(
    extra="allow",  # fields listed in A1111_EXTRA_FIELDS (forks, extensions) are sent on unchanged
    coerce_numbers_to_str=True,  # pydantic v1 turned 7 into "7" for str fields; keep accepting it
    allow_inf_nan=False,  # JSON has no NaN/Infinity, and A1111 would fail on them mid-job
    defer_build=True,  # built at the first submit: a cold start that serves a GET or a worker never pays
)


def _null_is_random(value: object) -> object:
    """A1111 runs a null seed as a random one: accept it, as -1, A1111's word for random."""
    return -1 if value is None else value


# A validator in the field's type rather than a decorator on the model, so that it also applies when
# the model's fields are validated as a TypedDict (`_request_validator`).
Seed = typing.Annotated[int, pydantic.BeforeValidator(_null_is_random)]


class A1111Request(pydantic.BaseModel):
    """The fields A1111's txt2img and img2img requests share (every one optional, as in A1111)."""

    model_config = _A1111_CONFIG

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: Seed = -1
    subseed: Seed = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, typing.Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, typing.Any] | None = None
    force_task_id: str | None = None
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[typing.Any] = []  # pydantic copies mutable defaults per instance
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, typing.Any] = {}
    infotext: str | None = None


class StableDiffusionProcessingTxt2Img(A1111Request):
    """Body of `POST /sdapi/v1/txt2img`: the shared fields plus the hires-fix ones."""

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class StableDiffusionProcessingImg2Img(A1111Request):
    """Body of `POST /sdapi/v1/img2img`: the shared fields plus init images, mask and inpainting."""

    denoising_strength: float = 0.75  # img2img redefines it: here it is the strength of the edit
    init_images: list[typing.Any] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


A1111_REQUEST_MODELS: dict[JobKind, type[A1111Request]] = {
    JobKind.txt2img: StableDiffusionProcessingTxt2Img,
    JobKind.img2img: StableDiffusionProcessingImg2Img,
}


# --- Our own submit fields -----------------------------------------------------------------------

# A Literal of the event names rather than the enum itself, so that an unknown name stays a
# `literal_error` in the 422 and the document lists the names inline.
WebhookEvent = typing.Literal[tuple(event.value for event in vocabulary.JobEvent)]
MAX_METADATA_BYTES = 16 * 1024
MAX_WEBHOOK_URL_LENGTH = 2048
MAX_INSTANCE_LABELS = 16
InstanceLabel = typing.Annotated[str, pydantic.StringConstraints(pattern=r"^[^\s+;,]{1,64}$")]


def _check_webhook_url(url: str) -> str:
    """Syntax only (http/https, a host, no credentials). Address safety needs DNS, so it is
    `webhooks.url_safety.check_url`'s job, at submit (service) and again at every delivery."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise pydantic_core.PydanticCustomError("url_parsing", "webhook_url must not contain whitespace")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        raise pydantic_core.PydanticCustomError("url_parsing", "webhook_url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise pydantic_core.PydanticCustomError("url_scheme", "webhook_url must be an http or https URL")
    if "@" in parts.netloc:
        raise pydantic_core.PydanticCustomError(
            "value_error", "webhook_url must not contain credentials (user:password@); use webhook_secret")
    if not parts.hostname:
        raise pydantic_core.PydanticCustomError("url_parsing", "webhook_url has no host")
    return url


def _check_metadata(metadata: dict) -> dict:
    """Metadata is stored with the job and echoed in every view and webhook, so it stays small."""
    try:
        size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):
        raise pydantic_core.PydanticCustomError("value_error", "metadata must be plain JSON") from None
    if size > MAX_METADATA_BYTES:
        raise pydantic_core.PydanticCustomError(
            "too_long", "metadata is {size} bytes as JSON; the limit is {limit} (16 KiB)",
            {"size": size, "limit": MAX_METADATA_BYTES})
    return metadata


class JobOptions(pydantic.BaseModel):
    """The fields a client adds to an A1111 body for the job itself; they never reach A1111."""

    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)

    webhook_url: typing.Annotated[
        str, pydantic.Field(max_length=MAX_WEBHOOK_URL_LENGTH), pydantic.AfterValidator(_check_webhook_url)
    ] | None = None
    # repr=False keeps the secret out of logs that print the options.
    webhook_secret: str | None = pydantic.Field(None, min_length=1, max_length=256, repr=False)
    webhook_events: list[WebhookEvent] | None = None
    priority: int = pydantic.Field(0, ge=-100, le=100)
    metadata: typing.Annotated[dict[str, typing.Any], pydantic.AfterValidator(_check_metadata)] | None = None
    # Routing: only an instance configured with every one of these labels runs the job.
    instance_labels: list[InstanceLabel] | None = pydantic.Field(None, max_length=MAX_INSTANCE_LABELS)
    # `legacy`: deliveries in the original proxy's shape (docs/legacy.md); the camelCase fields imply it.
    webhook_format: typing.Literal["standard", "legacy"] | None = None


# The original proxy's camelCase names of our fields: accepted, never forwarded, stored or shown.
LEGACY_ALIASES = {"webhookUrl": "webhook_url", "webhookKey": "webhook_secret"}
_OWN_FIELDS = frozenset(JobOptions.model_fields) | frozenset(LEGACY_ALIASES)


class ModelChoiceRequest(pydantic.BaseModel):
    """Body of `POST /sdapi/v1/options`: only `sd_model_checkpoint` (chalicelib/model_choice.py checks it;
    this model documents it)."""

    model_config = pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]"}]})

    sd_model_checkpoint: str = pydantic.Field(min_length=1, max_length=512)


# --- Submission parsing --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Limits:
    """Request limits from the settings; they keep one job from tying up a GPU for hours."""

    max_width: int
    max_height: int
    max_steps: int
    max_images: int
    max_prompt_length: int

    @classmethod
    def from_settings(cls, settings: config.Settings) -> "Limits":
        """Built once per distinct set of values (every submit asks)."""
        return _limits(settings.max_width, settings.max_height, settings.max_steps, settings.max_images,
                       settings.max_prompt_length)


@functools.lru_cache(maxsize=8)
def _limits(max_width: int, max_height: int, max_steps: int, max_images: int, max_prompt_length: int) -> Limits:
    return Limits(max_width=max_width, max_height=max_height, max_steps=max_steps, max_images=max_images,
                  max_prompt_length=max_prompt_length)


@dataclasses.dataclass(frozen=True)
class Submission:
    """A validated submit: the body for A1111 and our own options, kept apart."""

    kind: JobKind
    payload: dict  # what goes to A1111: the client's fields (coerced) as a1111_policy governs them
    options: JobOptions
    dropped_fields: tuple[str, ...] = ()  # fields A1111 does not define, not forwarded (A1111_EXTRA_FIELDS)


def parse_submission(kind: JobKind | str, body: object, *, limits: Limits,
                     policy: a1111_policy.Policy = a1111_policy.DEFAULT) -> Submission:
    """Validate a submit body; every problem found is reported at once as one 422."""
    kind = JobKind(kind)
    if not isinstance(body, dict):
        raise errors.ValidationFailed.single(["body"], "the request body must be a JSON object", "model_type")
    problems: list[dict] = []
    model = A1111_REQUEST_MODELS[kind]
    # force_task_id is the worker's (it sets the job id there to follow progress); a client's is dropped.
    request_body = {k: v for k, v in body.items() if k not in _OWN_FIELDS and k != "force_task_id"}
    request_body, dropped = a1111_policy.split_fields(request_body, known=model.model_fields, policy=policy)
    payload, failed = _validate_request(kind, request_body, problems)
    if kind is JobKind.img2img and "init_images" not in failed and not payload.get("init_images"):
        problems.append(_problem("init_images", "img2img needs at least one init image",
                                 "too_short" if payload.get("init_images") == [] else "missing"))
    problems.extend(_limit_problems(kind, payload, limits=limits, skip=failed))
    problems.extend(a1111_policy.problems(payload, policy=policy))
    options = _validate_options(_own_fields(body, problems), problems)
    if problems:
        raise errors.ValidationFailed(problems)
    return Submission(kind=kind, payload=a1111_policy.enforce(payload, policy=policy), options=options,
                      dropped_fields=tuple(dropped))


def _problem(field: str, msg: str, type_: str) -> dict:
    return {"loc": ["body", field], "msg": msg, "type": type_}


def _pydantic_problems(exc: pydantic.ValidationError) -> list[dict]:
    """pydantic's errors in the contract's shape; never with the input (it may be a secret)."""
    return [
        {"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _own_fields(body: dict, problems: list[dict]) -> dict:
    """Our fields of `body`, camelCase aliases renamed; a job sent with one of them gets legacy webhooks
    unless it asks for `webhook_format` itself."""
    data = {k: v for k, v in body.items() if k in _OWN_FIELDS and k not in LEGACY_ALIASES}
    for alias, name in LEGACY_ALIASES.items():
        if alias not in body:
            continue
        if name in body:
            problems.append(_problem(alias, f"send {name} or {alias}, not both", "value_error"))
            continue
        data[name] = body[alias]
        data.setdefault("webhook_format", "legacy")
    return data


def _validate_options(data: dict, problems: list[dict]) -> JobOptions | None:
    try:
        return JobOptions.model_validate(data)
    except pydantic.ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        return None


def _validate_request(kind: JobKind, data: dict, problems: list[dict]) -> tuple[dict, set[str]]:
    """The fields of `data` validated (coerced, as A1111 will get them) and the names of those that failed.

    On failure the other fields are validated again without the bad ones, so that the limits can
    still be checked and reported in the same 422.
    """
    validator = _request_validator(kind)
    try:
        return validator.validate_python(data), set()
    except pydantic.ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        failed = {str(item["loc"][0]) for item in exc.errors(include_url=False) if item["loc"]}
    # Every error is about one field (the models have no model-level checks), so this validates.
    return validator.validate_python({k: v for k, v in data.items() if k not in failed}), failed


_MODEL_DECORATORS = ("validators", "field_validators", "root_validators", "model_validators", "field_serializers",
                     "model_serializers", "computed_fields")


@functools.cache
def _request_validator(kind: JobKind) -> pydantic.TypeAdapter:
    """The A1111 model of `kind` as a TypedDict of the same fields (types, validators, config), none
    required: it validates to a dict of the fields the client sent, coerced, which is what A1111 gets.
    The model itself would also fill in its ~55 other fields, which `model_dump(exclude_unset=True)`
    would then drop again: two to three times the CPU of a submit's validation. Built at the first
    submit, as the models are.
    """
    model = A1111_REQUEST_MODELS[kind]
    decorators = model.__pydantic_decorators__
    if any(getattr(decorators, name) for name in _MODEL_DECORATORS):
        raise TypeError(f"{model.__name__} has validators or serializers on the model, which its TypedDict would "
                        "not run: put them in the fields' types (typing.Annotated), as Seed does")
    fields = {name: typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
              for name, field in model.model_fields.items()}
    fields_type = typing_extensions.TypedDict(f"{model.__name__}Fields", fields, total=False)
    fields_type.__pydantic_config__ = {k: v for k, v in model.model_config.items() if k != "defer_build"}
    return pydantic.TypeAdapter(fields_type)


# A1111 (modules/infotext_utils.py) reads the last line of `infotext` as "Key: value, ..." pairs
# and fills every request field the client did not send from it. Same pattern, but without the
# leading \s* and with keys of at most 64 characters, which keeps it linear on hostile input.
_INFOTEXT_PARAM = re.compile(r'(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_INFOTEXT_SIZE = re.compile(r"^(\d+)x(\d+)$")
_INFOTEXT_FIELDS = {  # infotext key → (request field, type), from A1111's paste fields
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", int),
    "Size-1": ("width", int),
    "Size-2": ("height", int),
    "Batch size": ("batch_size", int),
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
}


def _infotext_values(infotext: str) -> dict[str, object]:
    """The limited request fields that A1111 would take from `infotext`, by field name."""
    *lines, last = infotext.strip().split("\n")
    if len(_INFOTEXT_PARAM.findall(last)) < 3:
        lines, last = [*lines, last], ""
    params = {"Prompt": "", "Negative prompt": ""}
    key = "Prompt"
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            key, line = "Negative prompt", line[len("Negative prompt:"):].strip()
        params[key] += ("\n" if params[key] else "") + line
    for name, value in _INFOTEXT_PARAM.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        size = _INFOTEXT_SIZE.match(value)
        if size:
            params[f"{name}-1"], params[f"{name}-2"] = size.groups()
        else:
            params[name] = value
    values: dict[str, object] = {}
    for label, (field, type_) in _INFOTEXT_FIELDS.items():
        if label in params:
            try:
                value = type_(params[label])
            except (TypeError, ValueError):
                continue  # A1111 fails on it too; nothing to hold against the limits
            if type_ is not float or math.isfinite(value):
                values[field] = value
    # A1111 turns hires on when the infotext has a denoising strength (its hires resize defaults to 0).
    if "Denoising strength" in params:
        values["enable_hr"] = True
    return values


# Every field _limit_problems reads, and so every field _infotext_values may fill in.
_LIMITED_FIELDS = ("width", "height", "steps", "batch_size", "n_iter", "hr_second_pass_steps", "prompt",
                   "negative_prompt", "hr_prompt", "hr_negative_prompt", "enable_hr", "hr_scale", "hr_resize_x",
                   "hr_resize_y")


@functools.cache
def _limited_defaults(kind: JobKind) -> dict[str, object]:
    """The defaults of the limited fields that the model of `kind` has (img2img has no hires fields)."""
    fields = A1111_REQUEST_MODELS[kind].model_fields
    return {name: fields[name].default for name in _LIMITED_FIELDS if name in fields}


def _limit_problems(kind: JobKind, payload: dict, *, limits: Limits, skip: set[str]) -> list[dict]:
    """Limits on the values A1111 will use: the client's, else those from `infotext`, else defaults.

    Fields in `skip` failed validation and are already reported.
    """
    values = {name: payload.get(name, default) for name, default in _limited_defaults(kind).items()
              if name not in skip}
    from_infotext: set[str] = set()
    if payload.get("infotext") and "infotext" not in skip:
        for name, value in _infotext_values(payload["infotext"]).items():
            if name in values and name not in payload:
                values[name] = value
                from_infotext.add(name)
    problems: list[dict] = []

    def fail(field: str, subject: str, value: object, rule: str, type_: str) -> None:
        if field in from_infotext:
            problems.append(_problem("infotext", f"{subject} (from infotext) is {value}; {rule}", type_))
        else:
            problems.append(_problem(field, f"{subject} is {value}; {rule}", type_))

    for name in ("width", "height", "steps", "batch_size", "n_iter"):
        if name in values and values[name] < 1:
            fail(name, name, values[name], "it must be at least 1", "greater_than_equal")
    if "hr_second_pass_steps" in values and values["hr_second_pass_steps"] < 0:
        fail("hr_second_pass_steps", "hr_second_pass_steps", values["hr_second_pass_steps"],
             "it must be at least 0 (0 = same as steps)", "greater_than_equal")
    for name, limit, env in (("width", limits.max_width, "MAX_WIDTH"), ("height", limits.max_height, "MAX_HEIGHT"),
                             ("steps", limits.max_steps, "MAX_STEPS"),
                             ("hr_second_pass_steps", limits.max_steps, "MAX_STEPS")):
        if name in values and values[name] > limit:
            fail(name, name, values[name], f"the limit is {limit} ({env})", "less_than_equal")
    if "batch_size" in values and "n_iter" in values and min(values["batch_size"], values["n_iter"]) >= 1:
        images = values["batch_size"] * values["n_iter"]
        if images > limits.max_images:
            fail("batch_size", "batch_size * n_iter", f"{images} images",
                 f"the limit is {limits.max_images} (MAX_IMAGES)", "less_than_equal")
    for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        if name in values and len(values[name]) > limits.max_prompt_length:
            fail(name, name, f"{len(values[name])} characters",
                 f"the limit is {limits.max_prompt_length} (MAX_PROMPT_LENGTH)", "string_too_long")
    if values.get("enable_hr"):
        for field, subject, size, limit, env in _hires_sizes(values, limits=limits):
            if size < 1:
                fail(field, subject, size, "it must be at least 1", "greater_than_equal")
            elif size > limit:
                fail(field, subject, size, f"the limit is {limit} ({env})", "less_than_equal")
    return problems


def _hires_sizes(values: dict, *, limits: Limits) -> list[tuple[str, str, int, int, str]]:
    """(field, subject, size, limit, env) for the width and height the hires pass renders at.

    Computed as A1111 does (StableDiffusionProcessingTxt2Img.calculate_target_resolution): width and
    height times hr_scale, or hr_resize_x/y, where a missing one or a different aspect ratio is made
    up from width/height (A1111 renders at that size, then crops to the requested one).
    """
    names = ("width", "height", "hr_scale", "hr_resize_x", "hr_resize_y")
    if any(name not in values for name in names) or values["width"] < 1 or values["height"] < 1:
        return []  # already reported
    width, height, scale, resize_x, resize_y = (values[name] for name in names)
    if resize_x == 0 and resize_y == 0:
        return [("hr_scale", "the hires width (width * hr_scale)", _scaled(width, scale),
                 limits.max_width, "MAX_WIDTH"),
                ("hr_scale", "the hires height (height * hr_scale)", _scaled(height, scale),
                 limits.max_height, "MAX_HEIGHT")]
    if resize_y == 0 or (resize_x != 0 and width / height < resize_x / resize_y):
        size = resize_x, resize_x * height // width
    else:
        size = resize_y * width // height, resize_y
    how = "hr_resize_x/hr_resize_y at the aspect ratio of width/height"
    return [("hr_resize_x", f"the hires width ({how})", size[0], limits.max_width, "MAX_WIDTH"),
            ("hr_resize_y", f"the hires height ({how})", size[1], limits.max_height, "MAX_HEIGHT")]


def _scaled(size: int, scale: float) -> int:
    """int(size * scale) as A1111 computes it, clamped so that absurd scales cannot overflow."""
    return int(max(-1e18, min(size * scale, 1e18)))
