import numpy as np
import pytest
from scipy.sparse import csr_matrix

import app.ml.train as train_module
from app.ml.artifacts import DENSE_FIELDS, SPARSE_FIELDS
from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.ml.params import TrainParams
from app.ml.train import TrainingError, train_org_models
from tests.ml.conftest import DAY, HOUR, NOW

ITEM_BY_ITEM = ("item_neighbors", "content_neighbors", "copurchase", "copurchase_counts", "coengagement",
                "transitions")


def synthetic_world(n_events=20_000, n_items=600, n_users=800, seed=0):
    """Shoppers in sessions, each browsing their two favourite categories, some buying."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 12, n_items)
    favourite = rng.integers(0, 12, (n_users, 2))
    session_len = 5
    n_sessions = n_events // session_len
    session_user = rng.integers(0, n_users, n_sessions)
    start = NOW - rng.random(n_sessions) * 60 * DAY
    user = np.repeat(session_user, session_len)
    wanted = favourite[user, rng.integers(0, 2, user.size)]
    pool = [np.flatnonzero(category == c) for c in range(12)]
    item = np.array([pool[c][min(int(rng.pareto(1.0)), len(pool[c]) - 1)] for c in wanted.tolist()])
    names = rng.choice(["view", "click", "add_to_cart", "remove_from_cart", "purchase"], size=user.size,
                       p=[0.6, 0.2, 0.1, 0.03, 0.07])
    weights = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "remove_from_cart": -2.0, "purchase": 10.0}
    session = np.repeat(np.arange(n_sessions), session_len)
    log = InteractionLog.build(
        user_ids=[f"u{u}" for u in user.tolist()],
        item_ids=[f"i{i}" for i in item.tolist()],
        event_names=names.tolist(),
        weights=[weights[n] for n in names.tolist()],
        timestamps=start[session] + np.tile(np.arange(session_len), n_sessions) * 90.0,
        order_ids=[f"o{s}" if n == "purchase" else None for s, n in zip(session.tolist(), names.tolist())],
        session_ids=[f"s{s}" if s % 2 else None for s in session.tolist()],
        prices=np.where(names == "purchase", 10.0 + item % 50, np.nan),
    )
    catalog = CatalogSnapshot.build(
        [f"i{i}" for i in range(n_items)],
        attributes=[{"title": f"thing {i % 40} model {i % 7}", "category": f"c{category[i]}",
                     "brand": f"b{i % 25}", "price": float(10 + i % 50)} for i in range(n_items)],
        statuses=["deleted" if i % 97 == 0 else "active" for i in range(n_items)],
    )
    return log, catalog


def assert_consistent(models, params):
    n_items, n_users = models.n_items, models.n_users
    assert models.user_items.shape == (n_users, n_items)
    assert models.user_factors.shape == (n_users, params.factors)
    assert models.item_factors.shape == (n_items, params.factors)
    assert models.purchase_counts.shape == models.last_purchase_ts.shape == (n_users, n_items)
    for name in ITEM_BY_ITEM:
        table = getattr(models, name)
        assert isinstance(table, csr_matrix) and table.shape == (n_items, n_items), name
        assert table.dtype == np.float32 and table.diagonal().sum() == 0, name
        assert np.all(np.diff(table.indptr) <= params.knn_neighbours), name
        assert table.nnz == 0 or table.data.min() > 0, name
        if name != "copurchase_counts":
            assert table.nnz == 0 or table.data.max() <= 1.0, name
    for name in ("popularity", "trending", "repurchase_interval", "item_price"):
        assert getattr(models, name).shape == (n_items,), name
    for name in ("user_price_center", "user_price_spread"):
        assert getattr(models, name).shape == (n_users,), name
    for name in ("popularity", "trending"):
        vector = getattr(models, name)
        assert np.all((vector >= 0) & (vector <= 1)), name
    assert not models.non_finite_parts()


def test_a_synthetic_20k_event_world_trains_into_consistent_parts():
    log, catalog = synthetic_world()
    params = TrainParams(now=NOW, factors=16, iterations=8, knn_neighbours=20, ease_max_items=0)
    models, timings = train_org_models(log, catalog, params, version="v1")
    assert_consistent(models, params)
    assert models.n_interactions == len(log) and models.n_items == 600
    for name in ITEM_BY_ITEM + ("purchase_counts",):
        assert getattr(models, name).nnz > 0, f"{name} learned nothing"
    assert np.any(models.user_factors) and models.popularity.max() == 1.0
    assert models.ease_b.shape == (0, 0) and not models.uses_ease
    deleted = np.array([int(i[1:]) % 97 == 0 for i in models.item_ids])
    for name in ITEM_BY_ITEM:
        assert not np.isin(getattr(models, name).indices, np.flatnonzero(deleted)).any(), name
    expected_parts = {"matrix", "als", "knn", "content", "sessions", "copurchase", "coengagement",
                      "transitions", "popularity", "history", "repeat", "validate"}  # "als": the family that serves
    assert set(timings) == expected_parts and all(t >= 0 for t in timings.values())


def test_small_catalogs_get_ease(events, params):
    log = events.add("u1", "a").add("u1", "b").add("u2", "b").log()
    models, _ = train_org_models(log, CatalogSnapshot.build(["c"]), TrainParams(now=NOW, ease_max_items=3),
                                 version="v")
    assert models.ease_b.shape == (3, 3) and models.uses_ease


DEGENERATE = ("nothing", "catalog only", "one user, one item", "one event, items without events",
              "all negative", "one purchase")


def degenerate_worlds(events):
    one = InteractionLog.build(user_ids=["u"], item_ids=["a"], event_names=["view"], weights=[1.0],
                               timestamps=[NOW])
    negative = InteractionLog.build(user_ids=["u", "v"], item_ids=["a", "b"],
                                    event_names=["remove_from_cart"] * 2, weights=[-2.0, -2.0],
                                    timestamps=[NOW, NOW])
    items_only = CatalogSnapshot.build(["a", "b", "c"], attributes=[{"brand": "x"}, {"brand": "x"}, {}])
    return {
        "nothing": (InteractionLog.empty(), CatalogSnapshot.empty()),
        "catalog only": (InteractionLog.empty(), items_only),
        "one user, one item": (one, CatalogSnapshot.empty()),
        "one event, items without events": (one, items_only),
        "all negative": (negative, items_only),
        "one purchase": (events.add("u", "a", "purchase", order="o").log(), CatalogSnapshot.empty()),
    }


@pytest.mark.parametrize("world", DEGENERATE)
def test_degenerate_inputs_train_into_empty_but_valid_parts(events, params, world):
    log, catalog = degenerate_worlds(events)[world]
    models, _ = train_org_models(log, catalog, params, version="v")
    assert_consistent(models, params)
    if world == "all negative":
        assert models.user_items.nnz == 0 and not models.user_factors.any()
        assert not models.popularity.any()
    if world == "catalog only":
        assert models.n_users == 0 and models.content_neighbors[0].indices.tolist() == [1]


def test_a_nan_weight_is_refused(events, params):
    log = events.add("u", "a", weight=float("nan")).log()
    with pytest.raises(TrainingError, match="non-finite"):
        train_org_models(log, CatalogSnapshot.empty(), params, version="v")


def test_a_part_that_comes_out_nan_is_never_published(events, params, monkeypatch):
    log = events.add("u", "a").add("u", "b").log()
    monkeypatch.setattr(train_module, "trending_scores", lambda encoded, p: np.full(encoded.n_items, np.nan))
    with pytest.raises(TrainingError, match="trending"):
        train_org_models(log, CatalogSnapshot.empty(), params, version="v")


def test_a_nan_pair_score_is_a_training_error(events, params, monkeypatch):
    log = events.add("u", "a", t=NOW - HOUR).add("u", "b", t=NOW - HOUR).log()
    original = train_module.item_knn

    def poisoned(user_items, **kwargs):
        return original(user_items * np.float32(np.nan), **kwargs)

    monkeypatch.setattr(train_module, "item_knn", poisoned)
    with pytest.raises(TrainingError):
        train_org_models(log, CatalogSnapshot.empty(), params, version="v")


def test_nan_where_it_means_unknown_is_allowed(events, params):
    log = events.add("u", "a").log()
    models, _ = train_org_models(log, CatalogSnapshot.empty(), params, version="v")
    assert np.isnan(models.item_price).all() and np.isnan(models.repurchase_interval).all()


def test_training_is_deterministic(params):
    log, catalog = synthetic_world(n_events=3000, n_items=100, n_users=150)
    first, _ = train_org_models(log, catalog, params, version="v")
    second, _ = train_org_models(log, catalog, params, version="v")
    for name in DENSE_FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    for name in SPARSE_FIELDS:
        assert (getattr(first, name) != getattr(second, name)).nnz == 0, name
