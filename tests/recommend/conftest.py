"""Tiny worlds: ingest over HTTP, persist with the worker, train, wait until the api serves it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.factories import OrgKeys
from tests.waiting import eventually

RECOMMEND = "/v1/recommend"


async def build_world(
    client: Any,
    org: OrgKeys,
    drain: Callable[..., Awaitable[None]],
    *,
    items: list[dict[str, Any]],
    events: list[dict[str, Any]],
    users: list[dict[str, Any]] | None = None,
    train: bool = True,
) -> str | None:
    """Returns the model version the api now serves (None when train=False)."""
    for start in range(0, len(items), 1000):
        response = await client.post("/v1/ingest/items/upsert", json=items[start:start + 1000], headers=org.sk)
        assert response.status_code == 202, response.text
    if users:
        assert (await client.post("/v1/ingest/users/upsert", json=users, headers=org.sk)).status_code == 202
    for start in range(0, len(events), 1000):
        response = await client.post("/v1/ingest/events/ingest", json=events[start:start + 1000], headers=org.pk)
        assert response.status_code == 202, response.text
    await drain()
    if not train:
        return None
    assert (await client.post("/v1/models/train", headers=org.sk)).status_code == 202
    await drain()
    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["model"] is not None, status
    version = status["model"]["version"]

    async def serving() -> bool:
        response = await client.post(RECOMMEND, json={"strategy": "popular"}, headers=org.pk)
        return response.json()["data"]["model_version"] == version

    await eventually(serving)
    return version


async def recommend(client: Any, org: OrgKeys, **body: Any) -> dict[str, Any]:
    response = await client.post(RECOMMEND, json=body, headers=org.pk)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def ids(data: dict[str, Any]) -> list[str]:
    return [r["item_id"] for r in data["results"]]


@pytest.fixture
def world() -> Any:
    return build_world
