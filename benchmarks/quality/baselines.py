"""What a recommender-systems engineer compares against, implemented the textbook way.

Hyperparameters of the baselines were chosen on the same validation splits as the server's
(`lehnz eval --only tuning` reports them); the server's own ALS hyperparameters are used for
"implicit ALS used directly", so that row isolates what the server adds around the library.
"""

from __future__ import annotations

import warnings

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender
from implicit.utils import ParameterWarning
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from app.ml.interactions import TrainParams

# Chosen by the tuning protocol on the MovieLens validation splits (see docs/benchmarks.md).
ITEM_KNN_NEIGHBOURS = 200
EASE_LAMBDA = 400.0


def implicit_als(user_items: csr_matrix, params: TrainParams) -> np.ndarray:
    """users x items scores of implicit's ALS on the 0/1 matrix, with the server's hyperparameters
    (implicit's own alpha: confidence 1 + alpha * 1 for every rating)."""
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            dtype=np.float32,
        )
        model.fit(user_items, show_progress=False)
    return np.asarray(model.user_factors @ model.item_factors.T)


def item_knn(user_items: csr_matrix, neighbours: int = ITEM_KNN_NEIGHBOURS) -> np.ndarray:
    """users x items scores of implicit's item-item cosine kNN: the sum of the similarities of
    each item to the user's items, over the top-`neighbours` neighbours of each item."""
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # CosineRecommender normalises into a COO matrix itself, then warns that it is not CSR.
        warnings.simplefilter("ignore", ParameterWarning)
        model = CosineRecommender(K=neighbours, num_threads=1)
        model.fit(user_items, show_progress=False)
    return np.asarray((user_items @ model.similarity).todense())


def ease(user_items: csr_matrix, lam: float = EASE_LAMBDA) -> np.ndarray:
    """users x items scores of EASE (Steck 2019) on the 0/1 matrix, in closed form:
    B = I - P / diag(P), P = (X^T X + lam I)^-1, scores = X B."""
    x = csr_matrix(user_items, dtype=np.float64)
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += lam
    precision = np.linalg.inv(gram)
    b = -precision / np.diag(precision)
    b[np.diag_indices_from(b)] = 0.0
    return np.asarray(x @ b)


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices by descending count, ties by index: the fill-up order of the basket baselines."""
    return np.lexsort((np.arange(len(counts)), -np.asarray(counts, dtype=np.float64)))


def fill_up(ranked: list[int], order: np.ndarray, exclude: set[int], k: int) -> list[int]:
    """`ranked` minus `exclude`, topped up to k from `order` (the API's fallback does the same)."""
    out = [i for i in ranked if i not in exclude][:k]
    taken = set(out)
    for item in order.tolist():
        if len(out) >= k:
            break
        if item not in exclude and item not in taken:
            out.append(item)
            taken.add(item)
    return out


def row_by_value(table: csr_matrix, index: int, tie_break: np.ndarray) -> list[int]:
    """The stored neighbours of one item, best first, ties by `tie_break` (higher first)."""
    start, stop = table.indptr[index], table.indptr[index + 1]
    cols = table.indices[start:stop].astype(np.int64)
    values = table.data[start:stop].astype(np.float64)
    return cols[np.lexsort((cols, -tie_break[cols], -values))].tolist()
