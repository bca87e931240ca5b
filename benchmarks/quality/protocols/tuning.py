"""The defaults, the model search's grid and the baselines' settings, chosen on validation data only.

The server picks `personalized`'s family and hyperparameters per organisation at train time
(app/ml/selection.py), among a fixed list of candidates: popular, the configured ALS, EASE and
kNN (the TrainParams defaults), EASE at EASE_LAMBDAS and ALS at ALS_GRID, all fitted with the
configured decay half-life. So what this protocol checks is that the list is good enough: a
wider sweep on each dataset's validation split finds the best configuration at that half-life,
and the best of the search's own candidates must be within that configuration's standard error
of it (else the grid misses a region that matters). The defaults still decide what no search
chooses (the decay half-life, the pair tables, K) and what serves before a search can compare
anything (too few users): those must be the validation winners, or within noise of them. The
baselines' settings are tuned the same way, per dataset.

Candidates are scored as the per-org search scores them, with the server's own functions:
`app.ml.personalization.fit` on the decayed users x items matrix the trainer builds (ages from
the newest training event), then `batch_scores`, the user's unseen items ranked; metric NDCG@10
of the validation targets. Order: the baselines (implicit's ALS by coordinate descent from the
textbook settings, regularization and confidence swept together since they interact; EASE's
lambda; item-kNN's K); the server's families at the configured half-life (ALS by the same
descent from the shipped defaults, then EASE's lambda and kNN's K); then the half-life for each
family's winner and for the server's ALS at the tuned baseline's settings (a region the descent
from the defaults does not reach). Ties keep the current value; a descent stops after a round
that changes nothing, or after `max_rounds`.

MovieLens: the data is the temporal protocol's training part (each user's first 80%), so no
test set of a MovieLens protocol that holds out each user's latest ratings is seen; two
validation splits are carved from it: a random 20% (seed 1) and each user's last 20% by time;
the objective is the mean NDCG@10 over both.

Online Retail: invoices before 2011-10-01 train and October 2011 validates (the test period
starts in November). The families and the baselines are scored on October's personalized next
basket (products new to each customer); the pair parameters by frequently-bought-together
HR@10 and the neighbour count K by session_based HR@10, both through the production path
(train_models + answer). The lift weight stays above 0 by design: at 0 an item found in nearly
every basket would top every list (pure confidence), which HR@10 rewards and shoppers do not.

The EASE cap, `ease_max_items` = 2,000: EASE's B is a dense items x items float32 matrix, 16 MB
at 2,000 items, so an api process caching its maximum of 64 orgs holds at most 1 GB of it;
fitting inverts an items x items float64 matrix (about 100 MB and 1-2 s on one core at 2,000).
At 5,000 items the same would be 100 MB per org and 6.4 GB for a full cache. Larger catalogs
use ALS or kNN.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.ml import personalization, selection
from app.ml.interactions import (
    CatalogSnapshot,
    InteractionLog,
    data_now,
    decayed_matrix,
    encode_log,
    item_universe,
    user_universe,
)
from app.ml.params import TrainParams
from app.ml.personalization import ALS, EASE, KNN, POPULAR, Candidate
from app.ml.popularity import popularity_scores
from app.settings import Settings, train_params
from benchmarks.quality import baselines, personal
from benchmarks.quality.datasets import Ratings, RetailLines
from benchmarks.quality.full_ranking import UserQueries, binary_matrix, evaluate, user_queries
from benchmarks.quality.metrics import std_error
from benchmarks.quality.protocols import movielens, retail
from benchmarks.quality.results import Goal, ProtocolResult, Row
from benchmarks.quality.serving import NOW_GAP_S
from benchmarks.quality.splits import last_per_user, random_holdout

VALIDATION_SEED = 1
NDCG = [("ndcg", 10)]
RETAIL_TRAIN_BEFORE = "2011-10-01"
RETAIL_VALIDATE_UNTIL = "2011-11-01"
K_TOLERANCE = 0.01


@dataclass(frozen=True)
class Grid:
    als: dict[str, list[Any]]  # the server's ALS family ("a,b": a coordinate of value pairs)
    ease_lambda: list[float]  # the server's EASE family
    knn: list[int]  # the server's kNN family (K)
    decay_half_life_days: list[float]  # swept for each family's winner
    baseline_als: dict[str, list[Any]]  # implicit's ALS used directly
    baseline_ease: list[float]
    baseline_knn: list[int]
    pairs: dict[str, list[Any]]
    knn_neighbours: list[int]
    max_rounds: int
    fbt_invoices: int | None  # validation invoices sampled for the pair search (None = all)
    session_invoices: int  # validation invoices sampled per K (next-item queries are the slow part)


# Regularization and confidence interact: each is swept with the other ("regularization,alpha").
FULL_GRID = Grid(
    als={
        "regularization,alpha": [(r, a) for r in (1.0, 5.0, 10.0, 20.0, 40.0) for a in (0.5, 1.0, 2.0, 5.0, 20.0)],
        "factors": [32, 64, 128],
        "iterations": [15, 30],
        "als_presence": [False, True],
    },
    ease_lambda=[100.0, 200.0, 400.0, 800.0],
    knn=[20, 50, 200],
    decay_half_life_days=[30.0, 90.0, 365.0, 3650.0],
    baseline_als={
        "regularization,alpha": [(r, a) for r in (0.05, 5.0, 20.0, 50.0, 100.0) for a in (1.0, 5.0, 20.0)],
        "factors": [64, 128],
        "iterations": [15, 30],
    },
    baseline_ease=[100.0, 200.0, 400.0, 800.0],
    baseline_knn=[20, 50, 100, 200],
    pairs={"pair_half_life_days": [60.0, 120.0, 365.0], "pair_lift_weight": [0.1, 0.3]},
    knn_neighbours=[20, 50, 100],
    max_rounds=2,
    fbt_invoices=None,
    session_invoices=300,
)
# --quick: every code path once, at the smallest cost (the defaults plus one alternative each).
QUICK_GRID = Grid(
    als={"regularization": [10.0, 20.0]}, ease_lambda=[400.0], knn=[50], decay_half_life_days=[30.0, 365.0],
    baseline_als={"regularization": [0.05]}, baseline_ease=[400.0], baseline_knn=[50],
    pairs={"pair_lift_weight": [0.1]}, knn_neighbours=[50], max_rounds=1, fbt_invoices=150,
    session_invoices=30,
)


class Split:
    """One validation split as the server's trainer sees it: the decayed matrix (per half-life),
    the popularity vector, the validation queries, and the baselines' 0/1 matrix."""

    def __init__(self, name: str, log: InteractionLog, snapshot: CatalogSnapshot, settings: Settings,
                 train: tuple[list[str], list[str]], test: tuple[list[str], list[str]]) -> None:
        self.name = name
        now = float(log.timestamps.max()) + NOW_GAP_S
        self.params = train_params(settings, now=now, data_now=data_now(log.timestamps, now))
        self.encoded = encode_log(log, item_universe(log, snapshot), user_universe(log))
        self.popularity = popularity_scores(self.encoded, self.params)
        user_index = {u: i for i, u in enumerate(self.encoded.user_ids.tolist())}
        item_index = {i: j for j, i in enumerate(self.encoded.item_ids.tolist())}
        self.queries: UserQueries = user_queries(user_index, item_index, train=train, test=test)
        self.x = binary_matrix(user_index, item_index, *train)
        self._matrices: dict[float, csr_matrix] = {}

    @property
    def n_items(self) -> int:
        return self.encoded.n_items

    def matrix(self, half_life_days: float) -> csr_matrix:
        if half_life_days not in self._matrices:
            params = dataclasses.replace(self.params, decay_half_life_days=half_life_days)
            self._matrices[half_life_days] = decayed_matrix(self.encoded, params)
        return self._matrices[half_life_days]

    def server(self, candidate: Candidate, half_life_days: float) -> list[float]:
        """Per-query NDCG@10 of one family configuration, fitted and scored as the search does."""
        user_items = self.matrix(half_life_days)
        params = candidate.applied(dataclasses.replace(self.params, decay_half_life_days=half_life_days))
        fitted = personalization.fit(candidate.model, user_items, params, popularity=self.popularity)
        rows = np.asarray(self.queries.rows, dtype=np.int64)
        scores = personalization.batch_scores(fitted, user_items, rows)
        position = {row: p for p, row in enumerate(self.queries.rows)}
        return _ndcg(self.queries, lambda row: scores[position[row]])

    def baseline(self, scores: np.ndarray) -> list[float]:
        return _ndcg(self.queries, lambda row: scores[row])


