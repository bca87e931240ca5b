"""Every tunable of a training run (TrainParams), in a module without numpy: the settings build
their defaults from it, and `lehnz` commands that never train should not pay numpy's import."""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0

PERSONAL_MODELS = ("auto", "als", "ease", "knn", "popular")


@dataclass(frozen=True)
class TrainParams:
    """Every tunable of a training run; the worker fills it from Settings."""

    now: float  # the clock at train time (unix s): what trending measures "now" from
    # Where the learned models (personalization, kNN, co-occurrence, popular) measure an event's
    # age from: the org's newest event, never the clock, so a history imported years later, or
    # a shop after a quiet quarter, trains the same rankings as when it was fresh. None = `now`.
    data_now: float | None = None
    # The family `personalized` is served by (personalization.FAMILIES), chosen per org by the
    # model search (selection.py); "auto" = the rule before any search: EASE on small catalogs.
    personal_model: str = "auto"
    # ALS, EASE, pair and K values were chosen by `lehnz eval --only tuning` (validation splits
    # of MovieLens 100K and Online Retail; grid and scores in docs/benchmarks.md).
    factors: int = 32
    iterations: int = 30
    regularization: float = 10.0
    alpha: float = 0.5  # ALS confidence = 1 + alpha * decayed weight (Hu, Koren, Volinsky 2008)
    # ALS confidence = 1 + alpha * presence(weight) instead (als.py): an old interaction still a
    # full "yes". The model search tries both (selection.ALS_GRID); LEHNZ_ALS_PRESENCE sets the
    # configured ALS (the default family's, on catalogs too big for EASE).
    als_presence: bool = False
    decay_half_life_days: float = 30.0
    trending_half_life_hours: float = 24.0
    session_gap_minutes: float = 30.0
    knn_neighbours: int = 50
    # Use EASE for personalized when n_items <= this (0 = never). B is dense items^2 float32:
    # 2,000 items = 16 MB per org (64 cached orgs <= 1 GB per api process), ~100 MB and 1-2 s
    # to fit; EASE beat ALS on MovieLens validation (1,682 items).
    ease_max_items: int = 2000
    ease_lambda: float = 400.0
    seed: int = 42
    # Pseudo-counts pulling pair statistics (confidence, lift, kNN support) toward "no evidence",
    # so one co-occurrence of two rare items cannot outrank a pair seen many times.
    pair_shrinkage: float = 5.0
    # Baskets and sessions count 0.5 ** (age / this) in the pair tables (see cooccurrence.py).
    pair_half_life_days: float = 120.0
    # Pair score = confidence * (1 - w / lift): 1 = pure "added value", towards 0 = confidence.
    pair_lift_weight: float = 0.1
    # Sessions/orders with more distinct items than this are skipped for pair counting: they
    # are mostly crawlers or bulk orders, and their pairs grow quadratically.
    max_basket_items: int = 100
    # Pseudo-events added to an item's expected recent activity, so one fresh view of an
    # unknown item does not read as a surge.
    trending_prior_events: float = 1.0
    # Pseudo-events of the exposure demotion (popularity.exposure_penalty): an item needs a few
    # dozen impressions without engagement before it is pushed down noticeably.
    exposure_prior_events: float = 10.0
    # Multiply-adds allowed for content-similarity candidates (sum of df^2 of the tokens used).
    # Tokens too common to fit (a huge category) only re-rank candidates; see content.py.
    content_pair_budget: int = 30_000_000

    def __post_init__(self) -> None:
        positive = (
            "factors", "decay_half_life_days", "trending_half_life_hours", "trending_prior_events",
            "ease_lambda", "pair_half_life_days", "exposure_prior_events",
        )
        non_negative = (
            "iterations", "regularization", "alpha", "session_gap_minutes",
            "knn_neighbours", "ease_max_items", "pair_shrinkage", "pair_lift_weight",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainParams.{name} must be > 0")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainParams.{name} must be >= 0")
        if self.personal_model not in PERSONAL_MODELS:
            raise ValueError(f"TrainParams.personal_model must be one of {PERSONAL_MODELS}")
        if self.max_basket_items < 2 or self.content_pair_budget < 1:
            raise ValueError("TrainParams.max_basket_items must be >= 2 and content_pair_budget >= 1")

    @property
    def age_origin(self) -> float:
        """The time the learned models measure event ages from (see data_now)."""
        return self.now if self.data_now is None else self.data_now

    @property
    def decay_half_life_s(self) -> float:
        return self.decay_half_life_days * SECONDS_PER_DAY

    @property
    def pair_half_life_s(self) -> float:
        return self.pair_half_life_days * SECONDS_PER_DAY

    @property
    def trending_half_life_s(self) -> float:
        return self.trending_half_life_hours * SECONDS_PER_HOUR

    @property
    def session_gap_s(self) -> float:
        return self.session_gap_minutes * 60.0
