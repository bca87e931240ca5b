"""EASE (Steck 2019): a closed-form item x item linear model, strong on small catalogs.

B = I - P diag(1 / diag(P)) with P = (X^T X + lambda I)^-1, so diag(B) = 0 (an item never
explains itself). Dense (items^2 float32), so only used up to TrainParams.ease_max_items.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix


def presence(weights: np.ndarray) -> np.ndarray:
    """1 + log1p(w) for a positive decayed weight w, else 0.

    Any positive interaction is a full "yes" (1), as in ALS where it is a preference of 1;
    strength and recency only add a sublinear bonus (a fresh view 1.69, a fresh purchase 3.4).
    With log1p(w) alone an old interaction decays towards "never happened": on MovieLens, with
    30-day decay, that cost EASE 0.04 validation NDCG@10 (docs/benchmarks.md).
    """
    weights = np.asarray(weights, dtype=np.float64)
    return np.where(weights > 0, 1.0 + np.log1p(np.maximum(weights, 0.0)), 0.0)


def ease_input(user_items: csr_matrix) -> csr_matrix:
    """X for EASE: presence() of the decayed weights, same sparsity as the input."""
    x = csr_matrix(user_items, dtype=np.float64, copy=True)
    x.data = presence(x.data)
    return x


def fit_ease(user_items: csr_matrix, lam: float) -> np.ndarray:
    """items x items float32 weight matrix B with a zero diagonal; 0 x 0 for no items."""
    x = ease_input(user_items)
    n_items = x.shape[1]
    if n_items == 0:
        return np.zeros((0, 0), dtype=np.float32)
    gram = (x.T @ x).toarray()
    gram[np.diag_indices(n_items)] += lam
    precision = np.linalg.inv(gram)
    b = -precision / np.diag(precision)  # column j divided by P_jj
    b[np.diag_indices(n_items)] = 0.0
    return b.astype(np.float32)


def ease_scores(b: np.ndarray, user_row: np.ndarray | csr_matrix) -> np.ndarray:
    """Scores of every item for one user: x_u B, with x_u on the same scale as training.

    user_row holds the user's decayed weights per item (dense vector or 1 x n CSR row). Only
    the user's items' rows of B are touched: O(items of the user x catalog), not catalog^2.
    """
    items: np.ndarray
    if isinstance(user_row, csr_matrix):
        row = csr_matrix(user_row)
        items, weights = row.indices, row.data
    else:
        dense = np.asarray(user_row, dtype=np.float64).ravel()
        items = np.flatnonzero(dense > 0)
        weights = dense[items]
    x = presence(weights)
    keep = x > 0
    return x[keep] @ b[items[keep]].astype(np.float64)
