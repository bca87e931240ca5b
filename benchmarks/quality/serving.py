"""The production path, in one process: the server's training function and its request function.

- Training: `workers.train_process.train_models`, the function the worker's training child
  runs (learned models age events from the org's newest event; the per-org model search runs
  on the first train, as in production). The bundle is saved to and loaded back from a
  ModelStore, and the catalog is built from rows shaped like the items table's, exactly as
  the api's model cache builds its OrgSnapshot (app/recommend/model_cache.py).
- Answers: `app.recommend.answer.answer`, the function behind POST /v1/recommend, one
  RecommendIn per query (strategy, user, context item, filters, page 1, limit).

`now`, in-process: the newest training event + NOW_GAP_S (the history is "an hour old", as in
the end-to-end run with shifted dates). Learned models measure ages from the newest event, so
the wall clock gives the same rankings; movielens-loo shows it (facts and goals).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from app.ml.artifacts import OrgModels
from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.model_store import ModelStore, new_version
from app.recommend.answer import Tenant, answer
from app.recommend.catalog import COLUMNS_AT_LOAD, Catalog
from app.recommend.filters import compile_filters
from app.recommend.model_cache import OrgSnapshot
from app.recommend.realtime import Activity
from app.schemas.recommend import RecommendIn
from app.settings import Settings
from workers.train_process import train_models

T = TypeVar("T")
NOW_GAP_S = 3600.0  # in-process `now` = newest training event + this
MAX_LIMIT = 100  # RecommendIn.limit's upper bound (API.md section 5)
UNSEEN = {"exclude_interacted": True}  # "rank every item the user has not interacted with"
_TENANT = Tenant(org_id=str(uuid.UUID(int=0)), slug="eval", domain="commerce")


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
    """One event type for every row, weighted as the worker weighs it (Settings.event_weight),
    in time order (ties in row order): the order the end-to-end run ingests them in, so that
    ties in time (the model search's "latest interaction") resolve alike on both paths."""
    order = np.lexsort((np.arange(len(users)), np.asarray(timestamps, dtype=np.float64)))
    weight = settings.event_weight(event_name, event_family)

    def take(values: Sequence[Any] | np.ndarray | None) -> list[Any] | None:
        return None if values is None else np.asarray(values, dtype=object)[order].tolist()

    return InteractionLog.build(
        user_ids=take(users) or [],
        item_ids=take(items) or [],
        event_names=[event_name] * len(users),
        weights=[weight] * len(users),
        timestamps=np.asarray(timestamps, dtype=np.float64)[order].tolist(),
        order_ids=take(order_ids),
        prices=None if prices is None else np.asarray(prices)[order].tolist(),
        quantities=None if quantities is None else np.asarray(quantities)[order].tolist(),
    )


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (answer() awaits only the user-state
    callable, which here returns at once): no event loop per query."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the coroutine suspended: it needs an event loop")


