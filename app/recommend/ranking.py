"""What a strategy sees (RankContext) and what it returns (Ranking), plus small shared helpers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.artifacts import OrgModels
from app.ml.factor_index import FactorIndex, Weights
from app.recommend.catalog import Catalog
from app.recommend.realtime import Activity
from app.settings import Settings


@dataclass(frozen=True, eq=False)
class Ranking:
    """Candidates with raw scores (higher is better), in one of two shapes:

    - sparse: `indices` (unique catalog indices, any order) and `scores` of the same length,
      for strategies with a few hundred candidates (neighbour lists, recent activity);
    - dense: `indices` is None and `scores[i]` is item i's score for catalog positions
      0..len(scores)-1, -inf for "not a candidate" (model-wide scores, popularity vectors),
      so the service filters and counts with whole-array mask operations.
    """

    indices: np.ndarray | None  # int64 catalog indices, unique; None = dense
    scores: np.ndarray  # float
    reason: str
    # Per-candidate reason codes when one strategy mixes kinds of result (else `reason`).
    reasons: np.ndarray | None = None
    mode: str | None = None  # overrides the registry's mode (e.g. `similar` answered by content only)
    # Items that must not appear anywhere in the answer, fallbacks included (e.g. already bought).
    exclude: np.ndarray | None = None
    # Dense only, for vectors reused across requests: what every request would recompute.
    reused: ReusedDense | None = None

    @classmethod
    def from_weights(
        cls, weights: dict[int, float], *, reason: str, mode: str | None = None, exclude: Any = None
    ) -> Ranking | None:
        if not weights:
            return None
        indices = np.fromiter(weights.keys(), dtype=np.int64, count=len(weights))
        scores = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        excluded = None if exclude is None else np.fromiter(exclude, dtype=np.int64)
        return cls(indices, scores, reason, mode=mode, exclude=excluded)


@dataclass(frozen=True, eq=False)
class ReusedDense:
    """Derived once per serving snapshot from a dense vector many requests rank (popular,
    trending, new-arrivals), so a request makes no pass over the catalog for them."""

    order: np.ndarray  # every candidate, best first (see best_first)
    candidates: np.ndarray  # bool: scores > -inf
    nonnegative: bool  # no candidate scores below 0: normalising needs only the best

    @classmethod
    def of(cls, scores: np.ndarray) -> ReusedDense:
        candidates = scores > -np.inf
        return cls(best_first(scores), candidates, bool(np.all(scores[candidates] >= 0)))


@dataclass(frozen=True, eq=False)
class FactorRanking:
    """Dense scores `demote(item_factors @ user)` over every model item, never all computed:
    the service asks the model's FactorIndex for the page's best, exactly (personalized on ALS).
    Every model item is a candidate (the user vector and the factors are finite). With
    `weights`, the scores are max(that, 0) * weights(item) (price-optimized on ALS)."""

    index: FactorIndex
    user: np.ndarray  # float32 factor vector
    reason: str
    mode: str | None = None
    exclude: np.ndarray | None = None  # as Ranking.exclude
    weights: Weights | None = None


# The most a table of memoised_recent holds in arrays: a catalog-sized mask is a byte per item,
# so 128 of them are 13 MB at 100k items but 128 MB at a million (per org, per table).
MEMO_TABLE_BYTES = 32 * 1024 * 1024


def memoised_recent(
    memo: dict[str, Any], table: str, key: Hashable, compute: Callable[[], Any], *, kept: int,
    kept_bytes: int = MEMO_TABLE_BYTES,
) -> Any:
    """Like RankContext.memoised for values with many keys (filters, fallback chains): a table
    in the snapshot memo keeping the `kept` most recently used, and fewer when their arrays
    would hold more than `kept_bytes` (the newest is always kept)."""
    cache: OrderedDict[Hashable, Any] = memo.setdefault(table, OrderedDict())
    value = cache.get(key)
    if value is None:
        value = compute()
        cache[key] = value
        held = sum(getattr(v, "nbytes", 0) for v in cache.values())
        while len(cache) > 1 and (len(cache) > kept or held > kept_bytes):
            held -= getattr(cache.popitem(last=False)[1], "nbytes", 0)
    else:
        cache.move_to_end(key)
    return value


@dataclass(frozen=True, eq=False)
class RankContext:
    models: OrgModels | None
    catalog: Catalog
    settings: Settings
    now: float
    user_id: str | None  # canonical (aliases resolved)
    context_item: int | None  # catalog index of context_item_id, when known
    context_item_given: bool
    category: str | None  # filters.category, else the context item's category
    recent: Sequence[Activity] = field(default_factory=tuple)  # newest first, from Redis
    # Per-snapshot memo for values every request would otherwise recompute (dense popularity
    # vectors and the like); valid as long as models and catalog are the same objects.
    memo: dict[str, Any] = field(default_factory=dict)

    def memoised(self, key: str, compute: Callable[[], Any]) -> Any:
        value = self.memo.get(key)
        if value is None:
            value = compute()
            self.memo[key] = value
        return value

    @property
    def n_model(self) -> int:
        return 0 if self.models is None else self.models.n_items

    @cached_property
    def model_user(self) -> int | None:
        if self.models is None or self.user_id is None:
            return None
        return self.models.user_index.get(self.user_id)

    def in_model(self, index: int | None) -> bool:
        return index is not None and 0 <= index < self.n_model

    def recent_items(self) -> list[tuple[int, Activity]]:
        """Recent interactions whose item is in the catalog, newest first (treat as read-only)."""
        return self._recent_items

    @cached_property
    def _recent_items(self) -> list[tuple[int, Activity]]:
        found = self.catalog.index.positions([activity.item_id for activity in self.recent]).tolist()
        return [(index, activity) for index, activity in zip(found, self.recent) if index >= 0]

    def weight(self, activity: Activity) -> float:
        return self.settings.event_weight(activity.event_name, activity.event_family)

    def fresh_activity(self) -> list[tuple[int, Activity]]:
        """Recent interactions the trained model has not seen yet (after trained_at), in the model."""
        trained_at = self.models.trained_at if self.models is not None else float("-inf")
        return [(i, a) for i, a in self.recent_items() if a.timestamp > trained_at and i < self.n_model]


def row(matrix: csr_matrix, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of one CSR row, without building a new matrix."""
    start, stop = matrix.indptr[index], matrix.indptr[index + 1]
    return matrix.indices[start:stop].astype(np.int64), matrix.data[start:stop].astype(np.float64)


