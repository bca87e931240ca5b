"""MovieLens 100K: the Gorse protocol (5-fold random split), a per-user temporal split, and
leave-last-one-out, all through the production path (serving.py).

Every rating is one positive `view` event (weight 1) at its timestamp; the catalog is all
1,682 movies with title and genres.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.settings import Settings
from benchmarks.quality import baselines, personal
from benchmarks.quality.datasets import Ratings
from benchmarks.quality.full_ranking import UserQueries, binary_matrix, depth_of, user_queries
from benchmarks.quality.metrics import MetricMeans, paired_difference, std_error
from benchmarks.quality.results import Goal, ProtocolResult, Row, mean_of
from benchmarks.quality.serving import NOW_GAP_S, Served, event_log, train
from benchmarks.quality.splits import last_per_user, latest_per_user, random_folds

GORSE_METRICS = [("precision", 10), ("recall", 10), ("ndcg", 10), ("mrr", 10)]
TEMPORAL_METRICS = [("hr", 10), ("ndcg", 10), ("recall", 20)]
LOO_METRICS = [("hr", 10), ("ndcg", 10), ("mrr", 10)]
TEST_FRACTION = 0.2
SPLIT_SEED = 0
ITEM_TYPE = "movie"
# gorse's published NDCG@10 for this protocol (gorse.io docs, "Benchmark" on ml-100k).
GORSE_PUBLISHED_NDCG = {"ItemPop": 0.218, "item-KNN": 0.347, "BPR": 0.376, "WRMF": 0.416}
GORSE_GOAL = 0.44
SEARCH_COST_GOAL = 3.0  # a train with the model search costs at most this many plain trains
BASELINE_GAP = (
    "implicit's ALS on the 0/1 matrix at its validation-tuned settings (128 factors, regularization 20, "
    "confidence 1 + x, 30 iterations) is the strongest single method on MovieLens. The server's closest "
    "candidate is ALS with presence confidence at 64 factors, regularization 20 and 15 iterations (the first "
    "search's incumbent on catalogs EASE fits: it beats EASE on both validation splits, see the tuning "
    "protocol); at 128 factors and 30 iterations it scored higher on the same validation splits (0.2819 vs "
    "0.2799 mean NDCG@10, one run) but a fit costs about 2.5x, and a search on MovieLens is held to 3 plain "
    "trains (movielens-loo). What would close the rest: that point as the presence candidate, paid for by "
    "a cheaper search elsewhere (e.g. EASE's inverse by Cholesky)."
)

COMMON = f"""\
Every rating (1-5) is one positive interaction: a `view` event (weight 1) at the rating's
timestamp; the catalog is all 1,682 movies (item_type `movie`, title and genres). **Path:
in-process production path.** The server trains on the training rows with
`workers.train_process.train_models`, the function the worker's training child runs (default
settings; learned models age events from the newest training rating; this first train runs the
per-organisation model search, which picks `personalized`'s family and hyperparameters on a
holdout of the training data), with `now` = the newest training rating + {NOW_GAP_S / 3600:g} h.
The bundle is saved to and loaded from a model store, and the catalog built from item rows, as
the api's model cache does. `personalized` and `popular` are the API's answers:
`app.recommend.answer.answer` (the function behind `POST /v1/recommend`) with one request per
user: `{{"strategy": ..., "user_id": ..., "filters": {{"exclude_interacted": true}}, "limit": k}}`,
page 1, k the deepest cut-off: every catalog movie the user has no training rating for is a
candidate, as the protocol asks. The baselines rank the same unseen movies from the same 0/1
training matrix: implicit's ALS used directly (no decay, no fold-in) at the settings tuned on
the validation splits below and at the textbook settings (64 factors, regularization 0.05,
confidence 1 + 20 x, 15 iterations), implicit's item-item cosine kNN, closed-form EASE, and
uniform random scores."""

GORSE_DESCRIPTION = f"""\
The 100,000 ratings are shuffled (numpy seed {SPLIT_SEED}) and cut into 5 folds of 20,000; each
fold in turn is the test set and the other 80% train. Metrics are averaged over the users
with test ratings, then over the folds; standard errors pool every fold's users. {COMMON} Gorse's
published NDCG@10 for this protocol are listed for reference: measured by gorse, not in this
run."""

TEMPORAL_DESCRIPTION = f"""\
Each user's ratings sorted by time (ties by file order); the last 20% (rounded half up, at
least one, never all) are the test set, the rest train. Users' histories overlap in calendar
time, as in the usual leave-last-out protocol. {COMMON} Coverage@10 is the share of the 1,682
movies in at least one user's top 10."""

