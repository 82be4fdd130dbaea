"""`POST /sdapi/v1/options`: an owner's default checkpoint (chalicelib/model_choice.py), never A1111's
global switch. `GET /sdapi/v1/options` (chalicelib/api/catalog.py) shows it back."""
from __future__ import annotations

import chalice

from chalicelib import context as context_module
from chalicelib import model_choice
from chalicelib import openapi
from chalicelib import request_models
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

DESCRIPTION = (
    "A1111 clients choose a model by setting `sd_model_checkpoint` before they generate. Here it is not A1111's "
    "global switch (other tokens and their queued jobs are untouched): the checkpoint (title, model name or hash, "
    "checked against GET /sdapi/v1/sd-models) becomes this token's default, put into `override_settings` of its "
    "later jobs that name none; routing prefers instances with it loaded. Any other option is 405. Answers `{}`.")


def choose(request: chalice.app.Request) -> chalice.Response:
    """The use case behind every options POST (root and /legacy)."""
    owner = http.owner_of(request)
    ctx = context_module.get_context()
    model_choice.choose(ctx, http.json_body(request, max_bytes=ctx.settings.max_body_bytes), owner=owner)
    return http.json_response({})


BODY = openapi.Body(models=(request_models.ModelChoiceRequest,), description="the checkpoint to use by default",
                    examples={"by title": {"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]"},
                              "by model name": {"sd_model_checkpoint": "v1-5-pruned-emaonly"}})
REPLY = openapi.Reply("Stored: this token's later jobs use it when they name no checkpoint.", model="ModelChoice")


@blueprint.route(model_choice.OPTIONS_PATH, methods=["POST"], content_types=http.JSON_BODY_CONTENT_TYPES)
@openapi.document(operation_id="set_config_sdapi_v1_options_post", summary="Choose your default checkpoint",
                  tags=["models"], description=DESCRIPTION, body=BODY, responses={200: REPLY},
                  errors=(400, 405, 422, 502, 503))
@http.handler
def set_options() -> chalice.Response:
    return choose(blueprint.current_request)
