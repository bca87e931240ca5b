"""The server's own code as the harness drives it: default settings, one training run, and
strategy calls through a RankContext, exactly as an api process would answer a request.

The eval never reimplements a strategy: scores come from the registry's functions or from
service.rank (which adds the fallback chain and the "never the context item" rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.ml.artifacts import OrgModels
from app.ml.interactions import CatalogSnapshot, InteractionLog, TrainParams
from app.ml.train import train_org_models
from app.recommend import service
from app.recommend.catalog import Catalog
from app.recommend.filters import compile_filters
from app.recommend.ranking import RankContext, Ranking
from app.recommend.realtime import Activity
from app.recommend.registry import REGISTRY
from app.settings import Settings, train_params

NO_FILTERS = compile_filters(None)


def default_settings() -> Settings:
    """The shipped defaults, ignoring LEHNZ_* variables and .env: the eval measures the defaults."""
    return Settings.model_construct()


def event_log(
    settings: Settings,
    *,
    users: Sequence[str],
    items: Sequence[str],
    event_name: str,
    event_family: str,
    timestamps: np.ndarray,
    order_ids: Sequence[str | None] | None = None,
    prices: np.ndarray | None = None,
    quantities: np.ndarray | None = None,
) -> InteractionLog:
    """One event type for every row, weighted as the worker weighs it (Settings.event_weight)."""
    weight = settings.event_weight(event_name, event_family)
    return InteractionLog.build(
        user_ids=users,
        item_ids=items,
        event_names=[event_name] * len(users),
        weights=np.full(len(users), weight),
        timestamps=timestamps,
        order_ids=order_ids,
        prices=prices,
        quantities=quantities,
    )


@dataclass(frozen=True, eq=False)
class Served:
    """A trained bundle plus the catalog an api process would serve it with."""

    models: OrgModels
    catalog: Catalog
    settings: Settings
    timings: dict[str, float]

    def context(
        self, *, user_id: str | None = None, item: int | None = None, recent: Sequence[Activity] = ()
    ) -> RankContext:
        return RankContext(
            models=self.models,
            catalog=self.catalog,
            settings=self.settings,
            now=self.models.trained_at,
            user_id=user_id,
            context_item=item,
            context_item_given=item is not None,
            category=None,
            recent=tuple(recent),
        )

    def answer(self, strategy: str, ctx: RankContext, limit: int) -> list[int]:
        """The catalog indices the API would return on page 1 (fallbacks included)."""
        return service.rank(REGISTRY[strategy], ctx, NO_FILTERS, page=1, limit=limit).indices


def train(
    settings: Settings,
    log: InteractionLog,
    snapshot: CatalogSnapshot,
    *,
    now: float,
    overrides: dict[str, Any] | None = None,
) -> Served:
    """train_org_models with the settings' TrainParams (plus tuning overrides), then a catalog
    built the way the api builds it (model items first, so indices line up)."""
    params: TrainParams = train_params(settings, now=now)
    if overrides:
        params = dataclasses.replace(params, **overrides)
    models, timings = train_org_models(log, snapshot, params, version="eval")
    rows = [
        (item_id, item_type, status, orjson.dumps(attributes).decode(), created, created)
        for item_id, item_type, status, attributes, created in zip(
            snapshot.item_ids.tolist(), snapshot.item_types.tolist(), snapshot.statuses.tolist(),
            snapshot.attributes, snapshot.created_at.tolist(),
        )
    ]
    return Served(models, Catalog.build(rows, order=models.item_ids), settings, timings)


def ranking_vector(ranking: Ranking | None, n_items: int) -> np.ndarray:
    """A strategy's candidates as a dense score vector (-inf for items it did not propose)."""
    scores = np.full(n_items, -np.inf)
    if ranking is None:
        return scores
    if ranking.indices is None:  # dense: scores by catalog position, -inf = not a candidate
        dense = np.asarray(ranking.scores[:n_items], dtype=np.float64)
        scores[: len(dense)] = dense
        return scores
    inside = ranking.indices < n_items
    scores[ranking.indices[inside]] = ranking.scores[inside]
    return scores