LOO_DESCRIPTION = f"""\
Leave-last-one-out: each user's latest rating (ties by file order) is the test item, every
other rating trains; NDCG@10, HR@10 and MRR@10 of the one held-out movie among all the movies
the user has not rated. The defaults and the search grid were not tuned on this protocol. {COMMON}
Two more trains on the same data measure the model search's cost and the `now` rule: a plain
train (what a scheduled retrain does: `train_models` with the search's findings as the previous
quality, so it refits the winner) and a train with the search at `now` = the wall clock (the
history then ends years ago); the facts give both times, and the answers of the wall-clock
model are compared with the first one's user by user. Coverage@10 as in the temporal protocol."""


@dataclass(frozen=True)
class World:
    """One split of MovieLens, trained through the server, with its queries."""

    served: Served
    queries: UserQueries
    x: csr_matrix  # the 0/1 training matrix in the model's index space: the baselines' input
    log: InteractionLog
    snapshot: CatalogSnapshot


def ratings_log(settings: Settings, ratings: Ratings) -> InteractionLog:
    return event_log(
        settings,
        users=ratings.users.astype(str).tolist(),
        items=ratings.items.astype(str).tolist(),
        event_name="view",
        event_family="engagement",
        timestamps=ratings.timestamps,
    )


def catalog(ratings: Ratings) -> CatalogSnapshot:
    ids = ratings.item_ids.tolist()
    return CatalogSnapshot.build(
        [str(i) for i in ids],
        item_types=[ITEM_TYPE] * len(ids),
        attributes=[item_attributes(ratings, i) for i in ids],
    )


def item_attributes(ratings: Ratings, movie: int) -> dict[str, Any]:
    return {"title": ratings.titles[movie], "genres": ratings.genres[movie]}


def world(ratings: Ratings, test: np.ndarray, settings: Settings) -> World:
    trained, held_out = ratings.subset(~test), ratings.subset(test)
    log, snapshot = ratings_log(settings, trained), catalog(ratings)
    served = train(settings, log, snapshot)
    models = served.models
    columns = (trained.users.astype(str).tolist(), trained.items.astype(str).tolist())
    queries = user_queries(models.user_index, models.item_index, train=columns,
                           test=(held_out.users.astype(str).tolist(), held_out.items.astype(str).tolist()))
    x = binary_matrix(models.user_index, models.item_index, *columns)
    return World(served, queries, x, log, snapshot)


def measured(w: World, wanted: list[tuple[str, int]], coverage_k: int | None = None) -> personal.Measured:
    found = personal.methods(w.served, w.queries, w.x, baselines.TUNED["movielens"], depth_of(wanted, coverage_k))
    return personal.measure(w.queries, found, wanted, coverage_k=coverage_k)


