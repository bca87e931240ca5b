"""End to end over HTTP: the in-process protocols' splits, run through a fresh `lehnz serve`.

MovieLens leave-last-one-out and Online Retail next basket, each loaded twice: at the data's
real timestamps (1997-98, 2010-11) and with the history shifted so that its newest training
event is an hour old. Each load is one organisation of one server; the queries, targets and
metrics are the in-process protocols', so the numbers compare user by user with theirs (and
with their baselines, measured in-process on the same split).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.settings import Settings
from benchmarks.quality import personal
from benchmarks.quality.datasets import Ratings, RetailLines
from benchmarks.quality.end_to_end import RATE_LIMIT, Server, Shop, event_id, iso
from benchmarks.quality.full_ranking import UserQueries, depth_of, evaluate_ranked
from benchmarks.quality.metrics import MetricMeans, paired_difference
from benchmarks.quality.protocols import movielens, retail
from benchmarks.quality.results import Goal, ProtocolResult, Row
from benchmarks.quality.serving import UNSEEN, Served
from benchmarks.quality.splits import latest_per_user

SHIFTED_AGE_S = 3600.0  # the shifted history's newest event is this old when it is loaded
NOISE = 2.0  # within noise: a difference under this many paired standard errors

DESCRIPTION = f"""\
**Path: end to end over HTTP**, the product exactly as a storefront uses it: a fresh
`lehnz serve` subprocess (embedded PostgreSQL and Redis in a temporary data dir, a free port,
default settings except `LEHNZ_RATE_LIMIT={RATE_LIMIT}`: the default 1,000 requests per 15
minutes would throttle a bulk load that a real shop spreads over weeks), one organisation per
run made with `lehnz org create --json`, the catalog through `POST /v1/ingest/items/upsert` and
the training events through `POST /v1/ingest/events/ingest` (batches of 1,000, each event with
its real timestamp; then `GET /v1/models/status` until the stored counts reach what was sent),
training by the worker after `POST /v1/models/train {{"search": true}}` (the worker had already
trained on the first events as they arrived, "no model yet"; asking for the search makes it run
on the whole load every time) until status shows that model, then one
`POST /v1/recommend` per test user with `filters.exclude_interacted: true` and the deepest k as
the limit. The split, queries and metrics are the in-process protocol's, so each answer is
compared user by user with the in-process one (same share of identical top-10 lists, paired
difference), and the baselines are the in-process protocol's (same split, same users). The
model status's `quality` (the family the server chose and every candidate's holdout score) is
in the facts."""

MOVIELENS_DESCRIPTION = f"""\
MovieLens 100K leave-last-one-out (the movielens-loo protocol's split) loaded twice: once at
the ratings' real timestamps (1997-09 to 1998-04: decades before the train), once with every
timestamp shifted so that the newest training rating is {SHIFTED_AGE_S / 3600:g} h old when it
is sent. {DESCRIPTION}"""

RETAIL_DESCRIPTION = f"""\
Online Retail personalized next basket (the retail-next-basket protocol's split: purchases
before 2011-11-01 train, each customer's later purchases of products new to them are the
targets) loaded twice: once at the data's real dates (2010-12 to 2011-10), once with every
timestamp shifted so that the newest training purchase is {SHIFTED_AGE_S / 3600:g} h old when it
is sent. {DESCRIPTION}"""
MOVIELENS_REAL = "1997-98 dates"
RETAIL_REAL = "2010-11 dates"
SHIFTED = "shifted"


@dataclass(frozen=True)
class Answers:
    """Every query's page 1 from the server, as model indices of the in-process world."""

    personalized: list[list[int]]
    popular: list[list[int]]
    status: dict[str, Any]
    loaded: dict[str, float]
    seconds: float


def movielens_load(ratings: Ratings, trained: Ratings, shift: float) -> tuple[list[dict], list[dict]]:
    """The catalog and the training ratings as API records (events in time order)."""
    items = [{"item_id": str(movie), "item_type": movielens.ITEM_TYPE, "status": "active",
              "attributes": movielens.item_attributes(ratings, movie)} for movie in ratings.item_ids.tolist()]
    order = np.lexsort((np.arange(len(trained)), trained.timestamps))
    events = [
        {"event_id": event_id("movielens", shift, row), "user_id": str(trained.users[row]),
         "item_id": str(trained.items[row]), "event_family": "engagement", "event_name": "view",
         "timestamp": iso(float(trained.timestamps[row]) + shift)}
        for row in order.tolist()
    ]
    return items, events


def retail_load(trained: RetailLines, shift: float) -> tuple[list[dict], list[dict]]:
    snapshot = retail.catalog(trained)
    items = [{"item_id": item_id, "item_type": retail.ITEM_TYPE, "status": "active", "attributes": attributes}
             for item_id, attributes in zip(snapshot.item_ids.tolist(), snapshot.attributes)]
    order = np.lexsort((np.arange(len(trained)), trained.timestamps))
    events = [
        {"event_id": event_id("retail", shift, row), "user_id": trained.customers[row],
         "item_id": trained.items[row], "event_family": "conversion", "event_name": "purchase",
         "timestamp": iso(float(trained.timestamps[row]) + shift),
         "context": {"order_id": trained.invoices[row], "price": float(trained.prices[row]),
                     "quantity": float(trained.quantities[row])}}
        for row in order.tolist()
    ]
    return items, events


def ask_every_user(shop: Shop, users: Sequence[str], index: dict[str, int], depth: int,
                   items: list[dict], events: list[dict]) -> Answers:
    """Load, train, then one request per user and strategy."""
    started = time.perf_counter()
    shop.load(items, events)
    status = shop.train()
    lists: dict[str, list[list[int]]] = {}
    for strategy in (personal.OURS, personal.POPULAR):
        lists[strategy] = [
            [index.get(item, -1) for item in shop.recommend(
                {"strategy": strategy, "user_id": user, "filters": UNSEEN, "limit": depth})["recommended_items"]]
            for user in users
        ]
    return Answers(lists[personal.OURS], lists[personal.POPULAR], status, dict(shop.loaded),
                   time.perf_counter() - started)


def e2e_protocols(
    ratings: Ratings,
    lines: RetailLines | None,
    settings: Settings,
    *,
    loo: movielens.LooRun | None = None,
    basket: retail.BasketRun | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[ProtocolResult]:
    """The end-to-end protocols; `loo` / `basket`: the in-process runs when this run has them."""
    started = time.perf_counter()
    loo = loo or movielens.loo_run(ratings, settings)
    if lines is not None and basket is None:
        basket = retail.basket_run(retail.retail_world(lines, settings, train_before=retail.TEST_FROM))
    results = []
    with Server(log=progress) as server:
        w = loo.world
        trained = ratings.subset(~latest_per_user(ratings.users, ratings.timestamps))
        users = [w.served.models.user_ids[row] for row in w.queries.rows]
        shift = _shift_to_an_hour_ago(trained.timestamps)
        runs = {}
        for label, by in ((MOVIELENS_REAL, 0.0), (SHIFTED, shift)):
            progress(f"end to end: MovieLens leave-last-one-out, {label}")
            items, events = movielens_load(ratings, trained, by)
            runs[label] = ask_every_user(server.shop(f"eval movielens {label}"), users, w.served.models.item_index,
                                         depth_of(movielens.LOO_METRICS, 10), items, events)
            progress(f"  {runs[label].loaded} in {runs[label].seconds:.0f} s")
        results.append(_result(
            key="e2e-movielens-loo",
            title="End to end over HTTP: MovieLens 100K leave-last-one-out, real dates and shifted",
            description=MOVIELENS_DESCRIPTION, columns=["hr@10", "ndcg@10", "mrr@10", "coverage@10"],
            wanted=movielens.LOO_METRICS, served=w.served, queries=w.queries, measured=loo.measured, runs=runs,
            shift=shift, facts={"server_start_seconds": round(server.started_seconds, 1)}, started=started))
        if basket is not None:
            started = time.perf_counter()
            bw = basket.world
            shift = _shift_to_an_hour_ago(bw.trained.timestamps)
            customers = [bw.served.models.user_ids[row] for row in basket.queries.rows]
            runs = {}
            for label, by in ((RETAIL_REAL, 0.0), (SHIFTED, shift)):
                progress(f"end to end: Online Retail next basket, {label}")
                items, events = retail_load(bw.trained, by)
                runs[label] = ask_every_user(server.shop(f"eval retail {label}"), customers,
                                             bw.served.models.item_index, depth_of(retail.BASKET_METRICS, retail.K),
                                             items, events)
                progress(f"  {runs[label].loaded} in {runs[label].seconds:.0f} s")
            results.append(_result(
                key="e2e-retail-next-basket",
                title="End to end over HTTP: Online Retail personalized next basket, real dates and shifted",
                description=RETAIL_DESCRIPTION, columns=["hr@10", "ndcg@10", "recall@10", "coverage@10"],
                wanted=retail.BASKET_METRICS, served=bw.served, queries=basket.queries, measured=basket.measured,
                runs=runs, shift=shift, facts={}, started=started))
    return results


def _shift_to_an_hour_ago(timestamps: np.ndarray) -> float:
    """Whole seconds that move the newest training event to SHIFTED_AGE_S before now."""
    return float(np.floor(time.time() - SHIFTED_AGE_S - float(timestamps.max())))


def _measure(queries: UserQueries, lists: list[list[int]], wanted: list[tuple[str, int]]) -> tuple[dict, MetricMeans]:
    return evaluate_ranked(queries, lambda q: lists[q], wanted, coverage_k=10)


def _in_process_lists(served_ranker: Callable[[int], list[int]], n: int) -> list[list[int]]:
    return [served_ranker(q) for q in range(n)]


def _same(first: list[list[int]], second: list[list[int]], k: int = 10) -> int:
    return sum(a[:k] == b[:k] for a, b in zip(first, second))


def _within_noise(text: str, ours: MetricMeans, theirs: MetricMeans, same: int, n: int) -> Goal:
    gap, error = paired_difference(ours.values["ndcg@10"], theirs.values["ndcg@10"])
    return Goal(text, abs(gap) <= NOISE * error or gap == 0.0,
                f"NDCG@10 {np.mean(ours.values['ndcg@10']):.4f} vs {np.mean(theirs.values['ndcg@10']):.4f}: "
                f"{gap:+.4f} (paired standard error {error:.4f}); same top 10 for {same} of {n} users")


def _status_facts(answers: Answers) -> dict[str, Any]:
    model, quality = answers.status["model"], answers.status.get("quality")
    return {
        "loaded": answers.loaded,
        "train": f"model {model['version']}: {model['duration_ms'] / 1000:.1f} s, {model['interactions']} interactions",
        **personal.search_facts(quality),
        "quality_reported": quality,
    }


def _result(
    *, key: str, title: str, description: str, columns: list[str], wanted: list[tuple[str, int]],
    served: Served, queries: UserQueries, measured: personal.Measured, runs: dict[str, Answers], shift: float,
    facts: dict[str, Any], started: float,
) -> ProtocolResult:
    """One dataset end to end: each load's answers, the in-process rows of the same split, and
    the goals (each load against the baselines and popular; real dates vs shifted; in-process vs
    end to end)."""
    n = len(queries.rows)
    in_process = _in_process_lists(personal.served_ranker(served, queries, personal.OURS, depth_of(wanted, 10)), n)
    rows: list[Row] = []
    per_query: dict[str, MetricMeans] = {}
    kinds: dict[str, str] = {}
    for label, answers in runs.items():
        for strategy, lists in ((personal.OURS, answers.personalized), (personal.POPULAR, answers.popular)):
            name = f"{strategy}, end to end, {label}"
            means, per_query[name] = _measure(queries, lists, wanted)
            rows.append(Row(name, "strategy", dict(means)))  # type: ignore[arg-type]
            kinds[name] = "strategy"
    for row in measured.rows:  # the in-process protocol's rows: the same split and users
        name = f"{row.name}, in-process" if row.kind == "strategy" else row.name
        rows.append(Row(name, row.kind, row.metrics))
        per_query[name] = measured.per_query[row.name]
        kinds[name] = row.kind
    real_label, shifted_label = runs
    real, shifted = (f"{personal.OURS}, end to end, {label}" for label in runs)
    goals = [
        *personal.goals(per_query, kinds, ours=real, popular=f"{personal.POPULAR}, end to end, {real_label}"),
        *personal.goals(per_query, kinds, ours=shifted, popular=f"{personal.POPULAR}, end to end, {shifted_label}"),
        _within_noise(f"end to end: history at its {real_label} within noise of the same history shifted to an "
                      "hour ago", per_query[real], per_query[shifted],
                      _same(runs[real_label].personalized, runs[shifted_label].personalized), n),
        _within_noise("in-process (train_models + answer) matches end to end (shifted dates)",
                      per_query[f"{personal.OURS}, in-process"], per_query[shifted],
                      _same(in_process, runs[shifted_label].personalized), n),
    ]
    facts = {"path": "end to end over HTTP (lehnz serve)", **facts, "queries": n, "shift_seconds": shift}
    for label, answers in runs.items():
        facts.update({f"{name} ({label})": value for name, value in _status_facts(answers).items()})
    facts["in_process_model"] = personal.search_facts(served.quality)["personalized_model"]
    return ProtocolResult(key=key, title=title, description=description, columns=columns, rows=rows, facts=facts,
                          goals=goals, seconds=time.perf_counter() - started)
