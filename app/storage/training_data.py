"""What training reads from Postgres: the org's events as compact columns, and its catalog.

Memory stays bounded at any size: no Python object per event is made, and no single value holds
a whole column (PostgreSQL caps one value at 1 GB; one array of 25M UUID user ids is past it).

1. Vocabulary pass (one scan of the window's events, hashed in the server, never sorted): the
   distinct users, items and event kinds (name and family) with their event counts go to a
   temporary table. Users are then resolved to canonical ids (aliases) and the inactive and
   deleted left out, on the distinct users rather than per event; users and items get int codes
   in the order Python sorts their ids (COLLATE "C": UTF-8 byte order is code point order).
   Only when the window's max_events cuts something are events counted per hour (a second scan).
2. The counts are known now, before anything big is allocated: the caller's `check` may refuse
   the train (the memory budget, workers/train_memory.py).
3. Event pass: COPY ... TO STDOUT (FORMAT binary) of fixed-width rows of numbers (user, item
   and kind codes, time, order and session id hashes, price), parsed a few MB at a time
   straight into preallocated numpy columns.

Order and session ids only need to compare equal, so the server sends a 64-bit hash of each
(hashtextextended); two different ids of one org share a hash with probability about n^2/2^65
(one in 300,000 for 10M sessions), and then only merge two baskets.

The training window (TrainingWindow) limits what is read, never what is stored.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ml.columns import JsonColumn
from app.ml.interactions import CatalogSnapshot, InteractionLog, object_array
from app.storage.base import driver_transaction

SECONDS_PER_DAY = 86400.0
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, where binary timestamps count from, in unix µs
# Server-side memory for the pass's hash tables (users of a big org) instead of spilling them.
_WORK_MEM = "256MB"
_PARSE_BYTES = 8 * 1024 * 1024  # COPY data parsed in blocks of about this size
_VOCAB_CHUNK = 200_000  # ids per array fetched (one array value must stay far below 1 GB)
_CATALOG_CHUNK = 20_000

# GROUPING(user_id, item_id, event_name) of each grouping set: a bit is set for every argument
# that set does not group by (user 4, item 2, name 1).
_USERS, _ITEMS, _KINDS = 3, 5, 6

_NEWEST = """
SELECT extract(epoch FROM max(occurred_at))::float8 FROM events WHERE org_id = $1 AND item_id IS NOT NULL
"""

# Temporary tables cannot be created from a query with parameters: created empty, then filled.
_TEMP_TABLES = """
CREATE TEMP TABLE train_groups (user_id text, item_id text, event_name text, event_family text,
                                n int8, g int4) ON COMMIT DROP;
