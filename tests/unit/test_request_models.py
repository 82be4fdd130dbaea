"""parse_submission: what a submit body becomes (A1111 payload + our options) or which 422 it gets."""
from __future__ import annotations

import json
import time
import typing

import pydantic
import pytest

from chalicelib import config
from chalicelib import errors
from chalicelib import request_models
from chalicelib import vocabulary

# Distinct numbers so that every message can be checked for the right limit.
LIMITS = request_models.Limits(max_width=1024, max_height=768, max_steps=100, max_images=8, max_prompt_length=200)
IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

# webuiapi 0.9.17 `txt2img()` with its defaults (NOTES.md D.1): every key, nulls included.
WEBUIAPI_TXT2IMG = {
    "enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None,
    "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "", "denoising_strength": 0.7,
    "firstphase_width": 0, "firstphase_height": 0, "prompt": "a lighthouse at dusk", "styles": [],
    "seed": -1, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
    "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512,
    "restore_faces": False, "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False,
    "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
    "override_settings": {}, "override_settings_restore_afterwards": True, "sampler_name": "Euler a",
    "scheduler": "automatic", "sampler_index": "Euler a", "script_name": None, "script_args": [],
    "send_images": True, "save_images": False, "alwayson_scripts": {},
}


# What a1111_policy adds to every payload under the default settings (docs/security.md).
FORCED = {"save_images": False, "do_not_save_samples": True, "do_not_save_grid": True,
          "override_settings_restore_afterwards": True}


def parse(body, kind="txt2img", limits=LIMITS) -> request_models.Submission:
    return request_models.parse_submission(kind, body, limits=limits)


def problems_of(body, kind="txt2img", limits=LIMITS) -> list[dict]:
    """The 422's items; each must be a JSON-ready {"loc", "msg", "type"} starting at "body"."""
    with pytest.raises(errors.ValidationFailed) as raised:
        parse(body, kind, limits)
    assert raised.value.status == 422
    detail = raised.value.detail
    json.dumps(detail)
    for item in detail:
        assert set(item) == {"loc", "msg", "type"}
        assert item["loc"][0] == "body" and all(isinstance(part, (str, int)) for part in item["loc"])
        assert isinstance(item["msg"], str) and item["msg"] and isinstance(item["type"], str)
    return detail


def summary(items: list[dict]) -> list[tuple[str, str]]:
    """(dotted loc after "body", type) of each item, sorted."""
    return sorted((".".join(str(part) for part in item["loc"][1:]), item["type"]) for item in items)


# --- accepted bodies ------------------------------------------------------------------------------

ACCEPTED = {
    # name: (kind, body, payload sent to A1111 besides FORCED)
    "empty txt2img": ("txt2img", {}, {}),
    "minimal img2img": ("img2img", {"init_images": [IMAGE]}, {"init_images": [IMAGE]}),
    "only what was sent, no defaults": ("txt2img", {"prompt": "cat", "steps": 20}, {"prompt": "cat", "steps": 20}),
    "coercion like pydantic v1": (
        "txt2img",
        {"steps": "20", "cfg_scale": "7.5", "width": 512.0, "seed": "-1", "prompt": 7, "restore_faces": "true"},
        {"steps": 20, "cfg_scale": 7.5, "width": 512, "seed": -1, "prompt": "7", "restore_faces": True},
    ),
    "explicit nulls of nullable fields are kept": (
        "txt2img", {"sampler_name": None, "styles": None, "eta": None},
        {"sampler_name": None, "styles": None, "eta": None},
    ),
    "null seed and subseed are random seeds, as A1111 takes them": (
        "txt2img", {"seed": None, "subseed": None}, {"seed": -1, "subseed": -1},
    ),
    "null seed on img2img too": ("img2img", {"init_images": [IMAGE], "seed": None},
                                 {"init_images": [IMAGE], "seed": -1}),
    "unknown fields are not forwarded": (
        "txt2img", {"prompt": "x", "fork_flag": True, "fork_opts": {"a": [1, None, "b"]}}, {"prompt": "x"},
    ),
    "hires fields are unknown (not forwarded) on img2img": (
        "img2img", {"init_images": [IMAGE], "hr_second_pass_steps": 999, "enable_hr": True},
        {"init_images": [IMAGE]},
    ),
    "force_task_id of the client is dropped": ("txt2img", {"prompt": "x", "force_task_id": "mine"}, {"prompt": "x"}),
    "force_task_id is dropped even when invalid": ("img2img", {"init_images": [IMAGE], "force_task_id": {"x": 1}},
                                                   {"init_images": [IMAGE]}),
    "img2img fields and defaults": (
        "img2img", {"init_images": [IMAGE, "data:image/png;base64," + IMAGE], "mask": IMAGE,
                    "denoising_strength": "0.4", "inpainting_fill": 1, "include_init_images": False},
        {"init_images": [IMAGE, "data:image/png;base64," + IMAGE], "mask": IMAGE, "denoising_strength": 0.4,
         "inpainting_fill": 1, "include_init_images": False},
    ),
    "infotext is sent on": ("txt2img", {"infotext": "a cat\nSteps: 20, Sampler: Euler a, Size: 512x512"},
                            {"infotext": "a cat\nSteps: 20, Sampler: Euler a, Size: 512x512"}),
}


