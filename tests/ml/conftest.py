"""Tiny worlds for the pure training layer: no database, fixed clock."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from app.ml.interactions import (
    CatalogSnapshot,
    EncodedLog,
    InteractionLog,
    encode_log,
    item_universe,
    user_universe,
)
from app.ml.params import TrainParams

NOW = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0
WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "remove_from_cart": -2.0, "checkout_start": 5.0,
           "purchase": 10.0, "impression": 0.0}


@dataclass
class Events:
    """Collects events row by row; log() turns them into an InteractionLog."""

    rows: list[dict] = field(default_factory=list)

    def add(
        self,
        user: str,
        item: str,
        name: str = "view",
        *,
        t: float = NOW - HOUR,
        order: str | None = None,
        session: str | None = None,
        price: float = math.nan,
        weight: float | None = None,
    ) -> Events:
        self.rows.append(
            {"user": user, "item": item, "name": name, "t": t, "order": order, "session": session,
             "price": price, "weight": WEIGHTS[name] if weight is None else weight}
        )
        return self

    def log(self) -> InteractionLog:
        column = lambda key: [row[key] for row in self.rows]
        return InteractionLog.build(
            user_ids=column("user"),
            item_ids=column("item"),
            event_names=column("name"),
            weights=column("weight"),
            timestamps=column("t"),
            order_ids=column("order"),
            session_ids=column("session"),
            prices=column("price"),
            is_exposure=[name == "impression" for name in column("name")],
        )


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def params() -> TrainParams:
    # A 40-user world: the server's regularization (tuned on MovieLens) would flatten it, and
    # EASE would take over below ease_max_items; these tests are about ALS on tiny data.
    return TrainParams(now=NOW, factors=8, iterations=20, knn_neighbours=10, regularization=1.0, alpha=1.0,
                       ease_max_items=0)


@dataclass(frozen=True)
class TasteClusters:
    """Users u* like items a*, users v* like items b*; each user has seen four of the eight."""

    log: InteractionLog
    catalog: CatalogSnapshot
    a_items: tuple[str, ...] = tuple(f"a{i}" for i in range(8))
    b_items: tuple[str, ...] = tuple(f"b{i}" for i in range(8))


@pytest.fixture
def taste_clusters(events: Events) -> TasteClusters:
    rng = np.random.default_rng(7)
    for group, prefix in (("u", "a"), ("v", "b")):
        for user in range(20):
            for item in rng.choice(8, size=4, replace=False):
                days_ago = float(rng.integers(1, 20))
                events.add(f"{group}{user}", f"{prefix}{item}", "click", t=NOW - days_ago * DAY)
    catalog = CatalogSnapshot.build([f"a{i}" for i in range(8)] + [f"b{i}" for i in range(8)])
    return TasteClusters(events.log(), catalog)


def encoded_of(log: InteractionLog, catalog: CatalogSnapshot | None = None) -> EncodedLog:
    """The log encoded over its own items and users (plus the catalog's items, if given)."""
    catalog = catalog if catalog is not None else CatalogSnapshot.empty()
    return encode_log(log, item_universe(log, catalog), user_universe(log))