def _ndcg(queries: UserQueries, scorer: Callable[[int], np.ndarray]) -> list[float]:
    return evaluate(queries, scorer, NDCG)[1].values["ndcg@10"]


class _Search:
    """Coordinate descent over a grid with a memo: each configuration is scored once. A score
    is the mean NDCG@10 of each split, the objective their mean; per-query values are pooled
    over the splits for the standard error."""

    def __init__(self, splits: list[Any], score: Callable[[Any, dict[str, Any]], list[float]],
                 progress: Callable[[str], None], label: str, *, metric: str = "ndcg@10") -> None:
        self.splits = splits
        self.metric = metric
        self.score = score
        self.progress = progress
        self.label = label
        self.tried: dict[tuple, tuple[dict[str, float], list[float]]] = {}
        self.order: list[dict[str, Any]] = []

    def result(self, config: dict[str, Any]) -> tuple[dict[str, float], list[float]]:
        key = tuple(sorted(config.items()))
        if key not in self.tried:
            metrics, pooled = {}, []
            for split in self.splits:
                values = self.score(split, config)
                metrics[f"{self.metric} {split.name}-val"] = float(np.mean(values)) if values else 0.0
                pooled += values
            metrics["mean"] = float(np.mean(list(metrics.values())))
            self.tried[key] = (metrics, pooled)
            self.order.append(dict(config))
            self.progress(f"{self.label} {describe(config)}: mean {self.metric} {metrics['mean']:.4f}")
        return self.tried[key]

    def value(self, config: dict[str, Any]) -> float:
        return self.result(config)[0]["mean"]

    def error(self, config: dict[str, Any]) -> float:
        return std_error(self.result(config)[1])

    def descend(self, start: dict[str, Any], grid: dict[str, list[Any]], max_rounds: int) -> dict[str, Any]:
        """Coordinate descent. A coordinate is one parameter, or several that interact swept
        together ("regularization,alpha": a list of value pairs)."""
        best = dict(start)
        for _ in range(max_rounds):
            changed = False
            for name, values in grid.items():
                names = name.split(",")

                def setting(value: Any, names: list[str] = names) -> dict[str, Any]:
                    return dict(zip(names, value if len(names) > 1 else (value,)))

                current = tuple(best[n] for n in names) if len(names) > 1 else best[name]
                # Ties keep the current value: a change must earn its place.
                top = max(values, key=lambda v: (self.value({**best, **setting(v)}), v == current))
                if top != current:
                    best.update(setting(top))
                    changed = True
            if not changed:
                break
        return best

    def best(self, configs: list[dict[str, Any]]) -> dict[str, Any]:
        return max(configs, key=self.value)

    def rows(self, winners: list[dict[str, Any]], marks: dict[tuple, str] | None = None) -> list[Row]:
        rows = []
        for config in self.order:
            key = tuple(sorted(config.items()))
            name = f"{self.label} {describe(config)}" + (f" [{marks[key]}]" if marks and key in marks else "")
            rows.append(Row(name, "candidate", dict(self.tried[key][0]), "winner" if config in winners else ""))  # type: ignore[arg-type]
        return rows


