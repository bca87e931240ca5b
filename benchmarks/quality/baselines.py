"""What a recommender-systems engineer compares against, implemented the textbook way.

Every personalized protocol reports implicit's ALS used directly twice: at its own settings
tuned on the dataset's validation split (`lehnz eval --only tuning` reports the search), and at
the textbook settings (64 factors, regularization 0.05, confidence 1 + 20 x, 15 iterations;
Hu, Koren, Volinsky 2008 and implicit's examples). Item-kNN's K and EASE's lambda are tuned on
the same validation splits. Each dataset has its own tuned values (TUNED).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender
from implicit.utils import ParameterWarning
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

ALS_SEED = 42


@dataclass(frozen=True)
class AlsConfig:
    factors: int
    regularization: float
    alpha: float  # confidence = 1 + alpha * x on the 0/1 matrix
    iterations: int

    def describe(self) -> str:
        return (f"{self.factors} factors, reg {self.regularization:g}, confidence 1 + {self.alpha:g} x, "
                f"{self.iterations} iterations")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Tuned:
    """A dataset's baseline hyperparameters, chosen on its validation split."""

    als: AlsConfig
    knn_neighbours: int
    ease_lambda: float

    def as_dict(self) -> dict[str, object]:
        return {"als": self.als.as_dict(), "knn_neighbours": self.knn_neighbours, "ease_lambda": self.ease_lambda}


TEXTBOOK_ALS = AlsConfig(factors=64, regularization=0.05, alpha=20.0, iterations=15)
# Chosen by the tuning protocol on each dataset's validation split (see docs/benchmarks.md).
TUNED = {
    "movielens": Tuned(als=AlsConfig(factors=128, regularization=20.0, alpha=1.0, iterations=30),
                       knn_neighbours=200, ease_lambda=400.0),
    "retail": Tuned(als=AlsConfig(factors=64, regularization=20.0, alpha=1.0, iterations=30),
                    knn_neighbours=20, ease_lambda=200.0),
}


def implicit_als(user_items: csr_matrix, config: AlsConfig) -> np.ndarray:
    """users x items scores of implicit's ALS on the 0/1 matrix. implicit 0.7 takes the matrix's
    values as the whole confidence (its `alpha` only scales them), so it is handed 1 + alpha * x."""
    confidence = csr_matrix(user_items, dtype=np.float32, copy=True)
    confidence.data = (1.0 + config.alpha * confidence.data).astype(np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=1.0,
            iterations=config.iterations,
            random_state=ALS_SEED,
            dtype=np.float32,
        )
        model.fit(confidence, show_progress=False)
    return np.asarray(model.user_factors @ model.item_factors.T)


def item_knn(user_items: csr_matrix, neighbours: int) -> np.ndarray:
    """users x items scores of implicit's item-item cosine kNN: the sum of the similarities of
    each item to the user's items, over the top-`neighbours` neighbours of each item."""
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # CosineRecommender normalises into a COO matrix itself, then warns that it is not CSR.
        warnings.simplefilter("ignore", ParameterWarning)
        model = CosineRecommender(K=neighbours, num_threads=1)
        model.fit(user_items, show_progress=False)
    return np.asarray((user_items @ model.similarity).todense())


def ease(user_items: csr_matrix, lam: float) -> np.ndarray:
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
