from dataclasses import replace

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from app.ml.als import confidence_matrix, fit_als, fold_in_user, item_gram, user_confidences
from app.ml.interactions import decayed_matrix, encode_log, item_universe, user_universe


def trained(world, params):
    # Two tastes, two factors: more factors than the world has tastes lets ALS memorise each
    # user's exact items at this size (implicit's regularization does not scale with data).
    params = replace(params, factors=2)
    encoded = encode_log(world.log, item_universe(world.log, world.catalog), user_universe(world.log))
    matrix = decayed_matrix(encoded, params)
    user_f, item_f = fit_als(matrix, factors=params.factors, iterations=params.iterations,
                             regularization=params.regularization, alpha=params.alpha, seed=params.seed)
    return encoded, matrix, user_f, item_f


def assert_cluster_first(scores, item_ids, own, other, seen):
    by_item = dict(zip(item_ids.tolist(), scores.tolist()))
    unseen_own = [i for i in own if i not in seen]
    assert unseen_own, "the world leaves every user something to discover"
    assert min(by_item[i] for i in unseen_own) > max(by_item[i] for i in other)


def test_als_ranks_every_users_own_cluster_above_the_other(taste_clusters, params):
    encoded, matrix, user_f, item_f = trained(taste_clusters, params)
    for u, user in enumerate(encoded.user_ids.tolist()):
        own, other = taste_clusters.a_items, taste_clusters.b_items
        if user.startswith("v"):
            own, other = other, own
        seen = set(encoded.item_ids[matrix[u].indices].tolist())
        assert_cluster_first(item_f @ user_f[u], encoded.item_ids, own, other, seen)


def test_als_is_float32_and_deterministic_for_a_seed(taste_clusters, params):
    _, _, first_users, first_items = trained(taste_clusters, params)
    _, _, again_users, again_items = trained(taste_clusters, params)
    assert first_users.dtype == first_items.dtype == np.float32
    np.testing.assert_array_equal(first_items, again_items)
    np.testing.assert_array_equal(first_users, again_users)


def test_fold_in_equals_implicit_recalculate_user(taste_clusters, params):
    _, matrix, _, _ = trained(taste_clusters, params)
    confidences = confidence_matrix(matrix, params.alpha)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=8, regularization=0.05, alpha=1.0, iterations=5, random_state=3
        )
        model.fit(confidences, show_progress=False)
    for u in (0, 5, 13):
        user_row = confidences[u]
        expected = model.recalculate_user(0, user_row)
        got = fold_in_user(model.item_factors, item_gram(model.item_factors), user_row.indices, user_row.data,
                           0.05)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_fold_in_gives_a_new_user_with_three_events_their_cluster(taste_clusters, params):
    encoded, _, _, item_f = trained(taste_clusters, params)
    ids = encoded.item_ids.tolist()
    fresh_items = np.array([ids.index("b0"), ids.index("b1"), ids.index("b0"), ids.index("b2")])
    items, confidences = user_confidences(fresh_items, np.array([1.0, 2.0, 1.0, 4.0]), params.alpha)
    assert items.tolist() == sorted(set(fresh_items.tolist()))
    assert confidences[items.tolist().index(ids.index("b0"))] == pytest.approx(1 + params.alpha * 2.0)
    vector = fold_in_user(item_f, item_gram(item_f), items, confidences, params.regularization)
    assert vector.dtype == np.float32 and np.any(vector)
    assert_cluster_first(item_f @ vector, encoded.item_ids, taste_clusters.b_items, taste_clusters.a_items,
                         {"b0", "b1", "b2"})


def test_user_confidences_drop_items_whose_weights_cancel():
    items, confidences = user_confidences(np.array([3, 3, 4]), np.array([2.0, -2.0, 1.0]), alpha=2.0)
    assert items.tolist() == [4] and confidences.tolist() == [3.0]


def test_fold_in_without_events_is_the_zero_vector():
    item_f = np.ones((4, 3), np.float32)
    assert not fold_in_user(item_f, item_gram(item_f), np.array([], np.int64), np.array([]), 0.1).any()


def test_nothing_to_learn_gives_zero_factors():
    user_f, item_f = fit_als(csr_matrix((3, 4), dtype=np.float32), factors=5, iterations=3,
                             regularization=0.1, alpha=2.0, seed=1)
    assert user_f.shape == (3, 5) and item_f.shape == (4, 5)
    assert not user_f.any() and not item_f.any()


def test_presence_confidence_counts_an_old_interaction_as_a_full_yes():
    from scipy.sparse import csr_matrix

    weights = np.array([1e-4, 1.0, 3.0])  # a months-old view, a fresh view, a fresh strong event
    matrix = csr_matrix((weights, ([0, 0, 1], [0, 1, 2])), shape=(2, 3))
    linear = confidence_matrix(matrix, 2.0).data
    presence = confidence_matrix(matrix, 2.0, presence=True).data
    np.testing.assert_allclose(linear, 1 + 2.0 * weights, rtol=1e-6)
    np.testing.assert_allclose(presence, 1 + 2.0 * (1 + np.log1p(weights)), rtol=1e-6)
    assert presence[0] > 2.9 and linear[0] < 1.001  # old: nearly "unobserved" with linear confidence
    # The serving fold-in reads the same rule.
    _, confidences = user_confidences(np.array([0, 1, 2]), weights, 2.0, presence=True)
    np.testing.assert_allclose(confidences, presence, rtol=1e-6)
