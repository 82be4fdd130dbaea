"""`GET /openapi.json` and Swagger UI at `GET /doc`, with no token and no CDN.

Swagger UI's files come from the installed swagger-ui-bundle package and are served by this app,
so the page works offline, behind a firewall and in Lambda. Every URL in the page is relative, so
it also works under an API Gateway stage prefix (`/api/doc`).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import re

import chalice
import swagger_ui_bundle

from chalicelib import openapi
from chalicelib.api import http

blueprint = chalice.Blueprint(__name__)

DOCUMENT_PATH = "/openapi.json"
SWAGGER_UI_VERSION = swagger_ui_bundle.swagger_ui_path.name.removeprefix("swagger-ui-")
ASSETS = {  # the only files served from the package: name → Content-Type
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
UI_CONFIG = {
    "url": DOCUMENT_PATH.lstrip("/"),
    "dom_id": "#swagger-ui",
    "deepLinking": True,
    "persistAuthorization": True,
    "displayRequestDuration": True,
    "validatorUrl": None,  # never ask validator.swagger.io
}
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="data:image/png;base64,{favicon}">
<link rel="stylesheet" href="doc/swagger-ui.css?v={version}">
<style>body {{ margin: 0; background: #fafafa; }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="doc/swagger-ui-bundle.js?v={version}"></script>
<script>{init}</script>
</body>
</html>
"""
INIT_SCRIPT = """
window.ui = SwaggerUIBundle(Object.assign({config}, {{
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}}));
"""
# Every response of these routes: no sniffing, no framing (clickjacking), and for the page a policy
# that lets it load only this app's files. Swagger UI sets inline styles, so style-src needs
# 'unsafe-inline'; its one inline script is allowed by its hash; "Try it out" fetches this origin and
# shows downloaded images as blob: URLs.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer"}
DOCUMENT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
PAGE_CSP = ("default-src 'none'; script-src 'self' '{script_hash}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'")


def guarded(csp: str = DOCUMENT_CSP) -> dict:
    """The headers every page, file and document of ours is served with."""
    return {**SECURITY_HEADERS, "Content-Security-Policy": csp}


def served_file(body: str, *, content_type: str, csp: str = DOCUMENT_CSP, cache: str = "no-cache") -> chalice.Response:
    """A page or file of ours (200)."""
    return chalice.Response(body=body, status_code=200,
                            headers={"Content-Type": content_type, "Cache-Control": cache, **guarded(csp)})


def no_file(detail: str) -> chalice.Response:
    """The 404 of a file route, with the same headers."""
    return http.json_response({"error": "NotFound", "detail": detail}, status=404, headers=guarded())


@blueprint.route(DOCUMENT_PATH, methods=["GET"])
@openapi.document(
    operation_id="get_openapi", summary="This OpenAPI 3.0 document", tags=["docs"], public=True,
    description="Generated from the routes and the pydantic models they use. Feed it to a client generator.",
    responses={200: openapi.Reply("The document.", schema={"type": "object"})})
@http.handler
def get_openapi() -> chalice.Response:
    request = blueprint.current_request
    path = (request.context or {}).get("path") or DOCUMENT_PATH
    prefix = path[:-len(DOCUMENT_PATH)] if path.endswith(DOCUMENT_PATH) else ""
    return http.json_response(dict(_document(blueprint.current_app), servers=[{"url": prefix or "/"}]),
                              headers=guarded())


@blueprint.route("/doc", methods=["GET"])
@openapi.document(
    operation_id="get_swagger_ui", summary="Swagger UI", tags=["docs"], public=True,
    description="Browse the API and try it: \"Authorize\" with your token, then \"Try it out\".",
    responses={200: openapi.Reply("The page.", media_types=("text/html",), schema={"type": "string"})})
@http.handler
def get_swagger_ui() -> chalice.Response:
    page = _page(blueprint.current_app.app_name)
    return served_file(page, content_type="text/html; charset=utf-8", csp=_page_csp(page))


@blueprint.route("/doc/{asset}", methods=["GET"])
@openapi.document(
    operation_id="get_swagger_ui_asset", summary="A file of Swagger UI", tags=["docs"], public=True,
    parameters=(openapi.path_param("asset", "the file's name", schema={"type": "string", "enum": sorted(ASSETS)},
                                   example="swagger-ui.css"),),
    responses={200: openapi.Reply("The file, from the installed swagger-ui-bundle package.",
                                  media_types=tuple(sorted(set(ASSETS.values()))), schema={"type": "string"})},
    errors=(404,))
@http.handler
def get_swagger_ui_asset(asset: str) -> chalice.Response:
    if asset not in ASSETS:
        return no_file(f"no Swagger UI file {asset!r}")
    return served_file(_asset(asset), content_type=ASSETS[asset], cache="public, max-age=604800, immutable")


@functools.lru_cache(maxsize=1)
def _document(app: chalice.Chalice) -> dict:
    """Built once per process, on the first request for it."""
    return openapi.build_document(app)


@functools.lru_cache(maxsize=1)
def _page(title: str) -> str:
    favicon = base64.b64encode((swagger_ui_bundle.swagger_ui_path / "favicon-32x32.png").read_bytes()).decode()
    return PAGE.format(title=html.escape(title), favicon=favicon, version=SWAGGER_UI_VERSION,
                       init=INIT_SCRIPT.format(config=json.dumps(UI_CONFIG)))


@functools.lru_cache(maxsize=1)
def _page_csp(page: str) -> str:
    """The page's policy, allowing its inline script by the script's SHA-256 (CSP level 2)."""
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return PAGE_CSP.format(script_hash=f"sha256-{digest}")


@functools.lru_cache(maxsize=len(ASSETS))
def _asset(name: str) -> str:
    return (swagger_ui_bundle.swagger_ui_path / name).read_text(encoding="utf-8")
