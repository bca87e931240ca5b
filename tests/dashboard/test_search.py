"""Catalog search (GET /v1/items?q=) through the trigram index of migration 0005 finds exactly what a
case-insensitive substring match of the id or the title finds, whatever the needle."""

from __future__ import annotations

import uuid
from typing import Any

from app.storage import browse
from app.storage.base import driver_connection
from tests.factories import item

TITLES = {
    "tote-1": "Red Canvas Tote",
    "tote-2": "green TOTE bag",
    "cafe": "Naïve Café Crème",
    "sale": "50% OFF today",
    "under": "under_score",
    "slash": "back\\slash",
    "norse": "ÆSIR shield",
    "istanbul": "İstanbul rug",
    "lines": "line one\nline two",
    "numeric": 12345,
    "ABC-123": "Plain",
    "x": None,
}
NEEDLES = [
    "tote", "TOTE", "ote", "d canvas", "café", "CAFÉ", "crème", "ïve", "50%", "0% o", "%", "_sc", "_", "\\s",
    "æsir", "ÆSI", "istanbul", "stan", "e one\nli", "\n", "123", "234", "abc-1", "C-12", "x", "ab", "zzz",
    "123\nplain", "plain", "a", "  ",
]


async def test_the_trigram_search_finds_what_a_substring_match_finds(
    signed_in: Any, drain: Any, db: Any
) -> None:
    async with signed_in() as account:
        items = [item(i, attributes={} if t is None else {"title": t}) for i, t in TITLES.items()]
        items.append(item("gone", status="deleted", attributes={"title": "old tote"}))
        assert (await account.http.post("/v1/ingest/items/upsert", json=items, headers=account.sk)).status_code == 202
        await drain()
        org = uuid.UUID(account.org_id)
        async with db() as session:
            conn = await driver_connection(session)
            for needle in NEEDLES:
                pattern = "%" + needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                for status in (None, "active"):
                    expected = [row[0] for row in await conn.fetch(
                        "SELECT item_id FROM items WHERE org_id = $1 AND ($3::text IS NULL OR status = $3) "
                        "AND (lower(item_id) LIKE $2 OR lower(attributes->>'title') LIKE $2) ORDER BY item_id",
                        org, pattern, status)]
                    found = await browse.search_items(session, org, query=needle, status=status, after=None,
                                                      limit=100)
                    assert [row.item_id for row in found] == expected, (needle, status)
            assert [r.item_id for r in await browse.search_items(
                session, org, query="tote", status=None, after=None, limit=100)] == ["gone", "tote-1", "tote-2"]

        # Over HTTP, paged by key.
        first = (await account.http.get("/v1/items", params={"q": "TOTE", "limit": 2})).json()["data"]
        assert [i["item_id"] for i in first["items"]] == ["gone", "tote-1"] and first["pagination"]["has_next"]
        rest = (await account.http.get(
            "/v1/items", params={"q": "TOTE", "limit": 2, "after": first["pagination"]["next_after"]}
        )).json()["data"]
        assert [i["item_id"] for i in rest["items"]] == ["tote-2"] and not rest["pagination"]["has_next"]
