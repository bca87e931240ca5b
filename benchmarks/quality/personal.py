"""What every personalized protocol measures, the same way: `personalized` and `popular` as the
API answers them, the score-matrix baselines on the same 0/1 training matrix, and the goals.

The server is asked, per query, for page 1 of `personalized` (and of `popular`) with
`filters.exclude_interacted: true` and the deepest k as the limit: the API's own "rank every
item the user has not interacted with". The baselines rank the same unseen items
(full_ranking.top_unseen): implicit's ALS used directly at its validation-tuned and at the
textbook settings, item-kNN, EASE, and uniform random scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from benchmarks.quality import baselines
from benchmarks.quality.full_ranking import Ranker, UserQueries, evaluate_ranked, top_unseen
from benchmarks.quality.metrics import MetricMeans, paired_difference, std_error
from benchmarks.quality.results import Goal, Row
from benchmarks.quality.serving import UNSEEN, Served

OURS = "personalized"
POPULAR = "popular"
RANDOM = "random"
RANDOM_SEED = 0  # the `random` row: uniform scores, the floor every method must clear
POPULAR_FACTOR = 1.5  # personalized must be at least this many times popular
# A method's rows: (kind, a function that builds its ranker when the row is measured).
Methods = dict[str, tuple[str, Callable[[], Ranker]]]


def served_ranker(served: Served, queries: UserQueries, strategy: str, depth: int) -> Ranker:
    """Each query's page 1 from the API: the user's unseen items, `depth` of them."""
    users = served.models.user_ids
    return lambda q: served.ask(strategy, user_id=users[queries.rows[q]], filters=UNSEEN, limit=depth)


def matrix_ranker(queries: UserQueries, scores: np.ndarray, depth: int) -> Ranker:
    """Each query's best `depth` unseen items by a users x items score matrix."""
    return lambda q: top_unseen(scores[queries.rows[q]], queries.seen[q], depth)


def methods(served: Served, queries: UserQueries, x: csr_matrix, tuned: baselines.Tuned, depth: int) -> Methods:
    """name -> (kind, lazy ranker): the server's answers first, then the baselines."""
    n_users, n_items = x.shape

    def matrix(make: Callable[[], np.ndarray]) -> Callable[[], Ranker]:
        return lambda: matrix_ranker(queries, make(), depth)

    return {
        OURS: ("strategy", lambda: served_ranker(served, queries, OURS, depth)),
        POPULAR: ("strategy", lambda: served_ranker(served, queries, POPULAR, depth)),
        f"implicit ALS (direct, tuned: {tuned.als.describe()})": (
            "baseline", matrix(lambda: baselines.implicit_als(x, tuned.als))),
        f"implicit ALS (direct, textbook: {baselines.TEXTBOOK_ALS.describe()})": (
            "baseline", matrix(lambda: baselines.implicit_als(x, baselines.TEXTBOOK_ALS))),
        f"item-kNN (implicit cosine, K={tuned.knn_neighbours})": (
            "baseline", matrix(lambda: baselines.item_knn(x, tuned.knn_neighbours))),
        f"EASE (closed form, lambda={tuned.ease_lambda:g})": (
            "baseline", matrix(lambda: baselines.ease(x, tuned.ease_lambda))),
        RANDOM: ("baseline", matrix(lambda: np.random.default_rng(RANDOM_SEED).random((n_users, n_items)))),
    }


@dataclass(frozen=True)
class Measured:
    """Every method of a personalized protocol on one split: rows of means, per-query values."""

    rows: list[Row]
    per_query: dict[str, MetricMeans]
    kinds: dict[str, str]


def measure(
    queries: UserQueries, found: Methods, wanted: Sequence[tuple[str, int]], *, coverage_k: int | None = None
) -> Measured:
    """Every method measured (built one at a time, so only one score matrix is in memory)."""
    rows, per_query = [], {}
    for name, (kind, make) in found.items():
        means, per_query[name] = evaluate_ranked(queries, make(), wanted, coverage_k=coverage_k)
        rows.append(Row(name, kind, dict(means)))  # type: ignore[arg-type]
    return Measured(rows, per_query, {name: kind for name, (kind, _) in found.items()})


