"""The dashboard's own recommendations (the playground, an item's similar items, a user's
personalized results) are a person trying strategies, not a shopper: answered like any other, but
not logged in the served log, so analytics counts only what storefronts were served."""

from __future__ import annotations

import uuid
from typing import Any

from app.storage.base import driver_connection
from tests.factories import item


async def test_recommendations_asked_by_a_dashboard_session_are_not_logged_as_served(
    signed_in: Any, dashboard_app: Any, drain: Any, db: Any
) -> None:
    async with signed_in() as account:
        http = account.http
        items = [item("a"), item("b"), item("c")]
        assert (await http.post("/v1/ingest/items/upsert", json=items, headers=account.sk)).status_code == 202
        await drain()

        tried = await http.post("/v1/recommend", json={"strategy": "popular"}, headers=account.csrf_header)
        assert tried.status_code == 200, tried.text
        tried_similar = await http.post(
            "/v1/recommend", json={"strategy": "similar", "context_item_id": "a"}, headers=account.csrf_header
        )
        assert tried_similar.status_code == 200, tried_similar.text
        assert tried.json()["data"]["recommendation_id"]  # the answer itself is unchanged
        shop = await http.post("/v1/recommend", json={"strategy": "popular"}, headers=account.pk)  # a storefront
        assert shop.status_code == 200, shop.text

        await dashboard_app.state.lehnz.served_log.flush()
        await drain()
        async with db() as session:
            conn = await driver_connection(session)
            logged = await conn.fetch(
                "SELECT recommendation_id FROM served_recommendations WHERE org_id = $1", uuid.UUID(account.org_id)
            )
        assert [str(row[0]) for row in logged] == [shop.json()["data"]["recommendation_id"]]
        analytics = await http.get("/v1/analytics/recommendations")
        assert analytics.json()["data"]["totals"]["served"] == 1
