"""Behavioural item-kNN: cosine between item columns of the user x item matrix.

Cosine alone rates two items that share their only user as identical (1.0), so each pair is
shrunk by the support of its rarer item: sim = cos * m / (m + shrinkage), m = min(n_i, n_j)
users. Scores are in [0, 1] (non-negative inputs), absolute rather than per-row rescaled, so
serving can blend them with content similarity on one scale.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.topk import pairwise_top_k


def item_knn(
    user_items: csr_matrix,
    *,
    k: int,
    shrinkage: float,
    allowed_neighbours: np.ndarray | None = None,
) -> csr_matrix:
    """items x items float32, the top-k neighbours of each item, never the item itself."""
    x = csr_matrix(user_items, dtype=np.float64, copy=True)
    x.data = np.log1p(x.data)  # as in EASE: repeated events count, but sublinearly
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    item_users = x.T.tocsr()
    support = np.diff(item_users.indptr).astype(np.float64)  # users per item

    def score(rows: np.ndarray, cols: np.ndarray, dots: np.ndarray) -> np.ndarray:
        cosine = dots / (norms[rows] * norms[cols])
        rarer = np.minimum(support[rows], support[cols])
        return np.minimum(cosine, 1.0) * rarer / (rarer + shrinkage)

    return pairwise_top_k(item_users, x, k, score, allowed_columns=allowed_neighbours)
