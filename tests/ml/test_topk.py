import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse import random as sparse_random

from app.ml.topk import NonFiniteScores, pairwise_top_k, pairwise_top_k_multi, top_k_per_row


def test_top_k_keeps_the_best_positive_entries_best_first_ties_by_column():
    matrix = csr_matrix(np.array([[0.1, 0.5, 0.5, -1.0, 0.9], [0, 0, 0, 0, 0], [0.3, 0, 0, 0, 0]]))
    top = top_k_per_row(matrix, 3)
    assert top[0].indices.tolist() == [4, 1, 2]
    assert top[0].data.tolist() == pytest.approx([0.9, 0.5, 0.5])
    assert top[1].nnz == 0 and top[2].indices.tolist() == [0]
    assert top.dtype == np.float32


def brute_force(left, right, k, allowed):
    dense = (left @ right).toarray()
    np.fill_diagonal(dense, 0)
    dense[:, ~allowed] = 0
    expected = {}
    for i, row in enumerate(dense):
        best = [j for j in np.argsort(-row, kind="stable") if row[j] > 0][:k]
        expected[i] = {j: row[j] for j in best}
    return expected


@pytest.mark.parametrize("budget", [10**9, 50, 1])
def test_pairwise_top_k_equals_brute_force_in_any_number_of_slices(budget):
    rng = np.random.default_rng(0)
    x = sparse_random(40, 30, density=0.2, format="csr", random_state=rng, dtype=np.float64)
    allowed = rng.random(40) > 0.2
    got = pairwise_top_k(x, x.T.tocsr(), 4, lambda r, c, d: d, allowed_columns=allowed, slice_budget=budget)
    for i, row in brute_force(x, x.T.tocsr(), 4, allowed).items():
        found = dict(zip(got[i].indices.tolist(), got[i].data.tolist()))
        assert found == pytest.approx(row, rel=1e-5)
        assert list(got[i].data) == sorted(got[i].data, reverse=True)


def test_several_scorers_share_one_product():
    x = csr_matrix(np.array([[1.0, 1.0, 0], [1.0, 0, 1.0], [0, 1.0, 1.0]]))
    plain, negated = pairwise_top_k_multi(x, x.T.tocsr(), 2, [lambda r, c, d: d, lambda r, c, d: -d])
    assert plain.nnz == 6 and negated.nnz == 0


def test_a_nan_score_is_an_error_not_a_ranking():
    x = csr_matrix(np.ones((2, 2)))
    with pytest.raises(NonFiniteScores):
        pairwise_top_k(x, x, 2, lambda r, c, d: d * np.nan)