@dataclass(frozen=True, eq=False)
class Blend:
    """Summed neighbour weights: `items` unique and ascending, `sums` their weights."""

    items: np.ndarray  # int64
    sums: np.ndarray  # float64

    def without(self, drop: Iterable[int]) -> Blend:
        dropped = np.fromiter(drop, dtype=np.int64)
        if dropped.size == 0:
            return self
        # items are sorted: find each dropped one by binary search (np.isin costs more at this size)
        at = np.searchsorted(self.items, dropped)
        found = at < self.items.size
        found[found] = self.items[at[found]] == dropped[found]
        keep = np.ones(self.items.size, dtype=bool)
        keep[at[found]] = False
        return self.kept(keep)

    def kept(self, mask: np.ndarray) -> Blend:
        return Blend(self.items[mask], self.sums[mask])

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.items.tolist(), self.sums.tolist()))

    def ranking(self, *, reason: str, mode: str | None = None, exclude: Any = None) -> Ranking | None:
        """As a sparse Ranking (None if empty), without a round trip through a dict."""
        if self.items.size == 0:
            return None
        excluded = None if exclude is None else np.fromiter(exclude, dtype=np.int64)
        return Ranking(self.items, self.sums, reason, mode=mode, exclude=excluded)


def neighbour_blend(
    models: OrgModels, sources: Sequence[tuple[int, float]], parts: Sequence[tuple[str, float]]
) -> Blend:
    """Sum of the neighbour rows of `sources` (index, weight) in the named tables, weighted,
    with items shown often but rarely engaged with demoted."""
    source_items = np.fromiter((i for i, _ in sources), dtype=np.int64, count=len(sources))
    source_weights = np.fromiter((w for _, w in sources), dtype=np.float64, count=len(sources))
    columns: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for table_name, table_weight in parts:
        table: csr_matrix = getattr(models, table_name)
        inside = (source_items >= 0) & (source_items < table.shape[0])
        starts = table.indptr[source_items[inside]]
        lengths = table.indptr[source_items[inside] + 1] - starts
        # Every source's row, one after the other, gathered at once (not row by row).
        positions = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
        columns.append(table.indices[positions])
        values.append(table.data[positions] * np.repeat(source_weights[inside] * table_weight, lengths))
    # One sum per item, added in the order above (np.bincount is sequential).
    items, slot = np.unique(np.concatenate([np.empty(0, np.int64), *columns]), return_inverse=True)
    if items.size == 0:  # no source has neighbours (and a bincount of nothing is integer)
        return Blend(items, np.empty(0))
    sums = np.bincount(slot, weights=np.concatenate(values), minlength=items.size)
    sums *= models.exposure_penalty[items]
    return Blend(items, sums)


def best_first(scores: np.ndarray) -> np.ndarray:
    """The indices of a dense vector's candidates (finite scores), best first, ties by index:
    the order the service pages through, computed once for a vector many requests rank."""
    candidates = np.flatnonzero(scores > -np.inf)
    return candidates[np.lexsort((candidates, -scores[candidates]))]
