"""`GET /ui`: the live queue page, plain files shipped in chalicelib/ui/ and served by the app.

No token in the URL and none in the page: it asks for one and keeps it in the tab's sessionStorage.
The page's policy lets it load only this app's files (no inline script, no CDN) and talk to this
origin; previews are data: URLs, downloaded images blob: URLs. Every URL in the page is relative, so
it also works under an API Gateway stage prefix.
"""
from __future__ import annotations

import functools
import pathlib

import chalice

from chalicelib import openapi
from chalicelib.api import docs
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

FILES = pathlib.Path(__file__).resolve().parent.parent / "ui"
ASSETS = {  # the only files served: name → Content-Type
    "ui.js": "application/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@blueprint.route("/ui", methods=["GET"])
@openapi.document(
    operation_id="get_ui", summary="The live queue page", tags=["live"], public=True,
    description="Your jobs, live: status, progress, previews, images, cancel; the instances; a txt2img form. "
                "The page asks for your token and keeps it in the browser tab (sessionStorage). See docs/live.md.",
    responses={200: openapi.Reply("The page.", media_types=("text/html",), schema={"type": "string"})})
@http.handler
def get_ui() -> chalice.Response:
    return docs.served_file(_file("index.html"), content_type="text/html; charset=utf-8", csp=PAGE_CSP)


@blueprint.route("/ui/{asset}", methods=["GET"])
@openapi.document(
    operation_id="get_ui_asset", summary="A file of the live queue page", tags=["live"], public=True,
    parameters=(openapi.path_param("asset", "the file's name", schema={"type": "string", "enum": sorted(ASSETS)},
                                   example="ui.js"),),
    responses={200: openapi.Reply("The file.", media_types=tuple(sorted(set(ASSETS.values()))),
                                  schema={"type": "string"})},
    errors=(404,))
@http.handler
def get_ui_asset(asset: str) -> chalice.Response:
    if asset not in ASSETS:
        return docs.no_file(f"no file {asset!r} of the page")
    return docs.served_file(_file(asset), content_type=ASSETS[asset])


@functools.lru_cache(maxsize=len(ASSETS) + 1)
def _file(name: str) -> str:
    return (FILES / name).read_text(encoding="utf-8")
