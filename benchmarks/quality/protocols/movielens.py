"""MovieLens 100K: the Gorse protocol (5-fold random split) and a per-user temporal split.

Every rating is one positive `view` event (weight 1) at its timestamp; the catalog is all
1,682 movies with title and genres; the model is trained "now" = the newest training rating.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml.interactions import CatalogSnapshot
from app.recommend.strategies import personalized, popularity
from app.settings import Settings
from benchmarks.quality import baselines
from benchmarks.quality.datasets import Ratings
from benchmarks.quality.full_ranking import (
    Scorer,
    UserQueries,
    binary_matrix,
    evaluate,
    matrix_scorer,
    user_queries,
)
from benchmarks.quality.metrics import MetricMeans, paired_difference, std_error
from benchmarks.quality.results import Goal, ProtocolResult, Row, mean_of
from benchmarks.quality.serving import Served, event_log, ranking_vector, train
from benchmarks.quality.splits import last_per_user, random_folds

GORSE_METRICS = [("precision", 10), ("recall", 10), ("ndcg", 10), ("mrr", 10)]
TEMPORAL_METRICS = [("hr", 10), ("ndcg", 10), ("recall", 20)]
TEST_FRACTION = 0.2
SPLIT_SEED = 0
RANDOM_SEED = 0  # the `random` row: uniform scores, the floor every method must clear
# gorse's published NDCG@10 for this protocol (gorse.io docs, "Benchmark" on ml-100k).
GORSE_PUBLISHED_NDCG = {"ItemPop": 0.218, "item-KNN": 0.347, "BPR": 0.376, "WRMF": 0.416}
GORSE_GOAL = 0.44

COMMON = """\
Every rating (1-5) is one positive interaction: a `view` event (weight 1) at the rating's
timestamp. The server trains on the training rows with `train_org_models` and the default
`TrainParams` (`now` = the newest training rating); the catalog is all 1,682 movies with title
and genres. "Rank every item not in the training set" means: for each user with test
ratings, every catalog movie that is not among *that user's* training items is a candidate
(movies nobody rated in training included; they score 0), and the top 10 (20) is compared
with the user's test items. `personalized` is scored by `personalized.user_scores` through a
RankContext: the scores the API ranks by (on ALS the API finds the same top items through its
FactorIndex without computing them all); `popular` by the `popular` strategy. The
baselines see the same 0/1 training matrix: implicit's ALS with the server's factors,
regularization, alpha and iterations ("used directly": no decay, no fold-in), implicit's
item-item cosine kNN, and closed-form EASE on 0/1 input; their own hyperparameters come from
the validation search below."""

GORSE_DESCRIPTION = f"""\
The 100,000 ratings are shuffled (numpy seed {SPLIT_SEED}) and cut into 5 folds of 20,000; each
fold in turn is the test set and the other 80% train. Metrics are averaged over the users
with test ratings, then over the folds. {COMMON} Gorse's published NDCG@10 for this protocol
are listed for reference: measured by gorse, not in this run."""

TEMPORAL_DESCRIPTION = f"""\
Each user's ratings sorted by time (ties by file order); the last 20% (rounded half up, at
least one, never all) are the test set, the rest
train. Users' histories overlap in calendar time, as in the usual leave-last-out protocol.
{COMMON} Coverage@10 is the share of the 1,682 movies in at least one user's top 10."""


@dataclass(frozen=True)
class World:
    """One split of MovieLens, trained through the server, with its queries."""

    served: Served
    queries: UserQueries
    train_users: np.ndarray  # str ids of the training rows
    train_items: np.ndarray


