"""Top-K metrics of one ranked list against the set of items the query should have found.

Definitions follow gorse's evaluator (model/ranking/evaluator.go) so the MovieLens numbers sit
beside its published table: precision divides by K, recall by the number of targets, IDCG
counts min(|targets|, K) perfect positions, MRR is the reciprocal rank of the first hit.
Every metric is 0 for a query without targets; callers skip such queries.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np


def hits(ranked: Sequence[int], targets: Collection[int], k: int) -> np.ndarray:
    """Bool per position of the top k: is that item a target."""
    return np.fromiter((item in targets for item in ranked[:k]), dtype=bool, count=min(k, len(ranked)))


def precision_at(ranked: Sequence[int], targets: Collection[int], k: int) -> float:
    return float(hits(ranked, targets, k).sum()) / k


def recall_at(ranked: Sequence[int], targets: Collection[int], k: int) -> float:
    if not targets:
        return 0.0
    return float(hits(ranked, targets, k).sum()) / len(targets)


def hit_rate_at(ranked: Sequence[int], targets: Collection[int], k: int) -> float:
    return 1.0 if hits(ranked, targets, k).any() else 0.0


def ndcg_at(ranked: Sequence[int], targets: Collection[int], k: int) -> float:
    """Binary-relevance NDCG: sum of 1/log2(rank+1) over hits, over the best possible sum."""
    if not targets:
        return 0.0
    found = hits(ranked, targets, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(len(targets), k)].sum()
    return float(discounts[: found.size][found].sum() / ideal)


def mrr_at(ranked: Sequence[int], targets: Collection[int], k: int) -> float:
    found = np.flatnonzero(hits(ranked, targets, k))
    return 1.0 / float(found[0] + 1) if found.size else 0.0


def coverage(lists: Iterable[Sequence[int]], n_items: int) -> float:
    """Share of the catalog that appears in at least one of the lists."""
    shown: set[int] = set()
    for ranked in lists:
        shown.update(ranked)
    return len(shown) / n_items if n_items else 0.0


METRICS = {
    "precision": precision_at,
    "recall": recall_at,
    "hr": hit_rate_at,
    "ndcg": ndcg_at,
    "mrr": mrr_at,
}


class MetricMeans:
    """Per-query metrics, kept per query so that two methods can be compared pairwise:
    `add(ranked, targets)` for each query, then `means()`."""

    def __init__(self, wanted: Sequence[tuple[str, int]]) -> None:
        self.wanted = list(wanted)  # (metric name, k), e.g. ("ndcg", 10)
        self.values: dict[str, list[float]] = {self.label(name, k): [] for name, k in self.wanted}

    @staticmethod
    def label(name: str, k: int) -> str:
        return f"{name}@{k}"

    @property
    def queries(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def add(self, ranked: Sequence[int], targets: Collection[int]) -> None:
        for name, k in self.wanted:
            self.values[self.label(name, k)].append(METRICS[name](ranked, targets, k))

    def extend(self, other: MetricMeans) -> None:
        """Pool another run's queries (e.g. the next fold) into this one."""
        for label, values in other.values.items():
            self.values[label].extend(values)

    def means(self) -> dict[str, float]:
        return {label: float(np.mean(values)) if values else 0.0 for label, values in self.values.items()}


def std_error(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of a mean over queries (0 for fewer than two)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else 0.0


def paired_difference(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float]:
    """(mean of ours - theirs, its standard error) over the same queries: whether a gap between
    two methods is larger than what the choice of queries alone would produce."""
    diff = np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64)
    return float(diff.mean()) if diff.size else 0.0, std_error(diff)
