"""Wire shapes of the three ingestion endpoints (API.md section 4) and their batch validation."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StringConstraints,
    model_validator,
)

from app.schemas.validation import Id


def _no_nul(value: str) -> str:
    # Postgres text and jsonb cannot hold NUL; reject it at the door instead of failing in the worker.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


ShortText = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
RecommendationId = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
Status = Literal["active", "inactive", "deleted"]
EventFamily = Literal["exposure", "engagement", "conversion", "system"]

MAX_JSON_DEPTH = 32
# Clock skew we tolerate on client timestamps; anything later is a bug on the client side and
# would otherwise weigh more than "now" in every time-decayed model.
MAX_FUTURE_SKEW = timedelta(hours=24)
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)


_SCALARS = (int, float, bool, type(None))


def _check_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Free JSON must be storable as jsonb: bounded depth, no NUL in keys or strings."""
    if value is None:
        return None
    # Fast path, the common shape: a flat object of scalars (validation runs per record).
    for key, child in value.items():
        if "\x00" in key:
            raise ValueError("keys must not contain NUL characters")
        if isinstance(child, str):
            if "\x00" in child:
                raise ValueError("strings must not contain NUL characters")
        elif not isinstance(child, _SCALARS):
            return _check_nested(value)
    return value


def _check_nested(value: dict[str, Any]) -> dict[str, Any]:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    raise ValueError("keys must not contain NUL characters")
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str) and "\x00" in node:
            raise ValueError("strings must not contain NUL characters")
    return value


def _check_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # ISO 8601 without an offset is read as UTC
        value = value.replace(tzinfo=UTC)
    if value < MIN_TIMESTAMP:
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    if value > _latest_allowed():
        raise ValueError("must not be more than 24 hours in the future")
    return value


_latest_cache: list[tuple[float, datetime]] = []


def _latest_allowed() -> datetime:
    """now + the allowed skew, recomputed at most once a second (validation runs per record)."""
    tick = time.monotonic()
    if not _latest_cache or tick - _latest_cache[0][0] > 1.0:
        _latest_cache[:] = [(tick, datetime.now(UTC) + MAX_FUTURE_SKEW)]
    return _latest_cache[0][1]


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


FreeJson = Annotated[dict[str, Any] | None, AfterValidator(_check_json)]
Timestamp = Annotated[datetime | None, AfterValidator(_check_time)]


class _Record(BaseModel):
    # Unknown fields are ignored, as the hosted service does, so newer clients keep working.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class ItemIn(_Record):
    item_id: Id
    item_type: ShortText
    status: Status
    attributes: FreeJson = None
    created_at: Timestamp = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "prod_7",
                    "item_type": "product",
                    "status": "active",
                    "attributes": {"title": "Noise-cancelling headphones", "brand": "Sony", "price": 299.0,
                                   "category": "audio", "tags": ["wireless"]},
                    "created_at": "2026-11-01T09:00:00Z",
                }
            ]
        }
    )

    def to_record(self, *, received_at: float) -> dict[str, Any]:
        """The shape the worker persists (times as unix seconds); shared by the api and `lehnz import`."""
        return {
            "item_id": self.item_id,
            "item_type": self.item_type,
            "status": self.status,
            "attributes": self.attributes or {},
            "created_at": _epoch(self.created_at),
            "received_at": received_at,
        }


class UserIn(_Record):
    user_id: Id
    status: Status
    created_at: Annotated[datetime, AfterValidator(_check_time)]
    attributes: FreeJson = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "user_42", "status": "active", "created_at": "2026-01-15T12:00:00Z",
                 "attributes": {"segment": "vip", "locale": "en-GB"}}
            ]
        }
    )

    def to_record(self, *, received_at: float) -> dict[str, Any]:
        """The shape the worker persists (times as unix seconds); shared by the api and `lehnz import`."""
        return {
            "user_id": self.user_id,
            "status": self.status,
            "attributes": self.attributes or {},
            "created_at": self.created_at.timestamp(),
            "received_at": received_at,
        }


class EventIn(_Record):
    user_id: Id
    event_family: EventFamily
    event_name: ShortText
    previous_user_id: Id | None = None
    item_id: Id | None = None
    recommendation_id: RecommendationId | None = None
    event_id: uuid.UUID | None = None
    context: FreeJson = None
    timestamp: Timestamp = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "user_42", "event_family": "conversion", "event_name": "purchase",
                 "item_id": "prod_7", "context": {"order_id": "o-1001", "price": 299.0, "quantity": 1}},
                {"user_id": "user_42", "event_family": "system", "event_name": "identify",
                 "previous_user_id": "3f1c2a9e-anon"},
            ]
        }
    )

    @model_validator(mode="after")
    def _rules(self) -> EventIn:
        if self.event_name != self.event_name.lower():
            raise ValueError("event_name must be lowercase")
        if self.event_name == "identify":
            if not self.previous_user_id:
                raise ValueError("identify events require previous_user_id")
            if self.previous_user_id == self.user_id:
                raise ValueError("previous_user_id must differ from user_id")
        return self

    def to_record(self, *, received_at: float, default_id: uuid.UUID | str | None = None) -> dict[str, Any]:
        """The shape the worker persists; shared by the api and `lehnz import`.

        The event id is assigned here, before queueing, so a retried job can never duplicate an
        event: the client's, else `default_id`, else a random one. occurred_at defaults to the
        receive time.
        """
        return {
            "event_id": str(self.event_id or default_id or uuid.uuid4()),
            "user_id": self.user_id,
            "event_family": self.event_family,
            "event_name": self.event_name,
            "item_id": self.item_id,
            "previous_user_id": self.previous_user_id,
            "recommendation_id": self.recommendation_id,
            "context": self.context,
            "occurred_at": self.timestamp.timestamp() if self.timestamp else received_at,
            "received_at": received_at,
        }


def new_event_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as strings, about three times cheaper than uuid4() each:
    one urandom call for the batch, version and variant bits set on the bytes."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])
    text = raw.hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        for h in (text[i:i + 32] for i in range(0, 32 * count, 32))
    ]