@dataclass
class DatasetTuning:
    """The validation sweep of one dataset: the server's families and the baselines."""

    name: str
    server: _Search
    baseline: _Search
    family_winners: dict[str, dict[str, Any]]  # family -> its best configuration (configured decay)
    search_candidates: list[dict[str, Any]]  # the per-org search's candidates at the defaults
    baseline_winners: baselines.Tuned
    decays: list[dict[str, Any]]  # the decay sweep: each family's winner at every half-life

    @property
    def at_configured_decay(self) -> list[dict[str, Any]]:
        decay = self.family_winners[POPULAR]["decay_half_life_days"]
        return [c for c in self.server.order if c["decay_half_life_days"] == decay]

    def decay_winner(self) -> dict[str, Any]:
        return self.server.best(self.server.order)

    def rows(self) -> list[Row]:
        marks = {tuple(sorted(c.items())): "search candidate" for c in self.search_candidates}
        return (self.server.rows([*self.family_winners.values(), self.decay_winner()], marks)
                + self.baseline.rows(_baseline_winner_configs(self.baseline_winners)))

    def grid_goal(self) -> Goal:
        """The best of the search's candidates is within the sweep optimum's standard error (at
        the configured decay: the search fits every candidate with it)."""
        best = self.server.best(self.at_configured_decay)
        ours = self.server.best(self.search_candidates)
        best_value, ours_value, error = self.server.value(best), self.server.value(ours), self.server.error(best)
        return Goal(
            f"{self.name}: the model search's candidates reach the validation optimum (within its standard error)",
            ours_value >= best_value - error,
            f"best search candidate {describe(ours)} {ours_value:.4f} vs best found {describe(best)} "
            f"{best_value:.4f} (standard error {error:.4f})",
            closing="Add the validation winner (or its region) to ALS_GRID / EASE_LAMBDAS in app/ml/selection.py.",
        )


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
    unsearched = {"decay_half_life_days": defaults.decay_half_life_days}

    ml = _tune_dataset("MovieLens", movielens_splits(ratings, settings), grid, defaults, progress,
                       with_ease=True)
    datasets = [ml]
    rows = ml.rows()
    ml_als, ml_ease = ml.family_winners[ALS], ml.family_winners.get(EASE)
    facts: dict[str, Any] = {
        "movielens_data": "temporal-protocol training part (first 80% of each user's ratings)",
        "validation": "random 20% (seed 1) and each user's last 20%; objective = mean NDCG@10",
        "grid": dataclasses.asdict(grid),
        "movielens_family_winners": ml.family_winners,
        "movielens_search_candidates": [describe(c) for c in ml.search_candidates],
        "baseline_winners": {"movielens": ml.baseline_winners.as_dict()},
    }
    goals = [ml.grid_goal()]
    tuned = {"movielens": ml.baseline_winners}
    pre_search_ok = ml_ease is not None and ml.server.value(ml_ease) > ml.server.value(ml_als)
    goals.append(Goal(
        "before any search (too little data): the default family and hyperparameters are the MovieLens "
        "validation winners (EASE on catalogs up to ease_max_items exactly when it beats ALS)",
        pre_search_ok == (defaults.ease_max_items > 0) and _configured_is_winner(defaults, ml_als, ml_ease),
        f"EASE {describe(ml_ease or {})} {ml.server.value(ml_ease) if ml_ease else float('nan'):.4f} vs ALS "
        f"{describe(ml_als)} {ml.server.value(ml_als):.4f}; configured: ALS factors={defaults.factors} "
        f"reg={defaults.regularization:g} alpha={defaults.alpha:g} iters={defaults.iterations}, EASE "
        f"lambda={defaults.ease_lambda:g}, ease_max_items={defaults.ease_max_items}",
        closing="The defaults serve only orgs too small for a search to compare (under 10 holdout users); "
        "the TrainParams defaults in app/ml/interactions.py should be set to the winners.",
    ))
    chosen: dict[str, Any] = {}
    if lines is not None:
        rt = _tune_dataset("Online Retail", [retail_split(lines, settings)], grid, defaults, progress,
                           with_ease=False)
        datasets.append(rt)
        rows += rt.rows()
        tuned["retail"] = rt.baseline_winners
        goals.append(rt.grid_goal())
        facts["retail_validation"] = (f"train < {RETAIL_TRAIN_BEFORE}, validate until {RETAIL_VALIDATE_UNTIL} "
                                      "(next basket: products new to each customer)")
        facts["retail_family_winners"] = rt.family_winners
        facts["retail_search_candidates"] = [describe(c) for c in rt.search_candidates]
        facts["baseline_winners"]["retail"] = rt.baseline_winners.as_dict()
        pair_best, k_best, retail_rows = _pairs_and_k(lines, settings, grid, defaults, progress)
        rows += retail_rows
        chosen.update(pair_best)
        chosen["knn_neighbours"] = k_best
        facts.update({"pair_winner": pair_best, "knn_winner": k_best})
    unsearched = {name: getattr(defaults, name) for name in chosen}
    facts["chosen"] = chosen
    facts["defaults"] = unsearched
    mismatched = {n: (unsearched[n], v) for n, v in chosen.items() if unsearched[n] != v}
    goals.insert(0, Goal("TrainParams defaults equal the Online Retail validation winners for the pair tables and K "
                         f"({', '.join(sorted(chosen))})", not mismatched,
                         "all equal" if not mismatched else f"default -> winner: {mismatched}"))
    goals.insert(1, _decay_goal(datasets, defaults))
    facts["decay_winners"] = {d.name: describe(d.decay_winner()) for d in datasets}
    expected = {name: baselines.TUNED[name].as_dict() for name in tuned}
    found = {name: value.as_dict() for name, value in tuned.items()}
    goals.append(Goal("baseline hyperparameters (benchmarks/quality/baselines.py TUNED) equal their validation "
                      "winners", found == expected,
                      "all equal" if found == expected else f"TUNED {expected} vs winners {found}"))
    return ProtocolResult(
        key="tuning",
        title="Validation search: defaults, the model search's grid, the baselines (the test sets are never used)",
        description=__doc__ or "",
        columns=sorted({name for row in rows for name in row.metrics}, key=_column_order),
        rows=rows,
        facts=facts,
        goals=goals,
        seconds=time.perf_counter() - started,
    )