def single_baselines(kinds: dict[str, str]) -> list[str]:
    """The baselines the goal compares with: every learned one (not random, not popular)."""
    return [name for name, kind in kinds.items() if kind == "baseline" and name != RANDOM]


def goals(
    per_query: dict[str, MetricMeans], kinds: dict[str, str], *, metric: str = "ndcg@10", closing: str = "",
    ours: str = OURS, popular: str = POPULAR,
) -> list[Goal]:
    """The two goals of every personalized protocol (issue 14): personalized as served at least
    the best single baseline minus that baseline's standard error, and at least 1.5x popular."""
    values = per_query[ours].values[metric]
    mean = float(np.mean(values))
    best = max(single_baselines(kinds), key=lambda name: float(np.mean(per_query[name].values[metric])))
    theirs = per_query[best].values[metric]
    best_mean, best_error = float(np.mean(theirs)), std_error(theirs)
    gap, paired = paired_difference(values, theirs)
    popular_mean = float(np.mean(per_query[popular].values[metric]))
    ratio = mean / popular_mean if popular_mean > 0 else float("inf")
    label = "personalized" if ours == OURS else ours
    return [
        Goal(f"{label} {metric_label(metric)} >= best single baseline - its standard error",
             mean >= best_mean - best_error,
             f"{mean:.4f} vs {best} {best_mean:.4f} (its standard error {best_error:.4f}): "
             f"{gap:+.4f} (paired standard error {paired:.4f})", closing=closing),
        Goal(f"{label} {metric_label(metric)} >= {POPULAR_FACTOR:g}x popular", ratio >= POPULAR_FACTOR,
             f"{mean:.4f} vs {popular_mean:.4f}: {ratio:.2f}x", closing=closing),
    ]


def metric_label(metric: str) -> str:
    return metric.replace("ndcg", "NDCG").replace("hr", "HR")


def versus(per_query: dict[str, MetricMeans], metric: str = "ndcg@10") -> dict[str, str]:
    """personalized - other on `metric`, with the paired standard error, for every other method."""
    out = {}
    for name, means in per_query.items():
        if name != OURS:
            gap, error = paired_difference(per_query[OURS].values[metric], means.values[metric])
            out[name] = f"{gap:+.4f} ± {error:.4f}"
    return out


def search_facts(quality: dict[str, Any] | None) -> dict[str, Any]:
    """The model search's findings (what GET /v1/models/status reports), for a protocol's facts."""
    if not quality:
        return {"model_search": "none (the default family serves)"}
    chosen = quality["chosen"]
    candidates = ", ".join(f"{describe_candidate(c)} {c['ndcg_at_10']:.4f}" for c in quality.get("candidates", []))
    return {
        "personalized_model": describe_candidate(chosen),
        "model_search": (f"holdout NDCG@10 over {quality['holdout_users']} users: chosen "
                         f"{_number(chosen.get('ndcg_at_10'))}, popular {_number(quality.get('popular_ndcg_at_10'))} "
                         f"({_number(quality.get('personalized_vs_popular'), 2)}x); "
                         f"{_number(quality.get('search_seconds'), 1)} s; candidates: {candidates}"),
    }


def describe_candidate(candidate: dict[str, Any]) -> str:
    params = candidate.get("params") or {}
    inner = " ".join(filter(None, (param_text(k, v) for k, v in params.items())))
    return f"{candidate['model']}({inner})" if inner else str(candidate["model"])


def param_text(name: str, value: Any) -> str:
    """One hyperparameter as the reports print it ("reg=20", "presence"; linear confidence, the
    default, prints nothing)."""
    if name == "als_presence":
        return "presence" if value else ""
    short = _SHORT.get(name, name)
    return f"{short}={value:g}" if isinstance(value, float) else f"{short}={value}"


_SHORT = {"regularization": "reg", "iterations": "iters", "ease_lambda": "lambda", "knn_neighbours": "K",
          "decay_half_life_days": "decay", "pair_half_life_days": "pair_half_life", "pair_lift_weight": "lift_w"}


def _number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
