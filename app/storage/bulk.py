"""Bulk loading for `lehnz import`: COPY into temp staging tables, then one set-based merge per table.

The staging tables live for one transaction (ON COMMIT DROP) on the session's connection. The
merges follow the worker's rules (catalog.upsert_items/upsert_users, events.insert_events,
identity.stitch_all) and add one of their own: an item or user whose content is unchanged is not
rewritten at all, so its updated_at stays put and a re-import changes nothing. Functions never
commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection

# Bulk statements over millions of rows run longer than the engine's per-statement default.
_BULK_TIMEOUT_S = 6 * 3600

STAGING: dict[str, tuple[str, tuple[str, ...], str]] = {
    # kind: (table, columns in COPY order, column definitions); `line` makes the last line win
    "items": (
        "_import_items",
        ("line", "item_id", "item_type", "status", "attributes", "created_at"),
        "line bigint, item_id text, item_type text, status text, attributes jsonb, created_at float8",
    ),
    "users": (
        "_import_users",
        ("line", "user_id", "status", "attributes", "created_at"),
        "line bigint, user_id text, status text, attributes jsonb, created_at float8",
    ),
    "events": (
        "_import_events",
        ("event_id", "user_id", "event_family", "event_name", "item_id", "previous_user_id",
         "recommendation_id", "context", "occurred_at"),
        (
            "event_id uuid, user_id text, event_family text, event_name text, item_id text, "
            "previous_user_id text, recommendation_id text, context jsonb, occurred_at float8"
        ),
    ),
}

# The last line of the file wins for an id that appears twice (ON CONFLICT cannot touch a row
# twice). created_at: the file's, else the stored one, else the import time (first upsert), as
# the worker does. Only rows whose content differs are rewritten, and never a row written by a
# newer api upsert (received_at guard). updated_at is this statement's start, not the
# transaction's: api replicas refresh the catalog from the newest updated_at they have seen, so
# the caller runs this last, right before committing.
_MERGE_ITEMS = """
WITH merged AS (
    INSERT INTO items AS t
        (org_id, item_id, item_type, status, attributes, created_at, updated_at, received_at)
    SELECT $1, s.item_id, s.item_type, s.status, s.attributes,
           COALESCE(to_timestamp(s.created_at), e.created_at, to_timestamp($2)), statement_timestamp(),
           to_timestamp($2)
    FROM (SELECT DISTINCT ON (item_id) * FROM _import_items ORDER BY item_id, line DESC) AS s
    LEFT JOIN items AS e ON e.org_id = $1 AND e.item_id = s.item_id
    ON CONFLICT (org_id, item_id) DO UPDATE SET
        item_type = EXCLUDED.item_type,
        status = EXCLUDED.status,
        attributes = EXCLUDED.attributes,
        created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at,
        received_at = EXCLUDED.received_at
    WHERE t.received_at <= EXCLUDED.received_at
      AND (t.item_type, t.status, t.attributes, t.created_at)
          IS DISTINCT FROM (EXCLUDED.item_type, EXCLUDED.status, EXCLUDED.attributes, EXCLUDED.created_at)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated
FROM merged
"""

_MERGE_USERS = """
WITH merged AS (
    INSERT INTO users AS t (org_id, user_id, status, attributes, created_at, updated_at, received_at)
    SELECT $1, s.user_id, s.status, s.attributes, to_timestamp(s.created_at), statement_timestamp(),
           to_timestamp($2)
    FROM (SELECT DISTINCT ON (user_id) * FROM _import_users ORDER BY user_id, line DESC) AS s
    ON CONFLICT (org_id, user_id) DO UPDATE SET
        status = EXCLUDED.status,
        attributes = EXCLUDED.attributes,
        created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at,
        received_at = EXCLUDED.received_at
    WHERE t.received_at <= EXCLUDED.received_at
      AND (t.status, t.attributes, t.created_at)
          IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.attributes, EXCLUDED.created_at)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated
FROM merged
"""

# UNIQUE (org_id, event_id) + DO NOTHING, as the worker: an event already stored, or repeated
# in the file, is stored once. Events are merged chunk by chunk (the staging table is emptied
# after each), so Postgres inserts one chunk while the next one is being validated. No ORDER BY:
# a freshly filled staging table is read back in file order, and the order only decides which of
# two lines with one event_id is kept.
_MERGE_EVENTS = """
INSERT INTO events (org_id, event_id, user_id, event_family, event_name, item_id, previous_user_id,
                    recommendation_id, context, occurred_at, received_at)
SELECT $1, s.event_id, s.user_id, s.event_family, s.event_name, s.item_id, s.previous_user_id,
       s.recommendation_id, s.context, to_timestamp(s.occurred_at), to_timestamp($2)
FROM _import_events AS s
ON CONFLICT (org_id, event_id) DO NOTHING
"""



@dataclass(frozen=True)
class Merged:
    inserted: int
    updated: int


async def create_staging(session: AsyncSession, kind: str) -> None:
    """An empty staging table for `kind` that disappears at the end of the transaction."""
    table, _, columns = STAGING[kind]
    conn = await driver_connection(session)
    await conn.execute(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")


async def copy_to_staging(session: AsyncSession, kind: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY (binary) rows in STAGING column order; jsonb values as JSON text, times as unix seconds."""
    table, columns, _ = STAGING[kind]
    conn = await driver_connection(session)
    await conn.copy_records_to_table(table, records=rows, columns=columns, timeout=_BULK_TIMEOUT_S)


async def _merge(session: AsyncSession, kind: str, sql: str, org_id: uuid.UUID, received_at: float) -> Merged:
    conn = await driver_connection(session)
    # Fresh statistics: the planner otherwise takes the staging table for empty.
    await conn.execute(f"ANALYZE {STAGING[kind][0]}", timeout=_BULK_TIMEOUT_S)
    row = await conn.fetchrow(sql, org_id, received_at, timeout=_BULK_TIMEOUT_S)
    return Merged(inserted=int(row["inserted"]), updated=int(row["updated"]))


async def merge_items(session: AsyncSession, org_id: uuid.UUID, *, received_at: float) -> Merged:
    return await _merge(session, "items", _MERGE_ITEMS, org_id, received_at)


async def merge_users(session: AsyncSession, org_id: uuid.UUID, *, received_at: float) -> Merged:
    return await _merge(session, "users", _MERGE_USERS, org_id, received_at)


async def merge_staged_events(session: AsyncSession, org_id: uuid.UUID, *, received_at: float) -> int:
    """Insert the staged events not stored yet and empty the staging table; returns how many were new."""
    conn = await driver_connection(session)
    status = await conn.execute(_MERGE_EVENTS, org_id, received_at, timeout=_BULK_TIMEOUT_S)
    await conn.execute(f"TRUNCATE {STAGING['events'][0]}")
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