def _decay_goal(datasets: list[DatasetTuning], defaults: TrainParams) -> Goal:
    """The decay half-life is global (no per-org search chooses it): on every dataset the best
    configuration at the default half-life must be within the best overall's standard error."""
    met, parts = True, []
    for d in datasets:
        best, at_default = d.decay_winner(), d.server.best(d.at_configured_decay)
        value, error, ours = d.server.value(best), d.server.error(best), d.server.value(at_default)
        met &= ours >= value - error
        parts.append(f"{d.name}: best {describe(best)} {value:.4f} (standard error {error:.4f}); at "
                     f"{defaults.decay_half_life_days:g} days {describe(at_default)} {ours:.4f}")
    return Goal(
        f"the default decay half-life ({defaults.decay_half_life_days:g} days) is within noise of the best on "
        "every dataset's validation", met, "; ".join(parts),
        closing="The datasets disagree on the half-life, so no global default suits both: it should be a "
        "dimension of the per-org model search (app/ml/selection.py builds its holdout matrix with one "
        "half-life).",
    )


def movielens_splits(ratings: Ratings, settings: Settings) -> list[Split]:
    data = ratings.subset(~last_per_user(ratings.users, ratings.timestamps, movielens.TEST_FRACTION))
    masks = {
        "random": random_holdout(len(data), movielens.TEST_FRACTION, VALIDATION_SEED),
        "temporal": last_per_user(data.users, data.timestamps, movielens.TEST_FRACTION),
    }
    splits = []
    for name, test in masks.items():
        trained, held_out = data.subset(~test), data.subset(test)
        columns = (trained.users.astype(str).tolist(), trained.items.astype(str).tolist())
        splits.append(Split(name, movielens.ratings_log(settings, trained), movielens.catalog(ratings), settings,
                            columns, (held_out.users.astype(str).tolist(), held_out.items.astype(str).tolist())))
    return splits


