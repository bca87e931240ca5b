"""Wire shapes of the operator reads the dashboard is built on (GET /v1/org, /v1/overview, /v1/items,
/v1/users, ...). Any client may use them: a secret key or a dashboard session (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RateLimitUsage(BaseModel):
    limit: str = Field(examples=["1000/15minutes"], description="the org's limit, shared by all its keys")
    source: str = Field(
        examples=["deployment"], description="deployment (LEHNZ_RATE_LIMIT) or org (an override)"
    )
    requests: int = Field(description="requests allowed per window")
    window_s: int = Field(description="window length in seconds")
    used: int | None = Field(
        description="requests counted in the current window, this one included; "
        "null when the limiter cannot reach Redis"
    )
    remaining: int | None
    reset_s: int | None = Field(description="seconds until the window resets")


class SignedInAccount(BaseModel):
    account_id: str
    email: str


class OrgSettings(BaseModel):
    org_id: str
    tenant_id: str = Field(examples=["glow-beauty"])
    name: str
    domain: str = Field(examples=["commerce"])
    created_at: str
    rate_limit: RateLimitUsage
    account: SignedInAccount | None = Field(
        description="the signed-in account (dashboard sessions); null for keys"
    )


class CatalogCounts(BaseModel):
    active: int
    inactive: int
    deleted: int


class HourCount(BaseModel):
    hour: str = Field(examples=["2026-11-26T10:00:00Z"], description="start of the UTC hour")
    events: int


class DayCount(BaseModel):
    day: str = Field(examples=["2026-11-26"], description="UTC day")
    events: int


class EventCounts(BaseModel):
    last_24h: int = Field(description="events in the 24 hourly buckets below")
    last_7d: int = Field(description="events in the 7 daily buckets below")
    hourly: list[HourCount] = Field(description="the last 24 UTC hours, oldest first, the current hour last")
    daily: list[DayCount] = Field(description="the last 7 UTC days, oldest first, today last")


class Overview(BaseModel):
    catalog: CatalogCounts = Field(description="items by status")
    events: EventCounts = Field(description="persisted events by the time they happened")
    dead_letters: int = Field(
        description="this org's jobs parked in the dead-letter list (lehnz dead-letter)"
    )
    serving_model_version: str | None = Field(
        description="the model version this api process serves now; null while it has not loaded the org "
        "(its first request loads it). GET /v1/models/status has the latest trained"
    )


class Page(BaseModel):
    limit: int
    after: str | None = Field(description="the cursor this page started after")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")
    has_next: bool


class ItemOut(BaseModel):
    item_id: str
    item_type: str
    status: str
    attributes: dict[str, Any]
    created_at: str
    updated_at: str


class ItemPage(BaseModel):
    items: list[ItemOut]
    pagination: Page


class UserOut(BaseModel):
    user_id: str
    upserted: bool = Field(description="sent to /v1/ingest/users/upsert (else only seen in events)")
    status: str | None
    attributes: dict[str, Any] | None
    created_at: str | None
    events: int = Field(description="persisted events under this id")
    last_event_at: str | None


class UserPage(BaseModel):
    users: list[UserOut]
    pagination: Page


class EventOut(BaseModel):
    event_id: str
    user_id: str
    event_family: str
    event_name: str
    item_id: str | None
    recommendation_id: str | None
    context: dict[str, Any] | None
    timestamp: str
    received_at: str


class RecentActivity(BaseModel):
    item_id: str
    event_name: str
    event_family: str
    timestamp: str


class UserActivity(BaseModel):
    user: UserOut
    canonical_id: str = Field(
        description="the id this user was stitched into (identify), else the user's own"
    )
    aliases: list[str] = Field(description="anonymous ids stitched into the canonical id")
    events: list[EventOut] = Field(
        description="persisted events of the canonical id and its aliases, newest first"
    )
    recent: list[RecentActivity] = Field(
        description="the real-time activity the session strategies read now (Redis), newest first"
    )
