"""The search that chose the server's training defaults, on validation data only.

MovieLens: the data is the temporal protocol's training part (each user's first 80%), so the
temporal test set is never seen. Two validation splits are carved from it: a random 20%
(seed 1) and each user's last 20% by time; a configuration's score is the mean NDCG@10 of
`personalized` over both. ALS is searched one parameter at a time (coordinate descent from the
current defaults, repeated until a full round changes nothing), then EASE's lambda; the better
of the two decides whether small catalogs use EASE. The first search started from the previous
defaults (factors 64, iterations 15, regularization 0.05, alpha 2.0) and needed two rounds to
reach today's values; started from them, a round changes nothing, which is what a re-run checks.

Online Retail: invoices before 2011-10-01 train and October 2011 validates (the test period
starts in November). The pair parameters are chosen by frequently-bought-together HR@10, the
neighbour count K by session_based HR@10. The lift weight stays above 0 by design: at 0 an
item found in nearly every basket would top every list (pure confidence), which HR@10 rewards
and shoppers do not.

The EASE cap, `ease_max_items` = 2,000: EASE's B is a dense items x items float32 matrix, 16 MB
at 2,000 items, so an api process caching its maximum of 64 orgs holds at most 1 GB of it;
fitting inverts an items x items float64 matrix (about 100 MB and 1-2 s on one core at 2,000).
At 5,000 items the same would be 100 MB per org and 6.4 GB for a full cache. Larger catalogs
use ALS.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.ml.interactions import TrainParams
from app.settings import Settings
from benchmarks.quality import baselines
from benchmarks.quality.datasets import Ratings, RetailLines
from benchmarks.quality.full_ranking import binary_matrix, evaluate, matrix_scorer
from benchmarks.quality.protocols.movielens import TEST_FRACTION, World, personalized_scorer, world
from benchmarks.quality.protocols.retail import RetailWorld, fbt_scores, next_item_scores, retail_world
from benchmarks.quality.results import Goal, ProtocolResult, Row
from benchmarks.quality.splits import last_per_user, random_holdout

VALIDATION_SEED = 1
NDCG = [("ndcg", 10)]
RETAIL_TRAIN_BEFORE = "2011-10-01"
RETAIL_VALIDATE_UNTIL = "2011-11-01"
# Large enough to hold every catalog this search trains on: "use EASE" for the EASE candidates.
EASE_ALWAYS = 1_000_000


@dataclass(frozen=True)
class Grid:
    als: dict[str, list[Any]]
    ease_lambda: list[float]
    knn_baseline: list[int]
    ease_baseline: list[float]
    pairs: dict[str, list[Any]]
    knn_neighbours: list[int]
    max_rounds: int
    fbt_invoices: int | None  # validation invoices sampled for the pair search (None = all)
    session_invoices: int  # validation invoices sampled per K (next-item queries are the slow part)


FULL_GRID = Grid(
    als={
        "regularization": [0.05, 1.0, 5.0, 10.0, 20.0, 40.0],
        "alpha": [0.5, 1.0, 2.0, 4.0, 8.0],
        "factors": [32, 64, 128],
        "iterations": [10, 15, 30],
        "decay_half_life_days": [30.0, 90.0, 365.0, 3650.0],
    },
    ease_lambda=[100.0, 200.0, 400.0, 800.0],
    knn_baseline=[20, 50, 100, 200],
    ease_baseline=[100.0, 200.0, 400.0, 800.0],
    pairs={"pair_half_life_days": [30.0, 60.0, 120.0, 365.0], "pair_lift_weight": [0.1, 0.3, 1.0]},
    knn_neighbours=[20, 50, 100],
    max_rounds=3,
    fbt_invoices=None,
    session_invoices=300,
)
QUICK_GRID = Grid(
    als={"regularization": [5.0, 20.0]}, ease_lambda=[200.0], knn_baseline=[50], ease_baseline=[400.0],
    pairs={"pair_lift_weight": [0.1, 1.0]}, knn_neighbours=[50], max_rounds=1, fbt_invoices=150,
    session_invoices=30,
)


class _Search:
    """Coordinate descent over a grid with a memo: each configuration is scored once."""

    def __init__(
        self, score: Callable[[dict[str, Any]], dict[str, float]], objective: str, progress: Callable[[str], None]
    ) -> None:
        self.score = score
        self.objective = objective
        self.progress = progress
        self.tried: dict[tuple, dict[str, float]] = {}
        self.order: list[dict[str, Any]] = []

    def value(self, config: dict[str, Any]) -> float:
        key = tuple(sorted(config.items()))
        if key not in self.tried:
            self.tried[key] = self.score(config)
            self.order.append(dict(config))
            self.progress(f"{_describe(config)}: {self.objective} {self.tried[key][self.objective]:.4f}")
        return self.tried[key][self.objective]

    def descend(self, start: dict[str, Any], grid: dict[str, list[Any]], max_rounds: int) -> dict[str, Any]:
        best = dict(start)
        for _ in range(max_rounds):
            changed = False
            for name, values in grid.items():
                # Ties keep the current value: a change must earn its place.
                top = max(values, key=lambda v: (self.value({**best, name: v}), v == best[name]))
                if top != best[name]:
                    best[name] = top
                    changed = True
            if not changed:
                break
        return best

    def rows(self, label: Callable[[dict[str, Any]], str], winner: dict[str, Any]) -> list[Row]:
        return [
            Row(label(config), "candidate", dict(self.tried[tuple(sorted(config.items()))]),  # type: ignore[arg-type]
                "winner" if config == winner else "")
            for config in self.order
        ]


def tuning_protocol(
    ratings: Ratings,
    lines: RetailLines | None,
    settings: Settings,
    *,
    quick: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> ProtocolResult:
    started = time.perf_counter()
    grid = QUICK_GRID if quick else FULL_GRID
    defaults = TrainParams(now=0.0)
    data = ratings.subset(~last_per_user(ratings.users, ratings.timestamps, TEST_FRACTION))
    splits = {
        "random": random_holdout(len(data), TEST_FRACTION, VALIDATION_SEED),
        "temporal": last_per_user(data.users, data.timestamps, TEST_FRACTION),
    }

    first: dict[str, World] = {}  # one trained world per split: the baselines reuse its queries

    def movielens_score(overrides: dict[str, Any]) -> dict[str, float]:
        out = {}
        for name, mask in splits.items():
            w = world(data, mask, settings, overrides)
            first.setdefault(name, w)
            out[f"ndcg@10 {name}-val"] = evaluate(w.queries, personalized_scorer(w.served), NDCG)[0]["ndcg@10"]
        out["mean"] = sum(out.values()) / len(out)
        return out

    als = _Search(lambda c: movielens_score({**c, "ease_max_items": 0}), "mean", progress)
    als_start = {name: getattr(defaults, name) for name in grid.als}
    als_best = als.descend(als_start, grid.als, grid.max_rounds)
    ease = _Search(lambda c: movielens_score({**als_best, **c, "ease_max_items": EASE_ALWAYS}), "mean", progress)
    ease_best = {"ease_lambda": max(grid.ease_lambda, key=lambda lam: ease.value({"ease_lambda": lam}))}
    use_ease = ease.value(ease_best) > als.value(als_best)

    rows = als.rows(lambda c: "ALS " + _describe(c), als_best)
    rows += ease.rows(lambda c: f"EASE lambda={c['ease_lambda']:g} ({_describe(_decay_of(als_best))})", ease_best)
    baseline_best, baseline_rows = _baselines(first, grid)
    rows += baseline_rows
    chosen: dict[str, Any] = {**als_best, **(ease_best if use_ease else {})}
    facts: dict[str, Any] = {
        "movielens_data": "temporal-protocol training part (first 80% of each user's ratings)",
        "validation": "random 20% (seed 1) and each user's last 20%; objective = mean personalized NDCG@10",
        "grid": dataclasses.asdict(grid),
        "als_winner": als_best, "ease_winner": ease_best, "personalized_model": "EASE" if use_ease else "ALS",
        "baseline_winners": baseline_best,
    }
    if lines is not None:
        pair_best, k_best, retail_rows = _retail(lines, settings, grid, defaults, progress)
        rows += retail_rows
        chosen.update(pair_best)
        chosen["knn_neighbours"] = k_best
        facts.update({"retail_validation": f"train < {RETAIL_TRAIN_BEFORE}, validate until {RETAIL_VALIDATE_UNTIL}",
                      "pair_winner": pair_best, "knn_winner": k_best})
    facts["chosen"] = chosen
    facts["defaults"] = {name: getattr(defaults, name) for name in chosen}
    mismatched = {n: (getattr(defaults, n), v) for n, v in chosen.items() if getattr(defaults, n) != v}
    ease_default_ok = (defaults.ease_max_items > 0) == use_ease
    goals = [
        Goal("TrainParams defaults equal the search winner", not mismatched,
             "all equal" if not mismatched else f"default -> winner: {mismatched}"),
        Goal("EASE used for small catalogs exactly when it wins on validation", ease_default_ok,
             f"EASE {ease.value(ease_best):.4f} vs ALS {als.value(als_best):.4f}; "
             f"ease_max_items default {defaults.ease_max_items}"),
        Goal("baseline hyperparameters equal their validation winners",
             baseline_best == {"item_knn_neighbours": baselines.ITEM_KNN_NEIGHBOURS,
                               "ease_lambda": baselines.EASE_LAMBDA},
             f"{baseline_best}"),
    ]
    return ProtocolResult(
        key="tuning",
        title="Hyperparameter search on validation splits (the test sets are never used)",
        description=__doc__ or "",
        columns=sorted({name for row in rows for name in row.metrics}, key=_column_order),
        rows=rows,
        facts=facts,
        goals=goals,
        seconds=time.perf_counter() - started,
    )


def _baselines(worlds: dict[str, World], grid: Grid) -> tuple[dict[str, float], list[Row]]:
    """The textbook baselines get the same validation treatment as the server (same splits,
    same queries; a world's training matrix does not depend on the server's parameters)."""
    matrices = {
        name: binary_matrix(w.served.models.user_index, w.served.models.item_index, w.train_users.tolist(),
                            w.train_items.tolist())
        for name, w in worlds.items()
    }

    def score(make: Callable[[Any], Any]) -> dict[str, float]:
        out = {f"ndcg@10 {name}-val": evaluate(w.queries, matrix_scorer(make(matrices[name])), NDCG)[0]["ndcg@10"]
               for name, w in worlds.items()}
        out["mean"] = sum(out.values()) / len(out)
        return out

    knn = {k: score(lambda x, k=k: baselines.item_knn(x, k)) for k in grid.knn_baseline}
    ease = {lam: score(lambda x, lam=lam: baselines.ease(x, lam)) for lam in grid.ease_baseline}
    best_k = max(knn, key=lambda k: knn[k]["mean"])
    best_lam = max(ease, key=lambda lam: ease[lam]["mean"])
    rows = [Row(f"baseline item-kNN K={k}", "candidate", dict(m), "winner" if k == best_k else "")  # type: ignore[arg-type]
            for k, m in knn.items()]
    rows += [Row(f"baseline EASE lambda={lam:g}", "candidate", dict(m), "winner" if lam == best_lam else "")  # type: ignore[arg-type]
             for lam, m in ease.items()]
    return {"item_knn_neighbours": best_k, "ease_lambda": best_lam}, rows


def _retail(
    lines: RetailLines, settings: Settings, grid: Grid, defaults: TrainParams, progress: Callable[[str], None]
) -> tuple[dict[str, Any], int, list[Row]]:
    trained: dict[tuple, RetailWorld] = {}

    def validation_world(config: dict[str, Any]) -> RetailWorld:
        key = tuple(sorted({**{name: getattr(defaults, name) for name in ("knn_neighbours",)}, **config}.items()))
        if key not in trained:
            trained[key] = retail_world(lines, settings, train_before=RETAIL_TRAIN_BEFORE,
                                        test_until=RETAIL_VALIDATE_UNTIL, overrides=config)
        return trained[key]

    def fbt(config: dict[str, Any]) -> dict[str, float]:
        w = validation_world(config)
        means = fbt_scores(w, max_invoices=grid.fbt_invoices)[0]["frequently-bought-together"].means()
        return {"fbt hr@10 val": means["hr@10"], "fbt recall@10 val": means["recall@10"]}

    pairs = _Search(fbt, "fbt hr@10 val", progress)
    pair_best = pairs.descend({name: getattr(defaults, name) for name in grid.pairs}, grid.pairs, grid.max_rounds)

    def session(k: int) -> dict[str, float]:
        w = validation_world({**pair_best, "knn_neighbours": k})
        means = next_item_scores(w, max_invoices=grid.session_invoices)[0]["session_based"].means()
        progress(f"knn_neighbours={k}: session hr@10 val {means['hr@10']:.4f}")
        return {"session hr@10 val": means["hr@10"]}

    by_k = {k: session(k) for k in grid.knn_neighbours}
    # Every neighbour table, the api's memory and training time grow linearly with K: take the
    # smallest K within K_TOLERANCE of the best score, not a larger one for a gain inside noise.
    top = max(m["session hr@10 val"] for m in by_k.values())
    k_best = min(k for k in grid.knn_neighbours if by_k[k]["session hr@10 val"] >= top * (1 - K_TOLERANCE))
    rows = pairs.rows(lambda c: "pairs " + _describe(c), pair_best)
    rows += [Row(f"K (knn_neighbours)={k}", "candidate", dict(m), "winner" if k == k_best else "")  # type: ignore[arg-type]
             for k, m in by_k.items()]
    return pair_best, k_best, rows


K_TOLERANCE = 0.01

_SHORT = {"regularization": "reg", "iterations": "iters", "decay_half_life_days": "decay",
          "pair_half_life_days": "pair_half_life", "pair_lift_weight": "lift_w"}


def _describe(config: dict[str, Any]) -> str:
    return " ".join(f"{_SHORT.get(k, k)}={v:g}" if isinstance(v, float) else f"{_SHORT.get(k, k)}={v}"
                    for k, v in config.items())


def _decay_of(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k == "decay_half_life_days"}


def _column_order(name: str) -> tuple[int, str]:
    return (name.startswith("mean"), name)