@dataclass(frozen=True, eq=False)
class Served:
    """A trained bundle as an api process serves it, and the request function over it."""

    snapshot: OrgSnapshot
    settings: Settings
    now: float  # the clock the strategies rank at (the train's `now`)
    timings: dict[str, float]  # train_models' parts
    train_seconds: float  # train_models' wall time

    @property
    def models(self) -> OrgModels:
        assert self.snapshot.models is not None
        return self.snapshot.models

    @property
    def quality(self) -> dict[str, Any] | None:
        """The model search's findings, as GET /v1/models/status reports them."""
        return self.models.extra.get("quality")

    def respond(
        self, request: RecommendIn, recent: Sequence[Activity] = (), *, now: float | None = None
    ) -> dict[str, Any]:
        """The `data` of POST /v1/recommend for this request; `recent` is the user's real-time
        activity (newest first), which the api reads from Redis; `now` the request's clock
        (default: the train's `now`)."""
        activity = list(recent)

        async def user_state(org_id: str, user_id: str) -> tuple[str, list[Activity]]:
            return user_id, activity

        # answer() builds a filter column it lacks in a worker thread (that needs an event loop):
        # here it is built first, as the api's first request on that key would.
        self.snapshot.catalog.with_columns(compile_filters(request.filters).attribute_keys)
        return run_now(answer(request, tenant=_TENANT, snapshot=self.snapshot, user_state=user_state,
                              settings=self.settings, now=self.now if now is None else now))

    def ask(
        self,
        strategy: str,
        *,
        limit: int,
        user_id: str | None = None,
        context_item_id: str | None = None,
        filters: dict[str, Any] | None = None,
        recent: Sequence[Activity] = (),
        page: int = 1,
        now: float | None = None,
    ) -> list[int]:
        """Catalog indices of the page the API returns (fallbacks included). The catalog lists
        the model's items first, so a model item's catalog index is its model index."""
        request = RecommendIn(strategy=strategy, user_id=user_id, context_item_id=context_item_id,
                              filters=filters, limit=limit, page=page)
        index = self.snapshot.catalog.index
        return [index[item_id] for item_id in self.respond(request, recent, now=now)["recommended_items"]]

    def full_order(self, strategy: str) -> np.ndarray:
        """Every item of a non-personal strategy's answer, best first, paged as a client would."""
        out: list[int] = []
        page = 1
        while True:
            data = self.respond(RecommendIn(strategy=strategy, limit=MAX_LIMIT, page=page))
            index = self.snapshot.catalog.index
            out.extend(index[item_id] for item_id in data["recommended_items"])
            if not data["pagination"]["has_next"]:
                return np.asarray(out, dtype=np.int64)
            page += 1


def catalog_rows(snapshot: CatalogSnapshot, *, updated_at: float) -> list[tuple[str, str, str, str, float, float]]:
    """The items table's rows as app/storage/catalog.load_catalog_rows returns them."""
    return [
        (item_id, item_type, status, orjson.dumps(attributes).decode(), created, updated_at)
        for item_id, item_type, status, attributes, created in zip(
            snapshot.item_ids.tolist(), snapshot.item_types.tolist(), snapshot.statuses.tolist(),
            snapshot.attributes, snapshot.created_at.tolist(),
        )
    ]


def train(
    settings: Settings,
    log: InteractionLog,
    snapshot: CatalogSnapshot,
    *,
    now: float | None = None,
    search: bool = False,
    previous_quality: dict[str, Any] | None = None,
) -> Served:
    """train_models as the worker's child calls it, then the OrgSnapshot the api would serve.
    `now` defaults to the newest event + NOW_GAP_S; `search` / `previous_quality` are the
    worker's (the search runs on a first train whatever `search` says)."""
    if now is None:
        now = float(log.timestamps.max()) + NOW_GAP_S
    started = time.perf_counter()
    models, timings = train_models(log, snapshot, settings, now=now, version=new_version(now),
                                   previous_quality=previous_quality, search=search)
    seconds = time.perf_counter() - started
    return Served(serving_snapshot(models, snapshot), settings, now, timings, seconds)


def serving_snapshot(models: OrgModels, snapshot: CatalogSnapshot) -> OrgSnapshot:
    """What ModelCache._cold_load installs: the bundle as the store loads it (warmed), and the
    catalog built from the items table's rows in the model's item order."""
    with tempfile.TemporaryDirectory(prefix="lehnz-eval-models-") as root:
        store = ModelStore(Path(root))
        store.save(_TENANT.org_id, models)
        loaded = store.load(_TENANT.org_id, models.version)
    loaded.warm()
    catalog = Catalog.build(catalog_rows(snapshot, updated_at=time.time()), order=loaded.item_ids)
    catalog.with_columns(COLUMNS_AT_LOAD)
    return OrgSnapshot(_TENANT.org_id, loaded, catalog, None, time.time())
