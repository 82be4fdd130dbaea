"""Our A1111 request models must match A1111's own openapi.json: same fields, JSON types and defaults.

The document is pydantic v1 output, which never says "nullable": a field without a default there is
Optional in A1111, so it must be nullable here, and a field with a non-null default must not be.
"""
from __future__ import annotations

import copy
import json
import os
import pathlib

import pydantic
import pytest

from chalicelib import request_models

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
OPENAPI_PATH = REPO_ROOT.parent / "shared" / "a1111" / "openapi.json"
MODELS = [request_models.StableDiffusionProcessingTxt2Img, request_models.StableDiffusionProcessingImg2Img]
NO_DEFAULT = object()


@pytest.fixture(scope="module")
def schemas() -> dict:
    if not OPENAPI_PATH.exists():
        message = f"{OPENAPI_PATH} is not here (shared/ is a sibling of the repository)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must check drift from A1111")
        pytest.skip(message)
    return json.loads(OPENAPI_PATH.read_text())["components"]["schemas"]


def _shape(prop: dict, *, nullable: bool) -> dict:
    """A JSON-schema property reduced to what must agree: type, item type, nullability, title."""
    variants = prop.get("anyOf", [prop])
    non_null = [v for v in variants if v.get("type") != "null"]
    nullable = nullable or prop.get("nullable", False) or len(non_null) < len(variants)
    variant = non_null[0] if len(non_null) == 1 else {"type": [v.get("type") for v in non_null]}
    items = variant.get("items")
    return {
        "type": variant.get("type", variant.get("$ref")),
        "items": None if items is None else items.get("type", "any"),
        "nullable": nullable,
        "title": prop.get("title"),
    }


