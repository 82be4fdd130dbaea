"""Model and discovery routes: what A1111 clients (webuiapi, Open WebUI) call before they generate.

Checkpoints and LoRAs come from every instance, merged and enriched (chalicelib/catalog.py); the
discovery lists are passed through from one instance. All are read-only: writes to A1111 (POST
options, refresh-*) are not offered (docs/models.md, "Writes are not offered"). A1111's operationIds
are kept so generated A1111 clients work unchanged.
"""
from __future__ import annotations

import urllib.parse

import chalice

from chalicelib import catalog
from chalicelib import context as context_module
from chalicelib import model_choice
from chalicelib import openapi
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

REFRESH = openapi.Param(
    "refresh", "query", "`true` asks A1111 (and Civitai) again now instead of answering from the cache; an "
    "instance or lookup that does not answer still falls back to its last answer.",
    {"type": "boolean", "default": False})
STALE_HEADER = "`true` when an instance did not answer and its last answer was served instead"
LIST_HEADERS = {
    "X-Catalog-Stale": STALE_HEADER,
    "X-Civitai-Enrichment": "`complete`, `partial` (Civitai did not answer every lookup within CIVITAI_BUDGET: "
                            "those items say `civitai.status: unavailable` or carry their last answer) or "
                            "`disabled` (CIVITAI_ENABLED is false: no `civitai` key)",
}
PASSTHROUGH_HEADERS = {"X-A1111-Instance": "the instance that gave this answer", "X-Catalog-Stale": STALE_HEADER}
LIST_DESCRIPTION = (
    "A1111's list from every instance in A1111_BASE_URL, merged: one entry per file, with `instances` (which "
    "have it), `stale` and, when CIVITAI_ENABLED, `civitai` (looked up by the best hash A1111 shows). Answers "
    "from the cache when an instance answered within CATALOG_TTL; when an instance is unreachable its last "
    "answer is served (`stale: true`, header X-Catalog-Stale). Civitai never delays the answer by more than "
    "CIVITAI_BUDGET seconds.")
ITEM_DESCRIPTION = (
    "One entry of the merged list (see the list's operation), by {keys}, percent-encoded. A title with a "
    "subfolder contains `/`, which cannot be a path segment: use model_name or a hash for those.")
NAME = {
    "sd-models": openapi.path_param("name", "title, model_name, AutoV2 short hash or sha256",
                                    example="v1-5-pruned-emaonly"),
    "loras": openapi.path_param("name", "name, alias, sshs_model_hash or its 12-hex AutoV3 prefix",
                                example="add_detail"),
}
NOT_FOUND = openapi.Reply("No such entry on any instance.", model="Error",
                          example={"error": "NotFound", "detail": "no checkpoint named 'x' on any A1111 instance"})


def _listing_response(listing: catalog.Listing, *, single: bool) -> chalice.Response:
    return http.json_response(listing.items[0] if single else listing.items, headers={
        "X-Catalog-Stale": "true" if listing.stale else "false", "X-Civitai-Enrichment": listing.enrichment})


def _refresh() -> bool:
    return catalog.parse_refresh(http.query_param(blueprint.current_request, "refresh"))


@blueprint.route("/sdapi/v1/sd-models", methods=["GET"])
@openapi.document(
    operation_id="get_sd_models_sdapi_v1_sd_models_get", summary="List checkpoints (every instance)",
    tags=["models"], description=LIST_DESCRIPTION, parameters=(REFRESH,),
    responses={200: openapi.Reply("A1111's SDModelItem list, merged and enriched.", model="SDModelList",
                                  headers=LIST_HEADERS)}, errors=(422, 502))
@http.handler
def get_sd_models() -> chalice.Response:
    http.owner_of(blueprint.current_request)
    refresh = _refresh()
    return _listing_response(catalog.list_items(context_module.get_context(), catalog.SD_MODELS, refresh=refresh),
                             single=False)


@blueprint.route("/sdapi/v1/sd-models/{name}", methods=["GET"])
@openapi.document(
    operation_id="get_sd_model", summary="One checkpoint", tags=["models"],
    description=ITEM_DESCRIPTION.format(keys="title, model_name, short hash (AutoV2) or sha256"),
    parameters=(NAME["sd-models"], REFRESH),
    responses={200: openapi.Reply("The checkpoint.", model="SDModelItem", headers=LIST_HEADERS),
               404: NOT_FOUND}, errors=(422, 502))
@http.handler
def get_sd_model(name: str) -> chalice.Response:
    http.owner_of(blueprint.current_request)
    refresh = _refresh()
    return _listing_response(catalog.get_item(context_module.get_context(), catalog.SD_MODELS,
                                              urllib.parse.unquote(name), refresh=refresh), single=True)


