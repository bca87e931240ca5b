"""A fast preload for big benchmark worlds: tens of millions of events in minutes, not hours.

The speed run's COPY (loading.py) builds one Python tuple per event, which caps it near 80k
rows/s. Here the events table's own rows are packed by numpy straight into PostgreSQL's binary
COPY format: every event type has one row layout of fixed width (ids are fixed-width strings,
numbers in the context JSON are padded with JSON whitespace), so a block of rows is a 2-D byte
array filled a column of bytes at a time. The load runs as a bulk loader would: the table is
emptied and filled in one transaction (COPY FREEZE: rows arrive frozen, so no VACUUM has to
rewrite them afterwards), the foreign-key trigger is off for the session (the org exists) and
the secondary indexes are rebuilt from their own definitions after the rows are in (one sort
per index instead of millions of random inserts). It empties the events table: benchmark
databases only.

User ids are UUID strings, as storefronts send for anonymous shoppers; item ids are "i" plus a
zero-padded number (`World.item_ids`).
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np

from benchmarks.speed.loading import ITEM_COLUMNS, plain_dsn
from benchmarks.speed.synthetic import CART, EVENT_TYPES, PURCHASE, Dataset

EVENT_COLUMNS = ["org_id", "event_id", "user_id", "event_family", "event_name", "item_id", "previous_user_id",
                 "recommendation_id", "context", "occurred_at", "received_at"]
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, no header extension
_TRAILER = b"\xff\xff"
_PG_EPOCH_S = 946_684_800  # binary timestamps count microseconds from 2000-01-01 UTC
_NULL = (-1).to_bytes(4, "big", signed=True)
_SESSION_DIGITS = 10
_ORDER_DIGITS = 10
_PRICE_INT_DIGITS = 6  # up to 999,999.99; padded with spaces (JSON whitespace), never zeros
_CHUNK = 1_000_000

_SECONDARY = """
SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
WHERE c.conrelid = 'events'::regclass AND c.contype = 'u'
"""
_PLAIN_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.tablename = 'events' AND i.schemaname = current_schema()
  AND i.indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'events'::regclass)
"""


@dataclass(frozen=True)
class World:
    """A synthetic dataset with the ids the load writes: UUID users, fixed-width items."""

    ds: Dataset
    user_ids: np.ndarray  # (users, 36) uint8: ASCII UUIDs
    item_ids: np.ndarray  # (items, width) uint8: "i0001234"

    @classmethod
    def of(cls, ds: Dataset, *, seed: int = 11) -> World:
        width = len(str(max(ds.n_items - 1, 0)))
        digits = _digits(np.arange(ds.n_items, dtype=np.int64), width)
        items = np.concatenate([np.full((ds.n_items, 1), ord("i"), np.uint8), digits], axis=1)
        return cls(ds, uuid_texts(np.random.default_rng(seed).integers(0, 256, (ds.n_users, 16), dtype=np.uint8)),
                   items)

    def user_id(self, index: int) -> str:
        return self.user_ids[index].tobytes().decode()

    def item_id(self, index: int) -> str:
        return self.item_ids[index].tobytes().decode()


