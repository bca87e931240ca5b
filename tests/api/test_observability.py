"""/healthz, /readyz, /metrics, the access log and the OpenAPI document."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson
from openapi_spec_validator import validate

from app.logs import JsonFormatter
from tests.factories import OrgKeys, event, item
from tests.recommend.conftest import build_world
from tests.waiting import eventually


async def test_health_and_readiness(client: Any) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["data"] == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["data"]
    assert checks["database"] == "ok" and checks["redis"] == "ok" and "loaded_orgs" in checks["models"]


async def test_readiness_names_no_organisation_without_the_metrics_token(
    client: Any, app_with: Any, org: OrgKeys, drain: Any
) -> None:
    """Anyone who can reach the port may probe /readyz: it reports counts; which orgs have which
    model version is for whoever holds LEHNZ_METRICS_TOKEN."""
    await build_world(client, org, drain, items=[item("a"), item("b")], events=[event("u", "view", "a")])
    async with app_with(metrics_token="scrape-me") as guarded:
        # A request loads the org (at start an api preloads only as many orgs as its cache holds,
        # and the session has made many by now).
        assert (await guarded.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)).is_success

        async def loaded() -> Any:
            response = await guarded.get("/readyz", headers={"Authorization": "Bearer scrape-me"})
            return org.org_id in response.json()["data"]["models"].get("versions", {}) and response

        with_token = await eventually(loaded)
        without = await guarded.get("/readyz")
        wrong = await guarded.get("/readyz", headers={"Authorization": "Bearer scrape-you"})
    open_port = await client.get("/readyz")  # no token configured at all
    assert with_token.status_code == 200
    for response in (without, wrong, open_port):
        assert response.status_code == 200
        assert set(response.json()["data"]["models"]) == {"loaded_orgs", "loading"}, response.text
        assert org.org_id not in response.text


async def test_metrics_expose_the_named_series_after_real_traffic(
    client: Any, app_with: Any, org: OrgKeys, drain: Any
) -> None:
    await build_world(client, org, drain, items=[item("a"), item("b")],
                      events=[event(f"u{n}", "view", "ab"[n % 2]) for n in range(6)])
    await client.post("/v1/recommend", json={"strategy": "personalized", "user_id": "nobody"}, headers=org.pk)
    await client.post("/v1/recommend", json={"strategy": "similar", "context_item_id": "a"}, headers=org.pk)
    async with app_with(rate_limit="1/day") as limited:
        statuses = [(await limited.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)).status_code
                    for _ in range(2)]
    assert statuses == [200, 429]
    text = (await client.get("/metrics")).text
    for series in (
        'lehnz_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/recommend"}',
        'lehnz_http_requests_total{method="POST",route="/v1/ingest/events/ingest",status="202"}',
        'lehnz_recommend_duration_seconds_count{strategy="similar"}',
        'lehnz_recommend_served_total{strategy="personalized"}',
        'lehnz_recommend_fallback_total{strategy="personalized"}',
        'lehnz_ingest_records_accepted_total{kind="events"}',
        'lehnz_ingest_records_persisted_total{kind="events"}',
        'lehnz_queue_depth{queue="ingest"}',
        f'lehnz_train_duration_seconds{{org="{org.org_id}"}}',
        f'lehnz_train_last_success_timestamp_seconds{{org="{org.org_id}"}}',
        f'lehnz_model_trained_timestamp_seconds{{org="{org.org_id}"',
        'lehnz_rate_limit_rejections_total{scope="org"}',
    ):
        assert series in text, series


async def test_metrics_token_guards_the_series_when_set(app_with: Any) -> None:
    async with app_with(metrics_token="scrape-me") as guarded:
        missing = await guarded.get("/metrics")
        wrong = await guarded.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
        right = await guarded.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    for refused in (missing, wrong):
        assert refused.status_code == 401 and refused.json()["success"] is False
        assert "lehnz_" not in refused.text
    assert right.status_code == 200 and "lehnz_http_requests_total" in right.text


async def test_one_json_line_per_request_without_secrets(app_with: Any, org: OrgKeys) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    password = "a very secret passphrase 42"
    try:
        async with app_with(access_log=True) as client:
            await client.post("/v1/ingest/events/ingest", json=event("u", "view", "secret-item-id"), headers=org.pk)
            await client.post("/v1/ingest/items/upsert", json=item("x"), headers={"X-API-KEY": "lehnz_sk_wrongkey123"})
            await client.post("/auth/register", json={"email": "log@example.com", "password": password,
                                                      "org_name": "Logs"})
            await client.post("/auth/login", json={"email": "log@example.com", "password": password})
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    output = stream.getvalue()
    lines = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "lehnz.access"]
    assert len(access) == 4
    first = access[0]
    assert first["route"] == "/v1/ingest/events/ingest" and first["status"] == 202
    assert first["org"] == org.slug and first["method"] == "POST"
    assert isinstance(first["latency_ms"], float) and len(first["request_id"]) == 32
    assert access[1]["status"] == 401 and access[1]["org"] is None
    for secret in (org.publishable_key, org.secret_key, "lehnz_sk_wrongkey123", password, "secret-item-id"):
        assert secret not in output


async def test_openapi_document_validates_and_uses_the_envelope(client: Any) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    validate(spec)
    operations = [(path, method, op) for path, item_ in spec["paths"].items() for method, op in item_.items()]
    assert len(operations) >= 14
    for path, method, operation in operations:
        if path in ("/metrics",):
            continue
        responses = operation["responses"]
        assert "422" not in responses or path == "/v1/recommend", (path, method)
        for status, body in responses.items():
            schema = orjson.dumps(body.get("content", {}))
            assert b"Envelope" in schema or b"ErrorEnvelope" in schema or status == "200" and path in (
                "/healthz", "/readyz"), (path, method, status)
    assert "ItemIn" in spec["components"]["schemas"] and "RecommendIn" in spec["components"]["schemas"]
    # Every key-protected route documents X-API-KEY, including the two that read it themselves.
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-KEY"
    for path in ("/v1/recommend", "/v1/ingest/events/ingest", "/v1/ingest/items/upsert", "/v1/models/train"):
        assert spec["paths"][path]["post"]["security"] == [{"APIKeyHeader": []}], path
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
