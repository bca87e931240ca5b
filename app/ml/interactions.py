"""Training inputs (the event log, the catalog, the parameters) and the user x item matrix.

The caller (the training job) reads the database, resolves aliases, drops inactive users and
looks up event weights; everything from here on is pure array code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
# Decayed sums below this are rounding residue (e.g. add_to_cart 4 minus two removes of 2).
NUMERIC_ZERO = 1e-6


@dataclass(frozen=True)
class InteractionLog:
    """One row per event that names an item, already alias-resolved and weighted."""

    user_ids: np.ndarray  # object (str): canonical user id
    item_ids: np.ndarray  # object (str)
    event_names: np.ndarray  # object (str)
    weights: np.ndarray  # float32, signed (remove_from_cart is negative)
    is_purchase: np.ndarray  # bool: the event completes an order
    timestamps: np.ndarray  # float64 unix seconds
    order_ids: np.ndarray  # object, None where missing
    session_ids: np.ndarray  # object, None where missing
    prices: np.ndarray  # float64, NaN where missing
    quantities: np.ndarray  # float64, 1.0 where missing
    is_exposure: np.ndarray  # bool: an impression (exposure family), weight 0, demotion signal

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"InteractionLog columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def build(
        cls,
        *,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        event_names: Sequence[str],
        weights: Sequence[float],
        timestamps: Sequence[float],
        is_purchase: Sequence[bool] | None = None,
        order_ids: Sequence[str | None] | None = None,
        session_ids: Sequence[str | None] | None = None,
        prices: Sequence[float] | None = None,
        quantities: Sequence[float] | None = None,
        is_exposure: Sequence[bool] | None = None,
    ) -> InteractionLog:
        """Columns from plain sequences, with the documented defaults for the optional ones."""
        n = len(user_ids)
        names = _object_array(event_names)
        return cls(
            user_ids=_object_array(user_ids),
            item_ids=_object_array(item_ids),
            event_names=names,
            weights=np.asarray(weights, dtype=np.float32).reshape(n),
            is_purchase=(
                names == "purchase" if is_purchase is None else np.asarray(is_purchase, dtype=bool)
            ).reshape(n),
            timestamps=np.asarray(timestamps, dtype=np.float64).reshape(n),
            order_ids=_object_array(order_ids if order_ids is not None else [None] * n),
            session_ids=_object_array(session_ids if session_ids is not None else [None] * n),
            prices=np.asarray(prices if prices is not None else np.full(n, np.nan), dtype=np.float64),
            quantities=np.asarray(quantities if quantities is not None else np.ones(n), dtype=np.float64),
            is_exposure=np.asarray(is_exposure if is_exposure is not None else np.zeros(n, bool), dtype=bool),
        )

    @classmethod
    def empty(cls) -> InteractionLog:
        return cls.build(user_ids=[], item_ids=[], event_names=[], weights=[], timestamps=[])


@dataclass(frozen=True)
class CatalogSnapshot:
    """The items table at train time."""

    item_ids: np.ndarray  # object (str)
    item_types: np.ndarray  # object (str)
    statuses: np.ndarray  # object: active | inactive | deleted
    attributes: list[dict[str, Any]]  # free JSON per item
    created_at: np.ndarray  # float64 unix seconds

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"CatalogSnapshot columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        *,
        attributes: Sequence[dict[str, Any]] | None = None,
        item_types: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        created_at: Sequence[float] | None = None,
    ) -> CatalogSnapshot:
        """Columns from plain sequences; omitted ones mean product, active, no attributes, t=0."""
        n = len(item_ids)
        return cls(
            item_ids=_object_array(item_ids),
            item_types=_object_array(item_types if item_types is not None else ["product"] * n),
            statuses=_object_array(statuses if statuses is not None else ["active"] * n),
            attributes=list(attributes) if attributes is not None else [{} for _ in range(n)],
            created_at=np.asarray(created_at if created_at is not None else np.zeros(n), dtype=np.float64),
        )

    @classmethod
    def empty(cls) -> CatalogSnapshot:
        return cls.build([])


@dataclass(frozen=True)
class TrainParams:
    """Every tunable of a training run; the worker fills it from Settings."""

    now: float  # "current time" for decay (unix s); tests pass a fixed value
    # ALS, EASE, pair and K values were chosen by `lehnz eval --only tuning` (validation splits
    # of MovieLens 100K and Online Retail; grid and scores in docs/benchmarks.md).
    factors: int = 32
    iterations: int = 30
    regularization: float = 10.0
    alpha: float = 0.5  # ALS confidence = 1 + alpha * decayed weight (Hu, Koren, Volinsky 2008)
    decay_half_life_days: float = 30.0
    trending_half_life_hours: float = 24.0
    session_gap_minutes: float = 30.0
    knn_neighbours: int = 50
    # Use EASE for personalized when n_items <= this (0 = never). B is dense items^2 float32:
    # 2,000 items = 16 MB per org (64 cached orgs <= 1 GB per api process), ~100 MB and 1-2 s
    # to fit; EASE beat ALS on MovieLens validation (1,682 items).
    ease_max_items: int = 2000
    ease_lambda: float = 400.0
    seed: int = 42
    # Pseudo-counts pulling pair statistics (confidence, lift, kNN support) toward "no evidence",
    # so one co-occurrence of two rare items cannot outrank a pair seen many times.
    pair_shrinkage: float = 5.0
    # Baskets and sessions count 0.5 ** (age / this) in the pair tables (see cooccurrence.py).
    pair_half_life_days: float = 120.0
    # Pair score = confidence * (1 - w / lift): 1 = pure "added value", towards 0 = confidence.
    pair_lift_weight: float = 0.1
    # Sessions/orders with more distinct items than this are skipped for pair counting: they
    # are mostly crawlers or bulk orders, and their pairs grow quadratically.
    max_basket_items: int = 100
    # Pseudo-events added to an item's expected recent activity, so one fresh view of an
    # unknown item does not read as a surge.
    trending_prior_events: float = 1.0
    # Pseudo-events of the exposure demotion (popularity.exposure_penalty): an item needs a few
    # dozen impressions without engagement before it is pushed down noticeably.
    exposure_prior_events: float = 10.0
    # Multiply-adds allowed for content-similarity candidates (sum of df^2 of the tokens used).
    # Tokens too common to fit (a huge category) only re-rank candidates; see content.py.
    content_pair_budget: int = 30_000_000

    def __post_init__(self) -> None:
        positive = (
            "factors", "decay_half_life_days", "trending_half_life_hours", "trending_prior_events",
            "ease_lambda", "pair_half_life_days", "exposure_prior_events",
        )
        non_negative = (
            "iterations", "regularization", "alpha", "session_gap_minutes",
            "knn_neighbours", "ease_max_items", "pair_shrinkage", "pair_lift_weight",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainParams.{name} must be > 0")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainParams.{name} must be >= 0")
        if self.max_basket_items < 2 or self.content_pair_budget < 1:
            raise ValueError("TrainParams.max_basket_items must be >= 2 and content_pair_budget >= 1")

    @property
    def decay_half_life_s(self) -> float:
        return self.decay_half_life_days * SECONDS_PER_DAY

    @property
    def pair_half_life_s(self) -> float:
        return self.pair_half_life_days * SECONDS_PER_DAY

    @property
    def trending_half_life_s(self) -> float:
        return self.trending_half_life_hours * SECONDS_PER_HOUR

    @property
    def session_gap_s(self) -> float:
        return self.session_gap_minutes * 60.0


@dataclass(frozen=True)
class EncodedLog:
    """The log with users and items replaced by row/column numbers of the training matrix."""

    log: InteractionLog
    users: np.ndarray  # int64 row per event
    items: np.ndarray  # int64 column per event
    n_users: int
    n_items: int
    item_ids: np.ndarray = field(repr=False)  # the item universe, column order
    user_ids: np.ndarray = field(repr=False)  # the user universe, row order


def item_universe(log: InteractionLog, catalog: CatalogSnapshot) -> np.ndarray:
    """Catalog items plus items only seen in events, sorted so columns are deterministic."""
    return _object_array(sorted(set(catalog.item_ids.tolist()) | set(log.item_ids.tolist())))


def user_universe(log: InteractionLog) -> np.ndarray:
    return _object_array(sorted(set(log.user_ids.tolist())))


def index_of(ids: np.ndarray) -> dict[str, int]:
    return {value: position for position, value in enumerate(ids.tolist())}


def encode_log(log: InteractionLog, item_ids: np.ndarray, user_ids: np.ndarray) -> EncodedLog:
    """Map ids to positions; events naming an id outside the universes are dropped."""
    item_index, user_index = index_of(item_ids), index_of(user_ids)
    items = np.fromiter((item_index.get(i, -1) for i in log.item_ids), np.int64, len(log))
    users = np.fromiter((user_index.get(u, -1) for u in log.user_ids), np.int64, len(log))
    known = (items >= 0) & (users >= 0)
    if not known.all():
        log = _take(log, known)
        items, users = items[known], users[known]
    return EncodedLog(log, users, items, len(user_ids), len(item_ids), item_ids, user_ids)


def decay(timestamps: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """0.5 ** (age / half_life); events stamped in the future count as fresh, not as boosted."""
    age = np.maximum(now - timestamps, 0.0)
    return np.exp2(-age / half_life_s)


def decayed_matrix(encoded: EncodedLog, params: TrainParams) -> csr_matrix:
    """users x items float32: per pair the signed, decayed weight sum, clipped at zero."""
    log = encoded.log
    values = log.weights.astype(np.float64) * decay(log.timestamps, params.now, params.decay_half_life_s)
    summed = coo_matrix(
        (values, (encoded.users, encoded.items)), shape=(encoded.n_users, encoded.n_items)
    ).tocsr()  # duplicates are summed here, so removes cancel earlier adds
    summed.data = np.where(summed.data > NUMERIC_ZERO, summed.data, 0.0)
    summed.eliminate_zeros()
    matrix = csr_matrix(summed, dtype=np.float32)
    matrix.sort_indices()
    return matrix


def build_matrix(
    log: InteractionLog, item_index: dict[str, int], user_index: dict[str, int], params: TrainParams
) -> csr_matrix:
    """users x items training matrix (see decayed_matrix) for the given id -> position maps."""
    item_ids = _ids_by_position(item_index)
    user_ids = _ids_by_position(user_index)
    return decayed_matrix(encode_log(log, item_ids, user_ids), params)


def _ids_by_position(index: dict[str, int]) -> np.ndarray:
    ids = np.empty(len(index), dtype=object)
    for value, position in index.items():
        ids[position] = value
    return ids


def _take(log: InteractionLog, mask: np.ndarray) -> InteractionLog:
    return InteractionLog(**{name: getattr(log, name)[mask] for name in log.__dataclass_fields__})


def _object_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array
