"""The metric functions and splits on examples small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.quality import personal
from benchmarks.quality.full_ranking import top_unseen
from benchmarks.quality.metrics import (
    MetricMeans,
    coverage,
    hit_rate_at,
    mrr_at,
    ndcg_at,
    precision_at,
    recall_at,
)
from benchmarks.quality.splits import last_per_user, latest_per_user, random_folds, random_holdout

# Hits at ranks 2 and 4 of 4; three targets, one of which (7) was never ranked.
RANKED = [5, 3, 9, 1]
TARGETS = {3, 1, 7}


def test_precision_divides_hits_by_k() -> None:
    assert precision_at(RANKED, TARGETS, 4) == 0.5
    assert precision_at(RANKED, TARGETS, 2) == 0.5
    assert precision_at([4], {4}, 10) == 0.1, "a short list still divides by k"


def test_recall_divides_hits_by_the_number_of_targets() -> None:
    assert recall_at(RANKED, TARGETS, 4) == pytest.approx(2 / 3)
    assert recall_at(RANKED, TARGETS, 1) == 0.0
    assert recall_at(RANKED, set(), 4) == 0.0


def test_ndcg_is_dcg_of_the_hits_over_the_best_possible_for_min_targets_k() -> None:
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # three targets fit in the top 4
    assert ndcg_at(RANKED, TARGETS, 4) == pytest.approx(dcg / ideal)
    assert ndcg_at(RANKED, TARGETS, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at([3, 1, 7], TARGETS, 3) == pytest.approx(1.0)
    assert ndcg_at([8, 9], TARGETS, 2) == 0.0


def test_hit_rate_and_mrr_look_at_the_first_hit() -> None:
    assert hit_rate_at(RANKED, TARGETS, 4) == 1.0
    assert hit_rate_at(RANKED, TARGETS, 1) == 0.0
    assert mrr_at(RANKED, TARGETS, 4) == 0.5
    assert mrr_at(RANKED, TARGETS, 1) == 0.0
    assert mrr_at([1], TARGETS, 10) == 1.0


def test_coverage_counts_distinct_items_over_the_catalog() -> None:
    assert coverage([[1, 2], [2, 3], []], 10) == pytest.approx(0.3)
    assert coverage([], 0) == 0.0


def test_metric_means_average_over_queries() -> None:
    means = MetricMeans([("hr", 2), ("recall", 2)])
    means.add([1, 2], {2})
    means.add([3, 4], {5, 6})
    assert means.queries == 2
    assert means.means() == {"hr@2": 0.5, "recall@2": 0.5}


def test_top_unseen_skips_seen_and_unscored_items_and_breaks_ties_by_index() -> None:
    scores = np.array([0.5, 0.9, 0.5, -np.inf, 0.7, 0.5])
    assert top_unseen(scores, np.array([1]), 4) == [4, 0, 2, 5]
    assert top_unseen(scores, np.array([0, 1, 2, 4, 5]), 3) == [], "only -inf left"


def test_last_per_user_takes_the_latest_fifth_rounded_half_up() -> None:
    users = np.array([1] * 5 + [2] * 3 + [3] + [4] * 2)
    times = np.array([5, 1, 4, 2, 3] + [1, 3, 2] + [1] + [2, 1], dtype=float)
    test = last_per_user(users, times, 0.2)
    assert test.tolist() == [True, False, False, False, False] + [False, True, False] + [False] + [True, False]


def test_latest_per_user_holds_out_one_rating_and_ties_go_to_the_later_row() -> None:
    users = np.array([1, 1, 1, 2, 2, 3])
    times = np.array([5, 9, 9, 1, 2, 7], dtype=float)
    test = latest_per_user(users, times)
    assert test.tolist() == [False, False, True, False, True, False], "a single rating stays in training"


def per_query(**values: list[float]) -> dict[str, MetricMeans]:
    out = {}
    for name, ndcg in values.items():
        means = MetricMeans([("ndcg", 10)])
        means.values["ndcg@10"] = list(ndcg)
        out[name.replace("_", " ")] = means
    return out


def test_personalized_goals_allow_one_standard_error_below_the_best_baseline() -> None:
    kinds = {"personalized": "strategy", "popular": "strategy", "ease": "baseline", "random": "baseline"}
    # ease: mean 0.3, standard error 0.1; random would be "best" if it counted.
    found = per_query(personalized=[0.25, 0.17], popular=[0.1, 0.1], ease=[0.4, 0.2], random=[0.9, 0.9])
    close, ratio = personal.goals(found, kinds)
    assert close.met and "ease 0.3000" in close.detail and "standard error 0.1000" in close.detail
    assert ratio.met and "2.10x" in ratio.detail
    below = per_query(personalized=[0.19, 0.19], popular=[0.15, 0.15], ease=[0.4, 0.2], random=[0.0, 0.0])
    close, ratio = personal.goals(below, kinds)
    assert not close.met and not ratio.met


def test_random_splits_are_seeded_partitions() -> None:
    folds = random_folds(103, 5, seed=0)
    assert sum(f.sum() for f in folds) == 103 and not np.any(np.sum(folds, axis=0) > 1)
    assert all(20 <= f.sum() <= 21 for f in folds)
    np.testing.assert_array_equal(random_holdout(50, 0.2, 1), random_holdout(50, 0.2, 1))
    assert random_holdout(50, 0.2, 1).sum() == 10