def world(ratings: Ratings, test: np.ndarray, settings: Settings, overrides: dict[str, Any] | None = None) -> World:
    users = ratings.users.astype(str).astype(object)
    items = ratings.items.astype(str).astype(object)
    train_rows = ~test
    log = event_log(
        settings,
        users=users[train_rows].tolist(),
        items=items[train_rows].tolist(),
        event_name="view",
        event_family="engagement",
        timestamps=ratings.timestamps[train_rows],
    )
    served = train(settings, log, catalog(ratings), now=float(ratings.timestamps[train_rows].max()),
                   overrides=overrides)
    models = served.models
    queries = user_queries(
        models.user_index, models.item_index,
        train=(users[train_rows].tolist(), items[train_rows].tolist()),
        test=(users[test].tolist(), items[test].tolist()),
    )
    return World(served, queries, users[train_rows], items[train_rows])


def catalog(ratings: Ratings) -> CatalogSnapshot:
    ids = ratings.item_ids.tolist()
    return CatalogSnapshot.build(
        [str(i) for i in ids],
        attributes=[{"title": ratings.titles[i], "genres": ratings.genres[i]} for i in ids],
    )


def personalized_scorer(served: Served) -> Scorer:
    """The `personalized` strategy's own scores (ALS or EASE, as the trainer chose)."""
    models = served.models
    empty = np.zeros(models.n_items)

    def score(row: int) -> np.ndarray:
        scores = personalized.user_scores(served.context(user_id=models.user_ids[row]))
        return empty if scores is None else scores

    return score


def method_scorers(w: World) -> dict[str, tuple[str, Callable[[], Scorer]]]:
    """name -> (kind, lazy scorer): the server's strategies first, then the baselines."""
    models = w.served.models
    x = binary_matrix(models.user_index, models.item_index, w.train_users.tolist(), w.train_items.tolist())
    popular = ranking_vector(popularity.popular(w.served.context()), models.n_items)
    noise = np.random.default_rng(RANDOM_SEED).random((models.n_users, models.n_items))
    return {
        "personalized": ("strategy", lambda: personalized_scorer(w.served)),
        "popular": ("strategy", lambda: (lambda row: popular)),
        "implicit ALS (direct)": ("baseline", lambda: matrix_scorer(baselines.implicit_als(x, models.params))),
        f"item-kNN (implicit cosine, K={baselines.ITEM_KNN_NEIGHBOURS})": (
            "baseline", lambda: matrix_scorer(baselines.item_knn(x))),
        f"EASE (closed form, lambda={baselines.EASE_LAMBDA:g})": (
            "baseline", lambda: matrix_scorer(baselines.ease(x))),
        "random": ("baseline", lambda: matrix_scorer(noise)),
    }


def gorse_protocol(ratings: Ratings, settings: Settings, *, folds: int = 5) -> ProtocolResult:
    started = time.perf_counter()
    per_method: dict[str, list[dict[str, float]]] = {}
    pooled: dict[str, MetricMeans] = {}  # every fold's users, for standard errors
    kinds: dict[str, str] = {}
    queries = []
    uses_ease = []
    for test in random_folds(len(ratings), folds, SPLIT_SEED):
        w = world(ratings, test, settings)
        queries.append(len(w.queries.rows))
        uses_ease.append(w.served.models.uses_ease)
        for name, (kind, make) in method_scorers(w).items():
            kinds[name] = kind
            means, per_query = evaluate(w.queries, make(), GORSE_METRICS)
            per_method.setdefault(name, []).append(means)
            pooled.setdefault(name, MetricMeans(GORSE_METRICS)).extend(per_query)
    rows = [Row(name, kinds[name], dict(mean_of(runs))) for name, runs in per_method.items()]  # type: ignore[arg-type]
    columns = [f"{name}@{k}" for name, k in GORSE_METRICS]
    for name, value in GORSE_PUBLISHED_NDCG.items():
        metrics: dict[str, float | None] = dict.fromkeys(columns)
        metrics["ndcg@10"] = value
        rows.append(Row(f"gorse {name} (published)", "reference", metrics))
    ndcg = rows[0].metrics["ndcg@10"] or 0.0
    error = std_error(pooled["personalized"].values["ndcg@10"])
    return ProtocolResult(
        key="movielens-gorse",
        title="MovieLens 100K, Gorse protocol (5-fold random 80/20, rank all unseen items)",
        description=GORSE_DESCRIPTION,
        columns=columns,
        rows=rows,
        facts={
            "folds": folds, "split_seed": SPLIT_SEED, "ratings": len(ratings),
            "queries_per_fold": queries, "personalized_model": "EASE" if all(uses_ease) else "ALS",
            "personalized_vs_baselines_ndcg@10": _versus(pooled, "personalized", "ndcg@10"),
        },
        goals=[Goal(
            f"personalized NDCG@10 >= {GORSE_GOAL}", ndcg >= GORSE_GOAL,
            f"{ndcg:.4f} (standard error over users x folds {error:.4f})",
            closing="On 1,682 items `personalized` is EASE; the server's ALS alone measures ~0.42 here "
            "(implicit ALS row). Known next steps: EDLAE-style dropout regularisation of EASE (Steck "
            "2020) and frequency-scaled regularisation for ALS (iALS, Rendle et al. 2021), each worth "
            "about +1% in the literature; tune on the validation splits, never on these folds.",
        )],
        seconds=time.perf_counter() - started,
    )


