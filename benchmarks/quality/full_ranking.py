""""Rank every item not in the user's training set": the personalized protocols' common core.

Candidates for a user are all model items (the whole catalog, including items nobody had in
training) minus the items of that user's training rows. Targets are the user's test items.
Users without a test item, or unknown to the model, are not queries. The server is asked for
exactly this list (`filters.exclude_interacted: true`); score-matrix baselines get it from
`top_unseen`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from benchmarks.quality.metrics import MetricMeans, coverage

# model user row -> scores over every model item (higher is better)
Scorer = Callable[[int], np.ndarray]
# query position (in UserQueries) -> its ranked list of model item indices, best first
Ranker = Callable[[int], list[int]]


@dataclass(frozen=True)
class UserQueries:
    rows: list[int]  # model user rows that have targets
    seen: list[np.ndarray]  # per query: model item indices of its training rows
    targets: list[frozenset[int]]  # per query: model item indices to find
    n_items: int


def user_queries(
    user_index: Mapping[str, int],
    item_index: Mapping[str, int],
    *,
    train: tuple[Sequence[str], Sequence[str]],
    test: tuple[Sequence[str], Sequence[str]],
) -> UserQueries:
    """(users, items) id columns of the training and test rows -> one query per test user."""
    seen: dict[int, set[int]] = {}
    for user, item in zip(*train):
        seen.setdefault(user_index[user], set()).add(item_index[item])
    wanted: dict[int, set[int]] = {}
    for user, item in zip(*test):
        row = user_index.get(user)
        column = item_index.get(item)
        if row is None or column is None or column in seen.get(row, ()):
            continue
        wanted.setdefault(row, set()).add(column)
    rows = sorted(wanted)
    return UserQueries(
        rows=rows,
        seen=[np.fromiter(seen.get(r, ()), dtype=np.int64) for r in rows],
        targets=[frozenset(wanted[r]) for r in rows],
        n_items=len(item_index),
    )


def top_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> list[int]:
    """The k best items by (score desc, index asc), never a seen one and never a -inf score."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[seen] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k]
    threshold = scores[part].min()
    tied = np.flatnonzero(scores >= threshold)  # everything tied at the cut competes by index
    return tied[np.lexsort((tied, -scores[tied]))][:k].tolist()


def evaluate(
    queries: UserQueries, scorer: Scorer, wanted: Sequence[tuple[str, int]], *, coverage_k: int | None = None
) -> tuple[dict[str, float], MetricMeans]:
    """(mean metrics, per-query values) of a score matrix's top lists over the unseen items."""
    depth = depth_of(wanted, coverage_k)
    return evaluate_ranked(queries, lambda q: top_unseen(scorer(queries.rows[q]), queries.seen[q], depth), wanted,
                           coverage_k=coverage_k)


def evaluate_ranked(
    queries: UserQueries, ranked: Ranker, wanted: Sequence[tuple[str, int]], *, coverage_k: int | None = None
) -> tuple[dict[str, float], MetricMeans]:
    """(mean metrics, per-query values) over the queries, given each query's ranked list (model
    item indices, best first); the means include coverage@coverage_k of the lists when asked."""
    means = MetricMeans(wanted)
    lists = []
    for position, targets in enumerate(queries.targets):
        top = ranked(position)
        means.add(top, targets)
        if coverage_k:
            lists.append(top[:coverage_k])
    out = means.means()
    if coverage_k:
        out[f"coverage@{coverage_k}"] = coverage(lists, queries.n_items)
    return out, means


def depth_of(wanted: Sequence[tuple[str, int]], coverage_k: int | None = None) -> int:
    """How deep a list the metrics read."""
    return max([k for _, k in wanted] + [coverage_k or 0])


def matrix_scorer(scores: np.ndarray) -> Scorer:
    """Scorer over a precomputed users x items score matrix (dense)."""
    return lambda row: scores[row]


def binary_matrix(
    user_index: Mapping[str, int], item_index: Mapping[str, int], users: Sequence[str], items: Sequence[str]
) -> csr_matrix:
    """users x items 0/1 float32 in the model's index space: the input of the textbook baselines."""
    rows = np.fromiter((user_index[u] for u in users), dtype=np.int64, count=len(users))
    cols = np.fromiter((item_index[i] for i in items), dtype=np.int64, count=len(items))
    matrix = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(user_index), len(item_index)))
    matrix.data[:] = 1.0
    return matrix
