"""The model families `personalized` can be served by, each as fit + score.

One module owns them so that the three places that use a family agree exactly: the final fit
of a training run (train.py), the per-organisation model search that picks the family and its
hyperparameters on a holdout (selection.py), and serving (recommend/strategies/personalized.py).

- `als`: implicit-feedback ALS factors (als.py); a user is scored by u . y_i.
- `ease`: the closed-form item x item model (ease.py); only for catalogs up to ease_max_items.
- `knn`: the behavioural item-kNN table (knn.py) that `similar` already uses; a user is scored
  by the summed similarity of their items' neighbours.
- `popular`: no personal model: the search found nothing that beats popularity on the
  holdout, so `personalized` serves the popularity ranking (and says so in the model status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.als import fit_als
from app.ml.ease import ease_input, fit_ease, presence
from app.ml.knn import item_knn
from app.ml.params import PERSONAL_MODELS, TrainParams

ALS, EASE, KNN, POPULAR = "als", "ease", "knn", "popular"
FAMILIES = tuple(name for name in PERSONAL_MODELS if name != "auto")
# The TrainParams fields each family reads: what a candidate may set, and what the status shows.
FAMILY_PARAMS: dict[str, tuple[str, ...]] = {
    ALS: ("factors", "regularization", "alpha", "iterations", "als_presence"),
    EASE: ("ease_lambda",),
    KNN: ("knn_neighbours",),
    POPULAR: (),
}


_INTEGER_PARAMS = frozenset({"factors", "iterations", "knn_neighbours"})
_BOOLEAN_PARAMS = frozenset({"als_presence"})


def param_value(name: str, value: Any) -> int | float | bool:
    """A hyperparameter as its TrainParams type (JSON round trips make 64 into 64.0 and back)."""
    if name in _BOOLEAN_PARAMS:
        return bool(value)
    return int(value) if name in _INTEGER_PARAMS else float(value)


@dataclass(frozen=True)
class Candidate:
    """One configuration of one family: TrainParams overrides that the family reads."""

    model: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in FAMILIES:
            raise ValueError(f"unknown personalization model {self.model!r}")
        unknown = set(self.params) - set(FAMILY_PARAMS[self.model])
        if unknown:
            raise ValueError(f"{self.model} does not take {sorted(unknown)}")

    def applied(self, params: TrainParams) -> TrainParams:
        """params with this candidate's family and hyperparameters set."""
        import dataclasses

        values: dict[str, Any] = {
            name: type(getattr(params, name))(value) for name, value in self.params.items()
        }
        return dataclasses.replace(params, personal_model=self.model, **values)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "params": dict(self.params)}

    @classmethod
    def of(cls, params: TrainParams) -> Candidate:
        """The family and hyperparameters a TrainParams describes."""
        model = params.personal_model
        return cls(model, {name: getattr(params, name) for name in FAMILY_PARAMS[model]})


def default_family(n_items: int, params: TrainParams) -> str:
    """The rule used before any search could run: EASE on small catalogs, else ALS."""
    return EASE if 0 < n_items <= params.ease_max_items else ALS


@dataclass(frozen=True)
class PersonalModel:
    """A fitted family: the arrays OrgModels stores for it (unused ones are empty)."""

    model: str
    user_factors: np.ndarray  # users x factors float32 (ALS), else users x 0
    item_factors: np.ndarray  # items x factors float32 (ALS), else items x 0
    ease_b: np.ndarray  # items x items float32 (EASE), else 0 x 0
    item_neighbors: csr_matrix | None = None  # the kNN table it scores with (KNN)
    popularity: np.ndarray | None = None  # the popularity vector it serves (POPULAR)


def fit(
    model: str,
    user_items: csr_matrix,
    params: TrainParams,
    *,
    item_neighbors: csr_matrix | None = None,
    popularity: np.ndarray | None = None,
) -> PersonalModel:
    """Fit one family on users x items decayed weights (item_neighbors / popularity: the tables
    the run built anyway, which KNN and POPULAR serve with)."""
    n_users, n_items = user_items.shape
    no_users, no_items = np.zeros((n_users, 0), np.float32), np.zeros((n_items, 0), np.float32)
    no_ease = np.zeros((0, 0), np.float32)
    if model == ALS:
        users, items = fit_als(
            user_items, factors=params.factors, iterations=params.iterations,
            regularization=params.regularization, alpha=params.alpha, seed=params.seed,
            presence=params.als_presence,
        )
        return PersonalModel(ALS, users, items, no_ease)
    if model == EASE:
        return PersonalModel(EASE, no_users, no_items, fit_ease(user_items, params.ease_lambda))
    if model == KNN:
        if item_neighbors is None:
            item_neighbors = item_knn(user_items, k=params.knn_neighbours, shrinkage=params.pair_shrinkage)
        return PersonalModel(KNN, no_users, no_items, no_ease, item_neighbors=item_neighbors)
    if model == POPULAR:
        return PersonalModel(POPULAR, no_users, no_items, no_ease, popularity=popularity)
    raise ValueError(f"unknown personalization model {model!r}")


def knn_scores(item_neighbors: csr_matrix, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Scores of every item for a user with these (items, decayed weights): the neighbour rows
    of the user's items summed, each weighted by presence() of its weight (as EASE weighs them)."""
    x = presence(weights)
    keep = x > 0
    rows = csr_matrix(item_neighbors[np.asarray(items)[keep]], dtype=np.float64)
    return np.asarray(rows.T @ x[keep]).ravel()


def batch_scores(fitted: PersonalModel, user_items: csr_matrix, rows: np.ndarray) -> np.ndarray:
    """len(rows) x items scores of these users (rows of user_items) under a fitted family, as
    serving computes them for a user without fresh events."""
    if fitted.model == ALS:
        return fitted.user_factors[rows].astype(np.float64) @ fitted.item_factors.T.astype(np.float64)
    if fitted.model == EASE:
        return np.asarray(ease_input(user_items[rows]) @ fitted.ease_b.astype(np.float64))
    if fitted.model == KNN:
        assert fitted.item_neighbors is not None
        x = csr_matrix(user_items[rows], dtype=np.float64, copy=True)
        x.data = presence(x.data)
        return np.asarray((x @ csr_matrix(fitted.item_neighbors, dtype=np.float64)).todense())
    assert fitted.popularity is not None
    return np.tile(fitted.popularity.astype(np.float64), (len(rows), 1))
