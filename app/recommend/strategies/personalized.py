"""personalized and price-optimized: the user's learned taste, folded in with fresh events."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from app.ml.als import fold_in_user, user_confidences
from app.ml.ease import ease_scores
from app.ml.factor_index import Weights, demote
from app.ml.personalization import ALS, EASE, KNN, POPULAR, knn_scores
from app.recommend.ranking import FactorRanking, RankContext, Ranking, row
from app.recommend.realtime import Activity
from app.recommend.strategies.popularity import popular


def user_vector(ctx: RankContext) -> np.ndarray | None:
    """The user's ALS factor vector with fresh events folded in, or None (no signal, or the org's
    personalized is not served by ALS).

    Events newer than the model (from Redis) are added to the user's trained row, so a user
    with three fresh views already gets a personal vector: ALS fold-in solves the user factor
    against the fixed item factors.
    """
    models = ctx.models
    if models is None or ctx.user_id is None or models.n_items == 0 or models.personalization != ALS:
        return None
    fresh = ctx.fresh_activity()
    u = ctx.model_user
    if u is not None and not fresh:
        vector = models.user_factors[u]
    else:
        items, weights = _user_history(ctx, fresh)
        positive_items, confidences = user_confidences(items, weights, models.params.alpha,
                                                        presence=models.params.als_presence)
        if positive_items.size == 0:
            return None
        vector = fold_in_user(
            models.item_factors, models.item_factor_gram, positive_items, confidences, models.params.regularization
        )
    return vector if np.any(vector) and np.all(np.isfinite(vector)) else None


def user_scores(ctx: RankContext) -> np.ndarray | None:
    """Scores over every model item for this user (not demoted), or None without any signal,
    by the family the org's model search chose (app/ml/personalization.py): ALS factors, EASE
    or item-kNN over the user's row (trained plus fresh events), or the popularity vector."""
    models = ctx.models
    if models is None or ctx.user_id is None or models.n_items == 0:
        return None
    family = models.personalization
    if family == ALS:
        vector = user_vector(ctx)
        return None if vector is None else models.item_factors @ vector
    if family == POPULAR:
        return models.popularity.astype(np.float64)
    items, weights = _user_history(ctx, ctx.fresh_activity())
    user_row = np.zeros(models.n_items, dtype=np.float32)
    np.add.at(user_row, items, weights)
    np.maximum(user_row, 0, out=user_row)
    if not user_row.any():
        return None
    if family == KNN:
        touched = np.flatnonzero(user_row)
        return knn_scores(models.item_neighbors, touched, user_row[touched])
    return ease_scores(models.ease_b, user_row)


def _user_history(ctx: RankContext, fresh: list[tuple[int, Activity]]) -> tuple[np.ndarray, np.ndarray]:
    """(items, weights): the user's trained row plus the fresh events, repeats not summed."""
    models = ctx.models
    assert models is not None
    u = ctx.model_user
    trained_items, trained_weights = row(models.user_items, u) if u is not None else (np.empty(0, np.int64),
                                                                                      np.empty(0))
    fresh_items = np.fromiter((i for i, _ in fresh), dtype=np.int64, count=len(fresh))
    fresh_weights = np.fromiter((ctx.weight(a) for _, a in fresh), dtype=np.float64, count=len(fresh))
    return np.concatenate([trained_items, fresh_items]), np.concatenate([trained_weights, fresh_weights])


def purchased_items(ctx: RankContext) -> np.ndarray:
    """Catalog indices the user bought (trained history and fresh events)."""
    bought: list[int] = [i for i, a in ctx.recent_items() if a.event_name == "purchase"]
    if ctx.models is not None and ctx.model_user is not None:
        cols, _ = row(ctx.models.purchase_counts, ctx.model_user)
        bought.extend(cols.tolist())
    return np.unique(np.asarray(bought, dtype=np.int64))


def personalized(ctx: RankContext) -> Ranking | FactorRanking | None:
    # Bought items go through `exclude`: out of this answer, fallbacks included.
    models = ctx.models
    index = models.factor_index if models is not None else None
    if index is not None:
        vector = user_vector(ctx)
        if vector is None:
            return None
        return FactorRanking(index, vector, "behavioral_match", exclude=purchased_items(ctx))
    if models is not None and models.personalization == POPULAR:
        # The org's model search found no personal model that beats popularity: serve that.
        ranking = popular(ctx)
        return None if ranking is None else replace(ranking, mode="popularity", exclude=purchased_items(ctx))
    return _dense_personalized(ctx)


