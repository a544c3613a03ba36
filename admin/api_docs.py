"""``/docs``: Swagger UI served from this installation, not from a CDN.

FastAPI's default page loads Swagger UI's script and style from a CDN: blank without internet
access, and run without Subresource Integrity, so whoever serves them runs script on the page
where the operator pastes the admin token. Here the page, its script and its style all come
from this server (Swagger UI's files as the ``fastapi-offline`` package ships them, our own
start-up script), under a Content-Security-Policy that allows this site's own files only.

``/docs`` and ``/openapi.json`` need no token, by choice: they describe the API (as this
repository does) and return no data; "Authorize" on the page takes the token for "Try it out".
"""

from html import escape
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from admin.web.render import STATIC_DIR

ASSETS: Final = "/docs/assets"
START: Final = "/docs/start.js"
_SWAGGER_FILES: Final = Path(fastapi_offline.__file__).parent / "static"
_HEADERS: Final = {
    # Swagger UI sets inline style attributes as it renders; no other exception.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; the app is created with ``docs_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=_SWAGGER_FILES), name="api-docs-assets")
    page = _page(app.title, app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=_HEADERS)

    @app.get(START, include_in_schema=False)
    async def start() -> FileResponse:
        return FileResponse(STATIC_DIR / "api-docs.js", media_type="text/javascript")


def _page(title: str, openapi_url: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)} - Swagger UI</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" href="{ASSETS}/favicon.png">
</head>
<body data-openapi="{escape(openapi_url)}">
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{START}"></script>
</body>
</html>
"""