def retail_split(lines: RetailLines, settings: Settings) -> Split:
    trained, held_out = retail.split(lines, train_before=RETAIL_TRAIN_BEFORE, test_until=RETAIL_VALIDATE_UNTIL)
    customers = np.array([not c.startswith(retail.GUEST) for c in held_out.customers.tolist()], dtype=bool)
    later = held_out.subset(customers)
    return Split("october", retail.retail_log(settings, trained), retail.catalog(trained), settings,
                 (trained.customers.tolist(), trained.items.tolist()), (later.customers.tolist(), later.items.tolist()))


def _tune_dataset(
    name: str, splits: list[Split], grid: Grid, defaults: TrainParams, progress: Callable[[str], None], *,
    with_ease: bool,
) -> DatasetTuning:
    """The baselines first, then the server's families at the configured decay half-life (the
    one the per-org search fits with), then the half-life itself for each family's winner and
    for the server's ALS at the tuned baseline's settings (a region coordinate descent from
    the defaults does not reach: factors, regularization and confidence interact)."""

    def baseline_score(split: Split, config: dict[str, Any]) -> list[float]:
        kind = config["baseline"]
        if kind == "ALS":
            als_config = baselines.AlsConfig(**{k: v for k, v in config.items() if k != "baseline"})
            return split.baseline(baselines.implicit_als(split.x, als_config))
        if kind == "EASE":
            return split.baseline(baselines.ease(split.x, config["lambda"]))
        return split.baseline(baselines.item_knn(split.x, config["K"]))

    baseline = _Search(splits, baseline_score, progress, f"{name}: baseline")
    textbook = {"baseline": "ALS", **baselines.TEXTBOOK_ALS.as_dict()}
    als_baseline = baseline.descend(textbook, grid.baseline_als, grid.max_rounds)
    ease_baseline = baseline.best([{"baseline": "EASE", "lambda": lam} for lam in grid.baseline_ease])
    knn_baseline = baseline.best([{"baseline": "item-kNN", "K": k} for k in grid.baseline_knn])
    tuned = baselines.Tuned(
        als=baselines.AlsConfig(**{k: v for k, v in als_baseline.items() if k != "baseline"}),
        knn_neighbours=int(knn_baseline["K"]), ease_lambda=float(ease_baseline["lambda"]),
    )

    def server_score(split: Split, config: dict[str, Any]) -> list[float]:
        model = config["model"]
        params = {k: v for k, v in config.items() if k in personalization.FAMILY_PARAMS[model]}
        return split.server(Candidate(model, params), config["decay_half_life_days"])

    server = _Search(splits, server_score, progress, f"{name}:")
    decay = defaults.decay_half_life_days
    start = {"model": ALS, "decay_half_life_days": decay,
             **{k: getattr(defaults, k) for k in personalization.FAMILY_PARAMS[ALS]}}
    winners = {ALS: server.descend(start, grid.als, grid.max_rounds)}
    if with_ease:
        winners[EASE] = server.best([{"model": EASE, "decay_half_life_days": decay, "ease_lambda": lam}
                                     for lam in grid.ease_lambda])
    winners[KNN] = server.best([{"model": KNN, "decay_half_life_days": decay, "knn_neighbours": k} for k in grid.knn])
    winners[POPULAR] = {"model": POPULAR, "decay_half_life_days": decay}
    probe = {"model": ALS, "decay_half_life_days": decay, **tuned.als.as_dict()}
    server.value(winners[POPULAR])
    server.value(probe)
    # The per-org search's own list, at the shipped defaults (app/ml/selection.py candidates()).
    search = [{"model": c.model, "decay_half_life_days": decay,
               **{k: _typed(defaults, k, v) for k, v in c.params.items()}}
              for c in selection.candidates(splits[0].n_items, splits[0].params)]
    for config in search:
        server.value(config)
    # The half-life, for the best configuration of each family and for the probe.
    decays = [{**config, "decay_half_life_days": d} for config in [*winners.values(), probe]
              if config["model"] != POPULAR for d in grid.decay_half_life_days]
    for config in decays:
        server.value(config)
    return DatasetTuning(name, server, baseline, winners, search, tuned, decays)