def _dense_personalized(ctx: RankContext) -> Ranking | None:
    """personalized's scores for every item, computed (EASE, kNN, and the base of price-optimized).
    Items the user's history does not reach at all (score exactly 0: no one interacted with
    them, or no neighbour links them) are left to the fallback, with its reason."""
    scores = user_scores(ctx)
    if scores is None:
        return None
    assert ctx.models is not None
    demoted = demote(scores, ctx.models.exposure_demotion)
    if ctx.models.personalization in (EASE, KNN):
        demoted = np.where(scores != 0, demoted, -np.inf)
        if not np.isfinite(demoted).any():
            return None
    return Ranking(None, demoted, "behavioral_match", exclude=purchased_items(ctx))


def price_optimized(ctx: RankContext) -> Ranking | FactorRanking | None:
    """personalized, re-ranked toward the user's usual price band (log-price centre and spread):
    taste (personalized's score, negative ones at 0) times the item's price-band multiplier."""
    models = ctx.models
    if models is None:
        return None
    center, spread = _price_band(ctx)
    if center is None:  # no price known for the user: plain personalized
        plain = personalized(ctx)
        return None if plain is None else replace(plain, mode="behavioral")
    multiplier = _price_multiplier(ctx, center, spread)
    index = models.factor_index
    if index is not None:
        # On ALS, the factor index finds the best weighted items without scoring the catalog
        # (a million items: ~70 ms dense). Unless no item has a positive taste, where the
        # dense rule below lets price alone decide.
        vector = user_vector(ctx)
        if vector is None:
            return None
        if float(index.top(vector, np.ones(index.n_items, dtype=bool), 1).scores[0]) > 0:
            return FactorRanking(index, vector, "price_match", exclude=purchased_items(ctx), weights=multiplier)
    base = _dense_personalized(ctx)
    if base is None:
        return None
    reached = np.isfinite(base.scores)
    # Relative to the best match (not min-max): near-equal tastes stay near-equal, so price decides.
    high = float(base.scores.max())
    taste = np.clip(base.scores, 0, None) / high if high > 0 else np.ones_like(base.scores)
    weights = multiplier(np.arange(len(base.scores)))
    scores = np.where(reached, taste * weights, -np.inf)
    return Ranking(None, scores, "price_match", exclude=base.exclude)


def _price_multiplier(ctx: RankContext, center: float, spread: float) -> Weights:
    """Item indices -> the price-band multiplier in [_PRICE_FLOOR, 1]: a Gaussian in log-price
    around the user's centre; items without a known price get the middle of the range."""
    assert ctx.models is not None
    prices = ctx.models.item_price

    def build() -> tuple[np.ndarray, np.ndarray]:  # once per serving snapshot
        known = np.isfinite(prices) & (prices > 0)
        return np.log(np.where(known, prices, 1.0)).astype(np.float64), known

    log_price, known = ctx.memoised("price:log", build)

    def multiplier(items: np.ndarray) -> np.ndarray:
        affinity = np.exp(-((log_price[items] - center) ** 2) / (2 * spread**2))
        affinity = np.where(known[items], affinity, 0.5)
        return _PRICE_FLOOR + (1 - _PRICE_FLOOR) * affinity

    return multiplier


# How far out of band an item can fall: at worst it keeps this share of its taste score.
_PRICE_FLOOR = 0.15
_MIN_SPREAD = 0.15  # log units (about +-16%): one observed price must not make the band a spike


def _price_band(ctx: RankContext) -> tuple[float | None, float]:
    """(centre, spread) of log(price) over what the user engaged with: trained, plus fresh events."""
    models = ctx.models
    assert models is not None
    prices = [a.price for _, a in ctx.fresh_activity() if a.price and a.price > 0 and ctx.weight(a) > 0]
    if ctx.model_user is not None and np.isfinite(models.user_price_center[ctx.model_user]):
        center = float(models.user_price_center[ctx.model_user])
        spread = float(models.user_price_spread[ctx.model_user])
        if not prices:
            return center, max(spread if np.isfinite(spread) else 0.0, _MIN_SPREAD)
        prices.append(float(np.exp(center)))
    if not prices:
        return None, _MIN_SPREAD
    logs = np.log(np.asarray(prices, dtype=np.float64))
    return float(logs.mean()), max(float(logs.std()), _MIN_SPREAD)
