"""/docs works without the internet (issue #15.6): the page references only its own origin, the api
serves every asset it needs, and a real browser that can resolve no other host renders the reference.

FastAPI's default /docs loads Swagger UI from cdn.jsdelivr.net and its favicon from
fastapi.tiangolo.com: on an air-gapped host it is blank.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.cli.support import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# What each asset must be: media type, and a piece of its content.
EXPECTED = {
    "swagger-ui-bundle.js": ("text/javascript", b"SwaggerUIBundle"),
    "start.js": ("text/javascript", b"SwaggerUIBundle({"),
    "swagger-ui.css": ("text/css", b".swagger-ui"),
    "favicon.png": ("image/png", b"\x89PNG"),
}


def _references(page: str) -> list[str]:
    return re.findall(r'(?:src|href|data-openapi-url)="([^"]+)"', page)


async def test_the_docs_page_references_only_its_own_origin_and_every_asset_is_served(client: Any) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("<!doctype", ""), page
    assert "<script>" not in page  # no inline script: the CSP below allows only our own files
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "connect-src 'self'" in csp

    references = _references(page)
    served = set()
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        asset = await client.get(reference)
        assert asset.status_code == 200, reference
        name = reference.split("?")[0].rsplit("/", 1)[-1]
        if name == "openapi.json":
            assert asset.json()["paths"]["/v1/recommend"]
            continue
        media_type, content = EXPECTED[name]
        assert asset.headers["content-type"].startswith(media_type), (reference, asset.headers["content-type"])
        assert content in asset.content, reference
        served.add(name)
    assert served == set(EXPECTED)


async def test_the_dashboard_keeps_its_own_stricter_policy(client: Any) -> None:
    docs = (await client.get("/docs")).headers["content-security-policy"]
    dashboard = (await client.get("/dashboard")).headers["content-security-policy"]
    assert dashboard != docs and "'unsafe-inline'" not in dashboard


@pytest.fixture(scope="module")
def live_api(settings: Settings) -> Iterator[str]:
    """The real api, served by uvicorn in a thread of this process, on a free port."""
    import uvicorn

    from app.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="docs-api", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30, what="the api starts")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


@pytest.fixture
def offline_browser() -> Iterator[Any]:
    """Headless chromium that can resolve no host but 127.0.0.1: the air-gapped host's view."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lehnz-docs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_browser_that_reaches_no_other_host_renders_the_api_reference(live_api: str, offline_browser: Any) -> None:
    driver = offline_browser
    driver.get(f"{live_api}/docs")

    def operations() -> list[str]:
        return driver.execute_script(  # type: ignore[no-any-return]
            "return Array.from(document.querySelectorAll('.opblock-summary-path'))"
            ".map(e => e.getAttribute('data-path'))")

    paths = wait_until(operations, timeout=60, interval=0.2, what="Swagger UI lists the operations")
    assert "/v1/recommend" in paths and "/v1/ingest/events/ingest" in paths
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(live_api) for url in loaded), loaded
    problems = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems, problems  # a resource the CSP refused, or a host it could not reach
