"""Popular (a long, decayed window) and trending (activity rising above its own baseline).

Popular measures ages from the org's newest event (TrainParams.age_origin), like every learned
model: an old history still has its favourites. Trending is about now: it measures from the
clock, so on a history with no recent activity it is empty and its fallback (popular) answers.

Only positive weights count: a remove_from_cart is not negative popularity, just no signal.
Serving gets category-popular by masking the popularity vector with the category.
"""

from __future__ import annotations

import numpy as np

from app.ml.interactions import EncodedLog, decay
from app.ml.params import TrainParams


def decayed_activity(
    encoded: EncodedLog, now: float, half_life_s: float, *, events: np.ndarray | None = None
) -> np.ndarray:
    """Per item, the sum of positive weights decayed with the given half-life (float64);
    `events` (bool per event) limits it to those events."""
    log = encoded.log
    positive = log.weights > 0
    if events is not None:
        positive &= events
    mass = decay(log.timestamps[positive], now, half_life_s)
    mass *= log.weights[positive]
    return np.bincount(encoded.items[positive], weights=mass, minlength=encoded.n_items)


def popularity_scores(encoded: EncodedLog, params: TrainParams, *, events: np.ndarray | None = None) -> np.ndarray:
    """log1p of long-window activity, divided by the maximum: [0, 1], float32. `events`: only
    these (the model search leaves its held-out events out).

    The log keeps the head from flattening everything else to ~0, so the vector stays useful
    as a tie-breaker and as a blend component.
    """
    activity = np.log1p(decayed_activity(encoded, params.age_origin, params.decay_half_life_s, events=events))
    return _unit_max(activity)


def trending_scores(encoded: EncodedLog, params: TrainParams) -> np.ndarray:
    """How far recent activity exceeds what the item's long-run rate predicts: [0, 1], float32.

    A decayed sum with half-life h of a steady stream of rate r is r * h / ln 2, so the short
    sum expected from the long-run baseline is baseline * h_short / h_long. The surplus over
    that is divided by sqrt(expected + prior) (a Poisson z-score): a steady item scores ~0 at
    any volume, a rising one scores by how unlikely its burst is, and the prior keeps a single
    fresh event on an unknown item from looking like a surge. Falling items score 0.
    """
    recent = decayed_activity(encoded, params.now, params.trending_half_life_s)
    baseline = decayed_activity(encoded, params.now, params.decay_half_life_s)
    expected = baseline * (params.trending_half_life_s / params.decay_half_life_s)
    surplus = (recent - expected) / np.sqrt(expected + params.trending_prior_events)
    return _unit_max(np.maximum(surplus, 0.0))


def exposure_penalty(encoded: EncodedLog, params: TrainParams) -> np.ndarray:
    """Per item, in (0, 1]: how much to demote items shown often but rarely engaged with.

    Impressions (exposure events) are weight 0 and teach nothing else; here they set an
    expectation: an item shown E times should get about g * E engagements, g being the
    catalog's engagements per impression. Items that fall short are scaled down by
    (engaged + m) / (g * E + m); m pseudo-events keep a handful of impressions from moving
    anything. Items never shown, or engaged at least as expected, keep 1.
    """
    log = encoded.log
    shown = np.bincount(encoded.items[log.is_exposure], minlength=encoded.n_items).astype(np.float64)
    engaged_events = (log.weights > 0) & ~log.is_exposure
    engaged = np.bincount(encoded.items[engaged_events], minlength=encoded.n_items).astype(np.float64)
    penalty = np.ones(encoded.n_items, np.float32)
    exposed = shown > 0
    if not exposed.any():
        return penalty
    rate = float(np.clip(engaged[exposed].sum() / shown[exposed].sum(), 1e-3, 1.0))
    prior = params.exposure_prior_events
    penalty[exposed] = np.minimum(1.0, (engaged[exposed] + prior) / (rate * shown[exposed] + prior))
    return penalty


def _unit_max(values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    if not top > 0:  # also true for NaN, which is kept so training's final check rejects it
        return values.astype(np.float32) if np.isnan(top) else np.zeros(values.shape, np.float32)
    return (values / top).astype(np.float32)
