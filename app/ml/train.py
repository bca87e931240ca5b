"""One training run: the log and catalog in, an OrgModels bundle and per-part timings out."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from app.memory import peak_rss_mb
from app.ml import personalization, selection
from app.ml.als import FactorizationFailed
from app.ml.artifacts import OrgModels
from app.ml.content import content_index, content_neighbours
from app.ml.cooccurrence import assign_sessions, basket_incidence, pair_scores, purchase_baskets, transitions
from app.ml.history import interacted_items
from app.ml.interactions import (
    CatalogSnapshot,
    EncodedLog,
    InteractionLog,
    decay,
    decayed_matrix,
    encode_log,
    item_universe,
    user_universe,
)
from app.ml.knn import item_knn
from app.ml.params import TrainParams
from app.ml.personalization import EASE, Candidate, default_family
from app.ml.popularity import exposure_penalty, popularity_scores, trending_scores
from app.ml.repeat import PurchaseHistory, item_prices, purchase_history, user_price_band
from app.ml.topk import NonFiniteScores

INACTIVE_STATUSES = ("inactive", "deleted")


class TrainingError(RuntimeError):
    """The run produced something that must not be published (NaN/Inf, a failed fit)."""


class _Stopwatch:
    """Seconds per part, and the process's peak RSS as each part ended, in the order they
    ran: the peak only grows, so the first part at the highest figure is the one that set it
    (in the training child; in-process callers such as the eval see their own process's)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: list[tuple[str, float]] = []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            last = self.peak_rss_mb[-1][1] if self.peak_rss_mb else 0.0
            self.peak_rss_mb.append((name, max(last, peak_rss_mb())))  # the kernel's figure may lag a page


@dataclass(frozen=True)
class SearchPlan:
    """Run the model search (selection.py) in this train, with these bounds."""

    max_users: int  # holdout users sampled
    budget_s: float  # no new candidate starts after this many seconds


def train_org_models(
    log: InteractionLog,
    catalog: CatalogSnapshot,
    params: TrainParams,
    *,
    version: str,
    search: SearchPlan | None = None,
    choice: Candidate | None = None,
) -> tuple[OrgModels, dict[str, float]]:
    """Build every model part; raise TrainingError rather than return anything non-finite.

    `personalized`'s family is chosen by the model search when `search` is given (the previous
    winner, `choice`, is one of its candidates), else `choice` is refitted (the default family
    when there is none). The search's findings are in models.extra["quality"].
    """
    if not (np.isfinite(log.weights).all() and np.isfinite(log.timestamps).all()):
        raise TrainingError("the interaction log has non-finite weights or timestamps")
    clock = _Stopwatch()
    try:
        models = _build(log, catalog, params, version, clock, search, choice)
    except (FactorizationFailed, NonFiniteScores) as exc:
        raise TrainingError(str(exc)) from exc
    with clock.part("validate"):
        bad = models.non_finite_parts()
    if bad:
        raise TrainingError(f"non-finite values in {', '.join(bad)}")
    models.extra["memory_mb"] = {"peak_rss_after": [[part, mb] for part, mb in clock.peak_rss_mb]}  # as JSON reads it
    return models, clock.seconds


def _build(
    log: InteractionLog,
    catalog: CatalogSnapshot,
    params: TrainParams,
    version: str,
    clock: _Stopwatch,
    search: SearchPlan | None,
    choice: Candidate | None,
) -> OrgModels:
    k = params.knn_neighbours
    with clock.part("matrix"):
        item_ids = item_universe(log, catalog)
        encoded = encode_log(log, item_ids, user_universe(log))
        user_items = decayed_matrix(encoded, params)
        allowed = _recommendable(catalog, item_ids)
    with clock.part("popularity"):
        popularity = popularity_scores(encoded, params)
        trending = trending_scores(encoded, params)
        penalty = exposure_penalty(encoded, params)
    # The parts that go over every event run before any model is fitted: on a big log their
    # temporaries (tens of bytes per event) and the factors (hundreds of bytes per user) are
    # never in memory together. They read no parameter a model search changes.
    tables = _event_tables(encoded, catalog, params, k=k, allowed=allowed, clock=clock)
    found = None
    if search is not None:
        with clock.part("search"):
            found = selection.search(encoded, user_items, params, allowed=allowed, max_users=search.max_users,
                                     budget_s=search.budget_s, previous=choice)
        choice = found.chosen or choice
    chosen = _applicable(choice, len(item_ids), params)
    params = chosen.applied(params)
    quality = found.quality(chosen, version=version, interactions=len(encoded.log)) if found else None
    with clock.part("knn"):
        item_neighbors = item_knn(
            user_items, k=k, shrinkage=params.pair_shrinkage, allowed_neighbours=allowed
        )
    with clock.part(params.personal_model):
        fitted = personalization.fit(params.personal_model, user_items, params, item_neighbors=item_neighbors,
                                     popularity=popularity)
    with clock.part("content"):
        index = content_index(catalog, item_ids)
        content = content_neighbours(
            index, k=k, pair_budget=params.content_pair_budget, allowed_neighbours=allowed
        )
    events = encoded.log
    copurchase, copurchase_counts, coengagement, next_items = (
        tables.copurchase, tables.copurchase_counts, tables.coengagement, tables.transitions
    )
    interacted, event_names, history = tables.interacted, tables.event_names, tables.history
    item_price, price_center, price_spread = tables.item_price, tables.price_center, tables.price_spread

    return OrgModels(
        version=version,
        trained_at=params.now,
        params=params,
        n_interactions=len(events),
        item_ids=item_ids,
        user_ids=encoded.user_ids,
        user_items=user_items,
        user_factors=fitted.user_factors,
        item_factors=fitted.item_factors,
        ease_b=fitted.ease_b,
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
        interacted=interacted,
        event_names=event_names,
        extra={"quality": quality} if quality is not None else {},
    )


@dataclass(frozen=True)
class _EventTables:
    copurchase: csr_matrix
    copurchase_counts: csr_matrix
    coengagement: csr_matrix
    transitions: csr_matrix
    interacted: csr_matrix
    event_names: np.ndarray
    history: PurchaseHistory
    item_price: np.ndarray
    price_center: np.ndarray
    price_spread: np.ndarray


def _event_tables(
    encoded: EncodedLog, catalog: CatalogSnapshot, params: TrainParams, *, k: int, allowed: np.ndarray,
    clock: _Stopwatch,
) -> _EventTables:
    """Sessions, the pair and transition tables, the interacted history and buy-again cycles:
    what is built from the events themselves (sessions and recency are freed on return)."""
    events, n_items = encoded.log, encoded.n_items
    with clock.part("sessions"):
        sessions = assign_sessions(encoded.users, events.timestamps, events.sessions, params.session_gap_s)
    with clock.part("copurchase"):
        recency = decay(events.timestamps, params.age_origin, params.pair_half_life_s).astype(np.float32)
        keys, bought = purchase_baskets(encoded, sessions)
        copurchase, copurchase_counts = pair_scores(
            basket_incidence(
                keys, bought, n_items, params.max_basket_items, weights=recency[events.is_purchase]
            ),
            k=k,
            shrinkage=params.pair_shrinkage,
            lift_weight=params.pair_lift_weight,
            allowed_neighbours=allowed,
            with_counts=True,
        )
        assert copurchase_counts is not None  # asked for with_counts
        del keys, bought
    with clock.part("coengagement"):
        engaged = events.weights > 0
        coengagement, _ = pair_scores(
            basket_incidence(
                sessions[engaged], encoded.items[engaged], n_items, params.max_basket_items,
                weights=recency[engaged],
            ),
            k=k,
            shrinkage=params.pair_shrinkage,
            lift_weight=params.pair_lift_weight,
            allowed_neighbours=allowed,
        )
        del engaged, recency
    with clock.part("transitions"):
        next_items = transitions(encoded, sessions, k=k, allowed_neighbours=allowed)
        del sessions
    with clock.part("history"):
        interacted, event_names = interacted_items(encoded)
    with clock.part("repeat"):
        history = purchase_history(encoded, same_occasion_s=params.session_gap_s)
        item_price = item_prices(catalog, encoded.item_ids, encoded)
        price_center, price_spread = user_price_band(encoded, item_price)
    return _EventTables(copurchase, copurchase_counts, coengagement, next_items, interacted, event_names, history,
                        item_price, price_center, price_spread)


def _applicable(choice: Candidate | None, n_items: int, params: TrainParams) -> Candidate:
    """The chosen family, or the default one when there is no choice yet or EASE no longer fits
    the catalog (it grew past ease_max_items since the search)."""
    if choice is None or (choice.model == EASE and not 0 < n_items <= params.ease_max_items):
        family = default_family(n_items, params) if params.personal_model == "auto" else params.personal_model
        if family == EASE and not 0 < n_items <= params.ease_max_items:
            family = default_family(n_items, params)
        return Candidate.of(dataclasses.replace(params, personal_model=family))
    return choice


def _recommendable(catalog: CatalogSnapshot, item_ids: np.ndarray) -> np.ndarray:
    """Items that may appear as anyone's neighbour: all but those the catalog marks inactive
    or deleted (serving filters too; this only keeps the K slots for items it can show)."""
    statuses = zip(catalog.item_ids.tolist(), catalog.statuses.tolist())
    hidden = {item_id for item_id, status in statuses if status in INACTIVE_STATUSES}
    return np.fromiter((i not in hidden for i in item_ids.tolist()), bool, len(item_ids))
