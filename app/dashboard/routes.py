"""Serve the dashboard: GET /dashboard (the page), /dashboard/static/* (its assets), GET / -> /dashboard.

The page is one HTML shell; the script renders every view from API calls. Asset URLs carry a hash
of their content, so a browser never runs a stale script after an upgrade.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
_ASSETS = ("dashboard.css", "dashboard.js")

# Only our own script and styles run; item images may come from any https/http host (the catalog's
# image URLs); the page cannot be framed (clickjacking) and sends no referrer to image hosts.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page() -> str:
    html = (STATIC_DIR / "index.html").read_text()
    for asset in _ASSETS:
        digest = hashlib.sha256((STATIC_DIR / asset).read_bytes()).hexdigest()[:12]
        html = html.replace(f"/dashboard/static/{asset}", f"/dashboard/static/{asset}?v={digest}")
    return html


def install(app: FastAPI) -> None:
    page = _page()
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse("/dashboard", status_code=307)

    @router.get("/dashboard")
    @router.get("/dashboard/")
    async def dashboard() -> Response:
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