@pytest.mark.parametrize("kind, body, payload", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_body_becomes_the_payload(kind, body, payload):
    submission = parse(body, kind)
    assert submission.kind is request_models.JobKind(kind)
    assert submission.payload == {**payload, **FORCED}
    assert {k: type(v) for k, v in submission.payload.items()} == {k: type(v) for k, v in {**payload, **FORCED}.items()}
    assert submission.options == request_models.JobOptions()


def test_webuiapi_txt2img_payload_is_accepted_as_sent_with_saving_forced_off():
    submission = parse(dict(WEBUIAPI_TXT2IMG))
    assert submission.payload == {**WEBUIAPI_TXT2IMG, **FORCED} and submission.dropped_fields == ()
    assert submission.payload["hr_scale"] == 2.0 and isinstance(submission.payload["hr_scale"], float)
    assert submission.payload["hr_checkpoint_name"] is None and submission.payload["script_name"] is None


def test_kind_may_be_given_as_enum_or_string():
    assert parse({}, request_models.JobKind.txt2img).kind is request_models.JobKind.txt2img
    assert parse({"init_images": [IMAGE]}, "img2img").kind is request_models.JobKind.img2img
    with pytest.raises(ValueError):
        parse({}, "upscale")


def test_our_fields_go_to_options_not_to_the_payload():
    body = {
        "prompt": "x", "webhook_url": "https://hooks.example.com/sd?x=1", "webhook_secret": "whsec_abc",
        "webhook_events": ["job.completed", "job.error"], "priority": "7", "metadata": {"user": 42, "tags": ["a"]},
        "instance_labels": ["sdxl"],
    }
    submission = parse(body)
    assert submission.payload == {"prompt": "x", **FORCED}
    assert submission.options.model_dump() == {
        "webhook_url": "https://hooks.example.com/sd?x=1", "webhook_secret": "whsec_abc",
        "webhook_events": ["job.completed", "job.error"], "priority": 7, "metadata": {"user": 42, "tags": ["a"]},
        "instance_labels": ["sdxl"], "webhook_format": None,
    }


def test_options_default_when_absent():
    options = parse({}).options
    assert (options.webhook_url, options.webhook_secret, options.webhook_events, options.priority,
            options.metadata) == (None, None, None, 0, None)


def test_secret_stays_out_of_reprs():
    submission = parse({"webhook_secret": "s3cret-value"})
    assert "s3cret-value" not in repr(submission) and "s3cret-value" not in str(submission.options)


def test_every_webhook_event_is_accepted():
    assert parse({"webhook_events": list(vocabulary.JobEvent)}).options.webhook_events == [
        "job.started", "job.progress", "job.completed", "job.error", "job.cancelled"]


# --- rejected bodies --------------------------------------------------------------------------------

REJECTED = {
    # name: (kind, body, [(dotted loc after "body", type)])
    "string for an integer": ("txt2img", {"steps": "many"}, [("steps", "int_parsing")]),
    "fraction for an integer": ("txt2img", {"width": 512.5}, [("width", "int_from_float")]),
    "null for a field with a default": ("txt2img", {"cfg_scale": None}, [("cfg_scale", "float_type")]),
    "the nulls A1111 crashes on (500 TypeError, NOTES.md G) stay refused": (
        "txt2img", {"steps": None, "width": None, "negative_prompt": None, "batch_size": None, "n_iter": None},
        [("batch_size", "int_type"), ("n_iter", "int_type"), ("negative_prompt", "string_type"),
         ("steps", "int_type"), ("width", "int_type")]),
    "string for a list": ("txt2img", {"styles": "anime"}, [("styles", "list_type")]),
    "wrong list item": ("txt2img", {"styles": ["ok", {"no": 1}]}, [("styles.1", "string_type")]),
    "list for an object": ("txt2img", {"override_settings": []}, [("override_settings", "dict_type")]),
    "not a boolean": ("txt2img", {"enable_hr": "maybe"}, [("enable_hr", "bool_parsing")]),
    "NaN": ("txt2img", {"cfg_scale": float("nan")}, [("cfg_scale", "finite_number")]),
    "img2img field type": ("img2img", {"init_images": [IMAGE], "resize_mode": "crop"},
                           [("resize_mode", "int_parsing")]),
    "img2img init_images not a list": ("img2img", {"init_images": IMAGE}, [("init_images", "list_type")]),
    "webhook_url scheme": ("txt2img", {"webhook_url": "ftp://example.com/h"}, [("webhook_url", "url_scheme")]),
    "webhook_url without scheme": ("txt2img", {"webhook_url": "example.com/h"}, [("webhook_url", "url_scheme")]),
    "webhook_url javascript": ("txt2img", {"webhook_url": "javascript:alert(1)"},
                               [("webhook_url", "url_scheme")]),
    "webhook_url without host": ("txt2img", {"webhook_url": "https:///path"}, [("webhook_url", "url_parsing")]),
    "webhook_url bad port": ("txt2img", {"webhook_url": "http://example.com:99999/"},
                             [("webhook_url", "url_parsing")]),
    "webhook_url bad IPv6": ("txt2img", {"webhook_url": "http://[::1/"}, [("webhook_url", "url_parsing")]),
    "webhook_url with space": ("txt2img", {"webhook_url": "http://exa mple.com/"},
                               [("webhook_url", "url_parsing")]),
    "webhook_url too long": ("txt2img", {"webhook_url": "https://example.com/" + "a" * 2100},
                             [("webhook_url", "string_too_long")]),
    "webhook_url not a string": ("txt2img", {"webhook_url": 42}, [("webhook_url", "string_type")]),
    "webhook_secret empty": ("txt2img", {"webhook_secret": ""}, [("webhook_secret", "string_too_short")]),
    "webhook_secret too long": ("txt2img", {"webhook_secret": "k" * 257},
                                [("webhook_secret", "string_too_long")]),
    "webhook_secret not a string": ("txt2img", {"webhook_secret": 12345}, [("webhook_secret", "string_type")]),
    "webhook_events unknown": ("txt2img", {"webhook_events": ["job.completed", "job.done"]},
                               [("webhook_events.1", "literal_error")]),
    "webhook_events not a list": ("txt2img", {"webhook_events": "job.completed"},
                                  [("webhook_events", "list_type")]),
    "priority above range": ("txt2img", {"priority": 101}, [("priority", "less_than_equal")]),
    "priority below range": ("txt2img", {"priority": -101}, [("priority", "greater_than_equal")]),
    "priority not an integer": ("txt2img", {"priority": "high"}, [("priority", "int_parsing")]),
    "metadata a list": ("txt2img", {"metadata": [1, 2]}, [("metadata", "dict_type")]),
    "metadata a string": ("img2img", {"init_images": [IMAGE], "metadata": "x"}, [("metadata", "dict_type")]),
    "metadata too large": ("txt2img", {"metadata": {"blob": "x" * 17000}}, [("metadata", "too_long")]),
    "metadata with NaN": ("txt2img", {"metadata": {"n": float("nan")}}, [("metadata", "value_error")]),
}


@pytest.mark.parametrize("kind, body, expected", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_body_names_the_field(kind, body, expected):
    assert summary(problems_of(body, kind)) == sorted(expected)


@pytest.mark.parametrize("body", [[], "prompt", None, 5, [{"prompt": "x"}]], ids=repr)
def test_body_must_be_an_object(body):
    assert problems_of(body) == [{"loc": ["body"], "msg": "the request body must be a JSON object",
                                  "type": "model_type"}]


@pytest.mark.parametrize("url, reason", [
    ("https://user:pw@hooks.example.com/h", "credentials"),
    ("https://user@hooks.example.com/h", "credentials"),
    ("ftp://hooks.example.com/h", "http or https"),
    ("https:///h", "no host"),
])
def test_webhook_url_problem_says_why(url, reason):
    (item,) = problems_of({"webhook_url": url})
    assert item["loc"] == ["body", "webhook_url"] and reason in item["msg"]
    assert "pw@" not in item["msg"]


@pytest.mark.parametrize("url", [
    "http://localhost:9000/hook", "https://hooks.example.com/a/b?c=d#e", "HTTPS://EXAMPLE.COM", "http://[::1]:80/",
    None,
])
def test_webhook_url_syntax_accepted(url):
    assert parse({"webhook_url": url}).options.webhook_url == url


@pytest.mark.parametrize("secret", ["k" * 300, "hunter2-but-an-int"])
def test_secret_is_never_echoed(secret):
    body = {"webhook_secret": secret if len(secret) > 256 else {"value": secret}}
    assert secret not in json.dumps(problems_of(body))


@pytest.mark.parametrize("priority", [-100, 0, 100, "5"])
def test_priority_in_range(priority):
    assert parse({"priority": priority}).options.priority == int(priority)


def test_metadata_limit_is_16_kib_of_compact_json():
    envelope = len(json.dumps({"a": ""}, separators=(",", ":")))
    assert parse({"metadata": {"a": "x" * (16384 - envelope)}}).options.metadata is not None
    (item,) = problems_of({"metadata": {"a": "x" * (16385 - envelope)}})
    assert item["msg"] == "metadata is 16385 bytes as JSON; the limit is 16384 (16 KiB)"


def test_metadata_size_counts_utf8_bytes():
    (item,) = problems_of({"metadata": {"a": "é" * 8200}})
    assert item["loc"] == ["body", "metadata"] and item["type"] == "too_long"


@pytest.mark.parametrize("init_images", ["absent", None, []])
def test_img2img_needs_an_init_image(init_images):
    body = {} if init_images == "absent" else {"init_images": init_images}
    (item,) = problems_of(body, "img2img")
    assert item["loc"] == ["body", "init_images"]
    assert item["msg"] == "img2img needs at least one init image"


# --- limits -----------------------------------------------------------------------------------------

OVER_LIMIT = {
    # name: (kind, body, loc field, message)
    "width": ("txt2img", {"width": 1032}, "width", "width is 1032; the limit is 1024 (MAX_WIDTH)"),
    "height": ("img2img", {"init_images": [IMAGE], "height": 776}, "height",
               "height is 776; the limit is 768 (MAX_HEIGHT)"),
    "steps": ("txt2img", {"steps": 101}, "steps", "steps is 101; the limit is 100 (MAX_STEPS)"),
    "steps coerced": ("img2img", {"init_images": [IMAGE], "steps": "500"}, "steps",
                      "steps is 500; the limit is 100 (MAX_STEPS)"),
    "hires steps": ("txt2img", {"hr_second_pass_steps": 101}, "hr_second_pass_steps",
                    "hr_second_pass_steps is 101; the limit is 100 (MAX_STEPS)"),
    "images": ("txt2img", {"batch_size": 3, "n_iter": 3}, "batch_size",
               "batch_size * n_iter is 9 images; the limit is 8 (MAX_IMAGES)"),
    "images by batch alone": ("img2img", {"init_images": [IMAGE], "batch_size": 9}, "batch_size",
                              "batch_size * n_iter is 9 images; the limit is 8 (MAX_IMAGES)"),
    "prompt": ("txt2img", {"prompt": "p" * 201}, "prompt",
               "prompt is 201 characters; the limit is 200 (MAX_PROMPT_LENGTH)"),
    "negative prompt": ("img2img", {"init_images": [IMAGE], "negative_prompt": "n" * 201}, "negative_prompt",
                        "negative_prompt is 201 characters; the limit is 200 (MAX_PROMPT_LENGTH)"),
    "hires prompt": ("txt2img", {"hr_prompt": "h" * 201}, "hr_prompt",
                     "hr_prompt is 201 characters; the limit is 200 (MAX_PROMPT_LENGTH)"),
    "hires negative prompt": ("txt2img", {"hr_negative_prompt": "h" * 201}, "hr_negative_prompt",
                              "hr_negative_prompt is 201 characters; the limit is 200 (MAX_PROMPT_LENGTH)"),
    "width zero": ("txt2img", {"width": 0}, "width", "width is 0; it must be at least 1"),
    "height negative": ("img2img", {"init_images": [IMAGE], "height": -64}, "height",
                        "height is -64; it must be at least 1"),
    "steps zero": ("txt2img", {"steps": 0}, "steps", "steps is 0; it must be at least 1"),
    "batch_size zero": ("txt2img", {"batch_size": 0}, "batch_size", "batch_size is 0; it must be at least 1"),
    "n_iter negative": ("txt2img", {"n_iter": -1}, "n_iter", "n_iter is -1; it must be at least 1"),
    "hires steps negative": ("txt2img", {"hr_second_pass_steps": -1}, "hr_second_pass_steps",
                             "hr_second_pass_steps is -1; it must be at least 0 (0 = same as steps)"),
    "hires width by scale": ("txt2img", {"enable_hr": True, "width": 512, "height": 256, "hr_scale": 2.5}, "hr_scale",
                             "the hires width (width * hr_scale) is 1280; the limit is 1024 (MAX_WIDTH)"),
    "hires height by scale": ("txt2img", {"enable_hr": True, "width": 256, "height": 512, "hr_scale": 2}, "hr_scale",
                              "the hires height (height * hr_scale) is 1024; the limit is 768 (MAX_HEIGHT)"),
    "hires scale to nothing": ("txt2img", {"enable_hr": True, "width": 256, "height": 256, "hr_scale": 0.001},
                               "hr_scale", "the hires width (width * hr_scale) is 0; it must be at least 1"),
    "hires scale absurd": ("txt2img", {"enable_hr": True, "hr_scale": 1e308}, "hr_scale",
                           "the hires width (width * hr_scale) is 1000000000000000000; the limit is 1024 (MAX_WIDTH)"),
    "hires width by resize_x alone": (
        "txt2img", {"enable_hr": True, "width": 512, "height": 256, "hr_resize_x": 1100}, "hr_resize_x",
        "the hires width (hr_resize_x/hr_resize_y at the aspect ratio of width/height) is 1100; "
        "the limit is 1024 (MAX_WIDTH)"),
    "hires height made up from the aspect ratio": (
        # A1111 renders 1024x1024 for a square image resized to 1024x768, then crops.
        "txt2img", {"enable_hr": True, "width": 512, "height": 512, "hr_resize_x": 1024, "hr_resize_y": 768},
        "hr_resize_y",
        "the hires height (hr_resize_x/hr_resize_y at the aspect ratio of width/height) is 1024; "
        "the limit is 768 (MAX_HEIGHT)"),
}


@pytest.mark.parametrize("kind, body, field, msg", OVER_LIMIT.values(), ids=OVER_LIMIT.keys())
def test_over_a_limit_names_field_and_limit(kind, body, field, msg):
    items = problems_of(body, kind)
    assert {tuple(item["loc"]) for item in items} == {("body", field)}
    assert msg in [item["msg"] for item in items]
    assert all(item["type"] in {"less_than_equal", "greater_than_equal", "string_too_long"} for item in items)


AT_LIMIT = {
    "width and height": ("txt2img", {"width": 1024, "height": 768}),
    "steps": ("img2img", {"init_images": [IMAGE], "steps": 100}),
    "hires steps": ("txt2img", {"hr_second_pass_steps": 100}),
    "images": ("txt2img", {"batch_size": 4, "n_iter": 2}),
    "images by n_iter": ("txt2img", {"n_iter": 8}),
    "prompts": ("txt2img", {"prompt": "p" * 200, "negative_prompt": "n" * 200, "hr_prompt": "h" * 200,
                            "hr_negative_prompt": "h" * 200}),
    "hires by scale": ("txt2img", {"enable_hr": True, "width": 512, "height": 384, "hr_scale": 2}),
    "hires by resize": ("txt2img", {"enable_hr": True, "width": 512, "height": 384, "hr_resize_x": 1024,
                                    "hr_resize_y": 768}),
    "hires off ignores the scale": ("txt2img", {"enable_hr": False, "hr_scale": 10, "hr_resize_x": 9999}),
    "smallest": ("txt2img", {"width": 1, "height": 1, "steps": 1, "batch_size": 1, "n_iter": 1}),
}


@pytest.mark.parametrize("kind, body", AT_LIMIT.values(), ids=AT_LIMIT.keys())
def test_at_a_limit_is_accepted(kind, body):
    assert parse(body, kind).payload == {**body, **FORCED}


@pytest.mark.parametrize("limits, msg", [
    (request_models.Limits(max_width=1024, max_height=768, max_steps=40, max_images=8, max_prompt_length=200),
     "steps is 50; the limit is 40 (MAX_STEPS)"),
    (request_models.Limits(max_width=500, max_height=768, max_steps=100, max_images=8, max_prompt_length=200),
     "width is 512; the limit is 500 (MAX_WIDTH)"),
])
def test_defaults_count_against_the_limits(limits, msg):
    assert [item["msg"] for item in problems_of({}, limits=limits)] == [msg]


def test_all_problems_are_reported_together():
    body = {
        "steps": 101, "width": 2000, "prompt": "p" * 201, "batch_size": 9, "cfg_scale": "high",
        "webhook_url": "ftp://x.example", "priority": 1000, "metadata": [],
    }
    assert summary(problems_of(body)) == sorted([
        ("steps", "less_than_equal"), ("width", "less_than_equal"),
        ("prompt", "string_too_long"), ("batch_size", "less_than_equal"),
        ("cfg_scale", "float_parsing"), ("webhook_url", "url_scheme"),
        ("priority", "less_than_equal"), ("metadata", "dict_type"),
    ])


def test_limits_still_checked_beside_a_type_error_and_not_on_the_bad_field():
    items = problems_of({"steps": "lots", "height": 4096, "init_images": []}, "img2img")
    assert summary(items) == sorted([("steps", "int_parsing"), ("height", "less_than_equal"),
                                     ("init_images", "too_short")])


# --- infotext: A1111 fills the fields the client did not send from it ---------------------------------

INFOTEXT_OVER = {
    "steps": ("a cat\nSteps: 500, Sampler: Euler a, Size: 512x512", "steps (from infotext) is 500; the limit is 100"),
    "size": ("a cat\nSteps: 20, Sampler: Euler a, Size: 2048x512", "width (from infotext) is 2048; the limit is 1024"),
    "batch": ("a cat\nSteps: 20, Batch size: 16, Size: 512x512", "batch_size * n_iter (from infotext) is 16 images"),
    "prompt": ("p" * 201 + "\nSteps: 20, Sampler: Euler a, Size: 512x512", "prompt (from infotext) is 201 characters"),
    "negative prompt": ("cat\nNegative prompt: " + "n" * 201 + "\nSteps: 20, Sampler: Euler a, Size: 512x512",
                        "negative_prompt (from infotext) is 201 characters"),
    "hires": ("cat\nSteps: 20, Size: 512x384, Denoising strength: 0.5, Hires upscale: 4",
              "the hires width (width * hr_scale) (from infotext) is 2048; the limit is 1024"),
    "quoted hires prompt": ('cat\nSteps: 20, Size: 512x384, Hires prompt: "' + "h, " * 70 + '"',
                            "hr_prompt (from infotext) is 210 characters"),
}


@pytest.mark.parametrize("infotext, msg", INFOTEXT_OVER.values(), ids=INFOTEXT_OVER.keys())
def test_infotext_values_count_against_the_limits(infotext, msg):
    items = problems_of({"infotext": infotext})
    assert {tuple(item["loc"]) for item in items} == {("body", "infotext")}
    assert any(item["msg"].startswith(msg) for item in items), items


def test_fields_sent_explicitly_win_over_infotext():
    body = {"infotext": "cat\nSteps: 500, Batch size: 64, Size: 4096x4096", "steps": 20, "batch_size": 1,
            "width": 512, "height": 512}
    assert parse(body).payload == {**body, **FORCED}


def test_infotext_without_parameters_is_only_a_prompt():
    assert parse({"infotext": "Steps: 500"}).payload == {"infotext": "Steps: 500", **FORCED}


def test_hostile_infotext_is_parsed_in_linear_time():
    started = time.monotonic()
    items = problems_of({"infotext": "a" * 200_000 + "\n" + "ab " * 100_000})
    assert time.monotonic() - started < 2
    assert [item["loc"] for item in items] == [["body", "infotext"]]


# --- the rest of the module's surface -----------------------------------------------------------------

def test_limits_from_settings():
    settings = config.Settings(max_width=640, max_height=480, max_steps=30, max_images=2, max_prompt_length=99)
    assert request_models.Limits.from_settings(settings) == request_models.Limits(
        max_width=640, max_height=480, max_steps=30, max_images=2, max_prompt_length=99)


def test_statuses_and_kinds():
    assert [s.value for s in vocabulary.JobStatus] == ["queued", "processing", "completed", "error", "cancelled"]
    assert vocabulary.TERMINAL_STATUSES == {vocabulary.JobStatus.COMPLETED, vocabulary.JobStatus.ERROR,
                                            vocabulary.JobStatus.CANCELLED}
    assert "completed" in vocabulary.TERMINAL_STATUSES and "queued" not in vocabulary.TERMINAL_STATUSES
    assert vocabulary.JobStatus("queued") == "queued"
    assert typing.get_args(request_models.WebhookEvent) == tuple(vocabulary.JobEvent)
    assert [k.value for k in request_models.JobKind] == ["txt2img", "img2img"]
    assert request_models.A1111_REQUEST_MODELS == {
        request_models.JobKind.txt2img: request_models.StableDiffusionProcessingTxt2Img,
        request_models.JobKind.img2img: request_models.StableDiffusionProcessingImg2Img,
    }


def test_mutable_defaults_are_not_shared():
    first = request_models.StableDiffusionProcessingTxt2Img()
    first.script_args.append("x")
    first.alwayson_scripts["s"] = {}
    second = request_models.StableDiffusionProcessingTxt2Img()
    assert second.script_args == [] and second.alwayson_scripts == {}


def test_limits_from_settings_are_built_once_per_set_of_values():
    settings = config.Settings(max_width=640)
    assert request_models.Limits.from_settings(settings) is request_models.Limits.from_settings(
        config.Settings(max_width=640))
    assert request_models.Limits.from_settings(config.Settings(max_width=641)).max_width == 641


# --- validation as a TypedDict of the model's fields ------------------------------------------------

# Bodies of the A1111 fields only (what parse_submission validates after splitting our own fields off),
# good and bad, each with the fields A1111 would get in an order the model does not define.
SAME_AS_THE_MODEL = [
    *[(kind, body) for kind, body, _ in ACCEPTED.values()],
    *[(kind, body) for kind, body, _ in REJECTED.values()],
    ("txt2img", dict(reversed(WEBUIAPI_TXT2IMG.items()))),
    ("txt2img", {"alwayson_scripts": {"ControlNet": {"args": [{"image": IMAGE, "weight": 0.5}]}},
                 "script_args": [1, "x", None], "override_settings": {"sd_vae": "a.pt", "eta_ddim": 0.3},
                 "comments": {"a": [1]}, "styles": ["s"], "seed": 5.0, "subseed": "7"}),
    ("img2img", {"init_images": [IMAGE], "mask_blur": "4", "image_cfg_scale": 1, "latent_mask": None,
                 "resize_mode": True, "inpaint_full_res": 0}),
    ("txt2img", {"seed": "x", "subseed": [], "width": True, "hr_scale": "inf", "prompt": b"bytes", "styles": [1]}),
    ("img2img", {"init_images": "x", "denoising_strength": float("nan"), "mask_round": "maybe"}),
]


@pytest.mark.parametrize("kind, body", SAME_AS_THE_MODEL)
def test_the_fields_validate_as_the_model_with_exclude_unset(kind, body):
    """The TypedDict must accept, coerce and refuse exactly as the model does (that is what A1111 gets)."""
    model = request_models.A1111_REQUEST_MODELS[request_models.JobKind(kind)]
    validator = request_models._request_validator(request_models.JobKind(kind))
    try:
        expected = model.model_validate(body).model_dump(exclude_unset=True)
    except pydantic.ValidationError as by_model:
        with pytest.raises(pydantic.ValidationError) as by_fields:
            validator.validate_python(body)
        assert by_fields.value.errors(include_url=False) == by_model.errors(include_url=False)
        return
    validated = validator.validate_python(body)
    assert list(validated.items()) == list(expected.items())  # same values, same order
    assert [type(value) for value in validated.values()] == [type(value) for value in expected.values()]


def test_a_validator_on_the_model_would_be_skipped_so_it_is_refused(monkeypatch):
    class WithValidator(request_models.StableDiffusionProcessingTxt2Img):
        @pydantic.field_validator("prompt")
        @classmethod
        def _shout(cls, value: str) -> str:
            return value.upper()

    monkeypatch.setitem(request_models.A1111_REQUEST_MODELS, request_models.JobKind.txt2img, WithValidator)
    request_models._request_validator.cache_clear()
    try:
        with pytest.raises(TypeError, match="WithValidator has validators or serializers on the model"):
            parse({"prompt": "x"})
    finally:
        request_models._request_validator.cache_clear()