def temporal_protocol(ratings: Ratings, settings: Settings) -> ProtocolResult:
    started = time.perf_counter()
    test = last_per_user(ratings.users, ratings.timestamps, TEST_FRACTION)
    w = world(ratings, test, settings)
    rows = []
    per_query: dict[str, MetricMeans] = {}
    for name, (kind, make) in method_scorers(w).items():
        means, per_query[name] = evaluate(w.queries, make(), TEMPORAL_METRICS, coverage_k=10)
        rows.append(Row(name, kind, dict(means)))  # type: ignore[arg-type]
    ours = rows[0].metrics["ndcg@10"] or 0.0
    best = max(rows[1:], key=lambda r: r.metrics["ndcg@10"] or 0.0)
    best_ndcg = best.metrics["ndcg@10"] or 0.0
    gap, error = paired_difference(per_query["personalized"].values["ndcg@10"], per_query[best.name].values["ndcg@10"])
    return ProtocolResult(
        key="movielens-temporal",
        title="MovieLens 100K, temporal (each user's last 20% by time as test, rank all unseen items)",
        description=TEMPORAL_DESCRIPTION,
        columns=["hr@10", "ndcg@10", "recall@20", "coverage@10"],
        rows=rows,
        facts={
            "train_ratings": int((~test).sum()), "test_ratings": int(test.sum()), "queries": len(w.queries.rows),
            "personalized_model": "EASE" if w.served.models.uses_ease else "ALS",
            "personalized_vs_baselines_ndcg@10": _versus(per_query, "personalized", "ndcg@10"),
        },
        goals=[Goal(
            "personalized NDCG@10 >= every baseline", ours >= best_ndcg,
            f"{ours:.4f} vs best other, {best.name}, {best_ndcg:.4f}: {gap:+.4f} (paired standard error {error:.4f})",
            closing="`personalized` is the server's EASE (presence + recency bonus, 30-day decay) and the "
            "baseline is EASE on 0/1 input: the same model, so the two sit within noise of each other. "
            "MovieLens timestamps carry little recency (ratings are entered in bulk); choosing the decay "
            "per org on a validation split, or an EASE-ALS blend in `personalized.user_scores`, would "
            "give a margin.",
        )],
        seconds=time.perf_counter() - started,
    )


def _versus(per_query: dict[str, MetricMeans], ours: str, metric: str) -> dict[str, str]:
    """ours - other on `metric`, with the paired standard error, for every other method."""
    out = {}
    for name, means in per_query.items():
        if name != ours:
            gap, error = paired_difference(per_query[ours].values[metric], means.values[metric])
            out[name] = f"{gap:+.4f} ± {error:.4f}"
    return out
