"""One training run: the log and catalog in, an OrgModels bundle and per-part timings out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from app.ml.als import FactorizationFailed, fit_als
from app.ml.artifacts import OrgModels
from app.ml.content import content_index, content_neighbours
from app.ml.cooccurrence import assign_sessions, basket_incidence, pair_scores, purchase_baskets, transitions
from app.ml.ease import fit_ease
from app.ml.interactions import (
    CatalogSnapshot,
    InteractionLog,
    TrainParams,
    decay,
    decayed_matrix,
    encode_log,
    item_universe,
    user_universe,
)
from app.ml.knn import item_knn
from app.ml.popularity import exposure_penalty, popularity_scores, trending_scores
from app.ml.repeat import item_prices, purchase_history, user_price_band
from app.ml.topk import NonFiniteScores

INACTIVE_STATUSES = ("inactive", "deleted")


class TrainingError(RuntimeError):
    """The run produced something that must not be published (NaN/Inf, a failed fit)."""


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def train_org_models(
    log: InteractionLog, catalog: CatalogSnapshot, params: TrainParams, *, version: str
) -> tuple[OrgModels, dict[str, float]]:
    """Build every model part; raise TrainingError rather than return anything non-finite."""
    if not (np.isfinite(log.weights).all() and np.isfinite(log.timestamps).all()):
        raise TrainingError("the interaction log has non-finite weights or timestamps")
    clock = _Stopwatch()
    try:
        models = _build(log, catalog, params, version, clock)
    except (FactorizationFailed, NonFiniteScores) as exc:
        raise TrainingError(str(exc)) from exc
    with clock.part("validate"):
        bad = models.non_finite_parts()
    if bad:
        raise TrainingError(f"non-finite values in {', '.join(bad)}")
    return models, clock.seconds


def _build(
    log: InteractionLog, catalog: CatalogSnapshot, params: TrainParams, version: str, clock: _Stopwatch
) -> OrgModels:
    k = params.knn_neighbours
    with clock.part("matrix"):
        item_ids = item_universe(log, catalog)
        encoded = encode_log(log, item_ids, user_universe(log))
        user_items = decayed_matrix(encoded, params)
        allowed = _recommendable(catalog, item_ids)
    use_ease = 0 < len(item_ids) <= params.ease_max_items
    with clock.part("als"):
        if use_ease:  # personalized is served by EASE: factors nobody reads are not fitted
            user_factors = np.zeros((encoded.n_users, 0), np.float32)
            item_factors = np.zeros((len(item_ids), 0), np.float32)
        else:
            user_factors, item_factors = fit_als(
                user_items,
                factors=params.factors,
                iterations=params.iterations,
                regularization=params.regularization,
                alpha=params.alpha,
                seed=params.seed,
            )
    with clock.part("ease"):
        ease_b = fit_ease(user_items, params.ease_lambda) if use_ease else np.zeros((0, 0), np.float32)
    with clock.part("knn"):
        item_neighbors = item_knn(
            user_items, k=k, shrinkage=params.pair_shrinkage, allowed_neighbours=allowed
        )
    with clock.part("content"):
        index = content_index(catalog, item_ids)
        content = content_neighbours(
            index, k=k, pair_budget=params.content_pair_budget, allowed_neighbours=allowed
        )
    with clock.part("sessions"):
        events = encoded.log
        sessions = assign_sessions(encoded.users, events.timestamps, events.session_ids, params.session_gap_s)
    with clock.part("copurchase"):
        recency = decay(events.timestamps, params.now, params.pair_half_life_s)
        keys, bought = purchase_baskets(encoded, sessions)
        copurchase, copurchase_counts = pair_scores(
            basket_incidence(
                keys, bought, len(item_ids), params.max_basket_items, weights=recency[events.is_purchase]
            ),
            k=k,
            shrinkage=params.pair_shrinkage,
            lift_weight=params.pair_lift_weight,
            allowed_neighbours=allowed,
            with_counts=True,
        )
    with clock.part("coengagement"):
        engaged = events.weights > 0
        coengagement, _ = pair_scores(
            basket_incidence(
                sessions[engaged], encoded.items[engaged], len(item_ids), params.max_basket_items,
                weights=recency[engaged],
            ),
            k=k,
            shrinkage=params.pair_shrinkage,
            lift_weight=params.pair_lift_weight,
            allowed_neighbours=allowed,
        )
    with clock.part("transitions"):
        next_items = transitions(encoded, sessions, k=k, allowed_neighbours=allowed)
    with clock.part("popularity"):
        popularity = popularity_scores(encoded, params)
        trending = trending_scores(encoded, params)
        penalty = exposure_penalty(encoded, params)
    with clock.part("repeat"):
        history = purchase_history(encoded, same_occasion_s=params.session_gap_s)
        item_price = item_prices(catalog, item_ids, encoded)
        price_center, price_spread = user_price_band(encoded, item_price)

    return OrgModels(
        version=version,
        trained_at=params.now,
        params=params,
        n_interactions=len(events),
        item_ids=item_ids,
        user_ids=encoded.user_ids,
        user_items=user_items,
        user_factors=user_factors,
        item_factors=item_factors,
        ease_b=ease_b,
        item_neighbors=item_neighbors,
        content_neighbors=content,
        content_matrix=index.matrix,
        content_tokens=index.tokens,
        content_idf=index.idf,
        exposure_penalty=penalty,
        copurchase=copurchase,
        copurchase_counts=copurchase_counts,
        coengagement=coengagement,
        transitions=next_items,
        popularity=popularity,
        trending=trending,
        purchase_counts=history.counts,
        last_purchase_ts=history.last_purchase_ts,
        repurchase_interval=history.repurchase_interval,
        user_price_center=price_center,
        user_price_spread=price_spread,
        item_price=item_price.astype(np.float32),
    )


def _recommendable(catalog: CatalogSnapshot, item_ids: np.ndarray) -> np.ndarray:
    """Items that may appear as anyone's neighbour: all but those the catalog marks inactive
    or deleted (serving filters too; this only keeps the K slots for items it can show)."""
    statuses = zip(catalog.item_ids.tolist(), catalog.statuses.tolist())
    hidden = {item_id for item_id, status in statuses if status in INACTIVE_STATUSES}
    return np.fromiter((i not in hidden for i in item_ids.tolist()), bool, len(item_ids))
