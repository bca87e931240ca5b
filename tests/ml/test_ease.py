import numpy as np
import pytest
from scipy.sparse import csr_matrix

from app.ml.ease import ease_scores, fit_ease
from app.ml.interactions import decayed_matrix, encode_log, item_universe, user_universe


def test_ease_ranks_every_users_own_cluster_above_the_other(taste_clusters, params):
    world = taste_clusters
    encoded = encode_log(world.log, item_universe(world.log, world.catalog), user_universe(world.log))
    matrix = decayed_matrix(encoded, params)
    b = fit_ease(matrix, params.ease_lambda)
    assert b.shape == (16, 16) and b.dtype == np.float32
    assert not np.diag(b).any(), "an item never explains itself"
    for u, user in enumerate(encoded.user_ids.tolist()):
        own, other = world.a_items, world.b_items
        if user.startswith("v"):
            own, other = other, own
        scores = dict(zip(encoded.item_ids.tolist(), ease_scores(b, matrix[u]).tolist()))
        seen = set(encoded.item_ids[matrix[u].indices].tolist())
        assert min(scores[i] for i in own if i not in seen) > max(scores[i] for i in other)


def test_ease_scores_agree_for_a_sparse_row_and_a_dense_vector():
    matrix = csr_matrix(np.array([[1.0, 0, 3.0], [0, 2.0, 1.0], [1.0, 1.0, 0]], dtype=np.float32))
    b = fit_ease(matrix, lam=1.0)
    dense_row = matrix[0].toarray().ravel()
    np.testing.assert_allclose(ease_scores(b, matrix[0]), ease_scores(b, dense_row), rtol=1e-6)


def test_ease_without_items_is_empty():
    assert fit_ease(csr_matrix((3, 0), dtype=np.float32), 10.0).shape == (0, 0)


def test_an_old_interaction_still_counts_as_a_full_yes():
    """Decay shrinks a weight towards 0; EASE's input keeps it at presence 1 plus a bonus."""
    from app.ml.ease import presence

    values = presence(np.array([0.0, 1e-4, 1.0, 10.0, -2.0]))
    assert values[0] == 0.0 and values[4] == 0.0
    assert values[1] == pytest.approx(1.0, abs=1e-3)
    assert values[2] == pytest.approx(1 + np.log(2)) and values[3] > values[2]


def test_ease_scores_touch_only_the_users_items():
    b = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.fill_diagonal(b, 0)
    scores = ease_scores(b, np.array([0.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(scores, (1 + np.log(2)) * b[1])
    assert not ease_scores(b, np.zeros(4)).any()
