"""Test data builders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from app.storage import orgs


@dataclass(frozen=True)
class OrgKeys:
    org_id: str
    slug: str
    publishable_key: str
    secret_key: str

    @property
    def pk(self) -> dict[str, str]:
        return {"X-API-KEY": self.publishable_key}

    @property
    def sk(self) -> dict[str, str]:
        return {"X-API-KEY": self.secret_key}


async def create_org(sessions: Any, *, name: str, domain: str = "commerce") -> OrgKeys:
    async with sessions() as session, session.begin():
        slug = f"t-{uuid.uuid4().hex[:12]}"
        org = await orgs.create_org(session, name=name, slug=slug, domain=domain)
        pair = await orgs.add_key_pair(session, org.id)
    return OrgKeys(str(org.id), slug, pair.publishable_key, pair.secret_key)


def item(item_id: str, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"item_id": item_id, "item_type": "product", "status": "active", "attributes": {}}
    record.update(overrides)
    return record


def event(user_id: str, event_name: str = "view", item_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    family = {
        "purchase": "conversion", "add_to_cart": "conversion", "checkout_start": "conversion", "identify": "system",
    }.get(event_name, "engagement")
    record: dict[str, Any] = {"user_id": user_id, "event_family": family, "event_name": event_name}
    if item_id is not None:
        record["item_id"] = item_id
    record.update(overrides)
    return record


def user(user_id: str, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"user_id": user_id, "status": "active", "created_at": "2026-01-01T00:00:00Z"}
    record.update(overrides)
    return record


async def count(db: Any, table: Any, org: OrgKeys, *where: Any) -> int:
    async with db() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(table).where(table.org_id == uuid.UUID(org.org_id), *where)
            )
        )