CREATE TEMP TABLE train_users (user_id text, code int4) ON COMMIT DROP;
CREATE TEMP TABLE train_left_out (user_id text) ON COMMIT DROP;
CREATE TEMP TABLE train_items (item_id text, in_catalog bool, code int4) ON COMMIT DROP;
CREATE TEMP TABLE train_kinds (event_name text, event_family text, code int2) ON COMMIT DROP;
"""

# Grouped by the stored columns alone, whose statistics let the planner hash every set: a join
# or an expression here (the canonical user, the hour) made it sort every event instead, which
# took most of a big tenant's load (13 of 22 s at 5M events).
_GROUPS = """
INSERT INTO train_groups
SELECT e.user_id, e.item_id, e.event_name, e.event_family, count(*), GROUPING(e.user_id, e.item_id, e.event_name)
FROM events e
WHERE e.org_id = $1 AND e.item_id IS NOT NULL AND e.occurred_at >= to_timestamp($2)
GROUP BY GROUPING SETS ((e.user_id), (e.item_id), (e.event_name, e.event_family))
"""

# The stored users resolved to canonical ids; inactive and deleted users are left out of training.
_RESOLVED_USERS = f"""
SELECT g.user_id AS stored_id, coalesce(a.canonical_id, g.user_id) AS user_id, g.n
FROM train_groups g LEFT JOIN identity_aliases a ON a.org_id = $1 AND a.alias_id = g.user_id
WHERE g.g = {_USERS}
"""
_INACTIVE = "SELECT 1 FROM users x WHERE x.org_id = $1 AND x.user_id = r.user_id AND x.status <> 'active'"
_USER_CODES = f"""
INSERT INTO train_users
SELECT user_id, row_number() OVER (ORDER BY user_id COLLATE "C") - 1
FROM (SELECT DISTINCT r.user_id FROM ({_RESOLVED_USERS}) r WHERE NOT EXISTS ({_INACTIVE})) u
"""
_LEFT_OUT_USERS = f"""
INSERT INTO train_left_out SELECT r.stored_id FROM ({_RESOLVED_USERS}) r WHERE EXISTS ({_INACTIVE})
"""
_EVENTS_READ = f"SELECT coalesce(sum(n), 0) FROM train_groups g WHERE g.g = {_USERS} " \
               "AND NOT EXISTS (SELECT 1 FROM train_left_out o WHERE o.user_id = g.user_id)"
_ITEM_CODES = f"""
INSERT INTO train_items
SELECT item_id, bool_or(in_catalog), row_number() OVER (ORDER BY item_id COLLATE "C") - 1
FROM (
    SELECT item_id, false AS in_catalog FROM train_groups WHERE g = {_ITEMS}
    UNION ALL
    SELECT item_id, true FROM items WHERE org_id = $1
) i
GROUP BY item_id
"""
_KIND_CODES = f"""
INSERT INTO train_kinds
SELECT event_name, event_family, row_number() OVER (ORDER BY event_name COLLATE "C", event_family COLLATE "C") - 1
FROM train_groups WHERE g = {_KINDS}
"""
# Events per hour, for a max_events cut. The planner cannot know how few hours
# there are (it takes each event's time as distinct) and would sort every event: hashing is
# asked for.
_HOURS = """
SELECT extract(epoch FROM date_bin('1 hour', e.occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'))::float8 AS hour,
       count(*)
FROM events e
WHERE e.org_id = $1 AND e.item_id IS NOT NULL AND e.occurred_at >= to_timestamp($2)
  AND NOT EXISTS (SELECT 1 FROM train_left_out o WHERE o.user_id = e.user_id)
GROUP BY 1
"""

_EVENTS = """
SELECT u.code, i.code, k.code, e.occurred_at,
       coalesce(hashtextextended(nullif(e.context->>'order_id', ''), 0), 0),
       coalesce(hashtextextended(nullif(e.context->>'session_id', ''), 0), 0),
       CASE WHEN jsonb_typeof(e.context->'price') = 'number' THEN (e.context->>'price')::float8
            ELSE 'NaN'::float8 END
FROM events e
LEFT JOIN identity_aliases a ON a.org_id = e.org_id AND a.alias_id = e.user_id
JOIN train_users u ON u.user_id = coalesce(a.canonical_id, e.user_id)
JOIN train_items i ON i.item_id = e.item_id
JOIN train_kinds k ON k.event_name = e.event_name AND k.event_family = e.event_family
WHERE e.org_id = $1 AND e.item_id IS NOT NULL AND e.occurred_at >= to_timestamp($2)
"""

_ITEMS_TABLE = """
SELECT item_id, item_type, status, attributes::text, extract(epoch FROM created_at)::float8
FROM items WHERE org_id = $1 ORDER BY item_id
"""

# One binary COPY row: a field count, then per field its byte length and its big-endian value.
_COPY_HEADER = 19  # signature (11), flags (4), header extension length (4)
_ROW = np.dtype([
    ("fields", ">i2"),
    ("user_len", ">i4"), ("user", ">i4"),
    ("item_len", ">i4"), ("item", ">i4"),
    ("kind_len", ">i4"), ("kind", ">i2"),
    ("time_len", ">i4"), ("time", ">i8"),
    ("order_len", ">i4"), ("order", ">i8"),
    ("session_len", ">i4"), ("session", ">i8"),
    ("price_len", ">i4"), ("price", ">f8"),
])
_FIELD_LENGTHS = {"user_len": 4, "item_len": 4, "kind_len": 2, "time_len": 8, "order_len": 8,
                  "session_len": 8, "price_len": 8}


@dataclass(frozen=True)
class TrainingWindow:
    """Which of an org's events a train reads: those at most `max_age_days` older than its
    newest event, and of those the `max_events` most recent (whole hours: the cut falls on an
    hour boundary, so up to an hour's events fewer may be read, and never fewer than the newest
    hour). 0 means no limit."""

    max_age_days: float = 0.0
    max_events: int = 0

    def __post_init__(self) -> None:
        if self.max_age_days < 0 or self.max_events < 0:
            raise ValueError("a training window's limits are >= 0 (0 = no limit)")


@dataclass(frozen=True)
class LoadCounts:
    """What the vocabulary pass found in the window, before the events are read."""

    events: int  # events the train reads
    users: int
    items: int  # the item universe: catalog items and items seen in the window
    left_out: int  # events in the age window but older than the max_events cut
    since: float | None  # unix s: the oldest time read (None: the whole history)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "users": self.users, "items": self.items, "left_out": self.left_out,
                "since": self.since}


@dataclass(frozen=True, repr=False)
class TrainingData:
    log: InteractionLog
    catalog: CatalogSnapshot
    counts: LoadCounts
    seconds: dict[str, float] = field(default_factory=dict)  # per pass

    def __repr__(self) -> str:
        # asyncio.run reprs the result of the task it ran (Python 3.11): keep it one short line.
        return f"TrainingData({len(self.log)} events, {len(self.catalog)} items)"


class _CodeBook:
    """Dense int32 codes for int64 keys that arrive a block at a time, in order of first
    appearance; key 0 means "none" and gets -1. Memory: the distinct keys, never the events."""

    def __init__(self) -> None:
        self._keys = np.empty(0, np.int64)  # sorted
        self._codes = np.empty(0, np.int32)  # code of each sorted key
        self.size = 0

    def encode(self, keys: np.ndarray) -> np.ndarray:
        out = np.full(keys.size, -1, dtype=np.int32)
        present = keys != 0
        if not present.any():
            return out
        distinct, first, inverse = np.unique(keys[present], return_index=True, return_inverse=True)
        at = np.searchsorted(self._keys, distinct)
        known = at < self._keys.size
        known[known] = self._keys[at[known]] == distinct[known]
        codes = np.empty(distinct.size, np.int32)
        codes[known] = self._codes[at[known]]
        new = np.flatnonzero(~known)
        new = new[np.argsort(first[new], kind="stable")]  # codes in order of first appearance
        codes[new] = np.arange(self.size, self.size + new.size, dtype=np.int32)
        self.size += new.size
        order = np.argsort(distinct[new], kind="stable")
        self._keys = np.insert(self._keys, at[new[order]], distinct[new[order]])
        self._codes = np.insert(self._codes, at[new[order]], codes[new[order]])
        out[present] = codes[inverse]
        return out


class _EventColumns:
    """The InteractionLog's per-event columns, allocated once at their final size and filled by
    parsed COPY blocks."""

    def __init__(self, n: int, kinds: _Kinds) -> None:
        self.kinds = kinds
        self.users = np.empty(n, np.int32)
        self.items = np.empty(n, np.int32)
        self.names = np.empty(n, np.int16)
        self.weights = np.empty(n, np.float32)
        self.is_purchase = np.empty(n, bool)
        self.timestamps = np.empty(n, np.float64)
        self.orders = np.empty(n, np.int32)
        self.sessions = np.empty(n, np.int32)
        self.prices = np.empty(n, np.float32)
        self.is_exposure = np.empty(n, bool)
        self.filled = 0
        self._order_codes, self._session_codes = _CodeBook(), _CodeBook()
        self._pending = bytearray()
        self._header_left = _COPY_HEADER

    async def receive(self, data: bytes) -> None:
        """asyncpg's COPY output callback."""
        self._pending += data
        if len(self._pending) >= _PARSE_BYTES:
            self._parse()

    def finish(self) -> None:
        self._parse()
        if bytes(self._pending) not in (b"", b"\xff\xff"):  # the trailer: a field count of -1
            raise ValueError(f"unexpected end of the COPY stream ({len(self._pending)} bytes left)")

    def _parse(self) -> None:
        if self._header_left:
            skip = min(self._header_left, len(self._pending))
            del self._pending[:skip]
            self._header_left -= skip
        n = len(self._pending) // _ROW.itemsize
        if n == 0 or self._header_left:
            return
        rows = np.frombuffer(bytes(self._pending[: n * _ROW.itemsize]), dtype=_ROW)
        del self._pending[: n * _ROW.itemsize]
        if not (rows["fields"] == len(_FIELD_LENGTHS)).all() or any(
            not (rows[name] == width).all() for name, width in _FIELD_LENGTHS.items()
        ):
            raise ValueError("the training query returned a NULL or an unexpected column")
        start, stop = self.filled, self.filled + n
        if stop > self.users.size:
            raise ValueError("the training query returned more events than its vocabulary pass counted")
        kind = rows["kind"].astype(np.int64)
        self.users[start:stop] = rows["user"]
        self.items[start:stop] = rows["item"]
        self.names[start:stop] = self.kinds.name_code[kind]
        self.weights[start:stop] = self.kinds.weight[kind]
        self.is_purchase[start:stop] = self.kinds.purchase[kind]
        self.is_exposure[start:stop] = self.kinds.exposure[kind]
        self.timestamps[start:stop] = (rows["time"] + _PG_EPOCH_US) / 1e6
        self.orders[start:stop] = self._order_codes.encode(rows["order"].astype(np.int64))
        self.sessions[start:stop] = self._session_codes.encode(rows["session"].astype(np.int64))
        self.prices[start:stop] = rows["price"]
        self.filled = stop


@dataclass(frozen=True)
class _Kinds:
    """Per (event name, family) code: its weight and flags, and its name's code."""

    name_code: np.ndarray  # int16 per kind
    weight: np.ndarray  # float32 per kind
    purchase: np.ndarray  # bool per kind
    exposure: np.ndarray  # bool per kind
    names: np.ndarray  # object (str): the name vocabulary, sorted

    @classmethod
    def of(cls, rows: list[Any], event_weights: dict[str, float], family_weights: dict[str, float]) -> _Kinds:
        rows = sorted(rows, key=lambda r: r[2])
        names = sorted({r[0] for r in rows})
        position = {name: code for code, name in enumerate(names)}
        return cls(
            name_code=np.asarray([position[r[0]] for r in rows], dtype=np.int16),
            weight=np.asarray([event_weights.get(r[0], family_weights.get(r[1], 0.0)) for r in rows], np.float32),
            purchase=np.asarray([r[0] == "purchase" for r in rows], dtype=bool),
            exposure=np.asarray([r[1] == "exposure" for r in rows], dtype=bool),
            names=object_array(names),
        )


async def load(
    conn: Any,
    org_id: uuid.UUID,
    *,
    event_weights: dict[str, float],
    family_weights: dict[str, float],
    window: TrainingWindow | None = None,
    now: float | None = None,
    check: Callable[[LoadCounts], None] | None = None,
) -> TrainingData:
    """The window's events that name an item, with canonical user ids and weights, and the
    catalog. `check` sees the counts before any event is read and may raise to refuse."""
    window = window or TrainingWindow()
    clock = time.time() if now is None else now
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    async with driver_transaction(conn, isolation="repeatable_read"):
        await conn.execute(f"SET LOCAL work_mem = '{_WORK_MEM}'")
        newest = await conn.fetchval(_NEWEST, org_id)
        since = None
        if newest is not None and window.max_age_days > 0:
            since = min(float(newest), clock) - window.max_age_days * SECONDS_PER_DAY
        await conn.execute(_TEMP_TABLES)
        await conn.execute(_GROUPS, org_id, since if since is not None else -math.inf)
        await conn.execute(_USER_CODES, org_id)
        await conn.execute(_LEFT_OUT_USERS, org_id)
        await conn.execute(_ITEM_CODES, org_id)
        await conn.execute(_KIND_CODES)
        await conn.execute("ANALYZE train_users; ANALYZE train_left_out; ANALYZE train_items; ANALYZE train_kinds")
        total, left_out = int(await conn.fetchval(_EVENTS_READ)), 0
        if 0 < window.max_events < total:
            cut, left_out = await _hour_cut(conn, org_id, since, window.max_events)
            since, total = cut, total - left_out
        user_vocab = await _strings(conn, "SELECT array_agg(user_id ORDER BY code) FROM train_users "
                                          "WHERE code >= $1 AND code < $2", "SELECT count(*) FROM train_users")
        item_vocab = await _strings(conn, "SELECT array_agg(item_id ORDER BY code) FROM train_items "
                                          "WHERE code >= $1 AND code < $2", "SELECT count(*) FROM train_items")
        in_catalog = np.asarray(await conn.fetchval(
            "SELECT coalesce(array_agg(in_catalog ORDER BY code), '{}') FROM train_items"), dtype=bool)
        kinds = _Kinds.of([tuple(r) for r in await conn.fetch(
            "SELECT event_name, event_family, code FROM train_kinds")], event_weights, family_weights)
        seconds["vocabulary"] = time.perf_counter() - started
        counts = LoadCounts(events=total, users=len(user_vocab), items=len(item_vocab), left_out=left_out,
                            since=since)
        if check is not None:
            check(counts)

        started = time.perf_counter()
        columns = _EventColumns(total, kinds)
        await conn.copy_from_query(_EVENTS, org_id, since if since is not None else -math.inf,
                                   output=columns.receive, format="binary")
        columns.finish()
        seconds["events"] = time.perf_counter() - started

    started = time.perf_counter()
    catalog = await _catalog(conn, org_id)
    seconds["catalog"] = time.perf_counter() - started
    log = _compact(columns, user_vocab, item_vocab, in_catalog, kinds.names)
    counts = LoadCounts(events=len(log), users=len(log.user_vocab), items=len(log.item_vocab), left_out=left_out,
                        since=since)
    return TrainingData(log, catalog, counts, seconds)


async def _hour_cut(
    conn: Any, org_id: uuid.UUID, since: float | None, max_events: int
) -> tuple[float | None, int]:
    """_count_cut over the window's events per hour."""
    await conn.execute("SET LOCAL enable_sort = off")
    hours = sorted(await conn.fetch(_HOURS, org_id, since if since is not None else -math.inf), reverse=True)
    await conn.execute("SET LOCAL enable_sort = on")
    cut, left_out = _count_cut([float(h[0]) for h in hours], [int(h[1]) for h in hours], max_events)
    return cut if cut is not None else since, left_out


def _count_cut(hour_starts: list[float], counts: list[int], max_events: int) -> tuple[float | None, int]:
    """(the oldest hour start a train reads, the events older than it) for the per-hour counts
    newest first; (None, 0) when everything fits."""
    if max_events <= 0 or sum(counts) <= max_events:
        return None, 0
    kept = 0
    for position, (start, n) in enumerate(zip(hour_starts, counts)):
        if position > 0 and kept + n > max_events:
            return hour_starts[position - 1], sum(counts[position:])
        kept += n
    return None, 0


async def _strings(conn: Any, query: str, count_query: str) -> np.ndarray:
    """A temporary table's ids in code order, fetched as arrays of a bounded size."""
    n = int(await conn.fetchval(count_query))
    out = np.empty(n, dtype=object)
    for start in range(0, n, _VOCAB_CHUNK):
        values = await conn.fetchval(query, start, start + _VOCAB_CHUNK)
        out[start:start + len(values)] = values
    return out


def _compact(
    columns: _EventColumns, user_vocab: np.ndarray, item_vocab: np.ndarray, in_catalog: np.ndarray,
    names: np.ndarray,
) -> InteractionLog:
    """The columns as an InteractionLog whose vocabularies are exactly what it uses (a
    max_events cut can leave users and items of older events out): users are the universe,
    items the catalog plus the items of its events."""
    n = columns.filled
    users, items = columns.users[:n], columns.items[:n]
    used_users = np.bincount(users, minlength=len(user_vocab)) > 0 if n else np.zeros(len(user_vocab), bool)
    if not used_users.all():
        remap = np.cumsum(used_users, dtype=np.int64).astype(np.int32) - 1
        users, user_vocab = remap[users], user_vocab[used_users]
    kept_items = in_catalog | (np.bincount(items, minlength=len(item_vocab)) > 0 if n else in_catalog)
    if not kept_items.all():
        remap = np.cumsum(kept_items, dtype=np.int64).astype(np.int32) - 1
        items, item_vocab = remap[items], item_vocab[kept_items]
    return InteractionLog(
        users=users, items=items, names=columns.names[:n], weights=columns.weights[:n],
        is_purchase=columns.is_purchase[:n], timestamps=columns.timestamps[:n], orders=columns.orders[:n],
        sessions=columns.sessions[:n], prices=columns.prices[:n], is_exposure=columns.is_exposure[:n],
        user_vocab=user_vocab, item_vocab=item_vocab, name_vocab=names,
    )


async def _catalog(conn: Any, org_id: uuid.UUID) -> CatalogSnapshot:
    """The items table, a chunk of rows at a time, as compact columns (attributes stay JSON text)."""
    ids: list[str] = []
    types: list[str] = []
    statuses: list[str] = []
    created: list[float] = []
    texts: list[JsonColumn] = []
    shared: dict[str, str] = {}  # one object per distinct type / status, not one per item
    async with driver_transaction(conn, isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(_ITEMS_TABLE, org_id)
        while rows := await cursor.fetch(_CATALOG_CHUNK):
            ids.extend(r[0] for r in rows)
            types.extend(shared.setdefault(r[1], r[1]) for r in rows)
            statuses.extend(shared.setdefault(r[2], r[2]) for r in rows)
            created.extend(r[4] for r in rows)
            texts.append(JsonColumn.of_texts(r[3] for r in rows))
    return CatalogSnapshot(
        item_ids=object_array(ids),
        item_types=object_array(types),
        statuses=object_array(statuses),
        attributes=JsonColumn.concat(texts) if texts else JsonColumn.of_texts([]),
        created_at=np.asarray(created, dtype=np.float64),
    )
