"""GET /docs: the interactive API reference (Swagger UI), with every asset served by the api itself.

FastAPI's own /docs loads Swagger UI from a CDN and its favicon from fastapi.tiangolo.com, so on an
air-gapped or firewalled host the page stays blank. The assets here come from the
`fastapi-standalone-docs` package, which ships Swagger UI's distribution files with their licences
(Apache-2.0; the favicon is FastAPI's, MIT); only its files are used, not its patching of FastAPI.
The page has no inline script (the start-up script is a file of ours), and its Content-Security-Policy
lets it load nothing from another origin. ReDoc is not offered.
"""

from __future__ import annotations

import html
from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import FileResponse, HTMLResponse, Response

PATH = "/docs"
_PACKAGE = "fastapi_standalone_docs"
_STATIC = Path(str(resources.files(_PACKAGE) / "static"))

# name under /docs/ -> (file in the package, media type)
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_STATIC / "swagger" / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": (_STATIC / "swagger" / "swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": (_STATIC / "fastapi" / "favicon.png", "image/png"),
}

# Swagger UI's usual FastAPI settings; no online validator badge (it would call validator.swagger.io).
_START_SCRIPT = """\
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""

# Swagger UI sets style attributes from its script, hence 'unsafe-inline' for styles (not scripts).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSET_CACHE = "public, max-age=86400"


def _page(title: str, root: str, openapi_url: str, version: str) -> str:
    def asset(name: str) -> str:
        return html.escape(f"{root}{PATH}/{name}?v={version}")

    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - API reference</title>
<link rel="icon" type="image/png" href="{asset('favicon.png')}">
<link rel="stylesheet" href="{asset('swagger-ui.css')}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(root + openapi_url)}"></div>
<script src="{asset('swagger-ui-bundle.js')}"></script>
<script src="{asset('start.js')}"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve /docs and its assets; the app must be created with docs_url=None (FastAPI's CDN page off)."""
    assert app.docs_url is None and app.openapi_url, "create the app with docs_url=None and an openapi_url"
    openapi_url = app.openapi_url
    version = metadata.version("fastapi-standalone-docs")  # in asset URLs: an upgrade is never a stale cache
    router = APIRouter(include_in_schema=False)

    @router.get(PATH)
    async def docs(request: Request) -> Response:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(_page(app.title, root, openapi_url, version), headers=SECURITY_HEADERS)

    @router.get(f"{PATH}/start.js")
    async def start_script() -> Response:
        return Response(_START_SCRIPT, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": _ASSET_CACHE, "X-Content-Type-Options": "nosniff"})

    def serve(name: str, path: Path, media_type: str) -> None:
        @router.get(f"{PATH}/{name}")
        async def asset() -> Response:
            return FileResponse(path, media_type=media_type,
                                headers={"Cache-Control": _ASSET_CACHE, "X-Content-Type-Options": "nosniff"})

    for name, (path, media_type) in ASSETS.items():
        serve(name, path, media_type)
    app.include_router(router)
