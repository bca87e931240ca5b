"""FactorIndex on real ALS factors: the exact top-k of the full product, after scoring a sliver.

(The exhaustive check, ties and filters included, is a property in tests/fuzz/test_properties.py.)
"""

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from app.ml.als import fit_als
from app.ml.factor_index import FactorIndex, demote

N_USERS, N_ITEMS = 3_000, 20_000


@pytest.fixture(scope="module")
def als_factors() -> tuple[np.ndarray, np.ndarray]:
    """ALS on Zipf-popular interactions (as a storefront's are), so norms follow popularity."""
    rng = np.random.default_rng(3)
    users = rng.integers(0, N_USERS, 120_000)
    items = np.minimum(rng.zipf(1.3, 120_000) - 1, N_ITEMS - 1)
    matrix = csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=(N_USERS, N_ITEMS))
    matrix.sum_duplicates()
    return fit_als(matrix, factors=32, iterations=6, regularization=0.05, alpha=2.0, seed=1)


def test_the_top_items_of_real_factors_after_scoring_a_few_percent(als_factors):
    user_factors, item_factors = als_factors
    demotion = np.random.default_rng(4).choice(np.float32([0, 0, 0, 0.3, 0.8]), size=N_ITEMS)
    index = FactorIndex(item_factors, demotion)
    ok = np.ones(N_ITEMS, dtype=bool)
    ok[np.random.default_rng(5).integers(0, N_ITEMS, 500)] = False  # bought, inactive, filtered
    scanned = []
    for user in user_factors[:300]:
        if not user.any():
            continue
        full = demote(item_factors @ user, demotion)
        top = index.top(user, ok, 20)
        scanned.append(top.scanned)
        # The scan and the full product may round differently in the last bit: compare values.
        np.testing.assert_allclose(top.scores, full[top.items], rtol=1e-5, atol=1e-6)
        assert ok[top.items].all() and len(set(top.items.tolist())) == 20
        assert np.all(np.diff(top.scores) <= 0)
        # Nothing left out beats the 20th.
        rest = np.ones(N_ITEMS, dtype=bool)
        rest[top.items] = False
        assert full[rest & ok].max() <= top.scores[-1] + 1e-5
    assert np.median(scanned) <= 0.2 * N_ITEMS  # the point of it: most of the catalog is never scored


def test_a_narrow_filter_soon_scores_just_its_items(als_factors):
    user_factors, item_factors = als_factors
    index = FactorIndex(item_factors, None)
    ok = np.zeros(N_ITEMS, dtype=bool)
    ok[index.order[-3:]] = True  # only the three smallest-norm items pass: a bound scan reads all
    user = next(u for u in user_factors if u.any())
    top = index.top(user, ok, 5)
    assert sorted(top.items.tolist()) == sorted(index.order[-3:].tolist())
    assert top.scanned == 1024 + 3  # one chunk of the scan, then the three scored directly


def test_a_filter_of_a_few_percent_gives_the_exact_top_k(als_factors):
    """A category and a price cap: the scan, or when it does not settle soon, its items scored."""
    user_factors, item_factors = als_factors
    demotion = np.random.default_rng(6).choice(np.float32([0, 0, 0.5]), size=N_ITEMS)
    index = FactorIndex(item_factors, demotion)
    ok = np.random.default_rng(7).random(N_ITEMS) < 0.04
    for user in user_factors[:100]:
        if not user.any():
            continue
        top = index.top(user, ok, 20)
        full = demote(item_factors @ user, demotion)
        full[~ok] = -np.inf
        assert top.scanned <= 3 * ok.sum() + 1024  # never much more than scoring the filter
        np.testing.assert_allclose(top.scores, np.sort(full)[::-1][:20], rtol=1e-5, atol=1e-6)
        assert ok[top.items].all()


def test_normalisation_floor_is_below_every_demoted_score(als_factors):
    user_factors, item_factors = als_factors
    demotion = np.full(N_ITEMS, 0.5, dtype=np.float32)
    index = FactorIndex(item_factors, demotion)
    for user in user_factors[:50]:
        assert demote(item_factors @ user, demotion).min() >= index.lowest_possible(user)
