"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) and the serving-time user fold-in.

Confidence is c = 1 + alpha * w for an observed decayed weight w (preference p = 1) and 1
for everything unobserved (p = 0). implicit's solver adds (c - 1) y y^T for each stored value
c and treats it as the whole confidence, so it is handed 1 + alpha * w with its own alpha at 1.

With `presence`, w is replaced by ease.presence(w) = 1 + log1p(w): any interaction counts as a
full "yes" however old, recency and strength only add a log bonus. Decay makes w of a months-old
event tiny, so with linear confidence an old history weighs about as much as no history (on
MovieLens, ALS at implicit's tuned settings: NDCG@10 0.2545 decayed vs 0.2808 without decay,
docs/benchmarks.md); linear confidence stays where recency should dominate (Online Retail).
"""

from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.recommender_base import ModelFitError
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from app.ml.ease import presence as presence_of


class FactorizationFailed(RuntimeError):
    """ALS produced NaN factors (e.g. from non-finite weights)."""


def confidence_of(weights: np.ndarray, alpha: float, *, presence: bool = False) -> np.ndarray:
    """1 + alpha * w (or 1 + alpha * presence(w)) for positive decayed weights w."""
    strength = presence_of(weights) if presence else np.asarray(weights, dtype=np.float64)
    return 1.0 + alpha * strength


def confidence_matrix(user_items: csr_matrix, alpha: float, *, presence: bool = False) -> csr_matrix:
    """users x items float32 confidences (confidence_of) on the stored entries."""
    confidences = csr_matrix(user_items, dtype=np.float32, copy=True)
    confidences.data = confidence_of(confidences.data, alpha, presence=presence).astype(np.float32)
    return confidences


def fit_als(
    user_items: csr_matrix,
    *,
    factors: int,
    iterations: int,
    regularization: float,
    alpha: float,
    seed: int,
    presence: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(user_factors, item_factors), float32; all zeros when there is nothing to learn from.

    BLAS is pinned to one thread while implicit runs: its own threads already use the cores,
    and a threaded BLAS inside them oversubscribes the machine (implicit warns about it).
    """
    n_users, n_items = user_items.shape
    if user_items.nnz == 0:
        return np.zeros((n_users, factors), np.float32), np.zeros((n_items, factors), np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=1.0,
            dtype=np.float32,
            iterations=iterations,
            random_state=seed,
        )
        try:
            model.fit(confidence_matrix(user_items, alpha, presence=presence), show_progress=False)
        except ModelFitError as exc:
            raise FactorizationFailed(str(exc)) from exc
    return np.ascontiguousarray(model.user_factors), np.ascontiguousarray(model.item_factors)


def item_gram(item_factors: np.ndarray) -> np.ndarray:
    """Y^T Y (float64); shared by every fold-in against the same item factors."""
    y = item_factors.astype(np.float64)
    return y.T @ y


def user_confidences(
    item_indices: np.ndarray, weights: np.ndarray, alpha: float, *, presence: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sum a user's (possibly repeated) weighted events per item; (items, their confidence_of)
    for the items whose sum is positive (the training matrix's rule)."""
    items, inverse = np.unique(np.asarray(item_indices, dtype=np.int64), return_inverse=True)
    totals = np.bincount(inverse, weights=np.asarray(weights, dtype=np.float64), minlength=len(items))
    positive = totals > 0
    return items[positive], confidence_of(totals[positive], alpha, presence=presence)


def fold_in_user(
    item_factors: np.ndarray,
    yty: np.ndarray,
    item_indices: np.ndarray,
    confidences: np.ndarray,
    regularization: float,
) -> np.ndarray:
    """The least-squares user vector for fixed item factors, as ALS itself would compute it.

    Solves (Y^T Y + Y_I^T (C_I - I) Y_I + lambda I) u = Y_I^T C_I p over the user's items I
    (one entry per item). A negative confidence means "disliked": weight |c|, preference 0,
    the same convention as implicit.
    """
    n_factors = item_factors.shape[1]
    items = np.asarray(item_indices, dtype=np.int64)
    confidence = np.asarray(confidences, dtype=np.float64)
    if items.size == 0 or n_factors == 0:
        return np.zeros(n_factors, dtype=np.float32)
    y_i = item_factors[items].astype(np.float64)
    weight = np.abs(confidence)
    preference = (confidence > 0).astype(np.float64)
    a = yty + regularization * np.eye(n_factors) + (y_i.T * (weight - 1.0)) @ y_i
    b = y_i.T @ (weight * preference)
    try:
        user = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # only with regularization 0 and degenerate factors
        user = np.linalg.lstsq(a, b, rcond=None)[0]
    return user.astype(np.float32)