def gorse_protocol(ratings: Ratings, settings: Settings, *, folds: int = 5) -> ProtocolResult:
    started = time.perf_counter()
    per_method: dict[str, list[dict[str, float]]] = {}
    pooled: dict[str, MetricMeans] = {}  # every fold's users, for standard errors
    kinds: dict[str, str] = {}
    queries, chosen = [], []
    for test in random_folds(len(ratings), folds, SPLIT_SEED):
        w = world(ratings, test, settings)
        queries.append(len(w.queries.rows))
        chosen.append(personal.search_facts(w.served.quality)["personalized_model"])
        fold = measured(w, GORSE_METRICS)
        kinds = fold.kinds
        for row in fold.rows:
            per_method.setdefault(row.name, []).append(row.metrics)  # type: ignore[arg-type]
            pooled.setdefault(row.name, MetricMeans(GORSE_METRICS)).extend(fold.per_query[row.name])
    rows = [Row(name, kinds[name], dict(mean_of(runs))) for name, runs in per_method.items()]  # type: ignore[arg-type]
    columns = [f"{name}@{k}" for name, k in GORSE_METRICS]
    for name, value in GORSE_PUBLISHED_NDCG.items():
        metrics: dict[str, float | None] = dict.fromkeys(columns)
        metrics["ndcg@10"] = value
        rows.append(Row(f"gorse {name} (published)", "reference", metrics))
    ndcg = rows[0].metrics["ndcg@10"] or 0.0
    error = std_error(pooled[personal.OURS].values["ndcg@10"])
    return ProtocolResult(
        key="movielens-gorse",
        title="MovieLens 100K, Gorse protocol (5-fold random 80/20, rank all unseen items)",
        description=GORSE_DESCRIPTION,
        columns=columns,
        rows=rows,
        facts={
            "path": "in-process (train_models + answer)", "folds": folds, "split_seed": SPLIT_SEED,
            "ratings": len(ratings), "queries_per_fold": queries, "personalized_model_per_fold": chosen,
            "personalized_vs_baselines_ndcg@10": personal.versus(pooled),
        },
        goals=[
            Goal(
                f"personalized NDCG@10 >= {GORSE_GOAL}", ndcg >= GORSE_GOAL,
                f"{ndcg:.4f} (standard error over users x folds {error:.4f})",
                closing="The search picks per fold on a holdout of each user's latest interaction, keeping its "
                "incumbent (presence ALS on this catalog) unless a challenger wins clearly; the model chosen "
                "per fold is in the facts. " + BASELINE_GAP,
            ),
            *personal.goals(pooled, kinds, closing=BASELINE_GAP),
        ],
        seconds=time.perf_counter() - started,
    )