def uuid_texts(raw: np.ndarray) -> np.ndarray:
    """(n, 16) random bytes -> (n, 36) ASCII version-4 UUIDs, vectorised."""
    raw = raw.copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    pairs = np.stack([hexdigits[raw >> 4], hexdigits[raw & 0x0F]], axis=2).reshape(len(raw), 32)
    dash = np.full((len(raw), 1), ord("-"), np.uint8)
    return np.concatenate([pairs[:, :8], dash, pairs[:, 8:12], dash, pairs[:, 12:16], dash, pairs[:, 16:20],
                           dash, pairs[:, 20:]], axis=1)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digits of non-negative integers, zero-padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def _padded(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII of non-negative integers, right-aligned, padded with spaces."""
    digits = _digits(values, width)
    leading = np.cumsum(digits != ord("0"), axis=1) == 0
    leading[:, -1] = False  # 0 is "0"
    digits[leading] = ord(" ")
    return digits


def _const(n: int, data: bytes) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(data, np.uint8), (n, len(data)))


def _be(values: np.ndarray, kind: str) -> np.ndarray:
    return np.ascontiguousarray(values.astype(kind)).view(np.uint8).reshape(len(values), -1)


def _field(n: int, body: np.ndarray) -> list[np.ndarray]:
    """A field of fixed width: its length, then its bytes."""
    return [_const(n, body.shape[1].to_bytes(4, "big")), body]


def _context(world: World, rows: np.ndarray, event_type: int) -> np.ndarray:
    """(n, width) jsonb field bodies: version byte 1, then the JSON text."""
    ds, n = world.ds, len(rows)
    parts = [_const(n, b'\x01{"session_id": "s-'), _digits(ds.ev_session[rows], _SESSION_DIGITS), _const(n, b'"')]
    if event_type == PURCHASE:
        parts += [_const(n, b', "order_id": "o-'), _digits(ds.ev_order[rows], _ORDER_DIGITS), _const(n, b'"')]
    if event_type in (CART, PURCHASE):
        cents = np.round(ds.ev_price[rows] * 100).astype(np.int64)
        parts += [_const(n, b', "price": '), _padded(cents // 100, _PRICE_INT_DIGITS), _const(n, b"."),
                  _digits(cents % 100, 2), _const(n, b', "quantity": '),
                  _digits(ds.ev_quantity[rows].astype(np.int64), 1)]
    parts.append(_const(n, b"}"))
    return np.concatenate(parts, axis=1)


def event_block(world: World, org_id: uuid.UUID, rows: np.ndarray, event_type: int, received_us: int,
                rng: np.random.Generator) -> bytes:
    """The binary COPY rows of these events (all of one type: one row layout)."""
    ds, n = world.ds, len(rows)
    name, family = EVENT_TYPES[event_type]
    event_ids = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    event_ids[:, 6] = (event_ids[:, 6] & 0x0F) | 0x40
    event_ids[:, 8] = (event_ids[:, 8] & 0x3F) | 0x80
    occurred = np.round((ds.ev_ts[rows] - _PG_EPOCH_S) * 1e6).astype(np.int64)
    parts = [_const(n, len(EVENT_COLUMNS).to_bytes(2, "big"))]
    parts += _field(n, _const(n, org_id.bytes))
    parts += _field(n, event_ids)
    parts += _field(n, world.user_ids[ds.ev_user[rows]])
    parts += _field(n, _const(n, family.encode()))
    parts += _field(n, _const(n, name.encode()))
    parts += _field(n, world.item_ids[ds.ev_item[rows]])
    parts += [_const(n, _NULL), _const(n, _NULL)]  # previous_user_id, recommendation_id
    parts += _field(n, _context(world, rows, event_type))
    parts += _field(n, _be(occurred, ">i8"))
    parts += _field(n, _const(n, received_us.to_bytes(8, "big", signed=True)))
    return np.concatenate(parts, axis=1).tobytes()


def item_records(world: World, org_id: uuid.UUID) -> list[tuple[Any, ...]]:
    import orjson

    ds = world.ds
    received = datetime.now(UTC)
    return [
        (org_id, world.item_id(i), "product", "active", orjson.dumps(ds.item_attributes[i]).decode(),
         datetime.fromtimestamp(float(ds.item_created_at[i]), UTC), received, received)
        for i in range(ds.n_items)
    ]


async def bulk_load(
    database_url: str, org_id: str, world: World, *, log: Callable[[str], None] | None = None, seed: int = 5,
    indexes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Empty the events table, then write the world's items and events for this org; returns
    the seconds of each step and the events written per second (COPY and index builds).
    `indexes`: the secondary indexes and unique constraints to rebuild (None: all of them);
    the others are left out, e.g. those no train reads, which at 50M events take longer to
    build than the rows take to write."""
    org = uuid.UUID(org_id)
    ds = world.ds
    wanted = None if indexes is None else set(indexes)
    rng = np.random.default_rng(seed)
    received_us = int((time.time() - _PG_EPOCH_S) * 1e6)
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=60, command_timeout=None)
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("items", records=item_records(world, org), columns=ITEM_COLUMNS)
        seconds["items_s"] = time.perf_counter() - started
        await conn.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")  # no per-row FK trigger
            constraints = [tuple(r) for r in await conn.fetch(_SECONDARY)]
            secondary = [tuple(r) for r in await conn.fetch(_PLAIN_INDEXES)]
            for name, _ in constraints:
                await conn.execute(f'ALTER TABLE events DROP CONSTRAINT "{name}"')
            for name, _ in secondary:
                await conn.execute(f'DROP INDEX "{name}"')
            await conn.execute("TRUNCATE events")  # in this transaction: COPY FREEZE may write frozen rows
            for begin in range(0, ds.n_events, _CHUNK):
                chunk = np.arange(begin, min(begin + _CHUNK, ds.n_events))
                blocks = [_HEADER]
                for event_type in range(len(EVENT_TYPES)):
                    rows = chunk[ds.ev_type[chunk] == event_type]
                    if rows.size:
                        blocks.append(event_block(world, org, rows, event_type, received_us, rng))
                blocks.append(_TRAILER)
                await conn.copy_to_table("events", source=io.BytesIO(b"".join(blocks)), columns=EVENT_COLUMNS,
                                         format="binary", freeze=True)
                if log is not None and (chunk[-1] + 1) % (10 * _CHUNK) == 0:
                    log(f"  {chunk[-1] + 1:,} of {ds.n_events:,} events written")
            seconds["events_s"] = time.perf_counter() - started
            started = time.perf_counter()
            for name, definition in constraints:
                if wanted is None or name in wanted:
                    await conn.execute(f'ALTER TABLE events ADD CONSTRAINT "{name}" {definition}')
            for name, definition in secondary:
                if wanted is None or name in wanted:
                    await conn.execute(definition)
            seconds["indexes_s"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("ANALYZE events")
        await conn.execute("ANALYZE items")
        seconds["analyze_s"] = time.perf_counter() - started
    finally:
        await conn.close()
    seconds["events_per_s"] = ds.n_events / max(seconds["events_s"] + seconds["indexes_s"], 1e-9)
    return seconds