@blueprint.route("/sdapi/v1/loras", methods=["GET"])
@openapi.document(
    operation_id="get_loras_sdapi_v1_loras_get", summary="List LoRAs (every instance)", tags=["models"],
    description=LIST_DESCRIPTION + " A LoRA's hash is its `metadata.sshs_model_hash` (Civitai's AutoV3), when the "
    "file has one.", parameters=(REFRESH,),
    responses={200: openapi.Reply("A1111's LoRA list, merged and enriched.", model="LoraList",
                                  headers=LIST_HEADERS)}, errors=(422, 502))
@http.handler
def get_loras() -> chalice.Response:
    http.owner_of(blueprint.current_request)
    refresh = _refresh()
    return _listing_response(catalog.list_items(context_module.get_context(), catalog.LORAS, refresh=refresh),
                             single=False)


@blueprint.route("/sdapi/v1/loras/{name}", methods=["GET"])
@openapi.document(
    operation_id="get_lora", summary="One LoRA", tags=["models"],
    description=ITEM_DESCRIPTION.format(keys="name, alias, sshs_model_hash or its 12-hex AutoV3 prefix"),
    parameters=(NAME["loras"], REFRESH),
    responses={200: openapi.Reply("The LoRA.", model="LoraItem", headers=LIST_HEADERS), 404: NOT_FOUND},
    errors=(422, 502))
@http.handler
def get_lora(name: str) -> chalice.Response:
    http.owner_of(blueprint.current_request)
    refresh = _refresh()
    return _listing_response(catalog.get_item(context_module.get_context(), catalog.LORAS,
                                              urllib.parse.unquote(name), refresh=refresh), single=True)


# --- Discovery, passed through -------------------------------------------------------------------

PASSTHROUGH_DESCRIPTION = (
    "A1111's own answer, from the first instance in A1111_BASE_URL that answers (header X-A1111-Instance). Served "
    "from the cache when that instance answered within CATALOG_TTL; the last answer (X-Catalog-Stale: true) when no "
    "instance answers now.")


def passthrough_response(path: str) -> chalice.Response:
    owner = http.owner_of(blueprint.current_request)
    refresh = _refresh()
    ctx = context_module.get_context()
    answer = catalog.passthrough(ctx, path, refresh=refresh)
    body = answer.body
    if path == model_choice.OPTIONS_PATH:
        body = model_choice.show(body, checkpoint=model_choice.current(ctx, owner=owner))
    return http.json_response(body, headers={"X-A1111-Instance": answer.instance,
                                                    "X-Catalog-Stale": "true" if answer.stale else "false"})


def _discovery(path: str, *, operation_id: str, summary: str, model: str) -> None:
    """Register one passthrough route: GET `path`, documented with A1111's operationId and schema."""
    def view() -> chalice.Response:
        return passthrough_response(path)

    view.__name__ = operation_id
    documented = openapi.document(
        operation_id=operation_id, summary=summary, tags=["discovery"], description=PASSTHROUGH_DESCRIPTION,
        parameters=(REFRESH,), responses={200: openapi.Reply("A1111's answer.", model=model,
                                                             headers=PASSTHROUGH_HEADERS)},
        errors=(422, 502))(http.handler(view))
    blueprint.route(path, methods=["GET"])(documented)


_discovery("/sdapi/v1/samplers", operation_id="get_samplers_sdapi_v1_samplers_get", summary="Samplers",
           model="SamplerList")
_discovery("/sdapi/v1/schedulers", operation_id="get_schedulers_sdapi_v1_schedulers_get", summary="Schedulers",
           model="SchedulerList")
_discovery("/sdapi/v1/sd-vae", operation_id="get_sd_vaes_sdapi_v1_sd_vae_get", summary="VAEs",
           model="SDVaeList")
_discovery("/sdapi/v1/upscalers", operation_id="get_upscalers_sdapi_v1_upscalers_get", summary="Upscalers",
           model="UpscalerList")
_discovery("/sdapi/v1/scripts", operation_id="get_scripts_list_sdapi_v1_scripts_get", summary="Scripts",
           model="ScriptsList")
_discovery("/sdapi/v1/options", operation_id="get_config_sdapi_v1_options_get",
           summary="Settings (sd_model_checkpoint: your own default, see POST)", model="Options")
_discovery("/sdapi/v1/embeddings", operation_id="get_embeddings_sdapi_v1_embeddings_get",
           summary="Textual-inversion embeddings", model="EmbeddingsResponse")