def _typed(defaults: TrainParams, name: str, value: float) -> Any:
    return type(getattr(defaults, name))(value)


def _configured_is_winner(defaults: TrainParams, als: dict[str, Any], ease: dict[str, Any] | None) -> bool:
    same_als = all(getattr(defaults, k) == als[k] for k in personalization.FAMILY_PARAMS[ALS])
    return same_als and (ease is None or defaults.ease_lambda == ease["ease_lambda"])


def _baseline_winner_configs(tuned: baselines.Tuned) -> list[dict[str, Any]]:
    return [{"baseline": "ALS", **tuned.als.as_dict()}, {"baseline": "EASE", "lambda": tuned.ease_lambda},
            {"baseline": "item-kNN", "K": tuned.knn_neighbours}]


def _pairs_and_k(
    lines: RetailLines, settings: Settings, grid: Grid, defaults: TrainParams, progress: Callable[[str], None]
) -> tuple[dict[str, Any], int, list[Row]]:
    """Pair parameters and K through the production path (train_models + answer)."""
    trained: dict[tuple, retail.RetailWorld] = {}

    def validation_world(config: dict[str, Any]) -> retail.RetailWorld:
        key = tuple(sorted({"knn_neighbours": defaults.knn_neighbours, **config}.items()))
        if key not in trained:
            # No model search: personalized does not answer these strategies.
            overrides = settings.model_dump() | {"model_search": False, **config}
            trained[key] = retail.retail_world(lines, Settings.model_construct(**overrides),
                                               train_before=RETAIL_TRAIN_BEFORE, test_until=RETAIL_VALIDATE_UNTIL)
        return trained[key]

    def fbt(split: Any, config: dict[str, Any]) -> list[float]:
        w = validation_world(config)
        return retail.fbt_scores(w, max_invoices=grid.fbt_invoices)[0]["frequently-bought-together"].values["hr@10"]

    pairs = _Search([_NamedOnly("october")], fbt, progress, "pairs", metric="fbt hr@10")
    start = {name: getattr(defaults, name) for name in grid.pairs}
    pair_best = pairs.descend(start, grid.pairs, grid.max_rounds)

    def session(split: Any, config: dict[str, Any]) -> list[float]:
        w = validation_world({**pair_best, "knn_neighbours": config["knn_neighbours"]})
        return retail.next_item_scores(w, max_invoices=grid.session_invoices)[0]["session_based"].values["hr@10"]

    by_k = _Search([_NamedOnly("october")], session, progress, "K (knn_neighbours)", metric="session hr@10")
    values = {k: by_k.value({"knn_neighbours": k}) for k in grid.knn_neighbours}
    # Every neighbour table, the api's memory and training time grow linearly with K: take the
    # smallest K within K_TOLERANCE of the best score, not a larger one for a gain inside noise.
    top = max(values.values())
    k_best = min(k for k in grid.knn_neighbours if values[k] >= top * (1 - K_TOLERANCE))
    return pair_best, k_best, pairs.rows([pair_best]) + by_k.rows([{"knn_neighbours": k_best}])


@dataclass(frozen=True)
class _NamedOnly:
    """A stand-in split for the production-path sweeps: only its name labels the column."""

    name: str


def describe(config: dict[str, Any]) -> str:
    head = config.get("model") or config.get("baseline") or ""
    rest = " ".join(filter(None, (personal.param_text(k, v) for k, v in config.items()
                                  if k not in ("model", "baseline"))))
    return f"{head} {rest}".strip()


def _column_order(name: str) -> tuple[int, str]:
    return (name.startswith("mean"), name)
