import numpy as np
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
