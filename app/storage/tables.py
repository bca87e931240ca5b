"""ORM tables: the Postgres schema, the source of truth. A new column = here + a migration."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

KEY_TYPES = ("publishable", "secret")
RECORD_STATUSES = ("active", "inactive", "deleted")


class Base(DeclarativeBase):
    pass


def _now_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    domain: Mapped[str] = mapped_column(String(64), nullable=False, server_default="commerce")
    # e.g. "5000/15minutes"; NULL = the deployment default (LEHNZ_RATE_LIMIT).
    rate_limit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now_column()


class Account(Base):
    """A dashboard login (API.md section 7); each account owns one org."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    created_at: Mapped[datetime] = _now_column()


class ApiKey(Base):
    """One key of a pair. Only the sha256 of the key is stored; `prefix` is for display."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(f"key_type IN {KEY_TYPES}", name="api_keys_key_type"),
        Index("ix_api_keys_org_pair", "org_id", "pair_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    pair_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    key_type: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = _now_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint(f"status IN {RECORD_STATUSES}", name="items_status"),
        # The api's catalog refresh reads "what changed since", per org.
        Index("ix_items_org_updated", "org_id", "updated_at"),
        # Catalog search (GET /v1/items?q=): the trigrams of the id and title (migration 0005).
        Index("ix_items_search", text("item_search_trigrams(item_id, attributes)"), postgresql_using="gin"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[str] = mapped_column(Text, primary_key=True)
    item_type: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = _now_column()
    # api receive time of the upsert that wrote this row: an older, retried job never wins.
    received_at: Mapped[datetime] = _now_column()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"status IN {RECORD_STATUSES}", name="users_status"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = _now_column()
    received_at: Mapped[datetime] = _now_column()


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # Idempotent ingestion: a retried job or a re-sent event never makes a second row.
        UniqueConstraint("org_id", "event_id", name="uq_events_org_event"),
        Index("ix_events_org_user_time", "org_id", "user_id", "occurred_at"),
        Index("ix_events_org_time", "org_id", "occurred_at"),
        Index(
            "ix_events_org_recommendation",
            "org_id",
            "recommendation_id",
            postgresql_where=text("recommendation_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    event_family: Mapped[str] = mapped_column(String(16), nullable=False)
    event_name: Mapped[str] = mapped_column(Text, nullable=False)
    item_id: Mapped[str | None] = mapped_column(Text)
    previous_user_id: Mapped[str | None] = mapped_column(Text)
    recommendation_id: Mapped[str | None] = mapped_column(Text)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class IdentityAlias(Base):
    """anonymous id -> the final (canonical) user id; chains are flattened when written."""

    __tablename__ = "identity_aliases"
    __table_args__ = (Index("ix_identity_aliases_canonical", "org_id", "canonical_id"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    alias_id: Mapped[str] = mapped_column(Text, primary_key=True)
    canonical_id: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now_column()


class ServedRecommendation(Base):
    """Every /v1/recommend response, for attribution and analytics (written by the worker)."""

    __tablename__ = "served_recommendations"
    __table_args__ = (
        Index("ix_served_org_time", "org_id", "served_at"),
        # Erasures find the user's rows (migration 0002).
        Index("ix_served_org_user", "org_id", "user_id", postgresql_where=text("user_id IS NOT NULL")),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    recommendation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(64), nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    user_id: Mapped[str | None] = mapped_column(Text)
    context_item_id: Mapped[str | None] = mapped_column(Text)
    item_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    model_version: Mapped[str | None] = mapped_column(String(64))
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class TrainingRun(Base):
    """One attempt to train an org's models; the newest succeeded row is the live model."""

    __tablename__ = "training_runs"
    __table_args__ = (Index("ix_training_runs_org_finished", "org_id", "finished_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # succeeded | failed
    version: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    items: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    users: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    interactions: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # The model search's findings (selection.SearchResult.quality), carried over by trains that
    # refit the last winner without searching; None before any succeeded train.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


# --- counts the database keeps as rows are written ---------------------------------------------
# Statement-level triggers of migration 0004 on items, users, events and served_recommendations
# add every statement's changes to these, in the writer's transaction (app/storage/counts.py reads
# them). A writer adds to any row of its key that no other transaction holds, so there may be
# several rows per key: a count is the sum of its key's rows.


def _count_column() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, server_default="0")


class OrgCount(Base):
    """An org's items by status, users and events."""

    __tablename__ = "org_counts"
    __table_args__ = (Index("ix_org_counts_org", "org_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    items_active: Mapped[int] = _count_column()
    items_inactive: Mapped[int] = _count_column()
    items_deleted: Mapped[int] = _count_column()
    users: Mapped[int] = _count_column()
    events: Mapped[int] = _count_column()


class HourlyEventCount(Base):
    """An org's events by the UTC hour they happened in (occurred_at)."""

    __tablename__ = "hourly_event_counts"
    __table_args__ = (Index("ix_hourly_event_counts_org_hour", "org_id", "hour"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    events: Mapped[int] = _count_column()


class HourlyRecommendationCount(Base):
    """Recommendations served per UTC hour and strategy, with the outcomes of the events naming them
    (attributed to the hour the recommendation was served in, as analytics reports them)."""

    __tablename__ = "hourly_recommendation_counts"
    __table_args__ = (Index("ix_hourly_recommendation_counts_org_hour", "org_id", "hour"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    strategy: Mapped[str] = mapped_column(String(64), nullable=False)
    served: Mapped[int] = _count_column()
    exposures: Mapped[int] = _count_column()
    clicks: Mapped[int] = _count_column()
    conversions: Mapped[int] = _count_column()
    revenue: Mapped[Decimal] = mapped_column(Numeric, nullable=False, server_default="0")


class UnattributedEvent(Base):
    """An event naming a recommendation that was not in the served log when the event was stored
    (the api logs what it serves in batches). The served row's insert moves it into
    hourly_recommendation_counts; analytics joins the few left over (a race of the two inserts)."""

    __tablename__ = "unattributed_events"
    __table_args__ = (Index("ix_unattributed_events_org_recommendation", "org_id", "recommendation_id"),)

    event_row_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # events.id
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    recommendation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    exposures: Mapped[int] = mapped_column(Integer, nullable=False)
    clicks: Mapped[int] = mapped_column(Integer, nullable=False)
    conversions: Mapped[int] = mapped_column(Integer, nullable=False)
    revenue: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
