import numpy as np
from scipy.sparse import csr_matrix

from app.ml.interactions import decayed_matrix, encode_log, item_universe, user_universe
from app.ml.knn import item_knn


def neighbours(table, item_ids, item):
    row = table[item_ids.tolist().index(item)]
    return dict(zip(item_ids[row.indices].tolist(), row.data.tolist()))


def test_knn_neighbours_stay_in_the_cluster_and_never_include_the_item(taste_clusters, params):
    world = taste_clusters
    item_ids = item_universe(world.log, world.catalog)
    matrix = decayed_matrix(encode_log(world.log, item_ids, user_universe(world.log)), params)
    table = item_knn(matrix, k=5, shrinkage=params.pair_shrinkage)
    assert table.shape == (16, 16) and table.dtype == np.float32
    for item in world.a_items:
        found = neighbours(table, item_ids, item)
        assert found and item not in found
        assert set(found) <= set(world.a_items)
        assert all(0 < score <= 1 for score in found.values())
        assert list(found.values()) == sorted(found.values(), reverse=True), "rows are best-first"


def test_a_pair_sharing_one_user_scores_below_a_pair_sharing_many():
    # items 0, 1 share 20 users; items 2, 3 share their only user (cosine 1.0 unshrunk).
    dense = np.zeros((21, 4), dtype=np.float32)
    dense[:20, 0] = dense[:20, 1] = 1.0
    dense[:20:3, 1] = 2.0
    dense[20, 2] = dense[20, 3] = 1.0
    table = item_knn(csr_matrix(dense), k=3, shrinkage=5.0)
    assert table[2, 3] < table[0, 1]


def test_knn_leaves_out_items_that_cannot_be_shown():
    dense = np.ones((3, 3), dtype=np.float32)
    table = item_knn(csr_matrix(dense), k=3, shrinkage=0.0, allowed_neighbours=np.array([True, True, False]))
    assert table[:, 2].nnz == 0 and table[2].nnz == 2


def test_knn_of_an_empty_matrix_is_empty():
    assert item_knn(csr_matrix((0, 3), dtype=np.float32), k=5, shrinkage=1.0).nnz == 0
