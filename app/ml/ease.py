"""EASE (Steck 2019): a closed-form item x item linear model, strong on small catalogs.

B = I - P diag(1 / diag(P)) with P = (X^T X + lambda I)^-1, so diag(B) = 0 (an item never
explains itself). Dense, so only used below TrainParams.ease_max_items.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix


def ease_input(user_items: csr_matrix) -> csr_matrix:
    """log1p of decayed weights: repeat events count, but one heavy user cannot dominate X^T X."""
    x = csr_matrix(user_items, dtype=np.float64, copy=True)
    x.data = np.log1p(x.data)
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
    """Scores of every item for one user: x_u B, with x_u on the same log1p scale as training.

    user_row holds the user's decayed weights per item (dense vector or 1 x n CSR row).
    """
    if isinstance(user_row, csr_matrix):
        row = ease_input(user_row)
        return np.asarray(row @ b.astype(np.float64)).ravel()
    weights = np.log1p(np.maximum(np.asarray(user_row, dtype=np.float64), 0.0))
    return weights @ b