def temporal_protocol(ratings: Ratings, settings: Settings) -> ProtocolResult:
    started = time.perf_counter()
    test = last_per_user(ratings.users, ratings.timestamps, TEST_FRACTION)
    w = world(ratings, test, settings)
    found = measured(w, TEMPORAL_METRICS, coverage_k=10)
    rows, per_query, kinds = found.rows, found.per_query, found.kinds
    ours = rows[0].metrics["ndcg@10"] or 0.0
    best = max(rows[1:], key=lambda r: r.metrics["ndcg@10"] or 0.0)
    best_ndcg = best.metrics["ndcg@10"] or 0.0
    gap, error = paired_difference(per_query[personal.OURS].values["ndcg@10"], per_query[best.name].values["ndcg@10"])
    return ProtocolResult(
        key="movielens-temporal",
        title="MovieLens 100K, temporal (each user's last 20% by time as test, rank all unseen items)",
        description=TEMPORAL_DESCRIPTION,
        columns=["hr@10", "ndcg@10", "recall@20", "coverage@10"],
        rows=rows,
        facts={
            "path": "in-process (train_models + answer)", "train_ratings": int((~test).sum()),
            "test_ratings": int(test.sum()), "queries": len(w.queries.rows),
            **personal.search_facts(w.served.quality),
            "personalized_vs_baselines_ndcg@10": personal.versus(per_query),
        },
        goals=[
            Goal(
                "personalized NDCG@10 >= every baseline", ours >= best_ndcg,
                f"{ours:.4f} vs best other, {best.name}, {best_ndcg:.4f}: {gap:+.4f} (paired standard error "
                f"{error:.4f})",
                closing=BASELINE_GAP,
            ),
            *personal.goals(per_query, kinds, closing=BASELINE_GAP),
        ],
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class LooRun:
    """Leave-last-one-out trained and measured in-process (the end-to-end protocol compares its
    answers with these, user by user)."""

    world: World
    measured: personal.Measured
    seconds: float


def loo_run(ratings: Ratings, settings: Settings) -> LooRun:
    started = time.perf_counter()
    w = world(ratings, latest_per_user(ratings.users, ratings.timestamps), settings)
    return LooRun(w, measured(w, LOO_METRICS, coverage_k=10), time.perf_counter() - started)


def loo_protocol(ratings: Ratings, settings: Settings, *, run: LooRun | None = None) -> ProtocolResult:
    run = run or loo_run(ratings, settings)
    started = time.perf_counter()
    w = run.world
    rows, per_query, kinds = run.measured.rows, run.measured.per_query, run.measured.kinds
    depth = depth_of(LOO_METRICS, 10)

    # The cost of the search: a plain train (refit the winner, as a scheduled train does) and
    # a train with the search at the wall clock, same data, same process, one after the other.
    plain = train(settings, w.log, w.snapshot, previous_quality=w.served.quality)
    wall = train(settings, w.log, w.snapshot, now=time.time(), search=True)
    ratio = wall.train_seconds / plain.train_seconds
    first = personal.served_ranker(w.served, w.queries, personal.OURS, depth)
    later = personal.served_ranker(wall, w.queries, personal.OURS, depth)
    same = [first(q)[:10] == later(q)[:10] for q in range(len(w.queries.rows))]
    wall_ndcg = MetricMeans(LOO_METRICS)
    for q, targets in enumerate(w.queries.targets):
        wall_ndcg.add(later(q), targets)
    gap, error = paired_difference(wall_ndcg.values["ndcg@10"], per_query[personal.OURS].values["ndcg@10"])
    same_choice = (wall.quality or {}).get("chosen") == (w.served.quality or {}).get("chosen")
    first_train = w.served.train_seconds
    return ProtocolResult(
        key="movielens-loo",
        title="MovieLens 100K, leave-last-one-out (each user's latest rating as test, rank all unseen items)",
        description=LOO_DESCRIPTION,
        columns=["hr@10", "ndcg@10", "mrr@10", "coverage@10"],
        rows=rows,
        facts={
            "path": "in-process (train_models + answer)", "train_ratings": len(w.log),
            "queries": len(w.queries.rows), **personal.search_facts(w.served.quality),
            "personalized_vs_baselines_ndcg@10": personal.versus(per_query),
            "train_seconds": {"with search (now = newest + 1 h)": round(first_train, 1),
                              "plain (refit the winner)": round(plain.train_seconds, 1),
                              "with search (now = wall clock)": round(wall.train_seconds, 1)},
            "now_wall_clock": (f"chose {personal.search_facts(wall.quality)['personalized_model']}; "
                               f"same top 10 for {sum(same)} of {len(same)} users; NDCG@10 "
                               f"{np.mean(wall_ndcg.values['ndcg@10']):.4f} ({gap:+.4f} ± {error:.4f})"),
        },
        goals=[
            *personal.goals(per_query, kinds, closing=BASELINE_GAP),
            Goal(f"a train with the model search costs <= {SEARCH_COST_GOAL:g}x a plain train",
                 ratio <= SEARCH_COST_GOAL,
                 f"{wall.train_seconds:.1f} s with the search vs {plain.train_seconds:.1f} s plain: {ratio:.2f}x "
                 f"(the first train with the search: {first_train:.1f} s)",
                 closing="A plain train on MovieLens 100K (refit EASE, build the item tables) costs about two "
                 "candidate fits, and the search fits five (EASE, the configured and two grid ALS, kNN; 1-3 s "
                 "each, the facts of the end-to-end protocol list them), so the ratio stays near 4x with any "
                 "grid that keeps the candidates the issue asks for (the grid already lost its in-between ALS "
                 "and its second EASE lambda, which never won on validation). Closing it needs cheaper fits "
                 "in the search, e.g. successive halving (every candidate for a third of its iterations, the "
                 "best two to the end), or dropping kNN (it lost on both validation sets: 0.2142 vs 0.2758 on "
                 "MovieLens, 0.0793 vs 0.1030 on Online Retail): changes to app/ml/selection.py beyond its "
                 "grid."),
            Goal("`now` = newest event + 1 h and `now` = the wall clock give the same answers",
                 same_choice and all(same),
                 f"same model chosen: {same_choice}; same top 10 for {sum(same)} of {len(same)} users"),
        ],
        seconds=time.perf_counter() - started + run.seconds,
    )
