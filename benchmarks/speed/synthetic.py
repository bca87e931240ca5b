"""Benchmark datasets: a synthetic catalog + interaction log of any size, and two real ones.

Every dataset comes out as the same columnar `Dataset`, so preloading (COPY), request bodies
and ingest bodies do not care where it came from. Columns are numpy arrays of codes; strings
are made only when rows are written, so 1M interactions stay cheap.

The synthetic world is shaped like a shop: ~50 categories, brands inside categories, Zipf
popularity inside each category, users with a main and a second favourite category, sessions
of a few events (views, clicks, carts, purchases grouped into orders), more activity recently.
Real datasets are read in place from the shared data directory, never copied.
"""

from __future__ import annotations

import csv
import gzip
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DAY_S = 86400.0

# (event_name, event_family); codes index this table.
EVENT_TYPES: list[tuple[str, str]] = [
    ("view", "engagement"),
    ("click", "engagement"),
    ("add_to_cart", "conversion"),
    ("remove_from_cart", "engagement"),
    ("purchase", "conversion"),
]
VIEW, CLICK, CART, UNCART, PURCHASE = range(len(EVENT_TYPES))
_EVENT_MIX = np.array([0.70, 0.12, 0.08, 0.02, 0.08])

_ADJECTIVES = [f"adj{i}" for i in range(120)]
_NOUNS = [f"noun{i}" for i in range(300)]
_TAGS = [f"tag{i}" for i in range(40)]


@dataclass
class Dataset:
    """Items and interaction events, as codes into small lookup lists."""

    name: str
    item_ids: list[str]
    item_attributes: list[dict[str, Any]]
    item_created_at: np.ndarray  # float64 unix seconds
    user_ids: list[str]
    ev_user: np.ndarray  # int32 index into user_ids
    ev_item: np.ndarray  # int32 index into item_ids
    ev_type: np.ndarray  # int8 index into EVENT_TYPES
    ev_ts: np.ndarray  # float64 unix seconds
    ev_session: np.ndarray  # int64, -1 = none -> context.session_id "s-<n>"
    ev_order: np.ndarray  # int64, -1 = none -> context.order_id "o-<n>"
    ev_price: np.ndarray  # float64, NaN = none -> context.price
    ev_quantity: np.ndarray  # int16, 0 = none -> context.quantity
    categories: list[str]  # the values of attributes["category"] (may be empty)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_events(self) -> int:
        return len(self.ev_user)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "items": self.n_items,
            "users": self.n_users,
            "interactions": self.n_events,
            "categories": len(self.categories),
            "days": round(float(np.ptp(self.ev_ts)) / DAY_S, 1) if self.n_events else 0.0,
        }

    # --- rows for the wire and for COPY ---------------------------------------------------
    def context(self, row: int) -> dict[str, Any] | None:
        context: dict[str, Any] = {}
        if self.ev_session[row] >= 0:
            context["session_id"] = f"s-{self.ev_session[row]}"
        if self.ev_order[row] >= 0:
            context["order_id"] = f"o-{self.ev_order[row]}"
        if not math.isnan(self.ev_price[row]):
            context["price"] = float(self.ev_price[row])
        if self.ev_quantity[row] > 0:
            context["quantity"] = int(self.ev_quantity[row])
        return context or None

    def wire_event(self, row: int, *, timestamp: float | None = None, session_offset: int = 0) -> dict[str, Any]:
        """Row `row` as the body of POST /v1/ingest/events/ingest (no event_id: the server assigns one)."""
        name, family = EVENT_TYPES[int(self.ev_type[row])]
        event: dict[str, Any] = {
            "user_id": self.user_ids[int(self.ev_user[row])],
            "event_family": family,
            "event_name": name,
            "item_id": self.item_ids[int(self.ev_item[row])],
            "timestamp": iso(self.ev_ts[row] if timestamp is None else timestamp),
        }
        context = self.context(row)
        if context is not None:
            if session_offset and "session_id" in context:
                context["session_id"] = f"s-{int(self.ev_session[row]) + session_offset}"
            event["context"] = context
        return event

    def wire_item(self, index: int) -> dict[str, Any]:
        return {
            "item_id": self.item_ids[index],
            "item_type": "product",
            "status": "active",
            "attributes": self.item_attributes[index],
            "created_at": iso(self.item_created_at[index]),
        }


def iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), UTC).isoformat().replace("+00:00", "Z")


# --- synthetic -----------------------------------------------------------------------------
def synthetic(
    *, items: int, interactions: int, users: int, seed: int = 7, now: float | None = None, days: float = 90.0
) -> Dataset:
    """A shop-shaped world of `items` x `users` with exactly `interactions` events."""
    if items < 10 or users < 1 or interactions < 1:
        raise ValueError("synthetic data needs at least 10 items, 1 user and 1 interaction")
    rng = np.random.default_rng(seed)
    now = time.time() if now is None else now
    n_cat = int(min(50, max(5, items // 200)))
    n_brands = max(n_cat, items // 100)

    item_cat = rng.integers(0, n_cat, items)
    brand_cat = rng.integers(0, n_cat, n_brands)
    # a brand sells in one category: pick among the brands of the item's category
    brands_of = [np.flatnonzero(brand_cat == c) for c in range(n_cat)]
    brands_of = [b if len(b) else np.arange(n_brands) for b in brands_of]
    item_brand = np.array([brands_of[c][rng.integers(0, len(brands_of[c]))] for c in item_cat])
    cat_price = rng.lognormal(3.0, 0.8, n_cat)
    price = np.round(cat_price[item_cat] * rng.lognormal(0.0, 0.35, items), 2) + 0.99
    adjective = rng.integers(0, len(_ADJECTIVES), items)
    noun = rng.integers(0, len(_NOUNS), items)
    n_tags = rng.integers(1, 4, items)
    tags = rng.integers(0, len(_TAGS), (items, 3))
    created = now - DAY_S * 365 * rng.random(items) ** 2
    created[rng.random(items) < 0.01] = now - DAY_S * 7 * rng.random()

    categories = [f"cat{c}" for c in range(n_cat)]
    attributes = [
        {
            "title": f"{_ADJECTIVES[adjective[i]]} {_NOUNS[noun[i]]} {i}",
            "category": categories[item_cat[i]],
            "brand": f"brand{item_brand[i]}",
            "price": float(price[i]),
            "tags": sorted({_TAGS[t] for t in tags[i, : n_tags[i]]}),
        }
        for i in range(items)
    ]

    # Zipf popularity inside each category: one sorted CDF per category.
    members = [np.flatnonzero(item_cat == c) for c in range(n_cat)]
    cdfs = []
    for c in range(n_cat):
        weights = 1.0 / np.arange(1, len(members[c]) + 1) ** 0.9
        rng.shuffle(members[c])
        cdfs.append(np.cumsum(weights) / weights.sum())
    cat_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.7
    cat_weight /= cat_weight.sum()
    user_main = rng.choice(n_cat, users, p=cat_weight)
    user_second = rng.choice(n_cat, users, p=cat_weight)
    activity = rng.lognormal(0.0, 1.0, users)
    activity /= activity.sum()

    # Sessions of ~5 events each.
    lengths = []
    total = 0
    while total < interactions:
        chunk = rng.geometric(0.2, max(16, (interactions - total) // 5 + 16))
        lengths.append(chunk)
        total += int(chunk.sum())
    session_len = np.concatenate(lengths)
    cut = int(np.searchsorted(np.cumsum(session_len), interactions))
    session_len = session_len[: cut + 1].copy()
    session_len[-1] -= int(session_len.sum()) - interactions
    session_len = session_len[session_len > 0]
    n_sessions = len(session_len)
    session_user = rng.choice(users, n_sessions, p=activity)
    session_start = now - DAY_S * days * rng.random(n_sessions) ** 1.3 - 3600.0
    session_of = np.repeat(np.arange(n_sessions), session_len)

    ev_user = session_user[session_of].astype(np.int32)
    draw = rng.random(interactions)
    ev_cat = np.where(
        draw < 0.7, user_main[ev_user], np.where(draw < 0.9, user_second[ev_user], rng.integers(0, n_cat, interactions))
    )
    ev_item = np.empty(interactions, dtype=np.int32)
    u = rng.random(interactions)
    for c in range(n_cat):
        rows = np.flatnonzero(ev_cat == c)
        picks = np.minimum(np.searchsorted(cdfs[c], u[rows]), len(members[c]) - 1)
        ev_item[rows] = members[c][picks]
    ev_type = rng.choice(len(EVENT_TYPES), interactions, p=_EVENT_MIX).astype(np.int8)
    # Within a session, events follow each other after exponential gaps (mean 45 s).
    gaps = rng.exponential(45.0, interactions)
    elapsed = np.cumsum(gaps)
    first = np.cumsum(session_len) - session_len
    before = elapsed[first] - gaps[first]
    ev_ts = np.minimum(session_start[session_of] + elapsed - before[session_of], now - 1.0)
    ev_session = session_of.astype(np.int64)
    ev_order = np.where(ev_type == PURCHASE, session_of, -1).astype(np.int64)
    priced = (ev_type == PURCHASE) | (ev_type == CART)
    ev_price = np.where(priced, price[ev_item], np.nan)
    ev_quantity = np.where(priced, rng.integers(1, 4, interactions), 0).astype(np.int16)
    return Dataset(
        name=f"synthetic shop (seed {seed})",
        item_ids=[f"i{i}" for i in range(items)],
        item_attributes=attributes,
        item_created_at=created,
        user_ids=[f"u{i}" for i in range(users)],
        ev_user=ev_user,
        ev_item=ev_item,
        ev_type=ev_type,
        ev_ts=ev_ts,
        ev_session=ev_session,
        ev_order=ev_order,
        ev_price=ev_price,
        ev_quantity=ev_quantity,
        categories=categories,
    )


# --- real datasets (read in place) ------------------------------------------------------------
def movielens_100k(data_dir: Path) -> Dataset:
    """MovieLens 100K: every rating is an interaction: a click when rated >= 4, else a view."""
    folder = data_dir / "ml-100k"
    genres = [line.split("|")[0] for line in (folder / "u.genre").read_text("latin-1").splitlines() if line]
    item_ids: list[str] = []
    attributes: list[dict[str, Any]] = []
    created: list[float] = []
    for line in (folder / "u.item").read_text("latin-1").splitlines():
        fields = line.split("|")
        if len(fields) < 24:
            continue
        flags = [genres[g] for g, flag in enumerate(fields[5:24]) if flag == "1"]
        item_ids.append(fields[0])
        attributes.append({"title": fields[1], "category": flags[0] if flags else "unknown", "tags": flags})
        try:
            created.append(datetime.strptime(fields[2], "%d-%b-%Y").replace(tzinfo=UTC).timestamp())
        except ValueError:
            created.append(0.0)
    index = {item: i for i, item in enumerate(item_ids)}
    raw = np.loadtxt(folder / "u.data", dtype=np.int64)
    raw = raw[np.argsort(raw[:, 3], kind="stable")]
    users = sorted(set(raw[:, 0].tolist()))
    user_index = {u: i for i, u in enumerate(users)}
    n = len(raw)
    # Shift the 1998 timestamps so the newest rating is an hour ago: decay and trending see a live shop.
    shift = time.time() - 3600.0 - float(raw[:, 3].max())
    return Dataset(
        name="MovieLens 100K (ratings as views; rating >= 4 as clicks)",
        item_ids=item_ids,
        item_attributes=attributes,
        item_created_at=np.asarray(created, dtype=np.float64) + shift,
        user_ids=[f"ml-{u}" for u in users],
        ev_user=np.array([user_index[u] for u in raw[:, 0].tolist()], dtype=np.int32),
        ev_item=np.array([index[str(i)] for i in raw[:, 1].tolist()], dtype=np.int32),
        ev_type=np.where(raw[:, 2] >= 4, CLICK, VIEW).astype(np.int8),
        ev_ts=raw[:, 3].astype(np.float64) + shift,
        ev_session=np.full(n, -1, np.int64),
        ev_order=np.full(n, -1, np.int64),
        ev_price=np.full(n, np.nan),
        ev_quantity=np.zeros(n, np.int16),
        categories=sorted({str(a["category"]) for a in attributes}),
    )


def online_retail(data_dir: Path) -> Dataset:
    """UCI Online Retail: every sales invoice line is a purchase (order = invoice)."""
    path = data_dir / "online-retail" / "online_retail.csv.gz"
    items: dict[str, int] = {}
    titles: list[str] = []
    prices: list[list[float]] = []
    users: dict[str, int] = {}
    ev_user: list[int] = []
    ev_item: list[int] = []
    ev_ts: list[float] = []
    ev_order: list[int] = []
    ev_price: list[float] = []
    ev_qty: list[int] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            invoice = row["InvoiceNo"]
            if not invoice.isdigit():
                continue  # cancellations (C...) and adjustments (A...)
            quantity = int(row["Quantity"])
            price = float(row["UnitPrice"])
            code = row["StockCode"]
            if quantity <= 0 or price <= 0 or not code[:1].isdigit():
                continue
            if code not in items:
                items[code] = len(items)
                titles.append((row["Description"] or code).strip())
                prices.append([])
            item = items[code]
            prices[item].append(price)
            customer = row["CustomerID"] or f"guest-{invoice}"
            ev_user.append(users.setdefault(customer, len(users)))
            ev_item.append(item)
            ev_ts.append(datetime.strptime(row["InvoiceDate"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())
            ev_order.append(int(invoice))
            ev_price.append(price)
            ev_qty.append(min(quantity, 30000))
    ts = np.asarray(ev_ts)
    order = np.argsort(ts, kind="stable")
    shift = time.time() - 3600.0 - float(ts.max())
    n_items = len(items)
    attributes = [
        {"title": titles[i], "price": float(np.median(prices[i])), "category": titles[i].split(" ")[-1].lower()}
        for i in range(n_items)
    ]
    first_seen = np.full(n_items, np.inf)
    np.minimum.at(first_seen, np.asarray(ev_item), ts)
    return Dataset(
        name="UCI Online Retail (sales invoice lines as purchases)",
        item_ids=list(items),
        item_attributes=attributes,
        item_created_at=first_seen + shift,
        user_ids=list(users),
        ev_user=np.asarray(ev_user, np.int32)[order],
        ev_item=np.asarray(ev_item, np.int32)[order],
        ev_type=np.full(len(order), PURCHASE, np.int8),
        ev_ts=ts[order] + shift,
        ev_session=np.full(len(order), -1, np.int64),
        ev_order=np.asarray(ev_order, np.int64)[order],
        ev_price=np.asarray(ev_price)[order],
        ev_quantity=np.asarray(ev_qty, np.int16)[order],
        categories=sorted({str(a["category"]) for a in attributes}),
    )


def load_dataset(
    kind: str, *, items: int, interactions: int, users: int, data_dir: Path, seed: int = 7
) -> Dataset:
    if kind == "synthetic":
        return synthetic(items=items, interactions=interactions, users=users, seed=seed)
    if kind == "ml-100k":
        return movielens_100k(data_dir)
    if kind == "online-retail":
        return online_retail(data_dir)
    raise ValueError(f"unknown dataset {kind!r}; use synthetic, ml-100k or online-retail")
