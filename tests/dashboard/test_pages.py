"""The dashboard is served by the api: / redirects to it, the page carries a strict CSP, the assets
ship inside the package (and are named by their content, so no browser runs a stale script)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from app.dashboard.routes import STATIC_DIR


async def test_the_root_redirects_to_the_dashboard_without_reflecting_the_host(client: Any) -> None:
    response = await client.get("/", headers={"Host": "evil.example"})
    assert response.status_code == 307 and response.headers["location"] == "/dashboard"


async def test_the_page_has_a_strict_content_security_policy_and_versioned_assets(client: Any) -> None:
    for path in ("/dashboard", "/dashboard/"):
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert 'id="app"' in page.text
    for asset, media_type in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        digest = hashlib.sha256((STATIC_DIR / asset).read_bytes()).hexdigest()[:12]
        url = re.search(rf'"(/dashboard/static/{re.escape(asset)}\?v=[0-9a-f]+)"', page.text)
        assert url is not None and url.group(1).endswith(digest)
        served = await client.get(url.group(1))
        assert served.status_code == 200 and media_type in served.headers["content-type"]
        assert served.content == (STATIC_DIR / asset).read_bytes()


async def test_a_missing_asset_is_a_404_envelope(client: Any) -> None:
    missing = await client.get("/dashboard/static/nope.js")
    assert missing.status_code == 404 and missing.json()["success"] is False


def test_the_assets_are_package_data() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app"]
    shipped = {p.name for pattern in patterns for p in (STATIC_DIR.parents[1]).glob(pattern)}
    assert {"index.html", "dashboard.js", "dashboard.css"} <= shipped