def _same_default(a: object, b: object) -> bool:
    """Equal as JSON values: 0 == 0.0, but never True == 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def document_fields(schema: dict) -> dict[str, dict]:
    fields = {}
    for name, prop in schema["properties"].items():
        default = prop.get("default", NO_DEFAULT)
        fields[name] = {**_shape(prop, nullable=default is NO_DEFAULT or default is None),
                        "default": None if default is NO_DEFAULT else default}
    return fields


def model_fields(model: type[pydantic.BaseModel]) -> dict[str, dict]:
    props = model.model_json_schema()["properties"]
    return {
        name: {**_shape(props[name], nullable=False), "default": field.get_default(call_default_factory=True)}
        for name, field in model.model_fields.items()
    }


def drift(schema: dict, model: type[pydantic.BaseModel]) -> list[str]:
    """Every difference between a document schema and a model, as readable lines (empty = none)."""
    expected, actual = document_fields(schema), model_fields(model)
    problems = [f"{name}: in the document, not in {model.__name__}" for name in expected.keys() - actual.keys()]
    problems += [f"{name}: in {model.__name__}, not in the document" for name in actual.keys() - expected.keys()]
    for name in expected.keys() & actual.keys():
        for key, want in expected[name].items():
            have = actual[name][key]
            same = _same_default(want, have) if key == "default" else want == have
            if not same:
                problems.append(f"{name}.{key}: document {want!r}, model {have!r}")
    if schema.get("required"):
        problems.append(f"the document requires {schema['required']}")
    if model.model_json_schema().get("required"):
        problems.append(f"{model.__name__} requires {model.model_json_schema()['required']}")
    return sorted(problems)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_model_matches_the_a1111_document(schemas, model):
    # given A1111 v1.10.1's schema of the same name
    schema = schemas[model.__name__]
    # then the model has exactly its fields, types, nullability and defaults
    assert drift(schema, model) == []
    assert model.model_config.get("extra") == "allow"


def test_field_counts_match_the_notes(schemas):
    assert len(schemas["StableDiffusionProcessingTxt2Img"]["properties"]) == 55
    assert len(schemas["StableDiffusionProcessingImg2Img"]["properties"]) == 57
    assert len(request_models.StableDiffusionProcessingTxt2Img.model_fields) == 55
    assert len(request_models.StableDiffusionProcessingImg2Img.model_fields) == 57


DOCUMENT_MUTATIONS = {
    "field removed": ("StableDiffusionProcessingTxt2Img", "prompt",
                      lambda props: props.pop("prompt")),
    "field added": ("StableDiffusionProcessingImg2Img", "new_fork_field",
                    lambda props: props.update(new_fork_field={"title": "New Fork Field", "type": "string"})),
    "type changed": ("StableDiffusionProcessingTxt2Img", "steps",
                     lambda props: props["steps"].update(type="number")),
    "default changed": ("StableDiffusionProcessingTxt2Img", "steps",
                        lambda props: props["steps"].update(default=20)),
    "default type changed": ("StableDiffusionProcessingTxt2Img", "enable_hr",
                             lambda props: props["enable_hr"].update(default=0)),
    "default added (no longer nullable)": ("StableDiffusionProcessingTxt2Img", "sampler_name",
                                           lambda props: props["sampler_name"].update(default="Euler")),
    "default removed (now nullable)": ("StableDiffusionProcessingImg2Img", "denoising_strength",
                                       lambda props: props["denoising_strength"].pop("default")),
    "array item type changed": ("StableDiffusionProcessingTxt2Img", "styles",
                                lambda props: props["styles"].update(items={"type": "integer"})),
    "array became object": ("StableDiffusionProcessingImg2Img", "init_images",
                            lambda props: props.update(init_images={"title": "Init Images", "type": "object"})),
    "title changed": ("StableDiffusionProcessingTxt2Img", "cfg_scale",
                      lambda props: props["cfg_scale"].update(title="CFG")),
}


@pytest.mark.parametrize("schema_name, field, mutate", DOCUMENT_MUTATIONS.values(), ids=DOCUMENT_MUTATIONS.keys())
def test_drift_in_the_document_is_detected(schemas, schema_name, field, mutate):
    # given a copy of the document with one change
    schema = copy.deepcopy(schemas[schema_name])
    mutate(schema["properties"])
    model = next(m for m in MODELS if m.__name__ == schema_name)
    # then the check reports that field
    problems = drift(schema, model)
    assert problems and all(p.startswith(field) for p in problems), problems


MODEL_MUTATIONS = {
    "default changed": ("steps", (int, 20)),
    "type changed": ("width", (float, 512.0)),
    "nullable added": ("prompt", (str | None, "")),
    "nullable removed": ("sampler_name", (str, "")),
    "item type changed": ("script_args", (list[str], [])),
    "field added": ("hr_extra", (int, 0)),
}


@pytest.mark.parametrize("field, definition", MODEL_MUTATIONS.values(), ids=MODEL_MUTATIONS.keys())
def test_drift_in_the_model_is_detected(schemas, field, definition):
    # given a model with one field redefined
    model = pydantic.create_model("StableDiffusionProcessingTxt2Img",
                                  __base__=request_models.StableDiffusionProcessingTxt2Img,
                                  **{field: definition})
    # then the check reports that field
    problems = drift(schemas["StableDiffusionProcessingTxt2Img"], model)
    assert problems and all(p.startswith(field) for p in problems), problems


def test_a_required_field_is_detected(schemas):
    schema = copy.deepcopy(schemas["StableDiffusionProcessingImg2Img"])
    schema["required"] = ["init_images"]
    assert drift(schema, request_models.StableDiffusionProcessingImg2Img) == ["the document requires ['init_images']"]


# --- Our OpenAPI document uses A1111's names for A1111's schemas, and A1111's operationIds ---------

SHARED_SCHEMAS = ["StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img", "TextToImageResponse",
                  "ImageToImageResponse", "ValidationError", "HTTPValidationError"]


@pytest.fixture(scope="module")
def a1111_document(schemas) -> dict:
    return json.loads(OPENAPI_PATH.read_text())


@pytest.fixture(scope="module")
def our_document() -> dict:
    from app import app
    from chalicelib import openapi
    return openapi.build_document(app)


@pytest.mark.parametrize("name", SHARED_SCHEMAS)
def test_document_schema_has_a1111s_fields_under_a1111s_name(schemas, our_document, name):
    # given A1111's schema and ours of the same name
    theirs, ours = document_fields(schemas[name]), document_fields(our_document["components"]["schemas"][name])
    # then every A1111 field is ours with the same type, items, nullability, title and default
    assert {field: ours.get(field) for field in theirs} == theirs
    # and we add fields only where we extend A1111's shape on purpose (our errors carry `error`)
    assert set(ours) - set(theirs) == ({"error"} if name == "HTTPValidationError" else set())
    # and we never make optional what A1111 requires
    ours = our_document["components"]["schemas"][name]
    assert set(schemas[name].get("required", [])) <= set(ours.get("required", []))


def test_a1111_routes_keep_a1111s_operation_ids(a1111_document, our_document):
    shared = [(path, method) for path, item in our_document["paths"].items() for method in item
              if method in a1111_document["paths"].get(path, {})]
    assert ("/sdapi/v1/txt2img", "post") in shared and ("/sdapi/v1/img2img", "post") in shared
    for path, method in shared:
        assert (our_document["paths"][path][method]["operationId"]
                == a1111_document["paths"][path][method]["operationId"]), f"{method} {path}"
