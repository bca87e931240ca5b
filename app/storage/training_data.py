"""What training reads from Postgres, as columnar arrays (asyncpg, no ORM: 1M rows must be quick)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

# One row of column arrays: asyncpg decodes arrays in C, where a million Records (and a Python
# loop over them) cost seconds. Aliases, event weights and hidden users are resolved here too.
_EVENTS = """
SELECT array_agg(ev.user_id) AS users, array_agg(ev.item_id) AS items, array_agg(ev.event_name) AS names,
       array_agg(ev.weight) AS weights, array_agg(ev.ts) AS timestamps, array_agg(ev.order_id) AS orders,
       array_agg(ev.session_id) AS sessions, array_agg(ev.price) AS prices, array_agg(ev.quantity) AS quantities,
       array_agg(ev.is_exposure) AS exposures
FROM (
    SELECT coalesce(a.canonical_id, e.user_id) AS user_id, e.item_id, e.event_name,
           coalesce(w.weight, f.weight, 0)::float8 AS weight,
           extract(epoch FROM e.occurred_at)::float8 AS ts,
           e.context->>'order_id' AS order_id,
           e.context->>'session_id' AS session_id,
           CASE WHEN jsonb_typeof(e.context->'price') = 'number'
                THEN (e.context->>'price')::float8 ELSE 'NaN'::float8 END AS price,
           CASE WHEN jsonb_typeof(e.context->'quantity') = 'number'
                THEN (e.context->>'quantity')::float8 ELSE 1 END AS quantity,
           e.event_family = 'exposure' AS is_exposure
    FROM events e
    LEFT JOIN identity_aliases a ON a.org_id = e.org_id AND a.alias_id = e.user_id
    LEFT JOIN unnest($2::text[], $3::float8[]) AS w(name, weight) ON w.name = e.event_name
    LEFT JOIN unnest($4::text[], $5::float8[]) AS f(family, weight) ON f.family = e.event_family
    WHERE e.org_id = $1 AND e.item_id IS NOT NULL
) ev
WHERE NOT EXISTS (  -- inactive and deleted users are left out of training
    SELECT 1 FROM users x WHERE x.org_id = $1 AND x.user_id = ev.user_id AND x.status <> 'active'
)
"""

_ITEMS = """
SELECT item_id, item_type, status, attributes::text AS attributes, extract(epoch FROM created_at)::float8 AS created
FROM items WHERE org_id = $1 ORDER BY item_id
"""


@dataclass(frozen=True, repr=False)
class RawTrainingData:
    events: dict[str, list[Any]]  # column -> values, one entry per event (keys as in _EVENTS)
    items: list[Any]              # asyncpg records, columns as in _ITEMS

    def __repr__(self) -> str:
        # asyncio.run reprs the result of the task it ran (Python 3.11); the generated repr of
        # a million-event load took about 3 s, a tenth of a whole train.
        return f"RawTrainingData({len(self.events.get('users', []))} events, {len(self.items)} items)"


async def load(
    conn: Any,
    org_id: uuid.UUID,
    *,
    event_weights: dict[str, float],
    family_weights: dict[str, float],
) -> RawTrainingData:
    """Events that name an item, with canonical user ids and weights; and the catalog."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # Parallel workers only add a costly gather of the huge arrays at the end (2-3x slower).
        await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        row = await conn.fetchrow(
            _EVENTS,
            org_id,
            list(event_weights),
            list(event_weights.values()),
            list(family_weights),
            list(family_weights.values()),
        )
        items = await conn.fetch(_ITEMS, org_id)
    events = {key: list(row[key] or []) for key in row.keys()}  # noqa: SIM118 - a Record iterates its values
    return RawTrainingData(events=events, items=items)


def attributes(records: list[Any], index: int) -> list[dict[str, Any]]:
    return [orjson.loads(r[index]) for r in records]
